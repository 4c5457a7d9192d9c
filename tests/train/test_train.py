"""Trainer (issue 3): sweep outputs, checkpoints, resume, NaN handling, accumulation, errors.

One tiny synthetic dataset per module (9 references x 21 images of 72 px: 126 train,
21 val, 42 test images), the ``micro`` preset, 1 train and 1 test patch per image.
"""
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from landscape.data import generate_synthetic, predict_images
from landscape.errors import LandscapeError
from landscape.models import create_model, model_config
from landscape.models.checkpoint import build_model, load_checkpoint
from landscape.params import check_finite_parameters
from landscape.provenance import hash_indices, hash_state
from landscape.train import pipeline
from landscape.train import trainer as run_mod
from landscape.train.config import resolve_config
from landscape.train.losses import IQALoss
from landscape.train.schedule import lr_multiplier
from landscape.train.step import accumulate_gradients
from landscape.train.sweep import expand_sweep, prepare_output, run_sweep, sweep_runs
from landscape.train.trainer import RunSpec, check_run_dir, run_config, train_run

TIMING = {"epoch_time_s", "train_time_s", "samples_per_s", "samples_per_s_std", "peak_memory_bytes"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "ds", n_references=9, size=72)


def make_cfg(root, **over):
    values = {"dataset": f"synthetic:{root}", "model": "micro", "batch_sizes": [8, 16], "seeds": [0],
              "lr_scaling": ["sqrt"], "lr": 1e-3, "reference_batch": 8, "epochs": 2, "patience": 0,
              "train_patches": 1, "test_patches": 1, "train_eval_images": 16, "device": "cpu",
              "warmup_epochs": 0, "loss": "l1", "ranking_alpha": 0.5}
    values.update(over)
    return resolve_config({}, values)


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- sweep outputs and checkpoints

