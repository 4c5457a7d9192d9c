"""Results keyed by their settings, and a report that never mixes settings (issue 15.1, 15.7, 16.5).

Synthetic sweeps: five one-seed configurations (batch sizes 8 ... 128) with a stored ``final.json``,
a tiny ``best.pt`` (the report only reads its content hash) and Hessian/sharpness results written
by the real storage code, with the provenance an analysis writes.
"""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from scipy import stats as st
from torch import nn

from landscape.analyze.jobs import trained_runs
from landscape.errors import LandscapeError
from landscape.hessian import analyze_hessian
from landscape.hessian.results import HessianEigen
from landscape.hessian.storage import hessian_results, load_hessian_result, save_hessian_result
from landscape.models.checkpoint import save_checkpoint
from landscape.models.swin_iqa import model_config
from landscape.provenance import content_key, hash_indices
from landscape.report.analysis import compute_stats
from landscape.report.build import INCOMPLETE, KIND, build_report
from landscape.report.collect import collect_sweep
from landscape.report.settings import parse_filters
from landscape.sharpness import KeskarConfig, analyze_sharpness
from landscape.store import attrs_to_h5, read_json, write_json

BATCHES = (8, 16, 32, 64, 128)
GAPS = (0.10, 0.30, 0.20, 0.40, 0.50)
LAMBDA_64 = (1.0, 2.0, 3.0, 4.0, 5.0)
CRITERION = {"name": "l1+ranking", "ranking_alpha": 0.5, "ranking_margin": 0.0}
TOPK_SPEC = dict(k=1, which="LA", tol=1e-3, stop="residual", max_iter=200, max_basis=None, start="auto", seed=0,
                 eigenvectors=False)


def _name(b: int, seed: int = 0) -> str:
    return f"bs{b}_s{seed}"


def make_sweep(root, metrics_of=None, seeds=(0,)):
    """A finished sweep: config.json, final.json and a tiny best.pt per run; returns {run name: ckpt hash}."""
    runs = [(b, s) for b in BATCHES for s in seeds]
    write_json(root / "sweep.json", {"runs": [{"name": _name(b, s)} for b, s in runs]})
    hashes = {}
    for i, (b, s) in enumerate(runs):
        run = root / _name(b, s)
        run.mkdir(parents=True)
        write_json(run / "config.json", {"batch_size": b, "lr_rule": "sqrt", "accumulate": 1, "seed": s})
        gap = GAPS[BATCHES.index(b)]
        metrics = {"train_srcc": 0.9, "test_srcc": 0.9 - gap, "srcc_gap": gap, "samples_per_s": 100.0 + i,
                   "peak_memory_bytes": 2 ** 20}
        if metrics_of is not None:
            metrics.update(metrics_of(b, s))
        write_json(run / "final.json", {"status": "finished", "metrics": metrics})
        lin = nn.Linear(2, 1)
        with torch.no_grad():
            lin.weight.fill_(float(i))
        hashes[run.name] = save_checkpoint(run / "best.pt", lin, model_config("micro").to_dict())
    return hashes


def topk_prov(ckpt_hash: str, samples: int, created: str) -> dict:
    """The provenance ``analyze hessian`` writes for the top eigenvalue (fields the report reads)."""
    return {"created_utc": created, "checkpoint_hash": ckpt_hash, "seed": 0, "batch_size": 16,
            "subsets": {"train": {"n": samples, "indices_sha256": hash_indices(range(samples))}},
            "criterion": CRITERION, "method": "hessian/topk", "settings": TOPK_SPEC, "n_samples": samples,
            "mode": "eval", "weight_decay": 0.0}


def store_topk(run, ckpt_hash: str, lam: float, samples: int, created: str = "2024-01-01T00:00:00+00:00") -> None:
    eig = HessianEigen(eigenvalues=np.array([lam]), residuals=np.array([1e-4]), error_estimates=np.array([1e-6]),
                       converged=np.array([True]), which="LA", tol=1e-3, stop="residual", max_iter=200,
                       n_matvecs=7, n_restarts=0, seconds=0.1, mode="eval", n_params=3, weight_decay=0.0, seed=0)
    save_hessian_result(run / "analysis.h5", eig, topk_prov(ckpt_hash, samples, created),
                        key=content_key({"checkpoint": ckpt_hash, "samples": samples}))


