"""Hessian analyzer against exact dense Hessians (float64), closed-form quadratics and PyHessian."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape import linalg
from landscape.distributed import shard_batches
from landscape.errors import LandscapeError, NumericsError
from landscape.hessian import (
    CurvatureOperator,
    DataParallelHessian,
    HessianConfig,
    HessianOperator,
    analyze_hessian,
    block_operators,
    hessian_trace,
    load_hessian_result,
    parameter_groups,
    pyhessian_top_eigenvalues,
    save_hessian_result,
    spectral_density,
    top_eigenvalues,
)
from landscape.provenance import hash_batches, hash_state

torch.set_num_threads(1)
DT = torch.float64


# ----------------------------------------------------------------------------- fixtures

def dense_hessian(model, criterion, batches, names=None):
    """Exact Hessian of the size-weighted full-data loss by torch.autograd.functional.hessian."""
    all_named = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in all_named] if names is None else names
    fixed = dict(all_named)
    theta = torch.cat([fixed[n].reshape(-1) for n in names])
    N = sum(x.shape[0] for x, _ in batches)

    def loss(t):
        params, off = dict(fixed), 0
        for n in names:
            params[n] = t[off:off + fixed[n].numel()].view_as(fixed[n])
            off += fixed[n].numel()
        return sum(criterion(functional_call(model, params, (x,)), y) * (x.shape[0] / N) for x, y in batches)

    return torch.autograd.functional.hessian(loss, theta, vectorize=True).numpy()


def make_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(DT)
    X, Y = torch.randn(50, 4, dtype=DT), torch.randn(50, 2, dtype=DT)
    batches = [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 50, 16)]   # sizes 16, 16, 16, 2
    return model, nn.MSELoss(), batches


def make_swin():
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    model = SwinTransformer(img_size=16, patch_size=4, window_size=2, embed_dim=4, depths=(1, 1),
                            num_heads=(1, 1), mlp_ratio=1.0, in_chans=1, num_classes=1).to(DT).eval()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(12, 1, 16, 16, generator=g, dtype=DT)
    with torch.no_grad():                     # targets near the outputs: a nearly-fitted model
        Y = model(X) + 0.1 * torch.randn(12, 1, generator=g, dtype=DT)
    return model, nn.MSELoss(), [(X[:8], Y[:8]), (X[8:], Y[8:])]


class Quadratic(nn.Module):
    """out_i = 0.5 theta^T A theta + <w, x_i>; criterion = mean(out): Hessian = A exactly."""

    def __init__(self, eigenvalues, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(eigenvalues)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
        self.register_buffer("A", Q @ torch.diag(torch.tensor(eigenvalues, dtype=DT)) @ Q.T)
        self.theta = nn.Parameter(torch.randn(n, generator=g, dtype=DT))
        self.register_buffer("w", torch.randn(3, generator=g, dtype=DT))

    def forward(self, x):
        return 0.5 * self.theta @ self.A @ self.theta + x @ self.w


def mean_criterion(out, y):
    return out.mean()


def quad_batches():
    X = torch.randn(10, 3, dtype=DT)
    return [(X[:6], X[:6, 0]), (X[6:], X[6:, 0])]


@pytest.fixture(scope="module")
def mlp():
    model, crit, batches = make_mlp()
    return model, crit, batches, dense_hessian(model, crit, batches)


@pytest.fixture(scope="module")
def swin():
    model, crit, batches = make_swin()
    return model, crit, batches, dense_hessian(model, crit, batches)


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- operator

def test_operator_equals_dense_hessian_with_unequal_batches(mlp):
    model, crit, batches, Hd = mlp
    for retained in (0, 2, None):
        with HessianOperator(model, crit, batches, max_retained_batches=retained) as op:
            D = op.dense().numpy()
        assert np.abs(D - Hd).max() < 1e-12
    # all batches in one: same Hessian (weights n_b / N)
    X = torch.cat([x for x, _ in batches])
    Y = torch.cat([y for _, y in batches])
    with HessianOperator(model, crit, [(X, Y)]) as op:
        assert np.abs(op.dense().numpy() - Hd).max() < 1e-12
        with torch.no_grad():
            assert op.loss == pytest.approx(float(crit(model(X), Y)), rel=1e-12)


def test_gradient_is_full_data_gradient_plus_weight_decay(mlp):
    model, crit, batches, _ = mlp
    N = sum(x.shape[0] for x, _ in batches)
    loss = sum(crit(model(x), y) * (x.shape[0] / N) for x, y in batches)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with HessianOperator(model, crit, batches, weight_decay=0.1) as op:
        assert torch.allclose(op.gradient(), g + 0.1 * theta, rtol=1e-12, atol=1e-14)
        assert op.n_matvecs == 0 and op.loss == pytest.approx(loss.item(), rel=1e-12)
        block = op.restrict(["2.weight"])
        assert torch.allclose(block.gradient(), (g + 0.1 * theta)[30:42], rtol=1e-12, atol=1e-14)


def test_output_gradient_is_mean_output_jacobian(mlp):
    model, crit, batches, _ = mlp
    N = sum(x.shape[0] for x, _ in batches)
    mean_out = sum(model(x).sum() for x, _ in batches) / N          # J^T 1 / N, all output entries
    u = torch.cat([t.reshape(-1) for t in torch.autograd.grad(mean_out, list(model.parameters()))])
    loss = sum(crit(model(x), y) * (x.shape[0] / N) for x, y in batches)
    with HessianOperator(model, crit, batches, weight_decay=0.1) as op:
        assert torch.allclose(op.output_gradient(), u, rtol=1e-12, atol=1e-14)   # no weight-decay term
        assert op.n_matvecs == 0 and op._g.n_graph_builds == 0
        assert op.loss == pytest.approx(loss.item(), rel=1e-12)
        assert torch.allclose(op.restrict(["2.weight"]).output_gradient(), u[30:42], rtol=1e-12, atol=1e-14)


class TupleOut(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x), None


def test_start_rules_and_fallbacks(mlp, swin):
    model, crit, batches, Hd = mlp
    exact = np.linalg.eigvalsh(Hd)
    with HessianOperator(model, crit, batches) as op:
        assert top_eigenvalues(op, 1, tol=1e-9).start == "output"
        assert top_eigenvalues(op, 1, which="LM", tol=1e-9).start == "output"
        top2 = top_eigenvalues(op, 2, tol=1e-9)               # auto, k > 1: random (RESULTS.md)
        assert top2.start == "random" and np.allclose(top2.eigenvalues, exact[::-1][:2], rtol=1e-8)
        sa = top_eigenvalues(op, 2, which="SA", tol=1e-9)
        assert sa.start == "random" and np.allclose(sa.eigenvalues, exact[:2], rtol=1e-8)
        with pytest.raises(LandscapeError, match="start='middle'"):
            top_eigenvalues(op, 1, start="middle")
    tuple_model = TupleOut(model)

    def tuple_crit(out, y):
        return crit(out[0], y)

    with HessianOperator(tuple_model, tuple_crit, batches) as op:
        r = top_eigenvalues(op, 1, tol=1e-9)                      # auto: falls back to a random start
        assert r.start == "random" and np.allclose(r.eigenvalues, exact[::-1][:1], rtol=1e-8)
        with pytest.raises(LandscapeError, match="not a tensor"):
            top_eigenvalues(op, 1, start="output")
    # an MSE model: the mean-output gradient is near the top eigenvector, so fewer products
    model, crit, batches, Hd = swin
    top = np.linalg.eigvalsh(Hd)[-1]
    counts = {}
    for start in ("random", "output"):
        with HessianOperator(model, crit, batches) as op:
            r = top_eigenvalues(op, 1, tol=1e-6, stop="eigenvalue", start=start)
        assert r.eigenvalues[0] == pytest.approx(top, rel=1e-6)
        counts[start] = r.n_matvecs
    assert counts["output"] < counts["random"], counts


def test_graphs_shared_across_columns_and_kept_between_calls(mlp):
    model, crit, batches, Hd = mlp
    V = torch.randn(44, 3, dtype=DT)
    op = HessianOperator(model, crit, batches, max_retained_batches=0)
    op.matmat(V)
    assert op._g.n_graph_builds == len(batches)          # one forward/backward per batch for 3 columns
    op.matmat(V)
    assert op._g.n_graph_builds == 2 * len(batches)
    op = HessianOperator(model, crit, batches, max_retained_batches=2)
    out1 = op.matmat(V)
    out2 = op.matmat(V)
    assert op.n_retained == 2 and op._g.n_graph_builds == len(batches) + (len(batches) - 2)
    assert torch.equal(out1, out2) and op.n_matvecs == 6
    assert np.abs(out1.numpy() - Hd @ V.numpy()).max() < 1e-12
    op.release()
    assert op.n_retained == 0


# ----------------------------------------------------------------------------- eigenvalues

def test_topk_mlp_matches_dense(mlp):
    model, crit, batches, Hd = mlp
    ev, evec = np.linalg.eigh(Hd)
    with HessianOperator(model, crit, batches) as op:
        r = top_eigenvalues(op, 5, tol=1e-8, eigenvectors=True)
    exact = ev[::-1][:5]
    assert np.allclose(r.eigenvalues, exact, rtol=1e-4, atol=0)
    assert np.max(np.abs(r.eigenvalues - exact) / exact) < 1e-10
    assert r.converged.all() and r.which == "LA" and r.mode == "eval" and r.n_params == 44
    # reported residuals are the true ||H v - lambda v||
    V = r.eigenvectors
    true_res = np.linalg.norm(Hd @ V - V * r.eigenvalues, axis=0)
    assert np.allclose(r.residuals, true_res, atol=1e-12)
    assert r.n_matvecs <= 44 and r.seconds > 0


def test_which_and_thick_restart_on_dense_matrix():
    rng = np.random.default_rng(3)
    n = 300
    lam = np.concatenate([[-9.0, -8.5], rng.uniform(-1, 1, n - 7), [5.0, 4.9, 4.8, 4.0, 3.0]])
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.from_numpy(Qm @ np.diag(lam) @ Qm.T)
    mm = lambda V: A @ V  # noqa: E731
    s = np.sort(lam)
    for which, expect in (("LA", s[::-1][:4]), ("SA", s[:3]), ("LM", s[np.argsort(-np.abs(s))][:3])):
        k = len(expect)
        r = linalg.lanczos(mm, n, k, which=which, tol=1e-9, max_basis=15, max_iter=2000, dtype=DT,
                           eigenvectors=True)
        assert r.converged.all(), which
        assert np.allclose(r.eigenvalues, expect, rtol=1e-8), which
        assert r.n_restarts > 0                                        # the basis of 15 restarted
        V = r.eigenvectors.numpy()
        assert np.allclose(np.linalg.norm(A.numpy() @ V - V * r.eigenvalues, axis=0), r.residuals, atol=1e-10)
    # a max_iter too small to converge: flags say so
    r = linalg.lanczos(mm, n, 4, tol=1e-12, max_iter=8, dtype=DT)
    assert r.n_matvecs == 8 and not r.converged.all()
    assert np.all(r.residuals > 1e-12 * np.abs(r.eigenvalues)) or not r.converged.any()


def test_eigenvalue_stop_rule_reaches_accuracy_in_fewer_products():
    rng = np.random.default_rng(5)
    n = 400
    lam = np.concatenate([[10.0, 6.0, 5.0], rng.uniform(-1, 1.5, n - 3)])
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.from_numpy(Qm @ np.diag(lam) @ Qm.T)
    exact = np.sort(lam)[::-1][:3]
    by_res = linalg.lanczos(lambda V: A @ V, n, 3, tol=1e-4, dtype=DT)
    by_val = linalg.lanczos(lambda V: A @ V, n, 3, tol=1e-4, stop="eigenvalue", dtype=DT)
    assert by_res.converged.all() and by_val.converged.all() and by_val.stop == "eigenvalue"
    assert by_val.n_matvecs < by_res.n_matvecs
    err = np.abs(by_val.eigenvalues - exact) / exact
    assert np.all(err <= 1e-4)
    assert np.all(err * exact <= by_val.residuals)                   # Weyl: residual bounds the error
    assert np.all(by_val.error_estimates <= by_val.residuals)
    assert np.all(np.abs(by_val.eigenvalues - exact) <= by_val.error_estimates)  # estimate not optimistic here
    assert np.any(by_val.residuals > 1e-4 * exact)         # stopped before the residual test would


def test_largest_magnitude_negative_returns_largest_algebraic():
    lam = [-6.0, 2.5, 1.0, 0.5, -0.25, 0.1]
    model = Quadratic(lam)
    batches = quad_batches()
    with HessianOperator(model, mean_criterion, batches) as op:
        assert np.allclose(op.dense().numpy(), model.A.numpy(), atol=1e-13)
        la = top_eigenvalues(op, 2, tol=1e-10)
        lm = top_eigenvalues(op, 1, which="LM", tol=1e-10)
        sa = top_eigenvalues(op, 2, which="SA", tol=1e-10)
    assert np.allclose(la.eigenvalues, [2.5, 1.0], rtol=1e-10)
    assert np.allclose(lm.eigenvalues, [-6.0], rtol=1e-10)
    assert np.allclose(sa.eigenvalues, [-6.0, -0.25], rtol=1e-10)
    # PyHessian's power iteration converges to the largest magnitude: the negative one
    ph = pyhessian_top_eigenvalues(model, mean_criterion, batches, top_n=1, tol=1e-6, max_iter=200)
    assert ph.eigenvalues[0] == pytest.approx(-6.0, rel=1e-3)


def test_weight_decay_shifts_eigenvalues_by_wd(mlp):
    lam = [3.0, 2.0, -1.0, 0.5]
    model = Quadratic(lam, seed=1)
    with HessianOperator(model, mean_criterion, quad_batches(), weight_decay=0.3) as op:
        r = top_eigenvalues(op, 4, tol=1e-10)
        t = hessian_trace(op, n_matvecs=12)
    assert np.allclose(r.eigenvalues, [3.3, 2.3, 0.8, -0.7], rtol=1e-10) and r.weight_decay == 0.3
    assert t.trace == pytest.approx(sum(lam) + 4 * 0.3, rel=1e-10)       # sketch spans all of R^4
    model, crit, batches, Hd = mlp
    base = np.linalg.eigvalsh(Hd)[::-1][:3]
    with HessianOperator(model, crit, batches, weight_decay=1e-2) as op:
        r = top_eigenvalues(op, 3, tol=1e-9)
    assert np.allclose(r.eigenvalues, base + 1e-2, rtol=1e-9)


def test_topk_tiny_swin_matches_dense(swin):
    model, crit, batches, Hd = swin
    ev = np.linalg.eigvalsh(Hd)
    with HessianOperator(model, crit, batches) as op:
        r = top_eigenvalues(op, 5, tol=1e-6, max_iter=400)
    exact = ev[::-1][:5]
    assert r.converged.all()
    assert np.max(np.abs(r.eigenvalues - exact) / np.abs(exact)) < 1e-4
    assert r.n_matvecs < len(ev) / 2                # far fewer products than the dense Hessian


def test_pyhessian_top1_within_one_percent_on_swin(swin):
    model, crit, batches, Hd = swin
    ev = np.linalg.eigvalsh(Hd)
    assert abs(ev[-1]) > abs(ev[0])                 # the top eigenvalue is also the largest in magnitude
    model.train()
    before = state_of(model)
    ph = pyhessian_top_eigenvalues(model, crit, batches, top_n=1, tol=1e-4, max_iter=200, seed=0)
    with HessianOperator(model, crit, batches) as op:
        ours = top_eigenvalues(op, 1, tol=1e-6)
    assert ph.method == "pyhessian" and ph.n_matvecs > 1 and np.isfinite(ph.residuals).all()
    assert ph.eigenvalues[0] == pytest.approx(ours.eigenvalues[0], rel=1e-2)
    assert ours.eigenvalues[0] == pytest.approx(ev[-1], rel=1e-6)
    # PyHessian forces eval and leaves .grad filled: the wrapper restores both
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()


# ----------------------------------------------------------------------------- blocks

@pytest.mark.parametrize("start", ["random", "gradient", "output"])
def test_block_operators_equal_dense_sub_blocks(mlp, swin, start):
    model, crit, batches, Hd = mlp
    groups = parameter_groups(model, {"first": ["0"], "out_w": ["2.weight"]})
    assert groups == {"first": ["0.weight", "0.bias"], "out_w": ["2.weight"]}
    with HessianOperator(model, crit, batches) as op:
        blocks = block_operators(op, groups)
        sub = {"first": np.arange(0, 30), "out_w": np.arange(30, 42)}
        for name, b in blocks.items():
            exact = np.linalg.eigvalsh(Hd[np.ix_(sub[name], sub[name])])[::-1][:3]
            r = top_eigenvalues(b, 3, tol=1e-9, start=start)     # out_w: eigenvalues come in pairs
            assert r.block == name and r.n_params == len(sub[name]) and r.start == start
            assert np.allclose(r.eigenvalues, exact, rtol=1e-8), name
    # timm Swin stages 'layers.0', 'layers.1' against the dense sub-blocks
    model, crit, batches, Hd = swin
    names = [n for n, _ in model.named_parameters()]
    stages = parameter_groups(model, "stages")
    assert list(stages) == ["layers.0", "layers.1"]
    with HessianOperator(model, crit, batches) as op:
        for name, b in block_operators(op, "stages").items():
            pos = []
            off = 0
            for n, p in model.named_parameters():
                if n in stages[name]:
                    pos += list(range(off, off + p.numel()))
                off += p.numel()
            exact = np.linalg.eigvalsh(Hd[np.ix_(pos, pos)])[::-1][:2]
            r = top_eigenvalues(b, 2, tol=1e-7, start=start)
            assert np.allclose(r.eigenvalues, exact, rtol=1e-5), name
    with pytest.raises(LandscapeError, match="matches no trainable parameter"):
        parameter_groups(model, {"x": ["nonexistent"]})
    assert set(stages["layers.0"]) < set(names)


# ----------------------------------------------------------------------------- trace and density

def test_trace_within_three_standard_errors(mlp):
    model, crit, batches, Hd = mlp
    exact = np.trace(Hd)
    with HessianOperator(model, crit, batches) as op:
        for method in ("hutch++", "hutchinson"):
            t = hessian_trace(op, method=method, n_matvecs=30, seed=1)
            assert t.n_matvecs == 30 and t.stderr > 0 and t.method == method
            assert abs(t.trace - exact) <= 3 * t.stderr, method
        hp = hessian_trace(op, method="hutch++", n_matvecs=30, seed=1)
        assert hp.trace == pytest.approx(hp.exact_part + hp.samples.mean(), rel=1e-12)


def test_trace_standard_errors_are_calibrated():
    """Over many seeds the error/SE ratio behaves like a standard normal (coverage of 2 SE)."""
    rng = np.random.default_rng(0)
    n = 80
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.from_numpy(Qm @ np.diag(rng.standard_normal(n) + np.linspace(0, 3, n)) @ Qm.T)
    exact = float(torch.trace(A))
    for fn, budget in ((linalg.hutchinson, 40), (linalg.hutchpp, 45)):
        z = np.array([(r.trace - exact) / r.stderr for r in
                      (fn(lambda V: A @ V, n, budget, seed=s, dtype=DT) for s in range(200))])
        assert 0.85 <= np.mean(np.abs(z) < 2) <= 1.0, fn.__name__
        assert abs(np.mean(z)) < 0.3, fn.__name__                      # unbiased
    # Hutch++ beats Hutchinson on a matrix with a few dominant eigenvalues
    B = torch.from_numpy(Qm @ np.diag(np.r_[[100.0, 80, 60], np.ones(n - 3) * 0.1]) @ Qm.T)
    se_h = linalg.hutchinson(lambda V: B @ V, n, 30, dtype=DT).stderr
    se_pp = linalg.hutchpp(lambda V: B @ V, n, 30, dtype=DT).stderr
    assert se_pp < se_h / 10


def test_density_integrates_to_one_and_mean_is_trace_over_n(mlp):
    model, crit, batches, Hd = mlp
    n = Hd.shape[0]
    with HessianOperator(model, crit, batches) as op:
        d = spectral_density(op, n_runs=5, steps=n, seed=2)
    assert abs(np.trapezoid(d.density, d.grid) - 1) < 1e-6
    assert np.allclose(np.nansum(d.weights, axis=1), 1, atol=1e-12)
    mean_of_curve = np.trapezoid(d.grid * d.density, d.grid)
    assert mean_of_curve == pytest.approx(d.mean_eigenvalue, rel=1e-6, abs=1e-9)
    assert abs(d.mean_eigenvalue - np.trace(Hd) / n) <= 3 * d.trace_stderr / n
    assert d.trace == pytest.approx(n * d.mean_eigenvalue)
    assert d.sigma == pytest.approx(0.01 * (np.nanmax(d.nodes) - np.nanmin(d.nodes)))
    # Gauss quadrature with a full Krylov space is exact: sum w f(node) = z^T f(H) z / n
    Z = linalg.rademacher(n, 5, gen=linalg.generator("cpu", 2), device="cpu", dtype=DT).numpy()
    for r in range(5):
        z, L = Z[:, r], d.lengths[r]
        w, t = d.weights[r, :L], d.nodes[r, :L]
        assert np.sum(w * t) == pytest.approx(z @ Hd @ z / n, rel=1e-9)
        assert np.sum(w * t ** 2) == pytest.approx(z @ Hd @ Hd @ z / n, rel=1e-9)
    # extreme nodes are the extreme eigenvalues when the run spans the space
    ev = np.linalg.eigvalsh(Hd)
    assert np.nanmax(d.nodes) == pytest.approx(ev[-1], rel=1e-8)


def test_density_short_runs_and_early_breakdown():
    lam = [4.0, 4.0, 4.0, 1.0, 1.0, -2.0]        # 3 distinct eigenvalues: Krylov space of size 3
    model = Quadratic(lam, seed=2)
    with HessianOperator(model, mean_criterion, quad_batches()) as op:
        d = spectral_density(op, n_runs=3, steps=6, seed=0)
    assert (d.lengths == 3).all()
    assert np.allclose(np.sort(d.nodes[:, :3], axis=1), [[-2, 1, 4]] * 3, atol=1e-10)
    assert np.isnan(d.nodes[:, 3:]).all() and (d.weights[:, 3:] == 0).all()
    assert d.n_matvecs == 9


# ----------------------------------------------------------------------------- state, errors

def test_model_mode_parameters_and_buffers_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Dropout(0.5), nn.Tanh(), nn.Linear(5, 1)).to(DT)
    model.train()
    model[1].eval()                                # a mixed-mode model
    flags = [m.training for m in model.modules()]
    before = state_of(model)
    X, Y = torch.randn(20, 3, dtype=DT), torch.randn(20, 1, dtype=DT)
    batches = [(X[:10], Y[:10]), (X[10:], Y[10:])]
    res = analyze_hessian(model, nn.MSELoss(), batches, top_k=2, trace_matvecs=6, density=True,
                          density_runs=2, density_steps=5)
    assert res.mode == "eval" and res.topk.mode == "eval"
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # train mode: BatchNorm batch statistics, running statistics put back
    model2 = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 1)).to(DT)
    before = state_of(model2)
    with HessianOperator(model2, nn.MSELoss(), batches, train=True) as op:
        r = top_eigenvalues(op, 1, tol=1e-8)
        assert op.mode == "train" and r.mode == "train"
    assert all(torch.equal(v, before[k]) for k, v in model2.state_dict().items())
    model2.train()
    Hd = dense_hessian(model2, nn.MSELoss(), batches)
    assert r.eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(Hd)[-1], rel=1e-6)


def test_bad_inputs_raise_clear_errors(mlp):
    model, crit, batches, _ = mlp
    with pytest.raises(LandscapeError, match="top_k=45 exceeds the number of parameters \\(44\\)"):
        analyze_hessian(model, crit, batches, top_k=45, trace=False)
    with pytest.raises(LandscapeError, match="top_k=13 exceeds the number of parameters of block 'w' \\(12\\)"):
        analyze_hessian(model, crit, batches, top_k=13, trace=False, blocks={"w": ["2.weight"]})
    with pytest.raises(LandscapeError, match="no data"):
        HessianOperator(model, crit, [])
    frozen = nn.Linear(2, 1)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(LandscapeError, match="no trainable parameters"):
        HessianOperator(frozen, crit, [(torch.randn(3, 2), torch.randn(3, 1))])
    bad = [(batches[0][0].clone(), batches[0][1].clone())]
    bad[0][1][0, 0] = float("nan")
    with pytest.raises(NumericsError, match="not finite"):
        analyze_hessian(model, crit, bad, top_k=1, trace=False)
    with pytest.raises(LandscapeError, match="mean-reduced scalar"):
        HessianOperator(model, nn.MSELoss(reduction="none"), batches).matvec(torch.ones(44, dtype=DT))
    with pytest.raises(LandscapeError, match="which='XY'"):
        analyze_hessian(model, crit, batches, top_k=1, which="XY")
    with pytest.raises(LandscapeError, match="trace_method='exact': choose one of"):
        analyze_hessian(model, crit, batches, top_k=0, trace_method="exact")
    with pytest.raises(LandscapeError, match="expected \\(44, m\\)"):
        HessianOperator(model, crit, batches).matmat(torch.ones(3, 2, dtype=DT))


# ----------------------------------------------------------------------------- storage and resume

def test_analyze_resumes_from_stored_parts(mlp, tmp_path):
    model, crit, batches, Hd = mlp
    h5 = tmp_path / "analysis.h5"
    kw = dict(top_k=3, tol=1e-8, trace_matvecs=12, density=True, density_runs=2, density_steps=10,
              blocks={"first": ["0"]}, h5_path=h5, provenance={"checkpoint_sha256": "abc", "seed": 0})
    first = analyze_hessian(model, crit, batches, **kw)
    assert first.loaded == [] and first.n_matvecs > 0 and first.loss > 0
    assert np.allclose(first.topk.eigenvalues, np.linalg.eigvalsh(Hd)[::-1][:3], rtol=1e-8)
    with h5py.File(h5, "r") as f:
        for part in ("topk", "trace", "density", "blocks/first/topk"):
            g = f["hessian/" + part]
            assert len(g.attrs["key"]) == 16 and "checkpoint_sha256" in g.attrs["provenance"]
        assert f["hessian/topk/eigenvalues"].shape == (3,)
        assert f["hessian/density/density"].shape == (1024,)
    second = analyze_hessian(model, crit, batches, **kw)
    assert second.n_matvecs == 0
    assert sorted(second.loaded) == sorted(["topk", "trace", "density", "blocks/first/topk",
                                            "blocks/first/trace", "blocks/first/density"])
    assert np.array_equal(second.topk.eigenvalues, first.topk.eigenvalues)
    assert np.array_equal(second.topk.converged, first.topk.converged)
    assert second.trace.trace == first.trace.trace and second.trace.method == "hutch++"
    assert np.array_equal(second.blocks["first"].density.density, first.blocks["first"].density.density)
    # a changed setting recomputes only that part
    third = analyze_hessian(model, crit, batches, **{**kw, "trace_matvecs": 15})
    assert sorted(third.loaded) == sorted(["topk", "density", "blocks/first/topk", "blocks/first/density"])
    assert third.n_matvecs == 30
    # changed parameters: nothing reused
    with torch.no_grad():
        model[0].bias.add_(1e-3)
    try:
        fourth = analyze_hessian(model, crit, batches, **kw)
        assert fourth.loaded == []
    finally:
        with torch.no_grad():
            model[0].bias.sub_(1e-3)


def test_save_and_load_roundtrip(tmp_path):
    model = Quadratic([2.0, 1.0, -1.0])
    with HessianOperator(model, mean_criterion, quad_batches()) as op:
        r = top_eigenvalues(op, 2, tol=1e-10, eigenvectors=True)
    path = save_hessian_result(tmp_path / "a.h5", r, {"seed": 3}, key="k1")
    assert path == "hessian/topk"
    back, key, prov = load_hessian_result(tmp_path / "a.h5", "topk")
    assert key == "k1" and prov == {"seed": 3}
    assert np.array_equal(back.eigenvalues, r.eigenvalues) and np.array_equal(back.eigenvectors, r.eigenvectors)
    assert back.which == "LA" and back.n_matvecs == r.n_matvecs and back.tol == r.tol
    assert load_hessian_result(tmp_path / "a.h5", "trace") is None


# ----------------------------------------------------------------------------- config, content keys, data parallel

def test_config_is_validated_once_and_equals_its_options(mlp):
    model, crit, batches, _ = mlp
    cfg = HessianConfig(top_k=2, tol=1e-8, trace_matvecs=8, seed=1)
    a = analyze_hessian(model, crit, batches, cfg)
    b = analyze_hessian(model, crit, batches, top_k=2, tol=1e-8, trace_matvecs=8, seed=1)
    assert np.array_equal(a.topk.eigenvalues, b.topk.eigenvalues) and a.trace.trace == b.trace.trace
    with pytest.raises(LandscapeError, match="not both"):
        analyze_hessian(model, crit, batches, cfg, top_k=3)
    with pytest.raises(LandscapeError, match="unknown Hessian option 'topk'"):
        analyze_hessian(model, crit, batches, topk=3)
    with pytest.raises(LandscapeError, match="which='XY'"):
        HessianConfig(which="XY")
    with pytest.raises(LandscapeError, match="start='best'"):
        HessianConfig(start="best")
    with pytest.raises(LandscapeError, match="top_k=-1"):
        HessianConfig(top_k=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.top_k = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.topk.which = "SA"


def test_single_process_and_data_parallel_operators_record_the_same_data_hash(mlp):
    model, crit, batches, Hd = mlp
    single = HessianOperator(model, crit, batches, weight_decay=0.01)
    shard = shard_batches(batches, 0, 1)            # no process group: rank 0 of 1
    with single, DataParallelHessian(model, crit, shard, weight_decay=0.01) as par:
        assert isinstance(single, CurvatureOperator) and isinstance(par, CurvatureOperator)
        assert single.data_hash() == par.data_hash() == hash_batches(batches)
        np.testing.assert_allclose(par.dense().numpy(), single.dense().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(single.dense().numpy(), Hd + 0.01 * np.eye(44), rtol=1e-10, atol=1e-12)
        assert par.loss == pytest.approx(single.loss, rel=1e-14) and par.n_samples == single.n_samples == 50
        assert single.engine_provenance == {} and par.engine_provenance == {"engine": "data-parallel",
                                                                             "world_size": 1}
        block = par.restrict(["0.weight"], block="w0")
        assert type(block) is DataParallelHessian and block.n == 24 and block.data_hash() == par.data_hash()
        np.testing.assert_allclose(block.dense().numpy(), single.dense().numpy()[:24, :24], rtol=1e-12, atol=1e-14)


def _v1_key(spec, length=16):
    """Content key as written before key_spec 2 (no ``key_spec`` field)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:length]


