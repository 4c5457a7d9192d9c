"""Progress reports of the Hessian estimators, analyze_hessian, the sharpness suite and the status line."""
from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from landscape.analyze.progress import status_progress, status_text
from landscape.hessian import analyze_hessian
from landscape.hessian.estimators import hessian_trace, spectral_density, top_eigenvalues
from landscape.hessian.operator import HessianOperator
from landscape.sharpness import analyze_sharpness

DT = torch.float64


def make_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(DT)
    X, Y = torch.randn(40, 4, dtype=DT), torch.randn(40, 2, dtype=DT)
    return model, nn.MSELoss(), [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 40, 16)]


def products(infos, part):
    return [i["products"] for i in infos if i["part"] == part]


def test_estimators_report_monotone_products_ending_at_the_result_count():
    model, crit, batches = make_mlp()
    with HessianOperator(model, crit, batches) as op:
        seen: list[dict] = []
        eig = top_eigenvalues(op, 3, tol=1e-6, stop="eigenvalue", progress=seen.append)
        tr = hessian_trace(op, n_matvecs=12, progress=seen.append)
        den = spectral_density(op, n_runs=2, steps=8, progress=seen.append)
    for part, res, budget in (("topk", eig, 200), ("trace", tr, 12), ("density", den, 16)):
        p = products(seen, part)
        assert p and all(b > a for a, b in zip(p, p[1:])), (part, p)
        assert p[-1] == res.n_matvecs
        assert {i["budget"] for i in seen if i["part"] == part} == {budget}
    last_topk = [i for i in seen if i["part"] == "topk"][-1]
    np.testing.assert_allclose(last_topk["eigenvalues"], eig.eigenvalues, rtol=1e-12)
    assert len(last_topk["errors"]) == 3
    assert all(i["eta"] >= 0 for i in seen)
    assert products(seen, "trace")[-1] == 12                   # fixed budget: eta 0 at the end
    assert [i for i in seen if i["part"] == "trace"][-1]["eta"] == 0.0


def test_analyze_hessian_progress_names_the_block_and_plain_calls_work():
    model, crit, batches = make_mlp()
    seen: list[dict] = []
    out = analyze_hessian(model, crit, batches, top_k=2, trace_matvecs=6, progress=seen.append)
    plain = analyze_hessian(model, crit, batches, top_k=2, trace_matvecs=6)
    np.testing.assert_array_equal(out.topk.eigenvalues, plain.topk.eigenvalues)
    assert {i["block"] for i in seen} == {""}
    assert products(seen, "topk")[-1] == out.topk.n_matvecs
    assert products(seen, "trace")[-1] == out.trace.n_matvecs == 6


def test_status_line_text_and_throttle():
    buf = io.StringIO()
    cb = status_progress("run_0", stream=buf, interval=3600.0)
    cb(dict(part="topk", products=1, budget=200, eta=65.0, eigenvalues=[10.2345678, 1.5], block=""))
    cb(dict(part="topk", products=2, budget=200, eta=64.0, eigenvalues=[10.2, 1.5], block=""))   # throttled
    cb(dict(part="trace", products=1, budget=60, eta=5.0, block=""))                             # new part
    cb(dict(measure="keskar eps=0.001 full", step=0, total=2, eta=float("nan")))
    cb(dict(measure="done", step=2, total=2, eta=0.0))
    assert buf.getvalue().splitlines() == [
        "run_0 hessian topk: 1/200 products, lambda 10.235 1.5, eta 1m05s",
        "run_0 hessian trace: 1/60 products, eta 5s",
        "run_0 sharpness keskar eps=0.001 full: step 0/2, eta ?",
        "run_0 sharpness done: step 2/2, eta 0s",
    ]
    assert status_text("r", dict(part="topk", products=3, budget=9, eta=7200.0, block="stage0")) == \
        "r hessian topk [stage0]: 3/9 products, eta 2h00m"
    off = io.StringIO()
    status_progress("run_0", enabled=False, stream=off)(dict(part="topk", products=1, budget=2, eta=1.0))
    assert off.getvalue() == ""


def test_sharpness_suite_reports_steps():
    model, crit, batches = make_mlp()
    seen: list[dict] = []
    analyze_sharpness(model, crit, batches, measures=("average",), rho_average=(0.05, 0.1),
                      step_progress=seen.append)
    steps = [i for i in seen if "evaluations" not in i]
    assert [(i["measure"], i["step"], i["total"]) for i in steps] == [
        ("average rho=0.05", 0, 2), ("average rho=0.1", 1, 2), ("done", 2, 2)]
    assert np.isnan(steps[0]["eta"]) and steps[1]["eta"] >= 0 and steps[2]["eta"] == 0.0


def test_sharpness_progress_counts_every_loss_evaluation_of_a_measure():
    from landscape.sharpness.objective import PerturbedLoss

    model, crit, batches = make_mlp()
    calls = {"n": 0}
    original = PerturbedLoss.evaluate

    def counted(self, *a, **k):
        calls["n"] += 1
        return original(self, *a, **k)
    seen: list[dict] = []
    PerturbedLoss.evaluate = counted
    try:
        suite = analyze_sharpness(model, crit, batches, measures=("keskar",), eps=(1e-3,),
                                  keskar_spaces=("full",), step_progress=seen.append)
    finally:
        PerturbedLoss.evaluate = original
    counts = [i["evaluations"] for i in seen if "evaluations" in i]
    assert counts == list(range(1, calls["n"] + 1)) and calls["n"] >= suite.keskar[0].n_evals > 1
    line = status_text("run", next(i for i in seen if i.get("evaluations") == 3))
    assert line.startswith("run sharpness keskar") and ", 3 loss evaluations, eta" in line