def lambda_tau(data) -> float:
    stats = compute_stats(data, n_boot=2000)
    (ms,) = [m for m in stats.correlations if m.measure == "hessian_lambda_max" and m.target == "srcc_gap"]
    return ms.correlation.tau


TAU_64 = st.kendalltau(LAMBDA_64, GAPS).statistic


@pytest.fixture
def sweep64(tmp_path):
    root = tmp_path / "sweep"
    hashes = make_sweep(root)
    for b, lam in zip(BATCHES, LAMBDA_64):
        store_topk(root / _name(b), hashes[_name(b)], lam, 64)
    return root, hashes


# ------------------------------------------------------------------------------------------ storage


def test_other_settings_coexist_in_analysis_h5_and_same_settings_are_reused(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    model = model.double()
    h5 = tmp_path / "analysis.h5"

    def run(n):
        prov = {"checkpoint_hash": "c0", "seed": 0, "batch_size": 16, "criterion": {"name": "mse"},
                "subsets": {"train": {"n": n, "indices_sha256": hash_indices(range(n))}}}
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]
        return analyze_hessian(model, nn.MSELoss(), batches, top_k=1, tol=1e-10, trace=False, h5_path=h5,
                               provenance=prov)

    def dense_top(n):      # mean MSE of a linear model: H = 2 A^T A / n, A = [x, 1]
        a = torch.cat([x[:n], torch.ones(n, 1, dtype=torch.float64)], 1)
        return float(torch.linalg.eigvalsh(2 * a.T @ a / n)[-1])

    r64 = run(64)
    r32 = run(32)                       # the re-analysis with other settings
    assert r64.topk.eigenvalues[0] == pytest.approx(dense_top(64), rel=1e-8)
    assert r32.topk.eigenvalues[0] == pytest.approx(dense_top(32), rel=1e-8)
    assert abs(dense_top(64) - dense_top(32)) > 1e-3
    stored = hessian_results(h5, "topk")
    assert [p["n_samples"] for _, _, p in stored] == [32, 64]          # latest first, the earlier one kept
    assert [float(r.eigenvalues[0]) for r, _, _ in stored] == [float(r32.topk.eigenvalues[0]),
                                                                float(r64.topk.eigenvalues[0])]
    with h5py.File(h5, "r") as f:       # the latest at the old path, the other under earlier/<key>
        assert f["hessian/topk"].attrs["key"] == stored[0][1]
        assert list(f["hessian/earlier/topk"]) == [stored[1][1]]
    again = run(64)                     # same settings as the earlier one: reused, not recomputed
    assert again.loaded == ["topk"] and again.n_matvecs == 0
    assert again.topk.eigenvalues[0] == r64.topk.eigenvalues[0]
    assert load_hessian_result(h5, "topk", key=stored[1][1])[0].eigenvalues[0] == r64.topk.eigenvalues[0]
    assert len(hessian_results(h5, "topk")) == 2                      # nothing duplicated


def test_old_layout_file_reads_as_one_setting(tmp_path):
    root = tmp_path / "sweep"
    hashes = make_sweep(root)
    for b, lam in zip(BATCHES, LAMBDA_64):          # written as the earlier code did: hessian/topk only
        with h5py.File(root / _name(b) / "analysis.h5", "w") as f:
            g = f.create_group("hessian/topk")
            for name, value in (("eigenvalues", [lam]), ("residuals", [1e-4]), ("error_estimates", [1e-6]),
                                ("converged", [True])):
                g.create_dataset(name, data=np.array(value))
            attrs_to_h5(g, {"kind": "topk", "key": "0123456789abcdef",
                            "provenance": topk_prov(hashes[_name(b)], 64, "2023-05-01T00:00:00+00:00"),
                            "which": "LA", "tol": 1e-3, "stop": "residual", "max_iter": 200, "n_matvecs": 7,
                            "n_restarts": 0, "seconds": 0.1, "mode": "eval", "n_params": 3, "weight_decay": 0.0,
                            "seed": 0, "method": "lanczos", "block": "", "start": "auto"})
    data = collect_sweep(root)
    assert [r.row["hessian_lambda_max"] for r in data.runs] == list(LAMBDA_64)
    assert lambda_tau(data) == pytest.approx(TAU_64, abs=1e-12)
    (choice,) = [c for c in data.choices if c.measure == "hessian_lambda_max"]
    assert choice.settings["samples"] == 64 and len(choice.runs) == 5 and not data.not_compared
    # a new analysis of one run with other settings keeps the old-layout result beside it
    store_topk(root / _name(8), hashes[_name(8)], 9.0, 32)
    assert sorted(p["n_samples"] for _, _, p in hessian_results(root / _name(8) / "analysis.h5", "topk")) == [32, 64]


