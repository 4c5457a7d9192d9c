"""Sharpness suite against closed forms: quadratic and linear losses, ReLU rescaling, linear regression."""
from __future__ import annotations

import copy
import itertools
import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeError, NumericsError
from landscape.sharpness import (
    AdaptiveConfig,
    AverageConfig,
    KeskarConfig,
    NoiseConfig,
    PacBayesConfig,
    SharpnessSuite,
    adaptive_sharpness,
    analyze_sharpness,
    apgd_checkpoints,
    average_sharpness,
    exact_noise_scale,
    gradient_noise_scale,
    keskar_sharpness,
    load_sharpness,
    noise_estimators,
    pacbayes_flatness,
    summary_rows,
)
from landscape.sharpness.keskar import RandomSubspace

DT = torch.float64


# --------------------------------------------------------------------------- test problems


class Quadratic(nn.Module):
    """Parameters are w itself; each example outputs w (the criterion makes the quadratic)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(np.asarray(w), dtype=DT).clone())

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


class QuadraticLoss:
    """L(w) = 1/2 (w - w0)^T H (w - w0) for every example."""

    def __init__(self, H, w0):
        self.H = torch.as_tensor(np.asarray(H), dtype=DT)
        self.w0 = torch.as_tensor(np.asarray(w0), dtype=DT)

    def __call__(self, out, y):
        d = out - self.w0
        return 0.5 * ((d @ self.H) * d).sum(1).mean()


def quad_loss(H, w0, w):
    d = np.asarray(w) - w0
    return 0.5 * d @ H @ d


def box_max(H, w0, w, r):
    """Exact max of a convex quadratic over the box w + [-r, r]: the best vertex."""
    return max(quad_loss(H, w0, w + np.array(s) * r) for s in itertools.product((-1.0, 1.0), repeat=len(w)))


class LinearScore(nn.Module):
    """f(x) = x . w (one score per example); with ``mean_output`` the loss is linear in w."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(np.asarray(w), dtype=DT).clone())

    def forward(self, x):
        return x @ self.w


def mean_output(out, y):
    return out.mean()


def mse(out, y):
    return ((out.reshape(-1) - y.reshape(-1)) ** 2).mean()


QUAD_DATA = [(torch.zeros(4, 1, dtype=DT), torch.zeros(4, dtype=DT))]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).to(DT)


def mlp_data(n=64, size=32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g, dtype=DT)
    y = torch.randn(n, generator=g, dtype=DT)
    return [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


# --------------------------------------------------------------------------- Keskar


def _problem(kind, rng, n=6):
    if kind == "diagonal":
        return np.diag(rng.uniform(0.5, 3.0, n))
    # rank-one dominated (v entries all non-zero): the only local box maxima are the
    # vertices +-r*sign(v), so one L-BFGS-B run from any start must reach the global max
    v = rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n)
    return 5.0 * np.outer(v, v) + np.diag(rng.uniform(0.05, 0.2, n))


@pytest.mark.parametrize("kind", ["diagonal", "nondiagonal"])
@pytest.mark.parametrize("where", ["at_minimum", "away"])
@pytest.mark.parametrize("eps", [1e-3, 5e-2])
def test_keskar_full_space_equals_exact_box_maximum(kind, where, eps):
    rng = np.random.default_rng(0)
    H = _problem(kind, rng)
    w0 = rng.normal(size=6)
    w = w0 if where == "at_minimum" else w0 + 0.2 * rng.normal(size=6)
    model = Quadratic(w)
    # at an exact minimum the paper's y = 0 start stalls (zero gradient): one random start more
    res = keskar_sharpness(model, QuadraticLoss(H, w0), QUAD_DATA,
                           KeskarConfig(eps=eps, n_random_starts=1 if where == "at_minimum" else 0))
    base = quad_loss(H, w0, w)
    exact = box_max(H, w0, w, eps * (np.abs(w) + 1.0))
    assert res.base_loss == pytest.approx(base, rel=1e-12, abs=1e-15)
    assert res.max_loss == pytest.approx(exact, rel=1e-10)
    assert res.phi == pytest.approx(100 * (exact - base) / (1 + base), rel=1e-8)
    assert res.space == "full" and res.dim == 6 and res.n_evals >= 1 and res.frac_at_bound == 1.0
    assert math.isnan(res.srcc_drop)  # outputs are not one score per example


