"""Loss-landscape slices: analytic surfaces, exact centres and ends, directions, storage, resume, plots."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from landscape.batches import dataset_loss
from landscape.errors import InUseError, LandscapeError
from landscape.figures.surface import contour_levels, plot_curves, plot_surface
from landscape.params import evaluation_mode
from landscape.store import exclusive
from landscape.surface import (
    DirectionSpec,
    alpha_grid,
    cells_for_rank,
    compute_slice,
    compute_surface,
    interpolate,
    load_directions,
    load_surface,
    merge_shards,
    parse_grid,
    pca_plane,
    random_directions,
    shard_path,
    slice_norms,
    trajectory_surface,
)
from landscape.surface.storage import INDEXING_2D

REPO = Path(__file__).resolve().parents[2]


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.reshape(-1) - targets.reshape(-1)) ** 2).mean()


def linear_problem(seed: int = 0):
    """Linear regression in float64: batches of unequal size (size weighting matters)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=torch.float64) + 0.3 * torch.randn(40, generator=g,
                                                                                         dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Linear(4, 1).double()
    sets = {"train": [(x[:16], y[:16]), (x[16:30], y[16:30])], "test": [(x[30:], y[30:])]}
    return model, sets, x, y


def analytic(model, dirs, x, y, a, b):
    """Closed form at (a, b): loss as an exact quadratic in (a, b), and the predictions."""
    w, c = model.weight.detach().numpy().reshape(-1), float(model.bias.detach())
    d1w, d1c = dirs.vectors[0][0].numpy().reshape(-1), float(dirs.vectors[0][1])
    g1 = x.numpy() @ d1w + d1c
    if len(dirs.vectors) > 1:
        d2w, d2c = dirs.vectors[1][0].numpy().reshape(-1), float(dirs.vectors[1][1])
        g2 = x.numpy() @ d2w + d2c
    else:
        g2 = np.zeros(len(x))
    r0 = x.numpy() @ w + c - y.numpy()
    n = len(x)
    coef = {"1": r0 @ r0, "a": 2 * r0 @ g1, "b": 2 * r0 @ g2, "aa": g1 @ g1, "ab": 2 * g1 @ g2, "bb": g2 @ g2}
    loss = (coef["1"] + a * coef["a"] + b * coef["b"] + a * a * coef["aa"] + a * b * coef["ab"]
            + b * b * coef["bb"]) / n
    return loss, r0 + y.numpy() + a * g1 + b * g2


def test_parse_grid_and_cells():
    g = parse_grid("-1:1:51")
    assert g.size == 51 and g[0] == -1.0 and g[-1] == 1.0 and g[25] == 0.0
    assert np.all(np.diff(g) > 0)
    assert parse_grid([0.5, 1.0]).tolist() == [0.5, 1.0]
    for bad in ("1:-1:5", "-1:1", "a:1:3", "-1:1:0", [1.0, 0.5]):
        with pytest.raises(LandscapeError):
            parse_grid(bad)
    a = alpha_grid("-0.5:1.5:6")  # step 0.4 misses 0 and 1: both inserted
    assert 0.0 in a and 1.0 in a and a.size == 8 and np.all(np.diff(a) > 0)
    a = alpha_grid("-1:2:31")  # 0 and 1 are (nearly) on the grid: snapped exactly, none inserted
    assert a.size == 31 and a[10] == 0.0 and a[20] == 1.0
    parts = [cells_for_rank(10, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    with pytest.raises(LandscapeError):
        cells_for_rank(10, 3, 3)


def test_analytic_quadratic_surface_non_square(tmp_path):
    model, sets, x, y = linear_problem()
    spec = DirectionSpec(seed=3, normalization="layer", ignore_1d=False)
    xs, ys = "-1:1:5", "-0.6:0.3:4"  # non-square; y grid does not contain 0
    r = compute_surface(model, mse, sets, tmp_path, xs, ys, spec)
    assert r.complete and r.values["train_loss"].shape == (4, 5) and r.attrs["indexing"] == INDEXING_2D
    dirs = load_directions(tmp_path / r.attrs["directions_file"], [model.weight, model.bias])
    xtr, ytr = x[:30], y[:30]
    xte, yte = x[30:], y[30:]
    for iy, b in enumerate(r.y):
        for ix, a in enumerate(r.x):
            loss, pred = analytic(model, dirs, xtr, ytr, a, b)
            assert r.values["train_loss"][iy, ix] == pytest.approx(loss, rel=1e-12)
            assert r.values["train_srcc"][iy, ix] == pytest.approx(stats.spearmanr(pred, ytr).statistic, rel=1e-12)
            assert r.values["train_plcc"][iy, ix] == pytest.approx(stats.pearsonr(pred, ytr).statistic, rel=1e-12)
            loss, pred = analytic(model, dirs, xte, yte, a, b)
            assert r.values["test_loss"][iy, ix] == pytest.approx(loss, rel=1e-12)
            assert r.values["test_srcc"][iy, ix] == pytest.approx(stats.spearmanr(pred, yte).statistic, rel=1e-12)
    # orientation: a transposed or scrambled grid would not fit; check one asymmetric cell explicitly
    loss, _ = analytic(model, dirs, xtr, ytr, float(r.x[4]), float(r.y[0]))
    assert r.values["train_loss"][0, 4] == pytest.approx(loss, rel=1e-12)
    with h5py.File(r.path) as f:
        assert f["train_loss"].shape == (4, 5) and f["xcoordinates"].shape == (5,) and f["ycoordinates"].shape == (4,)


def test_centre_cell_is_base_loss_exactly_and_1d_slice(tmp_path):
    model, sets, x, y = linear_problem(1)
    r = compute_surface(model, mse, sets, tmp_path, "-1:1:7", "-2:2:5")
    with evaluation_mode(model), torch.no_grad():
        base_train = float(dataset_loss(model, mse, sets["train"]))
        base_test = float(dataset_loss(model, mse, sets["test"]))
    assert r.values["train_loss"][2, 3] == base_train  # bit-exact
    assert r.values["test_loss"][2, 3] == base_test
    assert r.at(0.0, 0.0)["train_loss"] == base_train
    # default directions: filter-normalised, bias (dim 1) zeroed
    dirs = load_directions(tmp_path / r.attrs["directions_file"], [model.weight, model.bias])
    assert float(dirs.vectors[0][1]) == 0.0 and float(dirs.vectors[1][1]) == 0.0
    s = compute_slice(model, mse, sets, tmp_path, "-1:1:9", DirectionSpec(seed=5, count=1))
    assert s.values["train_loss"].shape == (9,) and s.y is None and s.values["train_loss"][4] == base_train
    d1 = load_directions(tmp_path / s.attrs["directions_file"], [model.weight, model.bias])
    for ix, a in enumerate(s.x):
        loss, _ = analytic(model, d1, x[:30], y[:30], a, 0.0)
        assert s.values["train_loss"][ix] == pytest.approx(loss, rel=1e-12)


def test_compiled_forward_matches_analytic_surface(tmp_path):
    """compile='on': a real torch.compile of the perturbed forward; same closed-form values."""
    import shutil
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    model, sets, x, y = linear_problem(2)
    spec = DirectionSpec(seed=4, normalization="layer", ignore_1d=False)
    r = compute_surface(model, mse, sets, tmp_path, "-1:1:3", "-1:1:3", spec, compile="on")
    fwd = r.attrs["forward"]
    assert fwd["compile"] == "on" and fwd["fallback"] is None, fwd
    assert fwd["compiled_calls"] == 9 and fwd["eager_calls"] == 0 and fwd["compile_seconds"] > 0
    dirs = load_directions(tmp_path / r.attrs["directions_file"], [model.weight, model.bias])
    for iy, b in enumerate(r.y):
        for ix, a in enumerate(r.x):
            loss, _ = analytic(model, dirs, x[:30], y[:30], a, b)
            assert r.values["train_loss"][iy, ix] == pytest.approx(loss, rel=1e-10)


class FakeCompile:
    """Stands in for torch.compile: counts compilations; the 'compiled' function may break or lie."""

    def __init__(self, mode: str):
        self.mode, self.n = mode, 0

    def __call__(self, fn, **options):
        self.n += 1

        def compiled(tensors, x):
            if self.mode == "raise":
                raise RuntimeError("no C++ compiler\nsecond line")
            out = fn(tensors, x)
            return out + 1.0 if self.mode == "wrong" else out
        return compiled


@pytest.mark.parametrize("mode", ["ok", "raise", "wrong"])
def test_compile_auto_decision_and_fallbacks(tmp_path, monkeypatch, mode):
    from landscape.surface import evaluate

    model, sets, x, y = linear_problem(3)
    spec = DirectionSpec(seed=4, normalization="layer", ignore_1d=False)
    ref = compute_surface(model, mse, sets, tmp_path / "eager", "-1:1:4", "-1:1:3", spec, compile="off")
    assert ref.attrs["forward"]["eager_calls"] == 12 and ref.attrs["forward"]["compiled_calls"] == 0
    fake = FakeCompile(mode)
    monkeypatch.setattr(evaluate.torch, "compile", fake)
    monkeypatch.setattr(evaluate, "AUTO_COMPILE_SECONDS", 0.0)   # any remaining work is worth compiling
    if mode == "ok":
        r = compute_surface(model, mse, sets, tmp_path / "auto", "-1:1:4", "-1:1:3", spec)
    else:
        with pytest.warns(RuntimeWarning, match="running eagerly"):
            r = compute_surface(model, mse, sets, tmp_path / "auto", "-1:1:4", "-1:1:3", spec)
    fwd = r.attrs["forward"]
    assert fake.n == 1 and fwd["compile"] == "auto"
    for name in ref.values:                                          # values always the eager ones
        np.testing.assert_allclose(r.values[name], ref.values[name], rtol=1e-12)
    if mode == "ok":   # first cell eager (timed), then compiled; the first compiled one checked
        assert (fwd["eager_calls"], fwd["compiled_calls"], fwd["fallback"]) == (1, 11, None)
    elif mode == "raise":
        assert fwd["fallback"] == "RuntimeError: no C++ compiler" and fwd["eager_calls"] == 12
    else:
        assert "differ from eager" in fwd["fallback"] and fwd["compiled_calls"] == 0
    # auto with little work left: no compilation at all
    monkeypatch.setattr(evaluate, "AUTO_COMPILE_SECONDS", 1e9)
    fake.n = 0
    r = compute_surface(model, mse, sets, tmp_path / "small", "-1:1:4", "-1:1:3", spec)
    assert fake.n == 0 and r.attrs["forward"]["eager_calls"] == 12
    with pytest.raises(LandscapeError, match="compile='sometimes'"):
        compute_surface(model, mse, sets, tmp_path / "bad", "-1:1:3", None, spec, compile="sometimes")


def tiny_swin():
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                           num_heads=(1, 2), num_classes=1)


def test_filter_normalised_directions_on_swin(tmp_path):
    model = tiny_swin()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    dirs = random_directions(model, DirectionSpec(seed=7))
    assert dirs.names == tuple(n for n, _ in named)
    n_filters = 0
    for (name, w), d in zip(named, dirs.vectors[0]):
        if w.dim() <= 1:
            assert torch.count_nonzero(d) == 0, name
        else:
            n_filters += w.shape[0]
            torch.testing.assert_close(slice_norms(d), slice_norms(w.detach()), rtol=1e-5, atol=0)
    assert n_filters > 100
    again = random_directions(model, DirectionSpec(seed=7))
    assert again.digest() == dirs.digest() and random_directions(model, DirectionSpec(seed=8)).digest() != dirs.digest()
    # orthogonalised: filter norms still exact, cosine much smaller than before
    ortho = random_directions(model, DirectionSpec(seed=7, orthogonalize=True))
    assert abs(ortho.cosine) < 1e-3 * abs(dirs.cosine)
    for (_name, w), d in zip(named, ortho.vectors[1]):
        if w.dim() >= 2:
            torch.testing.assert_close(slice_norms(d), slice_norms(w.detach()), rtol=1e-5, atol=0)
    # layer mode: whole-tensor norms; elementwise: d * w for the same Gaussian draw
    layer = random_directions(model, DirectionSpec(seed=7, normalization="layer"))
    raw = random_directions(model, DirectionSpec(seed=7, normalization="none", ignore_1d=False))
    elem = random_directions(model, DirectionSpec(seed=7, normalization="elementwise"))
    for (_name, w), dl, dr, de in zip(named, layer.vectors[0], raw.vectors[0], elem.vectors[0]):
        if w.dim() >= 2:
            assert float(dl.norm()) == pytest.approx(float(w.detach().norm()), rel=1e-5)
            assert torch.equal(de, dr * w.detach())


def test_swin_model_untouched_and_directions_saved(tmp_path):
    model = tiny_swin()
    model.train()
    model.layers[0].eval()  # a mixed mode that must come back as it was
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(6, 3, 32, 32, generator=g), torch.rand(6, 1, generator=g)) for _ in range(2)]
    r = compute_surface(model, nn.MSELoss(), {"train": data[:1], "test": data[1:]}, tmp_path, "-1:1:3")
    assert r.complete and r.attrs["mode"] == "eval"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    with evaluation_mode(model), torch.no_grad():
        base = float(dataset_loss(model, nn.MSELoss(), data[:1]))
    assert r.values["train_loss"][1, 1] == base  # functional evaluation of the centre: bit-exact
    dirs = load_directions(tmp_path / r.attrs["directions_file"], [p for p in model.parameters()])
    assert dirs.digest() == r.attrs["directions_digest"]
    for (_name, w), d in zip(model.named_parameters(), dirs.vectors[1]):
        if w.dim() >= 2:
            torch.testing.assert_close(slice_norms(d), slice_norms(w.detach()), rtol=1e-5, atol=0)
        else:
            assert torch.count_nonzero(d) == 0


