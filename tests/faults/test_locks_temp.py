"""Training lock (one process per run folder) and removal of temp files left by killed writers."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from landscape.errors import InUseError
from landscape.store import exclusive, remove_stale_temps, temp_path, write_json
from landscape.train.config import resolve_config
from landscape.train.sweep import prepare_output, run_sweep

RUN = "bs16_acc1_sqrt_seed0"
HOLD = """
import sys, time
from landscape.store import exclusive
with exclusive(sys.argv[1] + "/." + sys.argv[2] + ".train"):
    print("held", flush=True)
    time.sleep(60)
"""


def _cfg(dataset):
    return resolve_config({}, {"dataset": f"synthetic:{dataset}", "model": "micro", "batch_sizes": [16],
                               "seeds": [0], "lr_scaling": ["sqrt"], "lr": 1e-3, "reference_batch": 16,
                               "epochs": 1, "patience": 0, "train_patches": 1, "test_patches": 1,
                               "train_eval_images": 16, "device": "cpu"})


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant(folder, name, pid, age_s=3600.0, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = temp_path(folder / name, pid, host)
    path.write_bytes(b"partial")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_second_training_on_the_same_run_stops_at_once(tmp_path, dataset):
    out = tmp_path / "sweep"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), RUN], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(InUseError) as err:
            run_sweep(_cfg(dataset), out, progress=False)
        assert str(err.value) == f"{out}: in use by another training process (pid {holder.pid})"
        assert time.monotonic() - t0 < 5.0
        assert sorted(p.name for p in out.iterdir()) == [f".{RUN}.train.lock"]     # nothing else written
    finally:
        holder.kill()
        holder.wait()


def test_stale_temp_files_removed_live_ones_kept(tmp_path, dataset):
    out = tmp_path / "sweep"
    prepare_output(_cfg(dataset), out)                             # the sweep a killed process left
    dead = _dead_pid()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])   # a live writer
    try:
        stale = [_plant(out, "sweep.json", dead), _plant(out / RUN, "best.pt", dead)]
        live = [_plant(out, "sweep.json", writer.pid), _plant(out / RUN, "last.pt", writer.pid)]
        stale.append(_plant(out / RUN, "final.json", dead, age_s=0.0))     # this host, dead writer: at once
        elsewhere = _plant(out / RUN, "log.jsonl", dead, age_s=0.0, host="other-node")   # may still be writing
        gone_elsewhere = _plant(out / RUN, "config.json", dead, age_s=3600.0, host="other-node")
        res = run_sweep(_cfg(dataset), out, progress=False)
        assert res[0].status == "finished"
        assert not any(p.exists() for p in stale) and not gone_elsewhere.exists()
        assert all(p.exists() for p in live) and elsewhere.exists()
    finally:
        writer.kill()
        writer.wait()


def test_exclusive_cleans_its_folder_and_names_the_holder(tmp_path):
    run = tmp_path / "run"
    dead = _dead_pid()
    stale, live = _plant(run, "analysis.h5", dead), _plant(run, "analysis.h5", os.getpid())
    other = run / ".notes.tmp"                                     # not this toolkit's naming: kept
    other.write_text("x")
    with exclusive(run / "analysis.h5"):
        assert not stale.exists() and live.exists() and other.exists()
        assert (run / "analysis.h5.lock").read_bytes() == b""               # taking a lock writes nothing
        with pytest.raises(InUseError, match=rf"^X in use \(pid {os.getpid()}\)$"):
            with exclusive(run / "analysis.h5", busy="X in use (pid {pid})"):
                pass
    assert remove_stale_temps(run) == []
    write_json(run / "a.json", {"a": 1})                            # atomic writes leave nothing behind
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == sorted([live.name, other.name])
