import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from landscape.errors import LandscapeError
from landscape.figures import style as figstyle
from landscape.figures import sweep as rf
from landscape.report.stats import rank_correlation

SIZES = [16, 32, 64, 128]


def _check_written(paths, stem):
    assert [p.suffix for p in paths] == [".pdf", ".png", ".svg"]
    assert all(p.name.startswith(stem.name + ".") for p in paths)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 500, p
    pdf, png, svg = paths
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in svg.read_bytes()[:2000]
    with Image.open(png) as im:
        dpi = im.info.get("dpi")
        pix = np.asarray(im.convert("L"), dtype=float)
    assert dpi is not None and dpi[0] == pytest.approx(300, abs=1)
    assert pix.std() > 0  # not blank
    assert not list(stem.parent.glob(".*.tmp"))  # no temp files left behind
    return pix


def test_figstyle_palette_sizes_and_save(tmp_path):
    assert figstyle.figsize(1) == (3.35, 3.35 * 0.75)
    assert figstyle.figsize(2, 0.5) == (7.0, 3.5)
    with pytest.raises(LandscapeError):
        figstyle.figsize(3)
    colors = figstyle.batch_size_colors([128, 16, 64, 16])
    assert list(colors) == [16, 64, 128]
    assert colors[16] == figstyle.OKABE_ITO["blue"] and len(set(colors.values())) == 3
    many = figstyle.batch_size_colors(range(1, 13))
    assert len(set(many.values())) == 12
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1)
        ax.plot([0, 1], [0, 1])
        assert fig.get_size_inches()[0] == pytest.approx(3.35)
        import matplotlib
        assert matplotlib.rcParams["font.size"] == figstyle.FONT_SIZE
    stem = tmp_path / "sub" / "phi_eps1e-3"
    paths = figstyle.save_figure(fig, stem)
    pix = _check_written(paths, stem)
    # 3.35 in at 300 dpi, give or take the tight bounding box
    assert 0.8 * 3.35 * 300 < pix.shape[1] < 1.1 * 3.35 * 300
    # deterministic vector output for identical figures
    again = figstyle.save_figure(fig, tmp_path / "again")
    assert again[0].read_bytes() == paths[0].read_bytes()
    assert again[2].read_bytes() == paths[2].read_bytes()
    with pytest.raises(LandscapeError):
        figstyle.save_figure(Figure(), tmp_path / "x", formats=("jpg",))


def test_measure_vs_gap(tmp_path):
    rng = np.random.default_rng(0)
    bs = [16, 16, 64, 64, 256, 256]
    m = np.array([1.0, 1.2, 2.0, 2.5, 4.0, 3.5])
    g = 0.02 * m + 0.01 * rng.normal(size=6)
    corr = rank_correlation(m, g, n_boot=200)
    stem = tmp_path / "phi_vs_gap"
    paths = rf.measure_vs_gap(bs, m, g, stem, measure_std=0.1 * m, gap_std=[0.01] * 5 + [np.nan],
                              measure_label="Keskar φ", correlation=corr,
                              groups=["lin", "sqrt"] * 3, log_measure=True)
    _check_written(paths, stem)
    # without a correlation (the caller computes one) the figure is drawn without the tau label
    paths = rf.measure_vs_gap(bs, m, g, tmp_path / "b")
    _check_written(paths, tmp_path / "b")
    with pytest.raises(LandscapeError, match="gap: has 2 values"):
        rf.measure_vs_gap(bs, m, [0.1, 0.2], tmp_path / "c")


def test_metric_vs_batch_size(tmp_path):
    rng = np.random.default_rng(1)
    panels = {
        "test SRCC": {b: list(0.9 - 0.01 * np.log2(b) + 0.01 * rng.normal(size=2)) for b in SIZES},
        "SRCC gap": {"linear LR": {b: [0.05 + 0.01 * np.log2(b), 0.06] for b in SIZES},
                     "sqrt LR": {b: [0.04 + 0.01 * np.log2(b)] for b in SIZES}},
        "λ_max": {b: [float(b)] for b in SIZES},
    }
    stem = tmp_path / "vs_bs"
    _check_written(rf.metric_vs_batch_size(panels, stem), stem)
    with pytest.raises(LandscapeError):
        rf.metric_vs_batch_size({}, tmp_path / "x")


def test_spectral_densities(tmp_path):
    grid = np.linspace(-1, 10, 200)
    curves = {b: (grid, np.exp(-((grid - np.log2(b)) ** 2))) for b in SIZES}
    curves[16] = (grid, np.where(grid > 0, curves[16][1], 0.0))  # zeros on a log axis
    stem = tmp_path / "esd"
    _check_written(rf.spectral_densities(curves, stem), stem)
    with pytest.raises(LandscapeError, match="density for batch size 32"):
        rf.spectral_densities({32: (grid, grid[:5])}, tmp_path / "x")