# ------------------------------------------------------------------------------------------ report


def test_reanalysis_of_one_run_keeps_the_common_setting(sweep64):
    root, hashes = sweep64
    before = collect_sweep(root)
    assert lambda_tau(before) == pytest.approx(TAU_64, abs=1e-12)
    store_topk(root / _name(8), hashes[_name(8)], 9.0, 32, created="2024-02-01T00:00:00+00:00")
    assert st.kendalltau((9.0, *LAMBDA_64[1:]), GAPS).statistic != pytest.approx(TAU_64)   # mixing would show
    after = collect_sweep(root)
    assert len(hessian_results(root / _name(8) / "analysis.h5", "topk")) == 2
    assert [r.row["hessian_lambda_max"] for r in after.runs] == list(LAMBDA_64)
    assert lambda_tau(after) == pytest.approx(TAU_64, abs=1e-12)
    (choice,) = [c for c in after.choices if c.measure == "hessian_lambda_max"]
    assert choice.settings["samples"] == 64 and not after.not_compared


def test_mixed_settings_are_not_compared_and_named(tmp_path):
    root = tmp_path / "sweep"
    hashes = make_sweep(root)
    for b, lam in zip(BATCHES, LAMBDA_64):
        store_topk(root / _name(b), hashes[_name(b)], 9.0 if b == 8 else lam, 32 if b == 8 else 64)
    data = collect_sweep(root)
    assert "hessian_lambda_max" not in data.measures
    assert all("hessian_lambda_max" not in r.row for r in data.runs)
    assert data.not_compared == [
        "hessian_lambda_max: not compared: runs were analysed with different settings "
        "(bs8_s0: samples=32, indices=" + content_key({"train": hash_indices(range(32))}, 12) + "; "
        "bs16_s0, bs32_s0, bs64_s0, bs128_s0: samples=64, indices=" + content_key({"train": hash_indices(range(64))}, 12)
        + "); choose one with --samples 64 or --setting hessian.samples=64"]
    # the report says so: in its output, summary.md, index.html and report.json; no "None." for it
    res = build_report(root, tmp_path / "report", log=lambda m: None)
    assert res.not_compared == data.not_compared
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Not compared\n\n- " + data.not_compared[0] in summary
    assert "hessian_lambda_max: not compared" in (tmp_path / "report" / "index.html").read_text()
    rep = read_json(tmp_path / "report" / "report.json")
    assert rep["not_compared"] == data.not_compared
    assert rep["settings"]["hessian_lambda_max"]["settings"] is None
    assert not (tmp_path / "report" / INCOMPLETE).exists()
    # --samples 64: the four runs of that setting are compared, bs8_s0 is listed as lacking it
    only64 = collect_sweep(root, parse_filters(samples=64))
    assert not only64.not_compared
    assert lambda_tau(only64) == pytest.approx(st.kendalltau(LAMBDA_64[1:], GAPS[1:]).statistic, abs=1e-12)
    assert "bs8_s0: hessian_lambda_max (no stored result with samples=64)" in only64.missing