def test_keskar_zero_start_stalls_at_a_minimum_random_start_does_not():
    rng = np.random.default_rng(0)
    H, w0 = _problem("nondiagonal", rng), rng.normal(size=6)
    zero = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA, KeskarConfig(start="zero"))
    rand = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA, KeskarConfig(start="random"))
    assert zero.phi == 0.0 and zero.n_iter == 0
    assert rand.phi == pytest.approx(100 * box_max(H, w0, w0, 1e-3 * (np.abs(w0) + 1)), rel=1e-10)


def test_keskar_general_quadratic_single_start_is_lower_bound_and_restarts_reach_max():
    rng = np.random.default_rng(3)
    n = 8
    M = rng.normal(size=(n, n))
    H, w0 = M @ M.T / n, rng.normal(size=n)
    exact = box_max(H, w0, w0, 1e-3 * (np.abs(w0) + 1))
    one = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA, KeskarConfig(seed=3, start="random"))
    many = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA,
                            KeskarConfig(seed=3, start="random", n_random_starts=7))
    assert 0 < one.max_loss <= exact * (1 + 1e-12)
    assert many.max_loss == pytest.approx(exact, rel=1e-10)
    assert len(many.phi_per_start) == 8 and max(many.phi_per_start) == pytest.approx(many.phi)


def test_keskar_se_is_the_standard_error_of_the_mean_over_starts():
    rng = np.random.default_rng(4)
    n = 8
    M = rng.normal(size=(n, n))
    H, w0 = M @ M.T / n, rng.normal(size=n)
    # maxiter=1: each start stops short of the box maximum at a different point
    res = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA, KeskarConfig(seed=1, start="random", n_random_starts=4,
                                                                              maxiter=1))
    starts = np.asarray(res.phi_per_start)
    assert starts.size == 5 and np.ptp(starts) > 0
    assert res.phi_std == pytest.approx(np.std(starts, ddof=1), rel=1e-12)
    assert res.phi_se == pytest.approx(np.std(starts, ddof=1) / math.sqrt(5), rel=1e-12)
    suite = SharpnessSuite(keskar=[res])
    row = summary_rows(suite)[0]
    assert row["se"] == pytest.approx(res.phi_se, rel=1e-12)   # what `analyze sharpness` prints
    one = keskar_sharpness(Quadratic(w0), QuadraticLoss(H, w0), QUAD_DATA, KeskarConfig(seed=1, start="random"))
    assert math.isnan(one.phi_se) and math.isnan(one.phi_std)   # one start: no spread, no SE
    assert math.isnan(summary_rows(SharpnessSuite(keskar=[one]))[0]["se"])


def test_random_subspace_pinv_chunking_and_box_maximum():
    rng = np.random.default_rng(0)
    n, p = 6, 3
    like = torch.zeros(1, dtype=DT)
    w = torch.as_tensor(rng.normal(size=n))
    cached = RandomSubspace(n, p, seed=5, like=like, chunk_elems=4)
    chunked = RandomSubspace(n, p, seed=5, like=like, max_cached_bytes=0, chunk_elems=4)  # 1 row per chunk
    A = torch.cat(cached.cache).numpy()
    assert A.shape == (n, p) and len(cached.cache) == n and chunked.cache is None
    default = RandomSubspace(n, p, seed=5, like=like)
    y = torch.as_tensor(rng.normal(size=p))
    np.testing.assert_allclose(chunked.matvec(y).numpy(), A @ y.numpy(), rtol=1e-12)
    np.testing.assert_allclose(chunked.rmatvec(w).numpy(), A.T @ w.numpy(), rtol=1e-12)
    np.testing.assert_allclose(chunked.pinv_apply(w).numpy(), np.linalg.pinv(A) @ w.numpy(), rtol=1e-9)
    # phi in the subspace: max over the p-box of L(w + A y), a convex quadratic in y -> best vertex
    H = _problem("diagonal", rng)
    w0 = w.numpy() + 0.3
    A = torch.cat(default.cache).numpy()  # the matrix keskar_sharpness draws for seed 5
    res = keskar_sharpness(Quadratic(w.numpy()), QuadraticLoss(H, w0), QUAD_DATA,
                           KeskarConfig(eps=5e-2, subspace_dim=p, seed=5))
    r = 5e-2 * (np.abs(np.linalg.pinv(A) @ w.numpy()) + 1)
    exact = max(quad_loss(H, w0, w.numpy() + A @ (np.array(s) * r)) for s in itertools.product((-1, 1), repeat=p))
    assert res.space == "random" and res.dim == p
    assert res.max_loss == pytest.approx(exact, rel=1e-10)


