"""Kill -9 during training and during checkpoint writes: nothing half-written, exact resume.

The training run is a real ``python cli.py train`` process (conftest ``training``) killed with
SIGKILL right after its first epoch's resume point (``train_state.pt``) appeared, then
resumed by the same command; an uninterrupted run of the same sweep is the reference.
"""
from __future__ import annotations

import json
import signal
import textwrap

import pytest
import torch
from faultkit import RUN, wait_for

from landscape.analyze.inputs import resolve_checkpoint
from landscape.models.checkpoint import load_checkpoint
from landscape.provenance import sha256_file
from landscape.store import temp_path

TIMING = {"epoch_time_s", "train_time_s", "samples_per_s", "samples_per_s_std", "peak_memory_bytes"}
CHECKPOINTS = ("best.pt", "last.pt", "epoch_000.pt", "epoch_001.pt", "epoch_002.pt")


def _log(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _final(run_dir):
    final = json.loads((run_dir / "final.json").read_text())
    return final["status"], {k: v for k, v in final["metrics"].items() if k not in TIMING}


def test_killed_run_left_only_complete_files(training):
    """At the kill: the process died by SIGKILL after 1 or 2 of its 3 epochs, no final.json, and
    every checkpoint present loaded with weights_only; temp files are hidden names only."""
    assert training.killed.rc == -signal.SIGKILL, training.killed.describe()
    assert 1 <= training.epochs_at_kill < 3
    assert "final.json" not in training.files_at_kill and "train_state.pt" in training.files_at_kill
    assert training.load_at_kill and set(training.load_at_kill.values()) == {"ok"}, training.load_at_kill
    for name in training.files_at_kill:   # finished files, or hidden temp files of the dead process
        assert name in {*CHECKPOINTS, "train_state.pt", "log.jsonl", "config.json", "dataset.json",
                        "split.json"} or (
            name.startswith(".") and name.endswith(".tmp")), name


def test_resumed_run_equals_uninterrupted_run(training):
    """The resumed run continues from its last complete epoch (epoch 0's checkpoint is the very
    file written before the kill) and ends bit-identical to the uninterrupted run: same
    per-epoch metrics, same final metrics, same weights in every checkpoint."""
    assert training.resume.rc == 0, training.resume.describe()
    assert f"{RUN}: finished" in training.resume.out
    ref, res = training.ref_run, training.resumed / RUN
    assert len(_log(ref)) == 3 and _log(res) == _log(ref)
    assert _final(ref)[0] == "finished" and _final(res) == _final(ref)
    hashes = {}
    for name in CHECKPOINTS:
        a, b = load_checkpoint(ref / name), load_checkpoint(res / name)
        assert a.content_hash == b.content_hash and a.meta["epoch"] == b.meta["epoch"], name
        hashes[name] = a.content_hash
    assert len({hashes[f"epoch_00{e}.pt"] for e in range(3)}) == 3      # the epochs differ
    assert sha256_file(res / "epoch_000.pt") == training.sha_at_kill["epoch_000.pt"]   # not retrained
    state = torch.load(res / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [0, 1, 2]


SAVER = textwrap.dedent("""
    import sys
    import torch
    from landscape.models import model_config
    from landscape.models.checkpoint import save_checkpoint

    out = sys.argv[1]
    model = torch.nn.Linear(1024, 2048)          # 2.1M parameters: an 8 MB checkpoint
    i = 0
    while True:                                  # until killed
        with torch.no_grad():
            model.weight.fill_(float(i))
            model.bias.fill_(float(i))
        save_checkpoint(out, model, model_config("micro").to_dict(), {"i": i})   # a valid config (schema)
        i += 1
""")


def test_kill_during_checkpoint_writes_never_leaves_a_half_written_checkpoint(server, tmp_path):
    """A process saving an 8 MB checkpoint in a loop is SIGKILLed while a write is in flight
    (its temp file exists), three times: every ``*.pt`` present loads with weights_only and
    verifies; the partial temp files are hidden ``.best.pt.<pid>.tmp`` names that no glob
    or resolver of the package takes for a checkpoint."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = run_dir / "best.pt"
    seen = []
    for trial in range(3):
        job = server.start(str(target), script=script, name=f"saver{trial}")
        tmp = temp_path(run_dir / "best.pt", job.pid)
        if trial:   # let it replace an existing checkpoint at least once before the kill
            first = sha256_file(target) if target.exists() else None
            wait_for(lambda first=first: target.exists() and sha256_file(target) != first, "a completed save", job)
        wait_for(tmp.exists, "a save in flight", job, every=0.001)
        res = job.kill()
        assert res.rc == -signal.SIGKILL, res.describe()
        seen.append(tmp.exists())
        present = sorted(p.name for p in run_dir.glob("*.pt"))
        assert present in ([], ["best.pt"]) and (trial == 0 or present == ["best.pt"])
        for p in run_dir.glob("*.pt"):
            ck = load_checkpoint(p)                          # weights_only load + hash check
            i = ck.meta["i"]
            assert torch.equal(ck.state_dict["weight"], torch.full((2048, 1024), float(i)))
            assert torch.equal(ck.state_dict["bias"], torch.full((2048,), float(i)))
    assert any(seen), "no kill hit a write in flight"
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))
    assert leftovers and all(n.startswith(".best.pt.") for n in leftovers)
    assert not list(run_dir.glob("epoch_*.pt")) and sorted(run_dir.glob("*.pt")) == [target]
    assert resolve_checkpoint(run_dir, "best") == (run_dir, target)
    with pytest.raises(Exception, match="no such run folder|not found|run has no"):
        resolve_checkpoint(run_dir, "last")