def test_interpolation_1d(tmp_path):
    a = np.linspace(-0.5, 1.5, 21)
    stem = tmp_path / "interp"
    paths = rf.interpolation_1d(a, stem, train_loss=(a - 0.5) ** 2, test_loss=(a - 0.5) ** 2 + 0.1,
                                train_srcc=0.9 - 0.1 * (a - 0.5) ** 2,
                                test_srcc=0.8 - 0.1 * (a - 0.5) ** 2,
                                endpoint_labels=("B = 16", "B = 512"))
    _check_written(paths, stem)
    _check_written(rf.interpolation_1d(a, tmp_path / "lossonly", train_loss=a ** 2),
                   tmp_path / "lossonly")


def test_contours_side_by_side(tmp_path):
    x = np.linspace(-1, 1, 9)
    xx, yy = np.meshgrid(x, x)
    surfaces = {"B = 16": xx ** 2 + yy ** 2 + 0.1, "B = 512": 4 * (xx ** 2 + yy ** 2) + 0.1}
    surfaces["B = 512"][0, 0] = np.nan  # a diverged cell
    stem = tmp_path / "contours"
    _check_written(rf.contours_side_by_side(surfaces, stem, x=x, y=x), stem)
    _check_written(rf.contours_side_by_side(surfaces, tmp_path / "log", x=x, y=x, log_scale=True),
                   tmp_path / "log")
    with pytest.raises(LandscapeError, match="differ in shape"):
        rf.contours_side_by_side({"a": np.ones((3, 3)), "b": np.ones((4, 3))}, tmp_path / "x")


def test_training_curves(tmp_path):
    runs = [{"batch_size": b, "seed": s,
             "train_loss": list(1 / np.arange(1, 6) + 0.01 * s + 0.02 * np.log2(b)),
             "val_srcc": list(0.5 + 0.08 * np.arange(5) - 0.01 * s - 0.02 * np.log2(b))}
            for b in SIZES for s in (0, 1)]
    runs[0]["epoch"] = [1, 2, 3, 4, 5]
    runs[1].pop("val_srcc")
    stem = tmp_path / "curves"
    _check_written(rf.training_curves(runs, stem), stem)
    with pytest.raises(LandscapeError, match="missing 'train_loss'"):
        rf.training_curves([{"batch_size": 16}], tmp_path / "x")


def test_throughput_memory(tmp_path):
    thr = [100.0, 180.0, 300.0, 380.0]
    stem = tmp_path / "throughput"
    paths = rf.throughput_memory(SIZES, thr, [200.0, 350.0, 650.0, 1250.0], stem,
                                 samples_per_s_std=[5, 6, 7, 8], memory_limit=1000.0,
                                 b_simple=700.0, b_simple_err=200.0)
    _check_written(paths, stem)
    # CPU run: memory not measured
    _check_written(rf.throughput_memory(SIZES, thr, [np.nan] * 4, tmp_path / "cpu"),
                   tmp_path / "cpu")
    with pytest.raises(LandscapeError, match="must be > 0"):
        rf.throughput_memory([0, 16], [1, 2], [1, 2], tmp_path / "x")


# ------------------------------------------------------------------ paper-figure defects (issue 18.4)