# --------------------------------------------------------------------------- adaptive sharpness


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_adaptive_worst_case_linear_loss_closed_form_per_m_batch(norm, adaptive):
    rng = np.random.default_rng(0)
    n, m = 7, 8
    w = rng.normal(size=n)
    X = torch.as_tensor(rng.normal(size=(64, n)) + 0.3)
    data = [(X[i:i + 16], torch.zeros(16, dtype=DT)) for i in range(0, 64, 16)]  # re-batched into 8 chunks of 8
    rho = 1e-2 if norm == "linf" else 0.1
    res = adaptive_sharpness(LinearScore(w), mean_output, data,
                             AdaptiveConfig(rho=rho, norm=norm, adaptive=adaptive, m=m, max_examples=None))
    c = np.abs(w) if adaptive else np.ones(n)
    per_batch = []
    for i in range(0, 64, m):
        g = X[i:i + m].numpy().mean(0)  # gradient of the chunk's mean output
        per_batch.append(rho * (np.sum(c * np.abs(g)) if norm == "linf" else np.linalg.norm(c * g)))
    assert res.n_batches == 8 and res.n_examples == 64 and res.n_dropped == 0
    np.testing.assert_allclose(np.subtract(res.per_batch_max, res.per_batch_base), per_batch, rtol=1e-9)
    assert res.sharpness == pytest.approx(np.mean(per_batch), rel=1e-9)
    assert res.sharpness_se == pytest.approx(np.std(per_batch, ddof=1) / math.sqrt(8), rel=1e-6)
    # m-sharpness: the mean of per-chunk maxima exceeds the max of the full-batch loss
    g_all = X.numpy().mean(0)
    full = rho * (np.sum(c * np.abs(g_all)) if norm == "linf" else np.linalg.norm(c * g_all))
    assert res.sharpness > full


@pytest.mark.parametrize("where", ["at_minimum", "away"])
def test_adaptive_linf_diagonal_quadratic_closed_form(where):
    rng = np.random.default_rng(1)
    n, rho = 7, 0.05
    h, w0 = rng.uniform(0.5, 3.0, n), rng.normal(size=n)
    w = w0 if where == "at_minimum" else w0 + 0.05 * rng.normal(size=n)
    data = [(torch.zeros(256, 1, dtype=DT), torch.zeros(256, dtype=DT))]
    res = adaptive_sharpness(Quadratic(w), QuadraticLoss(np.diag(h), w0), data, AdaptiveConfig(rho=rho))
    # per coordinate the maximiser is the box edge on the side of w - w0
    exact = 0.5 * np.sum(h * (np.abs(w - w0) + rho * np.abs(w)) ** 2) - quad_loss(np.diag(h), w0, w)
    assert res.n_batches == 2  # 256 examples, m = 128
    assert res.sharpness == pytest.approx(exact, rel=1e-9)


def test_apgd_checkpoints_match_the_paper_schedule():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 -> ceil(p * 100)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(20) == [5, 9, 12, 14, 16, 18, 19]


# --------------------------------------------------------------------------- scale invariance