def bn_net():
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).double()


def test_interpolation_ends_exact_and_buffers(tmp_path):
    torch.manual_seed(0)
    a_net, b_net = bn_net(), bn_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    for net, shift in ((a_net, 0.0), (b_net, 1.5)):  # different running statistics
        net.train()
        with torch.no_grad():
            net(x + shift)
        net.eval()
    sa, sb = a_net.state_dict(), b_net.state_dict()
    sets = {"train": [(x[:20], y[:20])], "test": [(x[20:], y[20:])]}
    model = bn_net()
    r = interpolate(model, sa, sb, mse, sets, tmp_path, "-0.5:1.5:6", buffers="interpolate")
    assert r.x.tolist().count(0.0) == 1 and r.x.tolist().count(1.0) == 1 and r.x.size == 8
    with torch.no_grad():
        for net, alpha in ((a_net, 0.0), (b_net, 1.0)):
            for name in ("train", "test"):
                exact = float(dataset_loss(net, mse, sets[name]))
                assert r.at(alpha)[f"{name}_loss"] == exact  # bit-exact
        mid = bn_net().eval()
        alpha = float(r.x[np.argmin(np.abs(r.x - 0.5))])
        mid.load_state_dict({k: ((1 - alpha) * sa[k] + alpha * sb[k]) if sa[k].is_floating_point() else sa[k]
                             for k in sa})
        assert r.at(alpha)["train_loss"] == pytest.approx(float(dataset_loss(mid, mse, sets["train"])), rel=1e-12)
    assert r.attrs["buffers"] == "interpolate" and "1.running_mean" in r.attrs["interpolated_buffers"]
    assert "1.num_batches_tracked" in r.attrs["buffers_from_a"]
    k = interpolate(model, sa, sb, mse, sets, tmp_path, "-0.5:1.5:6", buffers="keep_a")
    assert k.key != r.key and k.attrs["buffers"] == "keep_a"
    mixed = bn_net().eval()
    mixed.load_state_dict({**sb, **{n: sa[n] for n in sa if "running" in n or "num_batches" in n}})
    with torch.no_grad():
        assert k.at(1.0)["train_loss"] == float(dataset_loss(mixed, mse, sets["train"]))
    assert k.at(1.0)["train_loss"] != r.at(1.0)["train_loss"]