def test_sweep_two_batch_sizes_outputs_and_checkpoints(root, tmp_path, monkeypatch):
    cfg = make_cfg(root, accumulate=2, save_every=1)
    calls = []
    real_step = run_mod.train_step

    def spy(model, criterion, optimizer, x, y, accumulate, *args):
        calls.append((x.shape[0], accumulate))
        return real_step(model, criterion, optimizer, x, y, accumulate, *args)

    monkeypatch.setattr(run_mod, "train_step", spy)
    lines = []
    out = tmp_path / "sweep"
    results = run_sweep(cfg, out, progress=False, echo=lines.append)
    assert [r.status for r in results] == ["finished", "finished"]
    assert [p.name for p in sweep_runs(out)] == ["bs8_acc2_sqrt_seed0", "bs16_acc2_sqrt_seed0"]
    assert len(lines) == 2 and "bs8_acc2_sqrt_seed0: finished" in lines[0] and "test SRCC" in lines[1]
    # 126 patches per epoch: batches of 8 (15 full + one of 6) and 16 (7 full + one of 14), K = 2
    assert calls == 2 * ([(8, 2)] * 15 + [(6, 2)]) + 2 * ([(16, 2)] * 7 + [(14, 2)])

    data = pipeline.load_run_data(cfg)
    sub = sorted(int(i) for i in np.random.default_rng(0).choice(126, 16, replace=False))
    assert [r.path for r in data.eval_sets["train"].records] == [data.train[i].path for i in sub]
    for run_dir, b in zip(sweep_runs(out), (8, 16)):
        rc = json.loads((run_dir / "config.json").read_text())
        assert rc["run_lr"] == pytest.approx(1e-3 * math.sqrt(b / 8), rel=1e-12)
        assert (rc["effective_batch"], rc["micro_batch"], rc["accumulate"], rc["world_size"]) == (b, b // 2, 2, 1)
        ds = json.loads((run_dir / "dataset.json").read_text())
        assert ds["train_eval_images"] == 16 and ds["format"] == "synthetic"
        assert ds["train_eval_sha256"] == hash_indices(sub)

        log = _log(run_dir)
        steps = math.ceil(126 / b)
        assert [h["epoch"] for h in log] == [0, 1] and all(h["steps"] == steps for h in log)
        # cosine over 2 epochs, no warmup: first step of epoch 1 is at t = T/2, multiplier 1/2
        assert log[0]["lr"] == pytest.approx(rc["run_lr"]) and log[1]["lr"] == pytest.approx(rc["run_lr"] / 2)
        for h in log:
            assert math.isfinite(h["train_loss"]) and h["train_loss"] > 0
            assert h["samples_per_s"] == pytest.approx(126 / h["train_time_s"])
            assert 0 < h["train_time_s"] < h["epoch_time_s"] and h["peak_memory_bytes"] > 0
            assert h["memory_kind"] == "peak_rss"
            assert {h[s]["n"] for s in ("train", "val", "test")} == {16, 21, 42}
            assert all(set(h[s]) >= {"srcc", "plcc", "krcc"} for s in ("train", "val", "test"))

        final = json.loads((run_dir / "final.json").read_text())
        assert final["status"] == "finished"
        m = final["metrics"]
        sel = max(log, key=lambda h: h["val"]["srcc"])
        assert m["selected_epoch"] == sel["epoch"] and m["epochs_run"] == 2
        for split in ("train", "val", "test"):
            for metric in ("srcc", "plcc", "krcc"):
                assert m[f"{split}_{metric}"] == sel[split][metric]
        assert m["srcc_gap"] == pytest.approx(sel["train"]["srcc"] - sel["test"]["srcc"])

        # checkpoints: plain tensors/containers, hash verified, model rebuilt from the file alone
        for name in ("best.pt", "last.pt", "epoch_000.pt", "epoch_001.pt", "train_state.pt"):
            assert isinstance(torch.load(run_dir / name, weights_only=True), dict)
        last = load_checkpoint(run_dir / "last.pt")
        assert last.meta["epoch"] == 1 and last.content_hash == hash_state(last.state_dict)
        assert load_checkpoint(run_dir / "epoch_001.pt").content_hash == last.content_hash
        best = load_checkpoint(run_dir / "best.pt")
        assert best.meta["epoch"] == sel["epoch"] and best.meta["config"]["run_lr"] == rc["run_lr"]
        model = build_model(best)
        assert hash_state(model.state_dict()) == best.content_hash and not model.training
        # the rebuilt model reproduces the logged metrics with the test protocol (grid crops)
        for split in ("val", "train"):
            es = data.eval_sets[split]
            p = predict_images(model, es.records, patch_size=model.config.img_size, test_patch_num=1, seed=0, random_crop=False)
            assert stats.spearmanr(p.pred, p.score).statistic == pytest.approx(m[f"{split}_srcc"], abs=1e-12)
            assert stats.pearsonr(p.pred, p.score).statistic == pytest.approx(m[f"{split}_plcc"], abs=1e-9)

    # a second call skips finished runs (nothing retrained)
    stamp = (out / "bs8_acc2_sqrt_seed0" / "last.pt").stat().st_mtime_ns
    calls.clear()
    again = run_sweep(cfg, out, progress=False, echo=lines.append)
    assert calls == [] and [r.message for r in again] == ["already finished"] * 2
    assert (out / "bs8_acc2_sqrt_seed0" / "last.pt").stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- resume and determinism

class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted_bit_for_bit(root, tmp_path):
    # dropout, drop-path (torch RNG), ranking loss, warmup + cosine, early-stop counter
    cfg = make_cfg(root, epochs=3, patience=2, dropout=0.2, drop_path=0.1, warmup_epochs=1, save_every=1)
    spec = RunSpec(16, 0, "sqrt")
    straight = train_run(cfg, spec, tmp_path / "a")

    def stop_after_first_epoch(info):
        if info.get("done") and info["epoch"] == 0:
            raise Interrupt   # after epoch 0's state is stored: what a kill leaves behind

    with pytest.raises(Interrupt):
        train_run(cfg, spec, tmp_path / "b", progress=stop_after_first_epoch)
    assert not (tmp_path / "b" / "final.json").exists()
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["epoch"] == 0
    resumed = train_run(cfg, spec, tmp_path / "b")

    assert resumed.status == straight.status == "finished"
    assert _strip(resumed.metrics) == _strip(straight.metrics)
    assert [_strip(h) for h in _log(tmp_path / "b")] == [_strip(h) for h in _log(tmp_path / "a")]
    for name in ("best.pt", "last.pt", "epoch_000.pt", "epoch_002.pt"):
        assert load_checkpoint(tmp_path / "b" / name).content_hash == load_checkpoint(tmp_path / "a" / name).content_hash
    sa = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    for ta, tb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sa["scheduler"] == sb["scheduler"]
    # stored early-stopping state agrees with the history
    vals = [h["val"]["srcc"] for h in sa["history"]]
    assert sa["best_epoch"] == int(np.argmax(vals)) and sa["best_val"] == max(vals)
    assert sa["bad_epochs"] == sa["epoch"] - sa["best_epoch"]

    # another seed gives other epoch-0 weights (so the equalities above can fail)
    other = train_run(make_cfg(root, epochs=1, save_every=1, dropout=0.2, drop_path=0.1, warmup_epochs=1),
                      RunSpec(16, 1, "sqrt"), tmp_path / "c")
    assert other.status == "finished"
    assert (load_checkpoint(tmp_path / "c" / "epoch_000.pt").content_hash
            != load_checkpoint(tmp_path / "a" / "epoch_000.pt").content_hash)


def test_early_stop_counter_survives_resume(root, tmp_path, monkeypatch):
    """Val SRCC forced to NaN, 0.9, 0.1, 0.2, ...: with patience 2 the run stops after epoch 3
    whether or not it was interrupted after epoch 2 (bad_epochs = 1 is restored). A NaN
    val SRCC (constant predictions) counts as worst, but epoch 0 still writes best.pt."""
    sequence = iter([math.nan, 0.9, 0.1, 0.2, 0.3, 0.4] * 2)
    real = run_mod.evaluate_sets

    def fake(*args):
        out = real(*args)
        out["val"]["srcc"] = next(sequence)
        return out

    monkeypatch.setattr(run_mod, "evaluate_sets", fake)
    cfg = make_cfg(root, epochs=6, patience=2, train_eval_images=4)
    spec = RunSpec(16, 0, "none")

    def stop(info):
        if info.get("done") and info["epoch"] == 0:
            assert load_checkpoint(tmp_path / "r" / "best.pt").meta["epoch"] == 0
        if info.get("done") and info["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(cfg, spec, tmp_path / "r", progress=stop)
    state = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)
    assert (state["best_epoch"], state["best_val"], state["bad_epochs"]) == (1, 0.9, 1)
    res = train_run(cfg, spec, tmp_path / "r")
    assert res.metrics["epochs_run"] == 4 and res.metrics["selected_epoch"] == 1
    assert "early stop" in res.message
    assert load_checkpoint(tmp_path / "r" / "best.pt").meta["epoch"] == 1


# ---------------------------------------------------------------- NaN / divergence

def test_nan_stops_run_keeps_last_good_checkpoint_and_sweep_goes_on(root, tmp_path, monkeypatch):
    calls = {"n": 0}

    class NaNAtCall11(IQALoss):
        def forward(self, pred, target):
            calls["n"] += 1
            loss = super().forward(pred, target)
            return loss * float("nan") if calls["n"] == 11 else loss

    monkeypatch.setattr(run_mod, "IQALoss", NaNAtCall11)
    cfg = make_cfg(root, batch_sizes=[16, 32], epochs=2)   # 8 steps per epoch at 16: call 11 = epoch 1 step 3
    out = tmp_path / "sweep"
    lines = []
    results = run_sweep(cfg, out, progress=False, echo=lines.append)
    assert [r.status for r in results] == ["diverged", "finished"]
    assert "NaN/inf in epoch 1 (found by step 3 of 8)" in results[0].message
    assert "last.pt is epoch 0" in results[0].message
    assert "1 run(s) did not finish: bs16_acc1_sqrt_seed0" in lines[-1]
    bad = out / "bs16_acc1_sqrt_seed0"
    assert json.loads((bad / "final.json").read_text())["status"] == "diverged"
    assert [h["epoch"] for h in _log(bad)] == [0]
    state = torch.load(bad / "train_state.pt", weights_only=True)
    last = load_checkpoint(bad / "last.pt")
    assert state["epoch"] == 0 and last.meta["epoch"] == 0
    assert hash_state(state["model"]) == last.content_hash
    check_finite_parameters(build_model(last), "last.pt")
    assert results[0].metrics["selected_epoch"] == 0
    # a re-run reports it again without retraining
    again = run_sweep(cfg, out, progress=False, echo=lines.append)
    assert [r.status for r in again] == ["diverged", "finished"]


def test_absurd_lr_diverges_in_first_epoch(root, tmp_path):
    res = train_run(make_cfg(root, lr=1e8, epochs=1), RunSpec(16, 0, "none"), tmp_path / "r")
    assert res.status == "diverged" and "epoch 0" in res.message and "no checkpoint" in res.message
    assert not (tmp_path / "r" / "last.pt").exists() and not (tmp_path / "r" / "train_state.pt").exists()
    assert json.loads((tmp_path / "r" / "final.json").read_text())["status"] == "diverged"


# ---------------------------------------------------------------- accumulation

def test_accumulation_equals_one_large_batch(root):
    """K micro-batches (weighted n_k / n) give the full-batch gradient for the per-sample L1 of a
    model without BatchNorm. The ranking term only sees pairs inside a micro-batch, so with
    alpha > 0 the accumulated gradient is the n_k/n-weighted sum of per-micro-batch gradients
    instead; and BatchNorm in train mode (the micro preset's conv stem) normalises each
    micro-batch with its own statistics, so there accumulation is not one large batch."""
    data = pipeline.load_run_data(make_cfg(root))
    x, y = next(iter(data.train_batches(RunSpec(16, 0, "sqrt"), 0)))
    torch.manual_seed(0)
    micro = model_config("micro", dropout=0.0, drop_path_rate=0.0)
    with_bn = create_model(micro)
    model = create_model(dataclasses.replace(micro, stem_channels=()))

    def grads(criterion, xs, ys, k):
        model.zero_grad(set_to_none=True)
        accumulate_gradients(model, criterion, xs, ys, k)
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    l1 = IQALoss(0.0, 0.0)
    full = grads(l1, x, y, 1)
    for k in (2, 3, 4):                      # k = 3: micro-batches of 6, 6, 4
        assert (grads(l1, x, y, k) - full).abs().max() <= 1e-6
    ranked = IQALoss(0.5, 0.0)
    acc = grads(ranked, x, y, 4)
    parts = sum(grads(ranked, x[i:i + 4], y[i:i + 4], 1) * 0.25 for i in range(0, 16, 4))
    assert (acc - parts).abs().max() <= 1e-6
    assert (acc - grads(ranked, x, y, 1)).abs().max() > 1e-3
    # with BatchNorm the micro-batch statistics differ from the full batch's
    model = with_bn
    assert (grads(IQALoss(0.0, 0.0), x, y, 4) - grads(IQALoss(0.0, 0.0), x, y, 1)).abs().max() > 1e-4


def test_run_config_records_lr_rule_and_batches():
    cfg = resolve_config({}, {"dataset": "synthetic:/x", "lr": 5e-6, "reference_batch": 32, "accumulate": 2})
    rc = run_config(cfg, RunSpec(48, 0, "sqrt", 2))
    assert rc["run_lr"] == pytest.approx(6.1237e-6, rel=1e-4)
    assert (rc["effective_batch"], rc["per_rank_batch"], rc["micro_batch"], rc["world_size"]) == (48, 48, 24, 1)
    rc2 = run_config(cfg, RunSpec(48, 0, "linear", 2), world_size=2)
    assert (rc2["per_rank_batch"], rc2["micro_batch"], rc2["run_lr"]) == (24, 12, pytest.approx(7.5e-6))
    with pytest.raises(LandscapeError, match="accumulate x world size"):
        run_config(cfg, RunSpec(48, 0, "sqrt", 2), world_size=5)
    assert [s.name for s in expand_sweep(resolve_config({}, {
        "dataset": "synthetic:/x", "batch_sizes": [8, 16], "seeds": [0, 1], "lr_scaling": ["none", "sqrt"]}))] == [
        "bs8_acc1_none_seed0", "bs8_acc1_none_seed1", "bs8_acc1_sqrt_seed0", "bs8_acc1_sqrt_seed1",
        "bs16_acc1_none_seed0", "bs16_acc1_none_seed1", "bs16_acc1_sqrt_seed0", "bs16_acc1_sqrt_seed1"]


def test_schedule_closed_forms():
    kw = dict(total_steps=100, warmup_steps=10, steps_per_epoch=10)
    assert lr_multiplier(0, kind="cosine", **kw) == pytest.approx(0.1)
    assert lr_multiplier(9, kind="cosine", **kw) == pytest.approx(1.0)
    assert lr_multiplier(10, kind="cosine", **kw) == pytest.approx(1.0)
    assert lr_multiplier(55, kind="cosine", **kw) == pytest.approx(0.5)
    assert lr_multiplier(100, kind="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(35, kind="step", step_size=3, gamma=0.1, **kw) == pytest.approx(0.1)
    assert lr_multiplier(60, kind="step", step_size=3, gamma=0.1, **kw) == pytest.approx(0.01)
    assert lr_multiplier(60, kind="none", **kw) == 1.0


def test_steps_per_epoch_matches_stream_for_workers_and_ranks(root):
    from landscape.data import TrainPatchConfig, TrainPatches
    for workers in (0, 2, 3):
        data = pipeline.load_run_data(make_cfg(root, workers=workers))
        for world in (1, 2, 4):
            counts = [TrainPatches(data.train[r::world], TrainPatchConfig(patch_size=64, train_patch_num=1,
                                                                          batch_size=16 // world)).num_batches(workers)
                      for r in range(world)]
            assert data.steps_per_epoch(16, world) == min(counts)
    data = pipeline.load_run_data(make_cfg(root))
    assert sum(1 for _ in data.train_batches(RunSpec(16, 0, "sqrt"), 0)) == data.steps_per_epoch(16) == 8
    # with DataLoader workers each worker ends with its own partial batch: 2 x ceil(63 / 16) = 8
    data = pipeline.load_run_data(make_cfg(root, workers=2))
    assert data.steps_per_epoch(16) == 8
    for epoch in (0, 1):
        sizes = [x.shape[0] for x, _ in data.train_batches(RunSpec(16, 0, "sqrt"), epoch)]
        assert sorted(sizes) == [15, 15] + [16] * 6


# ---------------------------------------------------------------- errors before training

def test_errors_before_any_training(root, tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(LandscapeError, match="batch size 256 exceeds the 126 training patches"):
        run_sweep(make_cfg(root, batch_sizes=[8, 256]), out, progress=False)
    assert not out.exists()
    with pytest.raises(LandscapeError, match="unknown model preset 'huge'"):
        make_cfg(root, model="huge")
    with pytest.raises(LandscapeError, match="train_eval_images"):
        make_cfg(root, train_eval_images=0)

    cfg = make_cfg(root)
    prepare_output(cfg, out)
    prepare_output(cfg, out)                       # the same sweep: accepted
    with pytest.raises(LandscapeError, match=r"holds a different sweep \(differs in: epochs, lr\)"):
        run_sweep(make_cfg(root, epochs=3, lr=0.5), out, progress=False)
    prepare_output(make_cfg(root, epochs=3), out, force=True)
    assert json.loads((out / "sweep.json").read_text())["config"]["epochs"] == 3

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(LandscapeError, match="not empty and holds no sweep"):
        prepare_output(cfg, other)
    prepare_output(cfg, other, force=True)
    assert not (other / "notes.txt").exists()

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rc = run_config(cfg, RunSpec(8, 0, "sqrt"))
    (run_dir / "config.json").write_text(json.dumps({**rc, "lr": 1.0}))
    with pytest.raises(LandscapeError, match=r"different config \(differs in: lr\)"):
        check_run_dir(run_dir, rc)
    with pytest.raises(LandscapeError, match="different config"):
        train_run(cfg, RunSpec(8, 0, "sqrt"), run_dir)
    shutil.rmtree(run_dir)
