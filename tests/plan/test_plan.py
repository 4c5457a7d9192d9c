"""Batch-size planner: memory model, OOM bisection, epoch-time arithmetic, LR rules,
accumulation plans, B_simple against a closed form, and a tiny end-to-end plan."""
import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import landscape.plan as P
from landscape import device as D
from landscape.errors import LandscapeError
from landscape.plan import memory as M
from landscape.plan import runner as R
from landscape.plan.result import off_neighbours
from landscape.provenance import provenance
from landscape.sharpness.noise_scale import NoiseScaleResult
from landscape.train.config import TrainConfig
from landscape.train.pipeline import load_run_data
from landscape.train.trainer import RunSpec


@pytest.fixture(scope="module")
def synth_cfg(tmp_path_factory):
    from landscape.data import generate_synthetic

    root = generate_synthetic(tmp_path_factory.mktemp("synth"), n_references=6, size=72)
    return TrainConfig(dataset=f"synthetic:{root}", model="micro", lr=5e-6, reference_batch=32).validate()


@pytest.fixture(scope="module")
def synth_data(synth_cfg):
    return load_run_data(synth_cfg)


# ------------------------------------------------------------------ memory model (real CPU peak RSS)

def test_peak_rss_grows_with_batch_size(synth_cfg, synth_data):
    runner = P.TrainerStepRunner(synth_cfg, synth_data, torch.device("cpu"))
    sizes = [2, 16, 64]
    peaks = [runner.measure(b, 1, steps=1, warmup=1).peak_memory_bytes for b in sizes]
    assert peaks[0] < peaks[1] < peaks[2], peaks
    mm = P.fit_memory_model(sizes, peaks)
    # each sample at least holds its 3x64x64 float32 input; a micro-Swin step needs a few MiB per sample
    assert 3 * 64 * 64 * 4 < mm.per_sample < 64 * 2 ** 20, mm
    assert mm.fixed > 0 and mm.n_points == 3
    assert mm.residual_rms < 0.25 * (peaks[2] - peaks[0])
    assert mm.predict(64) == pytest.approx(mm.fixed + 64 * mm.per_sample)


def test_memory_model_fit_exact_line_and_largest_batch():
    mm = P.fit_memory_model([4, 8, 16], [1000 + 50 * b for b in (4, 8, 16)])
    assert mm.fixed == pytest.approx(1000) and mm.per_sample == pytest.approx(50)
    assert mm.residual_rms == pytest.approx(0, abs=1e-9)
    assert mm.largest_batch(1000 + 50 * 37 + 49) == 37
    assert mm.largest_batch(999) == 0
    with pytest.raises(LandscapeError):
        P.fit_memory_model([8, 8], [1, 2])


# ------------------------------------------------------------------ bisection with simulated OOM

@pytest.mark.parametrize("error", ["cuda", "runtime"])
@pytest.mark.parametrize("threshold", [1, 2, 3, 37, 64, 65, 199])
def test_bisection_finds_threshold_exactly(monkeypatch, error, threshold):
    freed = []
    monkeypatch.setattr(M, "free_memory", lambda device=None: freed.append(device))
    calls = []

    def fits(b):
        calls.append(b)
        if b > threshold:
            if error == "cuda":
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} MiB")
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return True

    found, tries = P.largest_fitting_batch(fits, 1, 1000, device="cpu")
    assert found == threshold
    assert [b for b, _ in tries] == calls
    assert all(ok == (b <= threshold) for b, ok in tries)
    assert len(freed) == len(tries)                        # memory freed after every try
    assert len(tries) <= 2 * math.ceil(math.log2(1000)) + 1