def test_resume_computes_only_missing_cells(tmp_path):
    model, sets, _, _ = linear_problem(2)
    full = compute_surface(model, mse, sets, tmp_path / "full", "-1:1:5", "-1:1:3")
    part = compute_surface(model, mse, sets, tmp_path / "part", "-1:1:5", "-1:1:3", max_cells=6, flush_every=4)
    assert part.computed_now == 6 and int(part.done.sum()) == 6 and not part.complete
    assert np.isnan(part.values["train_loss"][~part.done]).all()
    assert part.done[1, 2]  # the origin is computed first
    seen = []
    rest = compute_surface(model, mse, sets, tmp_path / "part", "-1:1:5", "-1:1:3",
                           callback=lambda cell, row: seen.append(cell))
    assert rest.computed_now == 9 and len(seen) == 9
    assert not set(seen) & set(np.flatnonzero(part.done.reshape(-1)).tolist())
    for m in full.values:
        assert np.array_equal(full.values[m], rest.values[m], equal_nan=True), m

    # an exception mid-run (after 4 cells) flushes what was done; resume completes it identically
    count = [0]

    def boom(cell, row):
        count[0] += 1
        if count[0] == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        compute_surface(model, mse, sets, tmp_path / "boom", "-1:1:5", "-1:1:3", flush_every=100, callback=boom)
    assert int(load_surface(next((tmp_path / "boom").glob("surface-*.h5"))).done.sum()) == 4
    again = compute_surface(model, mse, sets, tmp_path / "boom", "-1:1:5", "-1:1:3")
    assert again.computed_now == 11
    assert np.array_equal(again.values["test_srcc"], full.values["test_srcc"], equal_nan=True)