def test_several_common_settings_ask_and_samples_picks(sweep64):
    root, hashes = sweep64
    lam32 = (5.0, 1.0, 4.0, 2.0, 3.0)
    for b, lam in zip(BATCHES, lam32):
        store_topk(root / _name(b), hashes[_name(b)], lam, 32)
    data = collect_sweep(root)
    assert "hessian_lambda_max" not in data.measures
    (line,) = data.not_compared
    assert line.startswith("hessian_lambda_max: not compared: 2 settings are stored for every run (")
    assert "samples=32" in line and "samples=64" in line and line.endswith(
        "choose one with --samples 32 or --setting hessian.samples=32")
    assert lambda_tau(collect_sweep(root, parse_filters(samples=64))) == pytest.approx(TAU_64, abs=1e-12)
    by_setting = collect_sweep(root, parse_filters(settings=["hessian.samples=32"]))
    assert lambda_tau(by_setting) == pytest.approx(st.kendalltau(lam32, GAPS).statistic, abs=1e-12)
    res = build_report(root, root.parent / "report", samples=64, log=lambda m: None)
    assert not res.not_compared
    settings_md = (root.parent / "report" / "settings.md").read_text()
    assert "λ_max" in settings_md and "samples=64" in settings_md and "samples=32" not in settings_md
    rep = read_json(root.parent / "report" / "report.json")
    assert rep["settings"]["hessian_lambda_max"]["settings"]["samples"] == 64
    assert len(rep["settings"]["hessian_lambda_max"]["runs"]) == 5


def test_setting_option_errors_are_one_line(sweep64):
    root, _ = sweep64
    with pytest.raises(LandscapeError, match=r"^--setting 'hessian\.samples': expected MEASURE\.KEY=VALUE"):
        parse_filters(settings=["hessian.samples"])
    with pytest.raises(LandscapeError, match=r"^--samples 0: need a positive number of samples$"):
        parse_filters(samples=0)
    with pytest.raises(LandscapeError, match=r"^--setting keskar\.eps=1: no stored measure 'keskar' "
                                             r"\(stored: hessian, hessian_lambda_max\)$"):
        collect_sweep(root, parse_filters(settings=["keskar.eps=1"]))
    with pytest.raises(LandscapeError, match=r"^--setting hessian\.rho=1: no stored hessian result has a "
                                             r"setting 'rho' \(settings: batch_size, criterion, "):
        collect_sweep(root, parse_filters(settings=["hessian.rho=1"]))


def test_keskar_runs_with_other_samples_are_not_compared(tmp_path):
    root = tmp_path / "sweep"
    hashes = make_sweep(root)
    model = nn.Linear(3, 1)
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    for b in BATCHES:
        n = 32 if b == 8 else 64
        prov = {"checkpoint_hash": hashes[_name(b)], "seed": 0, "batch_size": 16, "criterion": {"name": "mse"},
                "subsets": {"train": {"n": n, "indices_sha256": hash_indices(range(n))}}}
        analyze_sharpness(model, nn.MSELoss(), [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)],
                          measures=("keskar",), eps=(1e-3,), keskar_spaces=("full",), keskar=KeskarConfig(maxiter=2),
                          h5_path=root / _name(b) / "analysis.h5", provenance=prov)
    data = collect_sweep(root)
    (line,) = data.not_compared
    assert line.startswith("keskar_full_eps0.001: not compared: runs were analysed with different settings "
                           "(bs8_s0: samples=32, indices=")
    assert "; bs16_s0, bs32_s0, bs64_s0, bs128_s0: samples=64, indices=" in line
    assert line.endswith("); choose one with --samples 64 or --setting keskar.samples=64")
    assert "keskar_full_eps0.001" not in data.measures
    only64 = collect_sweep(root, parse_filters(settings=["keskar.samples=64"]))
    assert only64.measures == ["keskar_full_eps0.001"] and not only64.not_compared
    assert "keskar_full_eps0.001" not in only64.runs[0].row and all(
        math.isfinite(r.row["keskar_full_eps0.001"]) for r in only64.runs[1:])


# ------------------------------------------------------------------------------------------ values