def test_bisection_edges_and_non_oom_errors_propagate(monkeypatch):
    monkeypatch.setattr(M, "free_memory", lambda device=None: None)
    assert P.largest_fitting_batch(lambda b: b <= 5, 8, 64)[0] == 0           # low fails
    found, tries = P.largest_fitting_batch(lambda b: True, 3, 50)
    assert found == 50 and tries[-1] == (50, True)                             # the cap fits: a lower bound
    assert P.largest_fitting_batch(lambda b: b <= 21, 4, 1000)[0] == 21       # a plain False counts too

    def broken(b):
        if b > 10:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return True

    with pytest.raises(RuntimeError, match="shapes"):
        P.largest_fitting_batch(broken, 1, 100)
    with pytest.raises(ValueError):
        P.largest_fitting_batch(lambda b: (_ for _ in ()).throw(ValueError("bad")), 1, 4)
    with pytest.raises(LandscapeError):
        P.largest_fitting_batch(lambda b: True, 0, 4)


def test_is_oom_classification():
    assert D.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert D.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert D.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert D.is_oom(MemoryError())
    assert not D.is_oom(RuntimeError("expected scalar type Float"))
    assert not D.is_oom(ValueError("out of memory"))


def test_default_memory_limit_on_cpu():
    limit, source = D.default_memory_limit("cpu")
    rss = D._rss_bytes()
    assert rss > 0 and limit > rss and "MemAvailable" in source


# ------------------------------------------------------------------ arithmetic

def test_epoch_time_arithmetic():
    # 100 images x 4 patches = 400 patches; B = 32 -> 12.5 steps of mean 2/3 s
    timing = P.StepTiming([0.5, 0.5, 1.0], [0.1, 0.0, 0.2], 1234)
    s = P.speed_stats(timing, 32, 2, 400)
    assert s.micro_batch == 16 and s.accumulate == 2
    assert s.samples_per_s == pytest.approx(32 / (2 / 3))
    assert s.samples_per_s_std == pytest.approx(np.std([64, 64, 32], ddof=1))
    assert s.epoch_time_s == pytest.approx(400 / 32 * 2 / 3)
    assert s.epoch_time_s == pytest.approx(P.epoch_seconds(100, 4, s.samples_per_s))
    assert s.epoch_time_se_s == pytest.approx(12.5 * np.std([0.5, 0.5, 1.0], ddof=1) / math.sqrt(3))
    assert (s.epoch_time_min_s, s.epoch_time_max_s) == pytest.approx((6.25, 12.5))
    assert s.data_fraction == pytest.approx(0.3 / 2.0)
    assert P.epoch_seconds(10_000, 20, 200.0) == pytest.approx(1000.0)
    with pytest.raises(LandscapeError):
        P.epoch_seconds(10, 1, 0.0)
    with pytest.raises(LandscapeError):
        P.speed_stats(P.StepTiming([], [], 0), 8, 1, 10)


def test_accumulation_plan_and_noise_position():
    assert P.accumulation_plan(96, 40) == (32, 3)
    assert P.accumulation_plan(64, 64) == (64, 1)
    assert P.accumulation_plan(48, 47) == (24, 2)
    assert P.accumulation_plan(97, 40) == (1, 97)                  # prime: only micro-batches of 1 divide it
    assert P.accumulation_plan(10, 0) is None
    assert [P.noise_scale_position(b, 40.0) for b in (8, 19, 20, 80, 81)] == \
        ["below", "below", "near", "near", "far above"]
    assert P.noise_scale_position(32, float("nan")) == "unknown"
    assert P.noise_scale_position(32, -3.0) == "unknown"


def test_full_batches_cycles_epochs():
    def epoch(e):  # 7 patches per epoch in batches 3, 3, 1; value = 100 e + index
        vals = torch.arange(7) + 100 * e
        for lo, hi in ((0, 3), (3, 6), (6, 7)):
            yield vals[lo:hi].float(), vals[lo:hi].float()

    it = P.full_batches(epoch, 5)
    got = [next(it)[0].tolist() for _ in range(3)]
    assert got == [[0, 1, 2, 3, 4], [5, 6, 100, 101, 102], [103, 104, 105, 106, 200]]
    big = next(P.full_batches(epoch, 20))[0].tolist()              # larger than an epoch: 3 epochs
    assert big == [*range(7), *range(100, 107), *range(200, 206)]
    first = next(P.full_batches(epoch, 3))[0]
    assert first.tolist() == [0, 1, 2]
    with pytest.raises(LandscapeError):
        next(P.full_batches(lambda e: iter(()), 4))