def test_killed_process_loses_only_unflushed_cells(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_surface import linear_problem, mse
        from landscape.surface import compute_surface
        model, sets, _, _ = linear_problem(2)
        n = [0]
        def die(cell, row):
            n[0] += 1
            if n[0] == 7:
                os._exit(3)  # no cleanup, no final flush
        compute_surface(model, mse, sets, {str(tmp_path)!r}, "-1:1:5", "-1:1:3", flush_every=3, callback=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    (path,) = tmp_path.glob("surface-*.h5")
    assert int(load_surface(path).done.sum()) == 6  # two flushes of 3; the 7th cell was in flight
    model, sets, _, _ = linear_problem(2)
    r = compute_surface(model, mse, sets, tmp_path, "-1:1:5", "-1:1:3")
    assert r.computed_now == 9 and r.complete


def test_stale_file_refused_and_lock(tmp_path):
    model, sets, _, _ = linear_problem(3)
    a = compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=0))
    b = compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=1))
    assert a.key != b.key and a.path != b.path  # a changed seed never reuses cells
    with torch.no_grad():
        model.bias.add_(0.1)
    c = compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=0))
    assert c.key != a.key  # changed checkpoint
    sub = {"train": sets["train"][:1], "test": sets["test"]}
    assert compute_surface(model, mse, sub, tmp_path, "-1:1:3").key != c.key  # changed subset
    assert compute_surface(model, mse, sets, tmp_path, "-1:1:5").key != c.key  # changed grid
    with pytest.raises(LandscapeError, match="refusing"):
        compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=5), path=a.path)
    with h5py.File(c.path, "r+") as f:  # directions that no longer match the stored cells
        f.attrs["directions_digest"] = "0" * 64
    with pytest.raises(LandscapeError, match="directions_digest"):
        compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=0))
    with exclusive(a.path):
        with pytest.raises(InUseError):
            compute_surface(model, mse, sets, tmp_path, "-1:1:3", directions=DirectionSpec(seed=9), path=a.path)


