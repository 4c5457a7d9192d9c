"""Output safety: a folder holding another sweep or report, or anything else, is never
overwritten without --force (nothing in it changes); with force it is replaced. Two writers on
one analysis file: see ``test_kill_analysis.test_second_writer_gets_in_use_error_and_changes_nothing``.
"""
from __future__ import annotations

import shutil

import pytest
from faultkit import RUN, one_line_error, run_all, train_args

from landscape.provenance import sha256_file
from landscape.report.build import KIND, _prepare
from landscape.store import write_json
from landscape.train.config import resolve_config
from landscape.train.sweep import MANIFEST, prepare_output


def _snapshot(folder):
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, dataset, training, server):
    root = tmp_path_factory.mktemp("safety")
    other_sweep = root / "other_sweep"                 # the reference sweep: 3 epochs
    shutil.copytree(training.ref, other_sweep)
    plain = root / "plain"                             # a folder of someone's files
    plain.mkdir()
    (plain / "notes.txt").write_text("my notes\n")
    old_report = root / "old_report"                   # the report of another sweep
    old_report.mkdir()
    write_json(old_report / "report.json", {"kind": KIND, "sweep": str(root / "elsewhere")})
    (old_report / "index.html").write_text("<html>another sweep's report</html>\n")
    snaps = {name: _snapshot(root / name) for name in ("other_sweep", "plain", "old_report")}
    args = train_args(dataset, other_sweep)
    args[args.index("--epochs") + 1] = "2"             # a different sweep
    cases = {
        "train_over_sweep": args,
        "train_over_plain": train_args(dataset, plain),
        "report_over_report": ["report", training.ref, "--out", old_report],
        "report_over_plain": ["report", training.ref, "--out", plain],
    }
    results = run_all(server, {k: [str(a) for a in v] for k, v in cases.items()})
    return {"root": root, "r": results, "before": snaps}


def test_train_refuses_a_folder_holding_another_sweep(guarded):
    root = guarded["root"]
    one_line_error(guarded["r"]["train_over_sweep"], str(root / "other_sweep"), "holds a different sweep",
                   "differs in: epochs", "--force")
    assert _snapshot(root / "other_sweep") == guarded["before"]["other_sweep"]


def test_train_refuses_a_non_empty_folder(guarded):
    root = guarded["root"]
    one_line_error(guarded["r"]["train_over_plain"], str(root / "plain"), "not empty", "--force")
    assert _snapshot(root / "plain") == guarded["before"]["plain"]


def test_report_refuses_another_sweeps_report_and_other_folders(guarded):
    root = guarded["root"]
    one_line_error(guarded["r"]["report_over_report"], str(root / "old_report"),
                   "holds the report of another sweep", str(root / "elsewhere"), "--force")
    one_line_error(guarded["r"]["report_over_plain"], str(root / "plain"), "holds no landscape report", "--force")
    assert _snapshot(root / "old_report") == guarded["before"]["old_report"]
    assert _snapshot(root / "plain") == guarded["before"]["plain"]


def test_force_replaces_and_same_sweep_report_regenerates_in_place(tmp_path, dataset, training):
    sweep = training.ref
    own = tmp_path / "own"                            # this sweep's report: regenerated in place
    own.mkdir()
    write_json(own / "report.json", {"kind": KIND, "sweep": str(sweep.resolve())})
    (own / "extra.txt").write_text("kept\n")
    _prepare(own, False, sweep)
    assert (own / "extra.txt").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x\n")
    _prepare(foreign, True, sweep)                    # --force: emptied for the new report
    assert foreign.is_dir() and not any(foreign.iterdir())

    out = tmp_path / "sweep"
    shutil.copytree(sweep, out)
    cfg = resolve_config({}, {"dataset": f"synthetic:{dataset}", "model": "micro", "batch_sizes": [8],
                              "epochs": 1, "device": "cpu"})
    prepare_output(cfg, out, force=True)              # --force: the other sweep is gone, a new manifest
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] and not (out / RUN).exists()


@pytest.fixture(scope="module")
def forced(tmp_path_factory, dataset, training, server):
    """--force pointed at the command's own inputs, and at a symlink: every case refused, nothing deleted."""
    root = tmp_path_factory.mktemp("forced")
    sweep = root / "sweep"
    shutil.copytree(training.ref, sweep)
    data = root / "data"
    shutil.copytree(dataset, data)
    link = root / "link"
    link.symlink_to(root / "plain")
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("mine\n")
    snaps = {name: _snapshot(root / name) for name in ("sweep", "data", "plain")}
    cases = {
        "report_into_sweep": ["report", sweep, "--out", sweep, "--force"],
        "report_above_sweep": ["report", sweep, "--out", root, "--force"],
        "train_over_dataset": train_args(data, data, "--force"),
        "train_above_dataset": train_args(data, root, "--force"),
        "train_into_link": train_args(data, link, "--force"),
    }
    results = run_all(server, {k: [str(a) for a in v] for k, v in cases.items()})
    return {"root": root, "r": results, "before": snaps}


@pytest.mark.parametrize("case,needle", [("report_into_sweep", "is the input"),
                                         ("report_above_sweep", "contains the input"),
                                         ("train_over_dataset", "is the input"),
                                         ("train_above_dataset", "contains the input"),
                                         ("train_into_link", "symbolic link")])
def test_force_never_deletes_an_input_or_follows_a_link(forced, case, needle):
    one_line_error(forced["r"][case], needle)
    root = forced["root"]
    for name, snap in forced["before"].items():
        assert _snapshot(root / name) == snap, f"{case} changed {name}"