@pytest.fixture
def captured(monkeypatch):
    """The figures handed to the saver, drawn with Agg so layout can be measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figs = []
    orig = figstyle.save_figure

    def keep(fig, stem, *a, **k):
        out = orig(fig, stem, *a, **k)
        FigureCanvasAgg(fig).draw()
        figs.append(fig)
        return out
    monkeypatch.setattr(figstyle, "save_figure", keep)
    return figs


def test_log_axis_starts_at_the_data_and_b_simple_clipped(tmp_path, captured):
    rf.throughput_memory(SIZES, [1, 2, 3, 4], [1, 2, 3, 4], tmp_path / "t", b_simple=0.77, b_simple_ci=(-0.3, 2.0))
    ax = captured[-1].axes[0]
    assert ax.get_xlim() == pytest.approx((16 / 1.25, 128 * 1.25))
    labels = [t.get_text() for t in captured[-1].legends[0].get_texts()]
    assert "B_simple ≈ 0.77, 95% CI [-0.3, 2] (outside the axis, not shaded): below the batch sizes shown" in labels
    assert not captured[-1].axes[0].patches                            # nothing of it lies on the axis
    rf.throughput_memory(SIZES, [1, 2, 3, 4], [1, 2, 3, 4], tmp_path / "t", b_simple=24.0, b_simple_ci=(10.0, 30.0))
    labels = [t.get_text() for t in captured[-1].legends[0].get_texts()]
    assert "B_simple ≈ 24, 95% CI [10, 30] (shaded, clipped at the axis)" in labels
    (span,) = captured[-1].axes[0].patches
    assert span.get_x() == pytest.approx(16 / 1.25) and span.get_x() + span.get_width() == pytest.approx(30.0)
    fig = Figure()
    ax = fig.subplots()
    assert figstyle.shade_interval([ax], 20.0, 40.0, 12.8, 160.0) == " (shaded)" and len(ax.patches) == 1


def test_measure_vs_gap_legend_and_tau_off_the_data(tmp_path, captured):
    m = [1.0, 2.0, 3.0, 4.0, 5.0]
    corr = rank_correlation(m, [0.1, 0.2, 0.3, 0.5, 0.4], n_boot=2000)
    rf.measure_vs_gap([8, 16, 32, 64, 128], m, [0.1, 0.2, 0.3, 0.5, 0.4], tmp_path / "g", correlation=corr,
                      measure_std=[5.0] * 5, log_measure=True)
    fig = captured[-1]
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1   # right of the axes
    assert ax.get_title(loc="left").startswith("Kendall ") and "n = 5" in ax.get_title(loc="left")
    assert ax.get_xscale() == "linear"       # the points span less than a decade: error bars do not decide


def test_training_curves_explain_line_styles(tmp_path, captured):
    runs = [{"batch_size": b, "seed": s, "train_loss": [1.0, 0.5], "val_srcc": [0.2, 0.4]} for b in (8, 16)
            for s in (3, 7)]
    rf.training_curves(runs, tmp_path / "c")
    legend = captured[-1].axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["B = 8", "B = 16", "seed 3", "seed 7"]
    assert [h.get_linestyle() for h in legend.legend_handles[2:]] == ["-", "--"]


def test_interpolation_names_on_the_axis(tmp_path, captured):
    a = np.linspace(0, 1, 5)
    rf.interpolation_1d(a, tmp_path / "i", train_loss=a, endpoint_labels=("bs8_acc1_sqrt_seed0", "bs64_acc1_sqrt_seed0"))
    ax = captured[-1].axes[0]
    assert [t.get_text() for t in ax.texts] == ["A", "B"]
    assert "A: α = 0, bs8_acc1_sqrt_seed0" in ax.get_xlabel() and "B: α = 1, bs64_acc1_sqrt_seed0" in ax.get_xlabel()


def test_headline_figure(tmp_path, captured):
    from landscape.figures.headline import headline

    paths = headline({"test SRCC": {8: [0.8, 0.82], 64: [0.7, 0.72]}, "SRCC gap": {8: [0.05, 0.06], 64: [0.1, 0.12]}},
                     {"λ_max": {8: 1.0, 64: 0.5}}, tmp_path / "h")
    _check_written(paths, tmp_path / "h")
    srcc, gap, right = captured[-1].axes       # one left panel per metric, each on its own y scale
    assert [srcc.get_ylabel(), gap.get_ylabel()] == ["test SRCC", "SRCC gap"]
    assert srcc.get_xscale() == "log" and right.get_ylabel() == "measure / its value at the smallest B"
    assert srcc.get_ylim()[0] > 0.6 and gap.get_ylim()[1] < 0.2      # neither flattened by the other's range
    assert list(right.lines[0].get_ydata()) == [1.0, 0.5]
    with pytest.raises(LandscapeError, match="no test SRCC"):
        headline({}, {}, tmp_path / "x")


def test_headline_log_axis_leaves_out_ratios_at_or_below_zero(tmp_path, captured):
    """A negative trace has no place on the log axis: the point is left out of its curve and named in
    the legend (not drawn as a line to the axis bottom); ticks at 1, 2, 5 per decade."""
    from landscape.figures.headline import headline

    headline({"test SRCC": {6: [0.9, 0.88], 24: [0.85, 0.86], 96: [0.84, 0.83]}},
             {"tr(H)": {6: 1.0, 24: -0.8, 96: 0.6}, "λ_max": {6: 1.0, 24: 0.2, 96: 0.3}}, tmp_path / "h")
    right = captured[-1].axes[-1]
    assert right.get_yscale() == "log"
    ys = right.lines[0].get_ydata()
    assert ys[0] == 1.0 and np.isnan(ys[1]) and ys[2] == 0.6
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["tr(H) (≤ 0 at B = 24: not drawn)", "λ_max"]
    ticks = [t for t in right.get_yticks() if 0.2 <= t <= 1.0]
    assert np.allclose(ticks, [0.2, 0.5, 1.0])


def test_spectral_density_log_axis_ends_near_the_peak(tmp_path, captured):
    """Gaussian-broadened densities reach 1e-300 in their tails: the y axis spans the kept 12 decades
    below the peak and 5% of them above it, not the autoscale's 5% of 300 decades (a top at 1e15)."""
    grid = np.linspace(-5, 120, 400)
    dens = np.exp(-0.5 * (grid / 0.05) ** 2) + 1e-6 * np.exp(-0.5 * ((grid - 100) / 2) ** 2)
    assert dens.min() < 1e-280
    rf.spectral_densities({6: (grid, dens)}, tmp_path / "esd")
    bottom, top = captured[-1].axes[0].get_ylim()
    peak = dens.max()
    assert np.isclose(bottom, peak * 1e-12) and np.isclose(top, peak * 10 ** 0.6)
