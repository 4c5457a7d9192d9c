"""Dataset identity (issue 15 point 2): recorded by absolute root, verified on resume and analysis.

One tiny synthetic dataset and one ``micro`` run trained for one epoch from the dataset's parent
folder with a *relative* ``--dataset`` (the case that used to break from another directory).
"""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from landscape.analyze import jobs
from landscape.analyze.inputs import load_analysis_input, resolve_dataset
from landscape.data import generate_synthetic
from landscape.data.loading import absolute_spec, load_dataset_spec
from landscape.data.records import SHORT_HASH, verify_identity
from landscape.errors import DataError, LandscapeError
from landscape.models.checkpoint import load_checkpoint
from landscape.provenance import hash_lines
from landscape.store import read_json
from landscape.train.config import resolve_config
from landscape.train.sweep import run_sweep
from landscape.train.trainer import RunSpec, train_run

RUN = "bs16_acc1_sqrt_seed0"
OPTS = dict(subsets=("train",), samples=8, batch_size=8, device="cpu")


def _cfg(spec: str, **over):
    values = {"dataset": spec, "model": "micro", "batch_sizes": [16], "seeds": [0], "lr_scaling": ["sqrt"],
              "lr": 1e-3, "reference_batch": 16, "epochs": 1, "patience": 0, "train_patches": 1,
              "test_patches": 1, "train_eval_images": 8, "device": "cpu"}
    values.update(over)
    return resolve_config({}, values)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``work/ds`` (dataset) and ``work/sweep`` trained from ``work`` with ``--dataset synthetic:ds``."""
    work = tmp_path_factory.mktemp("identity")
    ds = generate_synthetic(work / "ds", n_references=6, size=72)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        results = run_sweep(_cfg("synthetic:ds"), Path("sweep"), progress=False, echo=lambda m: None)
    assert [r.status for r in results] == ["finished"]
    return {"work": work, "ds": Path(ds).resolve(), "sweep": work / "sweep", "run": work / "sweep" / RUN}


def _lambda(paths, **opts) -> str:
    rows = jobs.hessian(paths, jobs.AnalysisOptions(**{**OPTS, **opts}), top_k=1, trace=False)
    return rows[0]["lambda_1"]


def _edit_one_score(ds: Path) -> tuple[str, str]:
    """Move the first image's score by 0.5 in ``scores.csv``; returns (its split, its path)."""
    csv = ds / "scores.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    i = header.index("score")
    row[i] = repr(float(row[i]) + (-0.5 if float(row[i]) > 50 else 0.5))    # stays inside [0, 100]
    csv.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    return row[header.index("split")], row[header.index("path")]


# ----------------------------------------------------------------------------- what a run records

def test_run_records_absolute_root_and_split_hashes(world):
    spec = f"synthetic:{world['ds']}"
    run = world["run"]
    assert read_json(run / "config.json")["dataset"] == spec                 # typed as "synthetic:ds"
    ident = read_json(run / "dataset.json")
    ds = load_dataset_spec(spec)
    assert ident["root"] == str(world["ds"]) and ident["format"] == "synthetic"
    assert ident["score_column"] == ds.score_column
    assert ident["split_sizes"] == ds.split_sizes() and sum(ident["split_sizes"].values()) == len(ds.records)
    assert ident["labels_sha256"] == {s: ds.split_hash(s) for s in ("train", "val", "test")}
    lines = sorted(f"{Path(r.path).relative_to(world['ds']).as_posix()}\t{r.score!r}" for r in ds.split("val"))
    assert ident["labels_sha256"]["val"] == hash_lines(lines)
    meta = load_checkpoint(run / "best.pt").meta
    assert meta["config"]["dataset"] == spec
    assert meta["dataset"]["labels_sha256"] == ident["labels_sha256"] and meta["dataset"]["root"] == str(world["ds"])


def test_split_hash_ignores_where_the_dataset_lies(world, tmp_path):
    copy = shutil.copytree(world["ds"], tmp_path / "elsewhere")
    a, b = load_dataset_spec(f"synthetic:{world['ds']}"), load_dataset_spec(f"synthetic:{copy}")
    assert a.root != b.root and a.identity()["labels_sha256"] == b.identity()["labels_sha256"]
    verify_identity(a.identity(), b, "run")                                     # passes


# ----------------------------------------------------------------------------- verify_identity

def test_verify_identity_names_what_changed(world):
    ds = load_dataset_spec(f"synthetic:{world['ds']}")
    rec = ds.identity()
    where = f"RUN: dataset synthetic:{world['ds']} differs from the one the run recorded"
    fewer = dataclasses.replace(ds, records=[r for r in ds.records if r != ds.split("test")[0]])
    n_test = rec["split_sizes"]["test"]
    with pytest.raises(DataError) as e:
        verify_identity(rec, fewer, "RUN")
    assert str(e.value) == f"{where}: split 'test' has {n_test - 1} images, was {n_test}"
    first = ds.split("val")[0]
    changed = dataclasses.replace(ds, records=[dataclasses.replace(r, score=r.score + 0.01) if r == first else r
                                               for r in ds.records])
    with pytest.raises(DataError) as e:
        verify_identity(rec, changed, "RUN")
    assert str(e.value) == (f"{where}: split 'val' hash was {rec['labels_sha256']['val'][:SHORT_HASH]}, now "
                            f"{changed.split_hash('val')[:SHORT_HASH]} (same {rec['split_sizes']['val']} images: "
                            f"scores or file names changed)")
    with pytest.raises(DataError) as e:
        verify_identity(rec, dataclasses.replace(ds, score_column="mos"), "RUN")
    assert str(e.value) == f"{where}: score column was 'score', now 'mos'"
    with pytest.raises(DataError) as e:
        verify_identity(rec, dataclasses.replace(ds, score_range=(0.0, 10.0)), "RUN")
    lo, hi = rec["score_range"]
    assert str(e.value) == f"{where}: score range was [{lo:g}, {hi:g}], now [0, 10]"
    with pytest.raises(DataError, match="format was 'synthetic', now 'csv'"):
        verify_identity(rec, dataclasses.replace(ds, format="csv"), "RUN")
    verify_identity(None, fewer, "RUN")                      # runs without a record pass
    verify_identity({"format": "synthetic"}, fewer, "RUN")   # old records: only the fields they hold