def test_relu_rescaling_leaves_adaptive_measures_unchanged_and_changes_keskar():
    model, data = mlp(), mlp_data()
    scaled = copy.deepcopy(model)
    a = 10.0
    with torch.no_grad():
        scaled[0].weight *= a
        scaled[0].bias *= a
        scaled[2].weight /= a
    x = torch.cat([xb for xb, _ in data])
    torch.testing.assert_close(scaled(x), model(x), rtol=0, atol=1e-12)  # same function
    results = []
    for net in (model, scaled):
        results.append((
            adaptive_sharpness(net, mse, data, AdaptiveConfig(rho=2e-3, m=16)),
            adaptive_sharpness(net, mse, data, AdaptiveConfig(rho=0.5, norm="l2", m=16)),
            average_sharpness(net, mse, data, AverageConfig(rho=0.1, n_samples=6)),
            keskar_sharpness(net, mse, data, KeskarConfig(eps=1e-3)),
        ))
    (l1, l2, av1, k1), (m1, m2, av2, k2) = results
    assert l1.sharpness > 0 and l2.sharpness > 0 and av1.sharpness_se > 0
    assert m1.sharpness == pytest.approx(l1.sharpness, rel=1e-8)
    assert m2.sharpness == pytest.approx(l2.sharpness, rel=1e-8)
    assert av2.sharpness == pytest.approx(av1.sharpness, rel=1e-8)
    assert k2.phi > 1.5 * k1.phi  # Keskar's box is not scale-aware


# --------------------------------------------------------------------------- average case and SRCC


def test_average_case_linear_loss_is_zero_mean_with_se_and_reports_srcc():
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    X = torch.as_tensor(rng.normal(size=(40, 5)))
    y = X @ torch.as_tensor(w) + 0.1 * torch.as_tensor(rng.normal(size=40))
    data = [(X, y)]
    res = average_sharpness(LinearScore(w), mean_output, data, AverageConfig(rho=0.1, n_samples=200))
    # L(w + delta) - L(w) = g . delta with delta ~ N(0, rho^2 w^2): mean 0, std rho ||w g||
    g = X.numpy().mean(0)
    sd = 0.1 * np.linalg.norm(np.abs(w) * g)
    assert np.std(res.per_sample_increase, ddof=1) == pytest.approx(sd, rel=0.15)
    assert res.sharpness_se == pytest.approx(np.std(res.per_sample_increase, ddof=1) / math.sqrt(200))
    assert abs(res.sharpness) < 4 * res.sharpness_se
    # SRCC of the outputs vs targets at the base weights, via scipy
    from scipy.stats import spearmanr
    assert res.srcc_base == pytest.approx(spearmanr((X @ torch.as_tensor(w)).numpy(), y.numpy()).statistic)
    assert len(res.per_sample_srcc_drop) == 200 and res.srcc_drop > 0


def test_srcc_drop_of_worst_case_is_reported_for_scalar_outputs():
    model, data = mlp(), mlp_data()
    res = adaptive_sharpness(model, mse, data, AdaptiveConfig(rho=0.2, norm="linf", m=32))
    assert len(res.per_batch_srcc_drop) == 2 and all(np.isfinite(res.per_batch_srcc_drop))
    assert res.srcc_drop == pytest.approx(np.mean(res.per_batch_srcc_drop))


# --------------------------------------------------------------------------- PAC-Bayes


@pytest.mark.parametrize("kind", ["diagonal", "dense"])
def test_pacbayes_sigma_matches_analytic_root(kind):
    rng = np.random.default_rng(0)
    n = 6
    if kind == "diagonal":
        H = np.diag(rng.uniform(0.5, 3.0, n))
    else:
        M = rng.normal(size=(n, n))
        H = M @ M.T / n
    w0 = rng.normal(size=n)
    w = w0 + 0.1 * rng.normal(size=n)
    d, floor = 0.05, 1e-3
    # E[L(w+u)] - L(w) = 1/2 tr(H Cov), Cov = diag(sigma^2 w^2 + floor^2)
    root = math.sqrt((2 * d - floor ** 2 * np.trace(H)) / np.sum(np.diag(H) * w ** 2))
    res = pacbayes_flatness(Quadratic(w), QuadraticLoss(H, w0), QUAD_DATA,
                            PacBayesConfig(target=d, kind="loss", n_samples=400))
    assert res.saturated == "" and res.threshold == d
    assert 0 < res.sigma_se < 0.05 * res.sigma
    assert abs(res.sigma - root) < 4 * res.sigma_se + 2 ** -14
    assert res.flatness == pytest.approx(1 / res.sigma ** 2)
    assert len(res.trace_sigma) == 15 and res.trace_sigma[0] == 1.0
    assert res.deviation == pytest.approx(d, abs=4 * res.deviation_se)