def test_runner_uses_the_trainers_pipeline(synth_cfg, synth_data):
    runner = P.TrainerStepRunner(synth_cfg, synth_data, torch.device("cpu"))
    x, y = next(runner.batches(8))
    ref_x, ref_y = next(iter(synth_data.train_batches(RunSpec(8, synth_cfg.seeds[0], "sqrt"), 0)))
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
    size = synth_data.patch_size
    assert x.shape == (8, 3, size, size) and float(y.min()) >= 0 and float(y.max()) <= 1   # normalised targets


# ------------------------------------------------------------------ run_plan logic with a fake step

class FakeRunner:
    """Exact memory ``fixed + per * micro``; OOM above ``max_micro``; step time ``a + c * B``."""

    def __init__(self, data, max_micro=40, fixed=1000.0, per=50.0):
        self.device = torch.device("cpu")
        self.data = data
        self.max_micro, self.fixed, self.per = max_micro, fixed, per
        self.calls = []

    def measure(self, batch_size, accumulate, steps, warmup):
        self.calls.append((batch_size, accumulate))
        micro = batch_size // accumulate
        if micro > self.max_micro:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        base = 0.01 + 0.001 * batch_size + 0.002 * (accumulate - 1)
        times = [base * (1 + 0.1 * (i % 2)) for i in range(steps)]
        return P.StepTiming(times, [0.0] * steps, int(self.fixed + self.per * micro))

    def probe(self, micro):
        if micro > self.max_micro:
            raise RuntimeError("CUDA out of memory. Tried to allocate (fake)")
        return int(self.fixed + self.per * micro)

    def real_patches(self, n):
        raise AssertionError("not used when noise_repeats=0")


def test_plan_with_simulated_oom_accumulates_and_scales_lr(synth_cfg, synth_data):
    runner = FakeRunner(synth_data)
    res = P.run_plan(synth_cfg, [48, 16, 32, 96], steps=3, warmup=1, memory_limit_bytes=10 ** 9, search=True,
                     search_max=1000, noise_repeats=0, runner=runner, echo=None)
    rows = {r.batch_size: r for r in res.rows}
    assert list(rows) == [16, 32, 48, 96]
    assert rows[16].fits and rows[32].fits and not rows[48].fits and not rows[96].fits
    assert rows[48].note.startswith("out of memory")
    assert "not run" in rows[96].note                               # 48 already ran out of memory
    assert res.max_micro_batch == 40 and res.max_micro_source == "bisection"
    assert not res.max_micro_lower_bound
    # accumulation plans: 48 -> 24 x 2, 96 -> 32 x 3, measured with the trainer's accumulation
    assert (rows[48].accumulated.micro_batch, rows[48].accumulated.accumulate) == (24, 2)
    assert (rows[96].accumulated.micro_batch, rows[96].accumulated.accumulate) == (32, 3)
    assert (96, 3) in runner.calls and (48, 2) in runner.calls and (96, 1) not in runner.calls
    t96 = 0.01 + 0.096 + 0.004
    assert rows[96].accumulated.epoch_time_s == pytest.approx(res.n_train_patches / 96 * t96 * (1 + 0.1 / 3))
    assert rows[96].best is rows[96].accumulated and rows[16].best is rows[16].direct
    # memory model from the measured sizes is the exact line
    assert res.memory_model.per_sample == pytest.approx(50) and res.memory_model.fixed == pytest.approx(1000)
    # LR rules relative to the reference batch 32 at lr 5e-6
    for b, r in rows.items():
        assert r.lr["none"] == pytest.approx(5e-6)
        assert r.lr["linear"] == pytest.approx(5e-6 * b / 32)
        assert r.lr["sqrt"] == pytest.approx(5e-6 * math.sqrt(b / 32))
    assert rows[48].lr["sqrt"] == pytest.approx(6.1237e-6, rel=1e-4)
    table = P.format_table(res)
    assert "32 x 3" in table and "largest fitting micro-batch: 40 (bisection)" in table