def test_shards_merge_to_single_process_grid(tmp_path):
    model, sets, _, _ = linear_problem(4)
    single = compute_surface(model, mse, sets, tmp_path / "one", "-1:1:5", "-0.5:0.5:3")
    shards = [compute_surface(model, mse, sets, tmp_path / "many", "-1:1:5", "-0.5:0.5:3", rank=r, world=3)
              for r in range(3)]
    for r, s in enumerate(shards):
        assert s.path == shard_path(tmp_path / "many" / single.path.name, r, 3)
        assert np.flatnonzero(s.done.reshape(-1)).tolist() == cells_for_rank(15, r, 3).tolist()
    merged = merge_shards([s.path for s in shards], tmp_path / "many" / single.path.name)
    assert merged.complete and merged.key == single.key
    for m in single.values:
        assert np.array_equal(merged.values[m], single.values[m], equal_nan=True), m
    other = compute_surface(model, mse, sets, tmp_path / "x", "-1:1:5", "-0.5:0.5:3", DirectionSpec(seed=1),
                            rank=0, world=3)
    with pytest.raises(LandscapeError):
        merge_shards([shards[0].path, other.path], tmp_path / "bad.h5")


def test_trajectory_pca_matches_numpy_svd(tmp_path):
    model, sets, _, _ = linear_problem(5)
    final = [p.detach() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    states = []
    for e in range(6):
        states.append({n: p.detach() + (6 - e) * 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype)
                       for n, p in model.named_parameters()})
    m = np.stack([np.concatenate([(s[n] - f).numpy().reshape(-1) for n, f in zip(("weight", "bias"), final)])
                  for s in states])
    for center in (False, True):
        plane = pca_plane(model, states, center=center)
        mm = m - m.mean(axis=0) if center else m
        _, sv, vt = np.linalg.svd(mm, full_matrices=False)
        np.testing.assert_allclose(plane.singular_values[:len(sv)], sv, rtol=1e-9)
        np.testing.assert_allclose(plane.explained_variance_ratio, sv[:2] ** 2 / (sv ** 2).sum(), rtol=1e-9)
        u = np.stack([np.concatenate([t.numpy().reshape(-1) for t in vec]) for vec in plane.directions.vectors])
        signs = np.sign(np.sum(u * vt[:2], axis=1))
        np.testing.assert_allclose(u, vt[:2] * signs[:, None], atol=1e-9)
        np.testing.assert_allclose(plane.coords, m @ u.T, atol=1e-12)
        resid = np.linalg.norm(m - (m @ u.T) @ u, axis=1) / np.linalg.norm(m, axis=1)
        np.testing.assert_allclose(plane.residual, resid, atol=1e-9)
    r, plane = trajectory_surface(model, states, mse, sets, tmp_path, num=5)
    assert r.kind == "trajectory" and r.values["train_loss"].shape == (5, 5)
    np.testing.assert_array_equal(r.extra["path_coordinates"], plane.coords)
    assert r.x[2] == 0.0 and r.y[2] == 0.0 and np.abs(plane.coords[:, 0]).max() < r.x[-1]
    with evaluation_mode(model), torch.no_grad():
        assert r.values["train_loss"][2, 2] == float(dataset_loss(model, mse, sets["train"]))
    # a cell off-centre equals the loss of w + a u1 + b u2 built by hand
    probe = nn.Linear(4, 1).double()
    a, b = float(r.x[4]), float(r.y[1])
    with torch.no_grad():
        for p, f, u1, u2 in zip(probe.parameters(), final, *plane.directions.vectors):
            p.copy_(f + a * u1 + b * u2)
        assert r.values["test_loss"][1, 4] == pytest.approx(float(dataset_loss(probe, mse, sets["test"])), rel=1e-12)