def test_pacbayes_relative_target_and_saturation():
    rng = np.random.default_rng(0)
    H, w0 = np.diag(rng.uniform(0.5, 3.0, 4)), rng.normal(size=4)
    w = w0 + 0.3
    base = quad_loss(H, w0, w)
    res = pacbayes_flatness(Quadratic(w), QuadraticLoss(H, w0), QUAD_DATA,
                            PacBayesConfig(target=0.1, depth=8, n_samples=4))
    assert res.kind == "loss_relative" and res.threshold == pytest.approx(0.1 * base)
    huge = pacbayes_flatness(Quadratic(w), QuadraticLoss(H, w0), QUAD_DATA,
                             PacBayesConfig(target=1e6, kind="loss", depth=4, n_samples=2))
    assert huge.saturated == "upper" and huge.sigma > 1.8
    with pytest.raises(LandscapeError, match="srcc"):
        pacbayes_flatness(Quadratic(w), QuadraticLoss(H, w0), QUAD_DATA, PacBayesConfig(kind="srcc"))


# --------------------------------------------------------------------------- gradient noise scale


def _regression(n=64):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 3, generator=g, dtype=DT)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=DT) + 0.3 * torch.randn(n, generator=g, dtype=DT)
    torch.manual_seed(0)
    return nn.Linear(3, 1).to(DT), [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)], x, y


def _closed_form_noise(model, x, y):
    with torch.no_grad():
        r = (model(x).reshape(-1) - y).numpy()
    z = np.c_[x.numpy(), np.ones(len(r))]  # weight then bias, named_parameters order
    g = 2 * r[:, None] * z  # gradient of (w.x + b - y)^2 per example
    G = g.mean(0)
    tr = np.mean(np.sum((g - G) ** 2, axis=1))
    return tr, G @ G


def test_exact_noise_scale_matches_per_example_closed_form():
    model, data, x, y = _regression()
    tr, g2 = _closed_form_noise(model, x, y)
    ex = exact_noise_scale(model, mse, data)
    assert ex.n == 64
    assert ex.trace_sigma == pytest.approx(tr, rel=1e-10)
    assert ex.g2 == pytest.approx(g2, rel=1e-10)
    assert ex.b_simple == pytest.approx(tr / g2, rel=1e-10)


def test_noise_estimators_are_exact_on_expected_norms():
    g2, tr = 3.0, 40.0
    e_small, e_big = g2 + tr / 4, g2 + tr / 32  # E|G_B|^2 = |G|^2 + tr(Sigma)/B
    g2_est, s_est = noise_estimators(np.array([e_small]), np.array([e_big]), 4, 32)
    assert g2_est[0] == pytest.approx(g2) and s_est[0] == pytest.approx(tr)


def test_two_batch_noise_scale_agrees_with_exact_within_standard_errors():
    model, data, x, y = _regression()
    before = state(model)
    ex = exact_noise_scale(model, mse, data)
    res = gradient_noise_scale(model, mse, data, b_small=4, b_big=32, n_repeats=400, seed=1)
    assert res.n_pool == 64 and len(res.g2_small) == 400
    assert abs(res.g2 - ex.g2) < 4 * res.g2_se
    assert abs(res.trace_sigma - ex.trace_sigma) < 4 * res.trace_sigma_se
    assert abs(res.b_simple - ex.b_simple) < 4 * res.b_simple_se
    assert res.b_simple_ci[0] < ex.b_simple < res.b_simple_ci[1]
    assert res.b_simple_se < 0.3 * res.b_simple
    assert_identical(model, before)
    again = gradient_noise_scale(model, mse, data, b_small=4, b_big=32, n_repeats=400, seed=1)
    assert again.b_simple == res.b_simple  # seeded


# --------------------------------------------------------------------------- guards and errors


class Guarded(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.bn(self.fc(x)))))


@pytest.mark.parametrize("train", [False, True])
def test_model_bit_identical_and_modes_restored(train):
    torch.manual_seed(0)
    model = Guarded().to(DT)
    model.train()
    model.bn.eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    before = state(model)
    data = mlp_data()
    keskar_sharpness(model, mse, data, KeskarConfig(train=train, maxiter=2))
    adaptive_sharpness(model, mse, data, AdaptiveConfig(m=32, n_iter=3, train=train))
    r = average_sharpness(model, mse, data, AverageConfig(n_samples=2, train=train))
    pacbayes_flatness(model, mse, data, PacBayesConfig(depth=2, n_samples=2, train=train))
    gradient_noise_scale(model, mse, data, 4, 8, 2, train=train, n_boot=10)
    assert r.mode == ("train" if train else "eval")
    assert [m.training for m in model.modules()] == flags
    assert_identical(model, before)  # parameters and BatchNorm buffers