def test_non_finite_metric_is_named_and_left_out_of_means(tmp_path):
    root = tmp_path / "sweep"
    test_srcc = {(8, 0): 0.61, (8, 1): 0.67, (8, 2): float("nan"), (16, 2): float("inf")}

    def metrics(b, s):
        out = {"test_srcc": test_srcc.get((b, s), 0.5 + 0.01 * s)}
        if (b, s) == (32, 1):
            out["srcc_gap"] = 1e308                        # no correlation difference is that large
        return out
    make_sweep(root, metrics, seeds=(0, 1, 2))
    data = collect_sweep(root)
    assert data.invalid == ["bs8_s2: non-finite test_srcc (nan)", "bs16_s2: non-finite test_srcc (inf)",
                            "bs32_s1: srcc_gap = 1e+308 is outside [-2, 2]"]
    stats = compute_stats(data, n_boot=2000)
    by_bs = {a.config["batch_size"]: a for a in stats.configs}
    assert by_bs[8].mean["test_srcc"] == pytest.approx(float(np.mean([0.61, 0.67])), abs=1e-15)
    assert by_bs[8].n["test_srcc"] == 2 and by_bs[16].n["test_srcc"] == 2
    assert by_bs[32].mean["srcc_gap"] == pytest.approx(float(np.mean([GAPS[2], GAPS[2]])), abs=1e-15)
    assert by_bs[32].n["srcc_gap"] == 2
    res = build_report(root, tmp_path / "report", log=lambda m: None)
    assert res.invalid == data.invalid
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "3 value(s) left out of every mean and correlation (listed below)." in summary
    assert "## Left out of means\n\n- bs8_s2: non-finite test_srcc (nan)\n" in summary
    assert read_json(tmp_path / "report" / "report.json")["left_out"] == data.invalid


# ------------------------------------------------------------------------------------------ jobs


def test_partial_report_regenerates_in_place(sweep64, tmp_path):
    root, _ = sweep64
    out = tmp_path / "partial"
    out.mkdir()
    write_json(out / INCOMPLETE, {"kind": KIND, "sweep": str(root.resolve())})   # what a killed report leaves
    (out / "table.md").write_text("half a table")
    res = build_report(root, out, log=lambda m: None)
    assert res.index == out / "index.html" and res.index.is_file()
    assert not (out / INCOMPLETE).exists() and read_json(out / "report.json")["kind"] == KIND
    assert (out / "table.md").read_text() != "half a table"
    other = tmp_path / "other_partial"              # a killed report of another sweep still needs --force
    other.mkdir()
    write_json(other / INCOMPLETE, {"kind": KIND, "sweep": str(tmp_path / "elsewhere")})
    with pytest.raises(LandscapeError, match=r"holds the report of another sweep .*--force"):
        build_report(root, other, log=lambda m: None)
    assert sorted(p.name for p in other.iterdir()) == [INCOMPLETE]


def test_unfinished_runs_are_listed_and_skipped(tmp_path):
    root = tmp_path / "sweep"
    make_sweep(root)
    (root / _name(16) / "best.pt").unlink()
    (root / _name(64) / "best.pt").unlink()
    logs = []
    runs = trained_runs([root], "best", logs.append)
    assert [r.name for r in runs] == ["bs8_s0", "bs32_s0", "bs128_s0"]
    assert logs == ["not analysed (2 run(s) without 'best.pt', not trained yet): bs16_s0, bs64_s0"]
    assert [r.name for r in trained_runs([root / _name(16)], "best")] == ["bs16_s0"]    # named: resolve says why
    for b in (8, 32, 128):
        (root / _name(b) / "best.pt").unlink()
    with pytest.raises(LandscapeError, match=r"no run has a 'best.pt' checkpoint yet \(not trained: bs8_s0, "
                                             r"bs16_s0, bs32_s0, bs64_s0, bs128_s0\)$"):
        trained_runs([root], "best")


def test_a_run_reached_through_a_symlink_counts_once(tmp_path):
    root = tmp_path / "sweep"
    make_sweep(root)
    manifest = read_json(root / "sweep.json")
    (root / "bs8_again").symlink_to(root / _name(8), target_is_directory=True)
    write_json(root / "sweep.json", {"runs": [*manifest["runs"], {"name": "bs8_again"}]})
    with pytest.warns(UserWarning, match=r"bs8_again: the same run folder as bs8_s0 \(a link\): counted once"):
        data = collect_sweep(root)
    assert sorted(r.name for r in data.runs) == sorted(_name(b) for b in BATCHES)
    assert trained_runs([root]) == [root / _name(b) for b in BATCHES]      # analyses count it once too