def test_rejects_non_scalar_outputs(tmp_path):
    model = nn.Linear(3, 2)
    data = [(torch.randn(5, 3), torch.rand(5))]
    with pytest.raises(LandscapeError, match="one score per image"):
        compute_surface(model, lambda o, t: o.mean(), {"train": data}, tmp_path, "-1:1:3")


def test_plots_written_and_not_blank(tmp_path):
    from matplotlib.image import imread
    model, sets, _, _ = linear_problem(6)
    r = compute_surface(model, mse, sets, tmp_path, "-1:1:9", "-1:1:7", DirectionSpec(normalization="layer",
                                                                                     ignore_1d=False))
    paths = plot_surface(r, "train_loss", log_levels=True)
    assert len(paths) == 8 and all(p.stat().st_size > 1000 for p in paths)
    img = imread(next(p for p in paths if p.name.endswith("-3d.png")))[..., :3]
    assert img.std() > 0.05 and len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    heat = imread(next(p for p in paths if p.name.endswith("-heatmap.png")))[..., :3]
    assert len(np.unique(heat.reshape(-1, 3), axis=0)) > 50
    lev = contour_levels(r.values["train_loss"], 10, log=True)
    finite = r.values["train_loss"]
    assert lev[0] > finite.min() and lev[-1] == pytest.approx(finite.max()) and np.all(np.diff(np.diff(lev)) > 0)
    lin = contour_levels(finite, 10)
    assert np.allclose(np.diff(lin), np.diff(lin)[0])
    s = compute_slice(model, mse, sets, tmp_path, "-1:1:9")
    curves = plot_curves(s, tmp_path / "figs")
    assert [p.suffix for p in curves] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in curves)
    with pytest.raises(LandscapeError):
        plot_curves(r)