def test_bad_inputs_raise_one_line_errors():
    model, data = mlp(), mlp_data()
    cases = [
        (lambda: keskar_sharpness(model, mse, data, KeskarConfig(eps=0.0)), "eps"),
        (lambda: keskar_sharpness(model, mse, data, KeskarConfig(eps=-1e-3)), "eps"),
        (lambda: adaptive_sharpness(model, mse, data, AdaptiveConfig(rho=0.0)), "rho"),
        (lambda: average_sharpness(model, mse, data, AverageConfig(rho=-0.1)), "rho"),
        (lambda: adaptive_sharpness(model, mse, data, AdaptiveConfig(norm="l1")), "norm"),
        (lambda: adaptive_sharpness(model, mse, data, AdaptiveConfig(m=1000)), "at least"),
        (lambda: keskar_sharpness(model, mse, [], KeskarConfig()), "empty"),
        (lambda: gradient_noise_scale(model, mse, [], 4, 8), "empty"),
        (lambda: gradient_noise_scale(model, mse, data, 8, 8), "b_big"),
        (lambda: analyze_sharpness(model, mse, data, eps=(0.0,)), "eps"),
        (lambda: analyze_sharpness(model, mse, data, measures=("keskar", "hessian")), "hessian"),
        (lambda: analyze_sharpness(model, mse, data, measures=("adaptive",), rho_l2=(-1.0,)), "rho"),
    ]
    for call, word in cases:
        with pytest.raises(LandscapeError, match=word) as err:
            call()
        assert "\n" not in str(err.value)


def test_nan_loss_and_nan_weights_raise_numerics_error():
    model, data = mlp(), mlp_data()
    with pytest.raises(NumericsError, match="not finite"):
        average_sharpness(model, lambda o, t: mse(o, t) * float("nan"), data, AverageConfig(n_samples=2))
    before = state(model)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(NumericsError, match="0.weight"):
        keskar_sharpness(model, mse, data)
    with pytest.raises(NumericsError):
        analyze_sharpness(model, mse, data, measures=("noise",))
    assert torch.isnan(model[0].weight[0, 0])  # untouched
    del before


# --------------------------------------------------------------------------- suite, storage, resume


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, out, y):
        self.calls += 1
        return mse(out, y)


SMALL = dict(
    eps=(1e-3,), subspace_dim=4, rho_linf=(1e-3,), rho_l2=(0.5,), rho_average=(0.1,),
    keskar=KeskarConfig(maxiter=3), adaptive=AdaptiveConfig(m=16, max_examples=32, n_iter=4),
    average=AverageConfig(n_samples=3), pacbayes=PacBayesConfig(kind="loss", target=0.05, depth=5, n_samples=2),
    noise=NoiseConfig(b_small=4, b_big=16, n_repeats=4, n_boot=50),
)