def test_resolve_dataset_order(world, tmp_path, monkeypatch):
    monkeypatch.chdir(world["work"])
    rec = {"format": "synthetic", "root": str(world["ds"])}
    spec = f"synthetic:{world['ds']}"
    assert resolve_dataset("R", "synthetic:ds", rec, {}) == spec               # --dataset, made absolute
    assert resolve_dataset("R", None, rec, {"dataset": "synthetic:other"}) == spec   # the recorded root
    assert resolve_dataset("R", None, None, {"dataset": "synthetic:ds"}) == spec     # old runs: cwd-relative
    gone = tmp_path / "gone"
    with pytest.raises(LandscapeError) as e:
        resolve_dataset("R", None, {"format": "synthetic", "root": str(gone)}, {})
    assert str(e.value) == f"R: dataset root {gone} not found; pass --dataset FORMAT:ROOT"
    with pytest.raises(LandscapeError) as e:
        resolve_dataset("R", f"synthetic:{gone}", rec, {})
    assert str(e.value) == f"--dataset synthetic:{gone}: dataset root {gone} not found"
    assert absolute_spec("synthetic:ds") == spec


# ----------------------------------------------------------------------------- moved sweep, other cwd

def test_moved_sweep_and_dataset_give_identical_numbers(world, tmp_path, monkeypatch):
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)                            # not the folder the run was trained from
    before = _lambda([world["sweep"]])
    inp = load_analysis_input(world["run"], **OPTS)
    assert inp.provenance["dataset"] == f"synthetic:{world['ds']}"
    moved = tmp_path / "moved"
    shutil.copytree(world["sweep"], moved / "sweep", ignore=shutil.ignore_patterns("*.h5", "*.lock"))
    shutil.move(str(world["ds"]), moved / "data")      # the original dataset is gone
    try:
        monkeypatch.chdir(moved)
        with pytest.raises(LandscapeError) as e:
            _lambda([Path("sweep")])
        assert str(e.value) == f"sweep/{RUN}: dataset root {world['ds']} not found; pass --dataset FORMAT:ROOT"
        after = _lambda([Path("sweep")], dataset="synthetic:data")
    finally:
        shutil.move(str(moved / "data"), world["ds"])
    assert after == before and float(after.split()[0]) > 0


def test_analysis_on_changed_dataset_is_refused(world, tmp_path):
    data = shutil.copytree(world["ds"], tmp_path / "data")
    ident = read_json(world["run"] / "dataset.json")
    split, _ = _edit_one_score(data)
    now = load_dataset_spec(f"synthetic:{data}").split_hash(split)
    with pytest.raises(DataError) as e:
        load_analysis_input(world["run"], dataset=f"synthetic:{data}", **OPTS)
    assert str(e.value) == (f"{world['run']}: dataset synthetic:{data} differs from the one the run recorded: "
                            f"split '{split}' hash was {ident['labels_sha256'][split][:SHORT_HASH]}, now "
                            f"{now[:SHORT_HASH]} (same {ident['split_sizes'][split]} images: scores or file "
                            f"names changed)")


# ----------------------------------------------------------------------------- resume

class _Stop(Exception):
    pass


def test_resume_after_labels_changed_is_refused(tmp_path):
    data = generate_synthetic(tmp_path / "data", n_references=6, size=72)
    cfg = _cfg(f"synthetic:{data}", epochs=2)
    spec, run = RunSpec(16, 0, "sqrt"), tmp_path / "sweep" / RUN

    def stop_after_first_epoch(event):
        if event.get("done"):
            raise _Stop

    with pytest.raises(_Stop):
        train_run(cfg, spec, run, progress=stop_after_first_epoch)
    assert (run / "train_state.pt").exists() and not (run / "final.json").exists()
    recorded = (run / "dataset.json").read_bytes()
    ident = json.loads(recorded)
    split, _ = _edit_one_score(Path(data))
    now = load_dataset_spec(f"synthetic:{data}").split_hash(split)
    torch.manual_seed(0)
    with pytest.raises(DataError) as e:
        train_run(cfg, spec, run)
    assert str(e.value) == (f"{run}: dataset synthetic:{Path(data).resolve()} differs from the one the run "
                            f"recorded: split '{split}' hash was {ident['labels_sha256'][split][:SHORT_HASH]}, "
                            f"now {now[:SHORT_HASH]} (same {ident['split_sizes'][split]} images: scores or file "
                            f"names changed)")
    assert (run / "dataset.json").read_bytes() == recorded and not (run / "final.json").exists()
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
