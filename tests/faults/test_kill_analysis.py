"""Kill -9 mid-analysis and two writers on one analysis file (conftest ``analyses``).

Each analysis of a copy of the trained reference run is a real ``cli.py analyze ...`` process,
frozen (SIGSTOP) as soon as its first part is on disk -- while the next part is being computed --
then challenged by a second process running the same command, then SIGKILLed and resumed by the
same command. The resumed results must equal those of an uninterrupted process, and the resume
must compute only what was missing.
"""
from __future__ import annotations

import re
import signal

import h5py
import numpy as np
import pytest
from faultkit import (
    HESSIAN_PARTS,
    N_CELLS,
    N_SHARPNESS_PARTS,
    hessian_parts,
    one_line_error,
    sharpness_parts,
    surface_done,
    surface_file,
)

from landscape.hessian import load_hessian_result
from landscape.sharpness import load_sharpness
from landscape.surface import load_surface

VOLATILE = {"seconds", "provenance"}


def test_victims_were_killed_mid_analysis(analyses):
    """Every victim died by SIGKILL with some but not all of its parts stored."""
    for res in analyses.killed.values():
        assert res.rc == -signal.SIGKILL, res.describe()
    assert 1 <= len(analyses.at_kill["hessian"]) < len(HESSIAN_PARTS)
    assert "topk" in analyses.at_kill["hessian"]                 # parts are stored in order
    assert 1 <= len(analyses.at_kill["sharpness"]) < N_SHARPNESS_PARTS
    assert 16 <= analyses.at_kill["surface"] < N_CELLS


@pytest.mark.parametrize("name", ["hessian", "sharpness", "surface"])
def test_second_writer_gets_in_use_error_and_changes_nothing(analyses, name):
    """The same analysis started while another process holds its file stops at once with one
    line naming the file and "in use" (exit 2); the file is byte-identical afterwards."""
    res = analyses.contenders[name]
    target = "analysis.h5" if name != "surface" else "surface-"
    line = one_line_error(res, "in use by another process", target)
    assert str(analyses.runs[name]) in line
    assert analyses.file_sha_after_contender[name] == analyses.file_sha_at_kill[name]


def test_hessian_resume_computes_only_missing_parts_and_equals_uninterrupted(analyses):
    run = analyses.runs["hessian"]
    res = analyses.resumed["hessian"]
    assert res.rc == 0, res.describe()
    kept = sorted(analyses.at_kill["hessian"], key=HESSIAN_PARTS.index)
    missing = [p for p in HESSIAN_PARTS if p not in kept]
    assert (f"reused {len(kept)} stored part(s) ({', '.join(kept)}); "
            f"computed {len(missing)} now ({', '.join(missing)})") in res.err
    assert hessian_parts(run / "analysis.h5") == set(HESSIAN_PARTS)
    with h5py.File(run / "analysis.h5", "r") as f:                 # kept parts were not rewritten
        for part in kept:
            now = dict(f[f"hessian/{part}"].attrs)
            assert now.keys() == analyses.attrs_at_kill[part].keys()
            assert all(np.array_equal(now[k], analyses.attrs_at_kill[part][k]) for k in now)
    for part in HESSIAN_PARTS:
        got, key, prov = load_hessian_result(run / "analysis.h5", part)
        ref, ref_key, ref_prov = load_hessian_result(analyses.ref / "analysis.h5", part)
        assert prov["checkpoint_hash"] == ref_prov["checkpoint_hash"]
        for field, value in vars(ref).items():
            if field in VOLATILE or value is None:
                continue
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                np.testing.assert_allclose(getattr(got, field), value, rtol=1e-10, atol=1e-12, err_msg=field)
            elif isinstance(value, float):
                assert getattr(got, field) == pytest.approx(value, rel=1e-10, abs=1e-12), field
            else:
                assert np.array_equal(getattr(got, field), value), field
    assert got.n_runs == 2 and len(ref.density) > 0


def test_sharpness_resume_computes_only_missing_parts_and_equals_uninterrupted(analyses):
    run = analyses.runs["sharpness"]
    res = analyses.resumed["sharpness"]
    assert res.rc == 0, res.describe()
    n_kept = len(analyses.at_kill["sharpness"])
    assert f"reused {n_kept} stored part(s); computed {N_SHARPNESS_PARTS - n_kept} now" in res.err
    assert len(re.findall(r": stored \(", res.err)) == n_kept
    assert len(re.findall(r": done$", res.err, flags=re.M)) == N_SHARPNESS_PARTS - n_kept
    assert len(sharpness_parts(run / "analysis.h5")) == N_SHARPNESS_PARTS
    got, ref = load_sharpness(run / "analysis.h5"), load_sharpness(analyses.ref / "analysis.h5")
    assert got.keys() == ref.keys() == {"keskar", "average"}
    for measure in ref:
        assert [r["key"] for r in got[measure]] == [r["key"] for r in ref[measure]]
        for a, b in zip(got[measure], ref[measure]):
            for field, value in b.items():
                if field in VOLATILE or field in ("spec", "key", "label", "measure", "complete"):
                    continue
                arr = np.asarray(value)
                if arr.dtype.kind in "fiu" and arr.dtype != bool:
                    np.testing.assert_allclose(np.asarray(a[field], dtype=float), arr.astype(float),
                                               rtol=1e-10, atol=1e-12, err_msg=f"{measure} {field}")
                else:
                    assert a[field] == value, f"{measure} {field}"


def test_surface_resume_computes_only_missing_cells_and_equals_uninterrupted(analyses):
    run = analyses.runs["surface"]
    res = analyses.resumed["surface"]
    assert res.rc == 0, res.describe()
    done = analyses.at_kill["surface"]
    assert f"({N_CELLS}/{N_CELLS} cells, {N_CELLS - done} computed now" in res.out
    got, ref = load_surface(surface_file(run)), load_surface(surface_file(analyses.ref))
    assert got.key == ref.key and got.complete and ref.complete
    assert surface_done(run) == N_CELLS
    assert sorted(got.values) == sorted(ref.values) and "train_loss" in got.values
    for name, values in ref.values.items():
        np.testing.assert_allclose(got.values[name], values, rtol=1e-10, atol=1e-12, equal_nan=True, err_msg=name)


def test_long_analyses_show_progress_on_stderr(analyses):
    """Hessian: products done / budget, current eigenvalue estimates and ETA; sharpness: measure,
    step / total, loss evaluations and ETA (real process, stderr not a terminal)."""
    lines = analyses.ref_result.err_lines
    hess = [ln for ln in lines if " hessian topk: " in ln]
    assert hess and all(re.search(r"topk: \d+/\d+ products, lambda -?[\d.e+-]+, eta (\d+m)?\d+s$", ln)
                        for ln in hess), lines
    assert any(" hessian trace: " in ln for ln in lines) and any(" hessian density: " in ln for ln in lines), lines
    sharp = [ln for ln in lines if " sharpness " in ln and ": step " in ln]
    assert any(re.search(r"sharpness keskar .*: step 0/4, \d+ loss evaluations, eta", ln) for ln in sharp), sharp
    assert any(ln.endswith("sharpness done: step 4/4, eta 0s") for ln in sharp), sharp