def test_analyze_sharpness_stores_each_part_and_resumes(tmp_path):
    model, data = mlp(), mlp_data()
    h5 = tmp_path / "analysis.h5"
    crit = Counting()
    messages = []
    first = analyze_sharpness(model, crit, data, h5_path=h5, provenance={"run": "r1"}, seed=3,
                              progress=messages.append, **SMALL)
    assert len(first.keys) == 7 and first.computed == first.keys and not first.reused
    assert [r.space for r in first.keskar] == ["full", "random"]
    assert [r.norm for r in first.adaptive] == ["linf", "l2"]
    assert first.pacbayes is not None and first.noise is not None and len(messages) == 7
    with h5py.File(h5, "r") as f:
        for key in first.keys:
            g = f[f"sharpness/{key}"]
            assert g.attrs["complete"] and "provenance" in g.attrs and "spec" in g.attrs
    # a rerun computes nothing and returns the same numbers
    crit.calls = 0
    second = analyze_sharpness(model, crit, data, h5_path=h5, seed=3, **SMALL)
    assert crit.calls == 0 and second.reused == first.keys and not second.computed
    assert second.keskar == first.keskar and second.adaptive == first.adaptive
    assert second.pacbayes == first.pacbayes and second.noise == first.noise
    # drop one part: only it is recomputed
    with h5py.File(h5, "a") as f:
        del f[f"sharpness/{first.keys[3]}"]
    third = analyze_sharpness(model, crit, data, h5_path=h5, seed=3, **SMALL)
    assert third.computed == [first.keys[3]] and third.average == first.average
    # another seed is another key
    other = analyze_sharpness(model, crit, data, h5_path=h5, seed=4, measures=("average",), **SMALL)
    assert other.computed and other.keys[0] not in first.keys
    loaded = load_sharpness(h5)
    assert sorted(loaded) == ["adaptive", "average", "keskar", "noise", "pacbayes"]
    assert len(loaded["average"]) == 2
    rec = loaded["keskar"][0]
    assert rec["phi"] == first.keskar[0].phi and rec["provenance"]["run"] == "r1"
    assert rec["spec"]["config"]["eps"] == 1e-3 and isinstance(rec["phi_per_start"], list)
    rows = summary_rows(first)
    assert [r["measure"] for r in rows] == ["keskar", "keskar", "adaptive", "adaptive", "average", "pacbayes",
                                            "noise"]


# --------------------------------------------------------------------------- issue 15: Keskar start, PAC-Bayes criteria


@pytest.mark.parametrize("eps", [0.001, 0.01, 0.05])
def test_keskar_default_zero_start_reaches_vertex_maximum_and_random_starts_only_raise_it(eps):
    # separable 4-parameter quadratic away from its minimum: the box maximum is the vertex
    # pushing every coordinate away from w0, L = sum_i h_i/2 (|w_i - w0_i| + r_i)^2
    rng = np.random.default_rng(5)
    h = rng.uniform(0.5, 3.0, 4)
    w0 = rng.normal(size=4)
    w = w0 + rng.uniform(0.05, 0.3, 4) * rng.choice([-1.0, 1.0], 4)
    r = eps * (np.abs(w) + 1.0)
    vertex = float(np.sum(0.5 * h * (np.abs(w - w0) + r) ** 2))
    base = quad_loss(np.diag(h), w0, w)
    phi_exact = 100 * (vertex - base) / (1 + base)
    loss = QuadraticLoss(np.diag(h), w0)
    res = keskar_sharpness(Quadratic(w), loss, QUAD_DATA, KeskarConfig(eps=eps))
    assert KeskarConfig().start == "zero" and KeskarConfig().n_random_starts == 0
    assert res.start == "zero" and res.n_starts == 1 and len(res.phi_per_start) == 1
    assert res.max_loss == pytest.approx(vertex, rel=1e-10)
    assert res.phi == pytest.approx(phi_exact, rel=1e-8)
    for seed in range(3):
        more = keskar_sharpness(Quadratic(w), loss, QUAD_DATA, KeskarConfig(eps=eps, n_random_starts=3, seed=seed))
        assert more.n_starts == 4 and len(more.phi_per_start) == 4
        assert more.phi_per_start[0] == res.phi_per_start[0]        # the y = 0 run is the same run
        assert more.phi >= res.phi and more.phi == max(more.phi_per_start)
        assert more.phi == pytest.approx(phi_exact, rel=1e-8)
    with pytest.raises(LandscapeError, match="n_random_starts"):
        keskar_sharpness(Quadratic(w), loss, QUAD_DATA, KeskarConfig(n_random_starts=-1))
    with pytest.raises(LandscapeError, match="start='middle'"):
        keskar_sharpness(Quadratic(w), loss, QUAD_DATA, KeskarConfig(start="middle"))