def test_parts_stored_under_old_style_keys_are_recomputed(mlp, tmp_path):
    model, crit, batches, _ = mlp
    h5 = tmp_path / "analysis.h5"
    prov = {"checkpoint_sha256": "abc"}
    with HessianOperator(model, crit, batches) as op:
        old = hessian_trace(op, n_matvecs=12, seed=0)
    # the key the old code computed: data hash with "{i}.x" keys, no key_spec field
    old_data = hash_state({f"{i}.{p}": t for i, (x, y) in enumerate(batches) for p, t in (("x", x), ("y", y))})
    assert old_data != hash_batches(batches)
    base = {"model": hash_state(model.state_dict()), "data": old_data, "mode": "eval", "weight_decay": 0.0,
            "user": prov}
    old_key = _v1_key({**base, "part": "trace", "block": "", "params": "all", "method": "hutch++",
                       "n_matvecs": 12, "seed": 0})
    fake = dataclasses.replace(old, trace=old.trace + 123.0)     # a stale value that must not come back
    save_hessian_result(h5, fake, prov, key=old_key)
    res = analyze_hessian(model, crit, batches, top_k=0, trace_matvecs=12, h5_path=h5, provenance=prov)
    assert res.loaded == [] and res.n_matvecs == 12
    assert res.trace.trace == pytest.approx(old.trace, rel=1e-12)
    back, key, stored_prov = load_hessian_result(h5, "trace")
    assert key != old_key and back.trace == pytest.approx(old.trace, rel=1e-12)
    assert stored_prov["data_hash"] == hash_batches(batches)
    again = analyze_hessian(model, crit, batches, top_k=0, trace_matvecs=12, h5_path=h5, provenance=prov)
    assert again.loaded == ["trace"] and again.n_matvecs == 0
