"""Partial work in real processes: a sweep with an unfinished run is analysed for its finished runs
(the others listed), and a report killed mid-way is regenerated in place without ``--force``."""
from __future__ import annotations

import json
import shutil
import signal

from faultkit import RUN, one_line_error, wait_for

from landscape.provenance import sha256_file

HESSIAN = ["analyze", "hessian", "--samples", "8", "--batch-size", "8", "--top-k", "1", "--trace-matvecs", "4",
           "--device", "cpu"]
WAITING = "bs64_acc1_sqrt_seed0"


def _with_unfinished_run(src, dst):
    """A copy of the sweep ``src`` whose manifest lists a second run that has not been trained."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.h5", "*.lock"))
    manifest = json.loads((dst / "sweep.json").read_text())
    manifest["runs"].append({**manifest["runs"][0], "index": len(manifest["runs"]), "name": WAITING,
                             "batch_size": 64})
    (dst / "sweep.json").write_text(json.dumps(manifest))
    (dst / WAITING).mkdir()
    shutil.copy2(dst / RUN / "config.json", dst / WAITING / "config.json")
    return dst


def test_sweep_with_an_unfinished_run_analyses_the_finished_ones(tmp_path, training, server):
    sweep = _with_unfinished_run(training.ref, tmp_path / "sweep")
    res = server.run(*HESSIAN, str(sweep), name="partial-sweep")
    assert res.rc == 0, res.describe()
    assert any(ln.startswith("not analysed (1 run(s) without 'best.pt', not trained yet): " + WAITING)
               for ln in res.err_lines + res.out.splitlines()), res.describe()
    assert (sweep / RUN / "analysis.h5").exists() and not (sweep / WAITING / "analysis.h5").exists()
    # no trained run at all: one line, exit 2
    (sweep / RUN / "best.pt").rename(sweep / RUN / "kept.pt")
    res = server.run(*HESSIAN, str(sweep), name="none-trained")
    one_line_error(res, str(sweep), "no run has a 'best.pt' checkpoint yet", RUN, WAITING)


def test_killed_report_is_regenerated_in_place_without_force(tmp_path, training, server):
    sweep = tmp_path / "sweep"
    shutil.copytree(training.ref, sweep, ignore=shutil.ignore_patterns("*.lock"))
    inputs = {str(p): sha256_file(p) for p in sweep.rglob("*") if p.is_file()}
    out = tmp_path / "report"
    job = server.start("report", str(sweep), "--out", str(out), "--n-boot", "2000", name="report-victim")
    wait_for((out / ".report-incomplete").exists, "the report's incomplete marker", job, every=0.002)
    job.send(signal.SIGKILL)
    killed = job.wait()
    assert killed.rc == -signal.SIGKILL and (out / ".report-incomplete").exists() and not (out / "report.json").exists()
    again = server.run("report", str(sweep), "--out", str(out), "--n-boot", "2000", name="report-again")
    assert again.rc == 0, again.describe()
    assert (out / "index.html").exists() and (out / "report.json").exists()
    assert not (out / ".report-incomplete").exists()
    # no input changed
    assert {str(p): sha256_file(p) for p in sweep.rglob("*") if p.is_file() and not p.name.endswith(".lock")} \
        == {k: v for k, v in inputs.items() if not k.endswith(".lock")}