def test_plan_cpu_path_predicts_over_limit_from_memory_model(synth_cfg, synth_data):
    runner = FakeRunner(synth_data, max_micro=10 ** 6)
    limit = 1000 + 50 * 70                                           # the line allows micro <= 70
    res = P.run_plan(synth_cfg, [16, 32, 64, 96], steps=2, warmup=0, memory_limit_bytes=limit, search=False,
                     noise_repeats=0, runner=runner, echo=None)
    rows = {r.batch_size: r for r in res.rows}
    assert [rows[b].fits for b in (16, 32, 64)] == [True, True, True]
    assert rows[96].direct is None and "predicted peak" in rows[96].note
    assert (96, 1) not in runner.calls                               # never run on CPU
    assert res.max_micro_batch == 70 and res.max_micro_source == "memory model"
    assert (rows[96].accumulated.micro_batch, rows[96].accumulated.accumulate) == (48, 2)
    injected = P.run_plan(synth_cfg, [16, 96], steps=2, warmup=0, memory_limit_bytes=10 ** 9, search=True,
                          noise_repeats=0, runner=FakeRunner(synth_data, max_micro=60), fits=lambda m: m <= 50,
                          echo=None)
    assert injected.max_micro_batch == 50 and injected.search_tries[0] == (16, True)   # range [16, 96 (OOM)]
    assert injected.search_tries[1] == (32, True) and injected.search_tries[2] == (64, False)
    assert injected.rows[1].accumulated.micro_batch == 48


def test_noise_scale_retries_smaller_chunks_on_oom(synth_cfg, synth_data, monkeypatch):
    class Patches(FakeRunner):
        def real_patches(self, n):
            return torch.rand(n, 3, 64, 64), torch.rand(n)

    chunks = []
    fake = NoiseScaleResult(b_simple=24.0, b_simple_se=2.0, b_simple_ci=[20.0, 28.0], ci=0.95, g2=1.0, g2_se=0.1,
                              trace_sigma=24.0, trace_sigma_se=2.0, b_small=4, b_big=128, n_repeats=5, n_pool=64,
                              g2_small=[], g2_big=[], n_boot=10, seed=0, mode="eval", n_params=1)

    def noise(model, criterion, pool, *, chunk_size, **kw):
        chunks.append(chunk_size)
        if chunk_size is None or chunk_size > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return fake

    monkeypatch.setattr(R, "noise_scale_at", noise)
    res = P.run_plan(synth_cfg, [8, 16, 64], steps=2, warmup=0, memory_limit_bytes=10 ** 9, search=True,
                     noise_repeats=5, noise_pool=64, runner=Patches(synth_data), echo=None)
    assert chunks == [40, 20, 10]                                     # largest fitting micro-batch, halved on OOM
    assert [r.noise_position for r in res.rows] == ["below", "near", "far above"]
    assert [r.b_over_b_simple for r in res.rows] == pytest.approx([8 / 24, 16 / 24, 64 / 24])
    unresolved = dataclasses.replace(fake, b_simple=-1.0, trace_sigma=-0.5, b_simple_ci=[-3.0, 1.5])
    assert [P.noise_position(b, unresolved) for b in (2, 4)] == ["unknown", "far above"]
    assert P.noise_position(64, dataclasses.replace(unresolved, g2=-1.0)) == "unknown"


def test_plan_refuses_bad_input(synth_cfg, synth_data):
    runner = FakeRunner(synth_data)
    with pytest.raises(LandscapeError, match="steps"):
        P.run_plan(synth_cfg, [8], steps=1, runner=runner, noise_repeats=0, echo=None)
    with pytest.raises(LandscapeError, match="batch size"):
        P.run_plan(synth_cfg, [0, 8], runner=runner, noise_repeats=0, echo=None)
    with pytest.raises(LandscapeError, match="noise_loss"):
        P.run_plan(synth_cfg, [8], runner=runner, noise_loss="mse", echo=None)


