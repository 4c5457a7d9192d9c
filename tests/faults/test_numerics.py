"""Numerics: a diverging run stops cleanly with its last good checkpoint; NaN/inf weights are refused.

The diverging run is ``cli.py train`` in its own process with the training loss replaced by one
that turns NaN at its 11th call (epoch 1, step 3 of 8): the same sweep as the reference run, so
the checkpoint it keeps must be bit-identical to the reference run's epoch-0 checkpoint.
"""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from faultkit import HESSIAN, RUN, SHARPNESS, SURFACE, one_line_error, run_all, train_args
from torch import nn

from landscape.analyze.inputs import load_analysis_input
from landscape.errors import NumericsError
from landscape.hessian import analyze_hessian
from landscape.models.checkpoint import build_model, load_checkpoint
from landscape.params import check_finite_parameters
from landscape.provenance import hash_state
from landscape.sharpness import analyze_sharpness
from landscape.surface import compute_surface

NAN_AT_CALL_11 = textwrap.dedent("""
    import json, sys
    import landscape.train.trainer as run_mod
    from landscape.train.losses import IQALoss

    calls = {"n": 0}

    class NaNAtCall11(IQALoss):
        def forward(self, pred, target):
            calls["n"] += 1
            loss = super().forward(pred, target)
            return loss * float("nan") if calls["n"] == 11 else loss

    run_mod.IQALoss = NaNAtCall11
    import cli
    cli.main(json.loads(sys.argv[1]))
""")


@pytest.fixture(scope="module")
def numerics(tmp_path_factory, dataset, training, crafted, server):
    root = tmp_path_factory.mktemp("numerics")
    script = root / "nan_at_11.py"
    script.write_text(NAN_AT_CALL_11)
    diverge = server.start(json.dumps(train_args(dataset, root / "diverged")), script=script, name="diverge")
    huge_lr = train_args(dataset, root / "huge_lr")
    huge_lr[huge_lr.index("--lr") + 1] = "1e6"
    cases = {"huge_lr": huge_lr, "nan_hessian": [*HESSIAN, crafted.nan], "inf_sharpness": [*SHARPNESS, crafted.inf],
             "nan_surface": [*SURFACE, crafted.nan]}
    results = run_all(server, {k: [str(a) for a in v] for k, v in cases.items()})
    results["diverge"] = diverge.wait()
    return {"root": root, "r": results}


def test_diverging_run_stops_cleanly_and_keeps_the_last_good_checkpoint(numerics, training):
    res = numerics["r"]["diverge"]
    assert res.rc == 1, res.describe()                       # the sweep did not finish; no crash
    assert "Traceback" not in res.err and "error:" not in res.err
    assert (f"{RUN}: DIVERGED: loss became NaN/inf in epoch 1 (found by step 3 of 8); run stopped; "
            f"last good state kept: last.pt is epoch 0, best.pt epoch 0") in res.out
    run = numerics["root"] / "diverged" / RUN
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "diverged" and final["metrics"]["selected_epoch"] == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    epoch0 = load_checkpoint(training.ref_run / "epoch_000.pt").content_hash   # the uninterrupted run's epoch 0
    for name in ("last.pt", "best.pt", "epoch_000.pt"):
        ck = load_checkpoint(run / name)
        assert ck.content_hash == epoch0 and ck.meta["epoch"] == 0, name
        check_finite_parameters(build_model(ck), name)
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["epoch"] == 0 and hash_state(state["model"]) == epoch0
    assert not (run / "epoch_001.pt").exists() and not list(run.glob(".*.tmp"))


def test_absurd_learning_rate_diverges_without_checkpoints_or_traceback(numerics):
    res = numerics["r"]["huge_lr"]
    assert res.rc == 1, res.describe()
    assert "Traceback" not in res.err and "error:" not in res.err
    assert f"{RUN}: DIVERGED: loss became NaN/inf in epoch 0" in res.out
    assert "no checkpoint (diverged in the first epoch)" in res.out
    run = numerics["root"] / "huge_lr" / RUN
    assert json.loads((run / "final.json").read_text())["status"] == "diverged"
    assert not list(run.glob("*.pt"))


@pytest.mark.parametrize("case,value", [("nan_hessian", "nan"), ("inf_sharpness", "inf"), ("nan_surface", "nan")])
def test_analyzers_refuse_non_finite_weights(numerics, crafted, case, value):
    path = getattr(crafted, value)
    one_line_error(numerics["r"][case], str(path), "parameter 'head.4.weight' holds NaN or infinite values")


def test_library_analyzers_refuse_non_finite_weights(crafted, tmp_path):
    with pytest.raises(NumericsError, match=rf"{crafted.nan}: parameter 'head.4.weight' holds NaN"):
        load_analysis_input(crafted.nan, samples=4, batch_size=4, device="cpu")
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8)
    crit = lambda out, t: ((out.reshape(-1) - t) ** 2).mean()  # noqa: E731
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    for call in (lambda: analyze_hessian(model, crit, [(x, y)], top_k=1, trace=False),
                 lambda: analyze_sharpness(model, crit, [(x, y)], measures=["average"], rho_average=[0.1]),
                 lambda: compute_surface(model, crit, {"train": [(x, y)]}, tmp_path, "-1:1:3")):
        with pytest.raises(NumericsError, match="'weight' holds NaN or infinite values"):
            call()
    assert not list(tmp_path.iterdir())                              # nothing stored, not even directions
