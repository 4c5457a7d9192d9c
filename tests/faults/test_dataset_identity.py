"""A moved sweep and dataset, analysed by real ``landscape analyze`` processes from another directory.

The reference sweep of the ``training`` fixture records its dataset by absolute root. Copied
elsewhere with its dataset, the original dataset moved away, and analysed from an unrelated
working directory: without ``--dataset`` the command stops with one line naming the missing
absolute root and the option; with ``--dataset FORMAT:ROOT`` (relative to that directory) it
prints the same lambda_1 as the original; with one label changed it is refused.
"""
from __future__ import annotations

import shutil

from faultkit import HESSIAN, REPO, RUN, one_line_error

CHDIR = f'''
import os, sys
sys.path.insert(0, {str(REPO)!r})
os.chdir(sys.argv[1])
import cli
cli.main(sys.argv[2:])
'''


def _copy_sweep(src, dst):
    return shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.h5", "*.lock", "figures"))


def test_moved_sweep_analysed_from_another_directory(tmp_path, training, dataset, server):
    script = tmp_path / "chdir.py"
    script.write_text(CHDIR)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    hessian = [*HESSIAN[:2], "--samples", "8", "--batch-size", "8", "--top-k", "1", "--no-trace", "--device", "cpu"]
    original = _copy_sweep(training.ref, tmp_path / "original")      # records the session dataset's root
    ref = server.run(str(cwd), *hessian, str(original), script=script, name="ident-ref")
    assert ref.rc == 0 and RUN in ref.out, ref.describe()
    moved = tmp_path / "moved"
    _copy_sweep(training.ref, moved / "sweep")
    root = dataset.resolve()
    shutil.move(str(root), moved / "data")                            # the original dataset is gone
    try:
        missing = server.run(str(moved), *hessian, "sweep", script=script, name="ident-missing")
        line = one_line_error(missing, f"sweep/{RUN}: dataset root {root} not found; pass --dataset FORMAT:ROOT")
        again = server.run(str(moved), *hessian, "sweep", "--dataset", "synthetic:data", script=script,
                           name="ident-moved")
        assert again.rc == 0, again.describe()
        csv = moved / "data" / "scores.csv"
        lines = csv.read_text().splitlines()
        header, row = lines[0].split(","), lines[1].split(",")
        i = header.index("score")
        row[i] = repr(float(row[i]) + (-0.5 if float(row[i]) > 50 else 0.5))
        changed = shutil.copytree(moved / "data", moved / "changed")
        (changed / "scores.csv").write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
        refused = server.run(str(moved), *hessian, "sweep", "--dataset", "synthetic:changed", script=script,
                             name="ident-changed")
    finally:
        shutil.move(str(moved / "data"), root)
    assert line.endswith("pass --dataset FORMAT:ROOT")
    assert again.out == ref.out                                       # identical lambda_1 and table
    split = row[header.index("split")]
    one_line_error(refused, f"sweep/{RUN}: dataset synthetic:{changed} differs from the one the run recorded: "
                            f"split '{split}' hash was ", "scores or file names changed")