# --------------------------------------------------------------------------- issue 15: BatchNorm along interpolations


def _bn_states(var_a=0.05, var_b=4.0):
    """Two bn_net states whose running variances differ so much that linear extrapolation goes negative."""
    torch.manual_seed(0)
    sa, sb = bn_net().state_dict(), bn_net().state_dict()
    sa["1.running_var"] = torch.full((6,), var_a, dtype=torch.float64)
    sb["1.running_var"] = torch.full((6,), var_b, dtype=torch.float64)
    sb["1.running_mean"] = torch.full((6,), 0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randn(40, generator=g, dtype=torch.float64)
    sets = {"train": [(x[:12], y[:12]), (x[12:24], y[12:24])], "test": [(x[24:], y[24:])]}
    return sa, sb, sets


def _recomputed_reference(sa, sb, alpha, batches):
    """bn_net at theta(alpha) with BatchNorm statistics recomputed by hand (momentum=None, train mode)."""
    net = bn_net()
    net.load_state_dict({k: ((1 - alpha) * sa[k] + alpha * sb[k]) if sa[k].is_floating_point() else sa[k]
                         for k in sa})
    bn = net[1]
    bn.reset_running_stats()
    bn.momentum = None
    net.train()
    with torch.no_grad():
        for x, _ in batches:
            net(x)
    return net.eval()


def test_interpolation_default_recomputes_batchnorm_statistics_no_nan(tmp_path):
    sa, sb, sets = _bn_states()
    model = bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum, training = model[1].momentum, model[1].training
    r = interpolate(model, sa, sb, mse, sets, tmp_path, "-1:2:31")
    assert r.attrs["buffers"] == "recompute" and r.attrs["bn_set"] == "train"
    assert sorted(r.attrs["recomputed_buffers"]) == ["1.num_batches_tracked", "1.running_mean", "1.running_var"]
    assert r.complete and all(np.isfinite(v).all() for k, v in r.values.items() if k.endswith("_loss"))
    assert r.attrs["nonfinite"] == 0 and r.attrs["nonfinite_cells"] == [] and not r.nonfinite.any()
    with torch.no_grad():
        for alpha in (-1.0, 0.0, 1.0, float(r.x[20])):
            ref = _recomputed_reference(sa, sb, alpha, sets["train"])
            for name in ("train", "test"):
                exact = float(dataset_loss(ref, mse, sets[name]))
                assert r.at(alpha)[f"{name}_loss"] == pytest.approx(exact, rel=1e-10), (alpha, name)
    # the model itself is untouched (weights, statistics, modes, momentum)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[1].momentum == momentum and model[1].training == training
    # linear interpolation of the variances would go negative on [-1, 2]: refused in one line
    with pytest.raises(LandscapeError, match=r"buffers='interpolate': 1\.running_var is negative .* alpha = -1"):
        interpolate(model, sa, sb, mse, sets, tmp_path, "-1:2:31", buffers="interpolate")
    ok = interpolate(model, sa, sb, mse, sets, tmp_path, "0:1:5", buffers="interpolate")  # inside [0, 1]: allowed
    assert ok.key != r.key and ok.attrs["recomputed_buffers"] == []


def test_interpolation_nonfinite_cells_flagged_in_file_output_and_figure(tmp_path, monkeypatch):
    from landscape.figures import surface as figsurface
    from landscape.surface.storage import nonfinite_warning

    sa, sb, sets = _bn_states()
    sb = dict(sb)
    sb["3.weight"] = torch.full_like(sb["3.weight"], float("nan"))    # forced NaN everywhere but alpha = 0
    r = interpolate(bn_net(), sa, sb, mse, sets, tmp_path, "-1:2:7")
    bad = [float(a) for a in r.x if a != 0.0]
    assert r.attrs["nonfinite"] == len(bad) == int(r.nonfinite.sum())
    assert [float(r.x[i]) for i in r.attrs["nonfinite_cells"]] == bad
    with h5py.File(r.path, "r") as f:
        assert int(f.attrs["nonfinite"]) == len(bad)
    msg = nonfinite_warning(r)
    assert msg.startswith(f"warning: {len(bad)} of {r.x.size} cells have a non-finite loss")
    assert "alpha = -1, -0.5, 0.5, 1, 1.5, 2" in msg and "\n" not in msg
    figures = []
    real = figsurface.figstyle.save_figure
    monkeypatch.setattr(figsurface.figstyle, "save_figure", lambda fig, *a, **k: figures.append(fig) or real(fig, *a, **k))
    plot_curves(r, tmp_path / "figures")
    marks = [ln for ax in figures[0].axes for ln in ax.get_lines() if ln.get_label().startswith("non-finite")]
    assert len(marks) == 1 and marks[0].get_color() == "red" and list(marks[0].get_xdata()) == bad
    clean = interpolate(bn_net(), sa, _bn_states()[1], mse, sets, tmp_path, "-1:2:7")
    assert nonfinite_warning(clean) is None


def test_in_place_swap_equals_functional_call_and_restores_on_error(tmp_path):
    """The eager cells write the perturbed weights into the model and restore them: the outputs
    are bit-identical to ``functional_call`` at those weights, and the model is bit-identical
    afterwards, also when the forward pass raises half-way."""
    from torch.func import functional_call

    from landscape.params import TensorSwap
    from landscape.surface.evaluate import Evaluator

    model = tiny_swin().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, 32, 32, generator=g)
    y = torch.rand(5, 1, generator=g)
    values = {n: p.detach() + 0.05 * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    ev = Evaluator(model, nn.MSELoss(), {"train": [(x, y)]}, compile="off")
    row = ev(values)
    assert ev._swap is not None                       # the in-place path ran, not functional_call
    with torch.no_grad():
        ref = functional_call(model, values, (x,))
    assert row["train_loss"] == float(nn.MSELoss()(ref, y).double())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # an error inside the swapped forward: weights restored bit-for-bit
    swap = TensorSwap(model, list(values))
    with pytest.raises(RuntimeError, match="boom"):
        with swap.holding(values.values()):
            assert torch.equal(model.head.fc.weight, values["head.fc.weight"])
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # names the model lacks, or other shapes: the evaluator keeps functional_call
    assert not TensorSwap.supports(model, {"nope": torch.zeros(1)})
    assert not TensorSwap.supports(model, {"head.fc.bias": torch.zeros(2)})
    with pytest.raises(LandscapeError, match="no parameter or buffer named 'nope'"):
        TensorSwap(model, ["nope"])