def test_pacbayes_absolute_loss_criterion_plain_gaussian_matches_closed_form():
    # u ~ N(0, sigma^2 I) on L = 1/2 (w - w0)^T H (w - w0): E[L(w+u)] - L(w) = sigma^2 tr(H) / 2
    rng = np.random.default_rng(1)
    n = 6
    M = rng.normal(size=(n, n))
    H = M @ M.T / n
    w0 = rng.normal(size=n)
    w = w0 + 0.1 * rng.normal(size=n)
    d = 0.05
    root = math.sqrt(2 * d / np.trace(H))
    res = pacbayes_flatness(Quadratic(w), QuadraticLoss(H, w0), QUAD_DATA,
                            PacBayesConfig(target=d, kind="loss", magnitude_aware=False, n_samples=400))
    assert res.kind == "loss" and res.threshold == d and res.saturated == "" and not res.magnitude_aware
    assert abs(res.sigma - root) < 4 * res.sigma_se + 2 ** -14
    assert res.sigma == pytest.approx(root, rel=0.05)


def test_pacbayes_l1_increase_is_the_papers_absolute_error_criterion():
    # f(x) = x . w fitted exactly (y = x . w): E_u[mean_i |x_i . u|] = sigma sqrt(2/pi) mean_i ||x_i||
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, generator=g, dtype=DT)
    w = torch.randn(6, generator=g, dtype=DT)
    data = [(x[:32], x[:32] @ w), (x[32:], x[32:] @ w)]
    d = 0.05
    root = d / (math.sqrt(2 / math.pi) * float(x.norm(dim=1).mean()))
    res = pacbayes_flatness(LinearScore(w), mse, data,
                            PacBayesConfig(target=d, kind="l1_increase", magnitude_aware=False, n_samples=400))
    assert res.kind == "l1_increase" and res.threshold == d and res.saturated == ""
    assert res.deviation == pytest.approx(d, abs=4 * res.deviation_se)
    assert abs(res.sigma - root) < 4 * res.sigma_se + 2 ** -14
    assert res.sigma == pytest.approx(root, rel=0.05)
    assert PacBayesConfig().kind == "loss_relative"          # the stated default
    with pytest.raises(LandscapeError, match="l1_increase"):
        pacbayes_flatness(Quadratic(np.zeros(4)), QuadraticLoss(np.eye(4), np.zeros(4)), QUAD_DATA,
                          PacBayesConfig(kind="l1_increase"))
    with pytest.raises(LandscapeError, match="kind='l2'"):
        pacbayes_flatness(LinearScore(w), mse, data, PacBayesConfig(kind="l2"))


def test_bootstrap_interval_at_small_n_is_not_estimated():
    from landscape.report.stats import MIN_CI_N, ci_text, rank_correlation

    four = rank_correlation([1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4], n_boot=2000)
    assert four.tau == pytest.approx(1.0) and four.n == 4 < MIN_CI_N == 5
    assert all(math.isnan(v) for v in four.tau_ci + four.rho_ci) and four.n_boot_used > 0
    assert ci_text(four.tau_ci, four.n) == "n/a (n < 5)"
    assert "[n/a (n < 5)]" in four.tau_text()
    six = rank_correlation([1.0, 2.0, 3.0, 4.0, 6.0, 5.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], n_boot=500)
    assert six.n_boot_used > 0 and ci_text(six.tau_ci, six.n) == f"{six.tau_ci[0]:+.2f}, {six.tau_ci[1]:+.2f}"


def test_noise_scale_interval_is_clipped_at_zero():
    """B_simple >= 0, but per-repeat unbiased differences can be negative: an unresolved noise scale gets
    an interval whose lower end reads 0, not a negative batch size; a resolved one is the plain
    percentile bootstrap (checked against numpy on the same resamples)."""
    from landscape.sharpness.noise_scale import ratio_bootstrap
    from landscape.sharpness.objective import seed_stream

    g2 = np.ones(6)
    unresolved = np.array([-1.0, 0.5, -0.2, 0.3, -0.6, 0.4])
    boot, (lo, hi) = ratio_bootstrap(unresolved, g2, n_boot=500, ci=0.95, seed=0)
    assert np.quantile(boot, 0.025) < 0 and lo == 0.0 and hi == pytest.approx(np.quantile(boot, 0.975)) and hi > 0
    resolved = np.array([20.0, 24.0, 22.0, 26.0, 21.0, 25.0])
    boot, (lo, hi) = ratio_bootstrap(resolved, g2, n_boot=500, ci=0.9, seed=3)
    idx = np.random.default_rng(seed_stream(3, 9)).integers(0, 6, size=(500, 6))
    ref = resolved[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(ref, [0.05, 0.95])))