# ------------------------------------------------------------------ B_simple against the closed form

class Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x @ self.w


def test_noise_scale_linear_regression_closed_form():
    g = torch.Generator().manual_seed(3)
    n, d = 256, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w_star + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    w = w_star + 0.3 * torch.ones(d, dtype=torch.float64)
    # per-example loss (x.w - y)^2 -> gradient 2 r_i x_i; B_simple = tr(Sigma) / |G|^2 (population covariance)
    grads = 2 * (X @ w - y)[:, None] * X
    G = grads.mean(0)
    exact = float(((grads - G) ** 2).sum(1).mean() / (G @ G))
    model = Linear(w)
    pool = [(X[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]
    res = P.noise_scale_at(model, nn.MSELoss(), pool, b_small=4, b_big=64, n_repeats=400, seed=0)
    assert res.n_pool == n and res.n_params == d
    assert res.b_simple == pytest.approx(exact, rel=0.15)
    assert abs(res.b_simple - exact) < 4 * res.b_simple_se
    assert res.b_simple_ci[0] < exact < res.b_simple_ci[1]
    assert res.g2 == pytest.approx(float(G @ G), rel=0.15)
    assert torch.equal(model.w.detach(), w)                         # weights untouched
    chunked = P.noise_scale_at(model, nn.MSELoss(), pool, b_small=4, b_big=64, n_repeats=400, seed=0, chunk_size=16)
    assert chunked.b_simple == pytest.approx(res.b_simple, rel=1e-9)  # chunking is exact for a mean loss


# ------------------------------------------------------------------ end to end on a tiny synthetic dataset

class Forbidden:
    def __init__(self, data):
        self.device = torch.device("cpu")
        self.data = data

    def measure(self, *a):
        raise AssertionError("a stored measurement should have been reused")

    probe = real_patches = measure


def test_run_plan_end_to_end_writes_outputs_and_resumes(synth_cfg, synth_data, tmp_path):
    out = tmp_path / "plan"
    lines = []
    res = P.run_plan(synth_cfg, [8, 2], steps=2, warmup=1, noise_b_small=4, noise_b_big=16, noise_repeats=3,
                     noise_pool=32, out_dir=out, data=synth_data, echo=lines.append)
    assert [r.batch_size for r in res.rows] == [2, 8] and all(r.fits for r in res.rows)
    assert res.n_train_patches == len(synth_data.train) * synth_cfg.train_patches
    for r in res.rows:
        s = r.direct
        assert len(s.step_times_s) == 2 and s.samples_per_s > 0 and s.peak_memory_bytes > 0
        assert s.epoch_time_s == pytest.approx(res.n_train_patches * np.mean(s.step_times_s) / r.batch_size)
    assert res.memory_model is not None and res.memory_model.n_points == 2
    assert res.max_micro_source == "memory model" and res.memory_kind == "peak_rss"
    assert res.noise is not None and res.noise.n_pool == 32 and res.noise.n_repeats == 3
    assert all(r.noise_position in ("below", "near", "far above", "unknown") for r in res.rows)
    assert lines and lines[0].startswith("plan:")

    for name in ("plan.json", "plan.csv", "plan.txt", "plan.pdf", "plan.png", "plan.svg"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "plan.json").read_text())
    assert data["kind"] == "landscape-plan"
    prov = data["provenance"]
    assert prov["dataset"]["split_sha256"] == synth_data.identity["split_sha256"]
    assert prov["model_config"]["preset"] == "micro" and prov["versions"]["torch"] == provenance()["versions"]["torch"]
    assert prov["device"] == "cpu"
    with open(out / "plan.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["batch_size"]) for r in rows] == [2, 8]
    assert float(rows[1]["lr_linear"]) == pytest.approx(5e-6 * 8 / 32)
    assert float(rows[0]["epoch_time_s"]) == pytest.approx(res.rows[0].direct.epoch_time_s)
    assert "B_simple" in (out / "plan.txt").read_text()
    assert P.read_plan(out)["rows"][0]["batch_size"] == 2

    again = P.run_plan(synth_cfg, [2, 8], steps=2, warmup=1, noise_b_small=4, noise_b_big=16, noise_repeats=3,
                       noise_pool=32, out_dir=out, data=synth_data, runner=Forbidden(synth_data), echo=None)
    assert [r.direct.step_times_s for r in again.rows] == [r.direct.step_times_s for r in res.rows]
    assert again.noise.b_simple == pytest.approx(res.noise.b_simple, nan_ok=True)


# ------------------------------------------------------------------ contaminated timings

def test_off_neighbours_rule():
    sizes = [8, 16, 32, 64, 128]
    rates = [100.0, 200.0, 400.0, 800.0, 1600.0]                      # throughput proportional to B: no outlier
    assert all(math.isnan(x) for x in off_neighbours(sizes, rates))
    rates[2] = 14.5                                                   # 14.5 against the neighbours' 400
    got = off_neighbours(sizes, rates)
    assert got[2] == pytest.approx(14.5 / 400.0) and all(math.isnan(got[i]) for i in (0, 1, 3, 4))
    assert math.isnan(off_neighbours(sizes, [100, 200, 140, 800, 1600])[2])      # 0.35x: within 1/3..3
    end = off_neighbours(sizes, [10.0, 200.0, 400.0, 800.0, 1600.0])
    assert end[0] == pytest.approx(0.1)                               # an end: extrapolated from its two nearest
    assert all(math.isnan(x) for x in off_neighbours([8, 16], [1.0, 100.0]))       # < 3 points: never judged


class SlowOnce(FakeRunner):
    """B=32's first ``slow`` measurements take 20x longer (another process on the cores)."""

    def __init__(self, data, slow):
        super().__init__(data, max_micro=1000)
        self.slow = slow

    def measure(self, batch_size, accumulate, steps, warmup):
        t = super().measure(batch_size, accumulate, steps, warmup)
        if batch_size == 32 and self.slow:
            self.slow -= 1
            return P.StepTiming([20 * v for v in t.step_times_s], t.data_times_s, t.peak_memory_bytes)
        return t


@pytest.mark.parametrize("slow", [1, 2])
def test_far_off_timing_remeasured_then_marked(synth_cfg, synth_data, slow, tmp_path):
    runner = SlowOnce(synth_data, slow)
    res = P.run_plan(synth_cfg, [8, 16, 32, 64, 128], steps=2, warmup=0, memory_limit_bytes=10 ** 9,
                     noise_repeats=0, runner=runner, out_dir=tmp_path, echo=None)
    rows = {r.batch_size: r for r in res.rows}
    assert runner.calls[:6] == [(8, 1), (16, 1), (32, 1), (64, 1), (128, 1), (32, 1)]   # B=32 measured again
    expected = 32 / ((0.01 + 0.032) * (1 + 0.1 * 0.5) * (20 if slow == 2 else 1))
    assert rows[32].direct.samples_per_s == pytest.approx(expected)
    assert [b for b, r in rows.items() if r.outlier] == ([32] if slow == 2 else [])
    first = 32 / (20 * (0.01 + 0.032) * 1.05)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [r["outlier"] for r in plan["rows"]] == [False, False, slow == 2, False, False]
    table = P.format_table(res)
    if slow == 2:
        assert rows[32].note.startswith(f"timing far off its neighbours' ({expected:.4g} samples/s")
        assert "marked outlier" in rows[32].note and "B=32: timing far off" in table
    else:
        assert rows[32].note == (f"re-measured: the first timing ({first:.4g} samples/s, 0.052x the neighbours' "
                                 f"trend) was off")
        assert "B=32: re-measured" in table
