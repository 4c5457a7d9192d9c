"""Training figures from plain data: per-epoch curves, and throughput / peak memory against batch size.

Paper style of :mod:`landscape.figures.style` (Okabe-Ito colours by batch size, log2 batch-size
axes); each function writes ``<out_stem>.pdf/.png/.svg`` atomically and returns the paths. Bad
input raises :class:`LandscapeError`. Re-exported by :mod:`landscape.figures.sweep`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from landscape.errors import LandscapeError
from landscape.figures import style as figstyle
from landscape.uncertainty import as_vector

LINESTYLES = ("-", "--", ":", "-.")


def training_curves(runs: Sequence[Mapping[str, Any]], out_stem: str | Path, *,
                    loss_key: str = "train_loss", srcc_key: str = "val_srcc",
                    loss_label: str = "training loss",
                    srcc_label: str = "validation SRCC") -> list[Path]:
    """Per-epoch ``loss_key`` (left panel) and ``srcc_key`` (right panel) for each run.

    A run is a mapping with ``batch_size``, ``loss_key``, optionally ``srcc_key``, ``epoch``
    (default 1..n) and ``seed``. Colour = batch size; line style = seed (the seeds in ascending
    order take solid, dashed, dotted, dash-dot; without ``seed`` the runs of one batch size in
    the given order). The legend, right of the panels, names both: one entry per batch size and
    one per line style.
    """
    if len(runs) == 0:
        raise LandscapeError("runs: nothing to plot")
    for i, run in enumerate(runs):
        for key in ("batch_size", loss_key):
            if key not in run:
                raise LandscapeError(f"run {i}: missing {key!r}")
    colors = figstyle.batch_size_colors([r["batch_size"] for r in runs])
    has_seed = all(r.get("seed") is not None for r in runs)
    seeds = sorted({r["seed"] for r in runs}) if has_seed else []
    seen: dict[Any, int] = {}
    with figstyle.paper_style():
        fig, axes = figstyle.new_figure(2, 0.36, nrows=1, ncols=2, squeeze=False)
        ax_loss, ax_srcc = axes[0]
        n_styles = 0
        for i, run in enumerate(runs):
            b = run["batch_size"]
            k = seeds.index(run["seed"]) if has_seed else seen.get(b, 0)
            seen[b] = seen.get(b, 0) + 1
            n_styles = max(n_styles, k + 1)
            style = LINESTYLES[k % len(LINESTYLES)]
            loss = as_vector(run[loss_key], f"run {i} {loss_key}")
            epochs = (np.arange(1, loss.size + 1, dtype=float) if run.get("epoch") is None
                      else as_vector(run["epoch"], f"run {i} epoch", loss.size))
            ax_loss.plot(epochs, loss, color=colors[b], linestyle=style, linewidth=1.0)
            if run.get(srcc_key) is not None:
                srcc = as_vector(run[srcc_key], f"run {i} {srcc_key}")
                ep = epochs if srcc.size == loss.size else np.arange(1, srcc.size + 1, dtype=float)
                ax_srcc.plot(ep, srcc, color=colors[b], linestyle=style, linewidth=1.0)
        ax_loss.set_ylabel(loss_label)
        ax_srcc.set_ylabel(srcc_label)
        for ax in (ax_loss, ax_srcc):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = [Line2D([], [], color=c, label=f"B = {b:g}") for b, c in colors.items()]
        names = [f"seed {s}" for s in seeds] if has_seed else [f"run {j + 1} of a batch size" for j in range(n_styles)]
        handles += [Line2D([], [], color="0.3", linestyle=LINESTYLES[j % len(LINESTYLES)], label=name)
                    for j, name in enumerate(names[:max(n_styles, 1)])]
        ax_srcc.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        return figstyle.save_figure(fig, out_stem)


def _opt(values: Any, name: str, n: int) -> np.ndarray | None:
    return None if values is None else as_vector(values, name, n)


def throughput_memory(batch_sizes: Sequence[int], samples_per_s: Sequence[float],
                      peak_memory: Sequence[float], out_stem: str | Path, *,
                      samples_per_s_std: Sequence[float] | None = None,
                      memory_limit: float | None = None, b_simple: float | None = None,
                      b_simple_err: float | None = None, b_simple_ci: tuple[float, float] | None = None,
                      memory_unit: str = "MiB") -> list[Path]:
    """Training throughput (left axis, samples/s) and peak memory (right axis) against batch
    size (log2). Optional horizontal line at ``memory_limit`` and a vertical marker at the
    gradient noise scale ``b_simple`` with its interval shaded (``b_simple_ci``, or
    ``b_simple ± b_simple_err``). The x axis spans the batch sizes (a factor 1.25 of margin), never
    stretched to ``b_simple``: a ``b_simple`` outside that range is named in the legend only; the
    shaded interval is clipped to the axis, so a lower bound <= 0 (impossible on a log axis) is
    drawn from the axis's left end and the legend says "clipped". NaN memory values (not measured,
    e.g. on CPU) are left out."""
    bs = as_vector(batch_sizes, "batch_sizes")
    if bs.size == 0:
        raise LandscapeError("batch_sizes: nothing to plot")
    if np.any(~(bs > 0)):
        raise LandscapeError(f"batch_sizes {bs.tolist()}: must be > 0 for a log2 axis")
    thr = as_vector(samples_per_s, "samples_per_s", bs.size)
    mem = as_vector(peak_memory, "peak_memory", bs.size)
    thr_std = _opt(samples_per_s_std, "samples_per_s_std", bs.size)
    order = np.argsort(bs)
    c_thr, c_mem = figstyle.OKABE_ITO["blue"], figstyle.OKABE_ITO["orange"]
    lo_x, hi_x = float(bs.min()) / 1.25, float(bs.max()) * 1.25
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1, 0.75)
        h = [ax.errorbar(bs[order], thr[order], yerr=None if thr_std is None else thr_std[order],
                         color=c_thr, marker="o", markersize=3.5, label="throughput (samples/s)")]
        ax.set_ylabel("throughput (samples/s)")
        ax2 = ax.twinx()
        ax2.spines["right"].set_visible(True)
        ok = np.isfinite(mem[order])
        if ok.any():
            h += ax2.plot(bs[order][ok], mem[order][ok], color=c_mem, marker="s", markersize=3.5,
                          linestyle="--", label=f"peak memory ({memory_unit})")
        else:
            ax2.text(0.5, 0.5, "peak memory not measured", transform=ax2.transAxes,
                     ha="center", va="center", color=c_mem, fontsize=figstyle.SMALL_FONT_SIZE)
        if memory_limit is not None:
            h.append(ax2.axhline(memory_limit, color=figstyle.OKABE_ITO["vermillion"],
                                 linestyle=":", linewidth=1.0,
                                 label=f"memory limit ({memory_limit:g} {memory_unit})"))
        ax2.set_ylabel(f"peak memory ({memory_unit})")
        if b_simple is not None and np.isfinite(b_simple) and b_simple > 0:
            lo, hi = b_simple_ci if b_simple_ci is not None else (
                (b_simple - b_simple_err, b_simple + b_simple_err)
                if b_simple_err is not None and np.isfinite(b_simple_err) and b_simple_err > 0 else (None, None))
            text = f"B_simple ≈ {b_simple:.3g}"
            if lo is not None and np.isfinite(lo) and np.isfinite(hi) and hi > lo:
                text += f", 95% CI [{lo:.3g}, {hi:.3g}]" + figstyle.shade_interval([ax], lo, hi, lo_x, hi_x)
            if lo_x <= b_simple <= hi_x:
                h.append(ax.axvline(b_simple, color="black", linestyle="-.", linewidth=1.0, label=text))
            else:
                side = "below" if b_simple < lo_x else "above"
                h.append(Line2D([], [], color="black", linestyle="-.", label=f"{text}: {side} the batch sizes shown"))
        ax.set_xlim(lo_x, hi_x)
        figstyle.log2_batch_axis(ax, bs.tolist())
        figstyle.legend_below(ax, h, ncol=1)
        return figstyle.save_figure(fig, out_stem)
