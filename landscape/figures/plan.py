"""Figure of a batch-size plan: epoch time (top) and peak memory (bottom) against batch size B.

Top: predicted training-pass time per epoch (± standard error) for sizes that fit
(filled) and for accumulation plans micro x K (open, labelled). Bottom: measured peak
memory at each B (filled: direct; open: the accumulation plan, labelled), the fitted
memory model ``fixed + per_sample * B`` of direct steps, the memory limit (horizontal)
and the largest fitting batch (vertical); a limit or largest batch far off the measured
range (more than ``OFF_SCALE`` times) is named in the legend instead of stretching the
axes. Both panels mark B_simple (dash-dot line, its confidence interval shaded, clipped to
the axis: a lower bound <= 0 cannot be drawn on a log axis, and the legend says "clipped", or
"not shaded" when the interval lies off the axis; legends above their panels). The x
axis is log2 with the candidate sizes as ticks and spans the batch sizes (never stretched to a
B_simple outside them, which the legend names instead); the time axis is logarithmic when the
times span more than a factor 5. Paper style of
:mod:`landscape.figures.style`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FixedLocator, NullLocator

from landscape.figures import style as figstyle

OFF_SCALE = 4.0


def _time_unit(seconds: list[float]) -> tuple[str, float]:
    top = max([s for s in seconds if math.isfinite(s)], default=0.0)
    return ("h", 3600.0) if top >= 3 * 3600 else ("min", 60.0) if top >= 180 else ("s", 1.0)


def _memory_unit(values: list[float]) -> tuple[str, float]:
    top = max([v for v in values if math.isfinite(v)], default=0.0)
    return ("GiB", 2.0 ** 30) if top >= 2 ** 30 else ("MiB", 2.0 ** 20)


def _size_text(n: float) -> str:
    return f"{n / 2 ** 30:.3g} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.3g} MiB"


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def plan_figure(result: Any, out_stem: str | Path) -> list[Path]:
    """Write ``<stem>.pdf/.png/.svg`` for ``result`` (see the module docstring); returns the paths.

    ``result`` is a :class:`landscape.plan.result.PlanResult` passed in by the planner (read
    here, never imported): ``rows`` (``batch_size``, ``fits``, ``direct``, ``accumulated``
    speed stats with ``epoch_time_s``, ``epoch_time_se_s``, ``peak_memory_bytes``,
    ``micro_batch``, ``accumulate``), ``memory_limit_bytes``, ``memory_kind``,
    ``memory_model`` (``predict``, ``fixed``, ``per_sample``) or None, ``max_micro_batch``,
    ``max_micro_source``, ``max_micro_lower_bound``, ``accumulate`` and ``noise``
    (``b_simple``, ``b_simple_ci``) or None.
    """
    ok = figstyle.OKABE_ITO
    rows = result.rows
    sizes = [r.batch_size for r in rows]
    direct = [(r.batch_size, r.direct) for r in rows if r.direct is not None]
    fit = [(b, s) for b, s in direct if next(r for r in rows if r.batch_size == b).fits]
    acc = [(r.batch_size, r.accumulated) for r in rows if r.accumulated is not None]
    times = [s.epoch_time_s for _, s in fit + acc]
    t_unit, t_scale = _time_unit(times)
    peaks = [float(s.peak_memory_bytes) for _, s in direct + acc]
    limit = float(result.memory_limit_bytes)
    show_limit = not peaks or limit <= OFF_SCALE * max(peaks)
    m_unit, m_scale = _memory_unit(peaks + ([limit] if show_limit else []))
    # the largest fitting B at the configured accumulation (the bisection/model is in micro-batches)
    max_b = (result.max_micro_batch or 0) * result.accumulate
    show_max = 0 < max_b <= OFF_SCALE * max(sizes)
    noise = result.noise
    b_simple = noise.b_simple if noise is not None else float("nan")
    xs = list(sizes) + ([max_b] if show_max else [])     # the axis spans the data, never stretched to B_simple
    lo_x, hi_x = min(xs) / 1.25, max(xs) * 1.25

    def errorbars(ax, points, color, marker, label, filled, key):
        if not points:
            return
        b, s = zip(*points)
        ax.errorbar(b, [getattr(v, key) / (t_scale if key == "epoch_time_s" else m_scale) for v in s],
                    yerr=None if key != "epoch_time_s" else
                    [v.epoch_time_se_s / t_scale if _finite(v.epoch_time_se_s) else 0.0 for v in s],
                    color=color, marker=marker, label=label, linestyle="-" if filled else "none",
                    markerfacecolor=color if filled else "white")
        if not filled:
            for bb, v in zip(b, s):
                y = getattr(v, key) / (t_scale if key == "epoch_time_s" else m_scale)
                ax.annotate(f"{v.micro_batch}x{v.accumulate}", (bb, y), textcoords="offset points",
                            xytext=(3, 3), fontsize=figstyle.SMALL_FONT_SIZE - 1)

    with figstyle.paper_style():
        fig, (ax_t, ax_m) = figstyle.new_figure(2, 0.8, nrows=2, sharex=True)
        errorbars(ax_t, fit, ok["blue"], "o", "fits", True, "epoch_time_s")
        errorbars(ax_t, acc, ok["vermillion"], "s", "accumulation (micro x K)", False, "epoch_time_s")
        ax_t.set_ylabel(f"epoch time ({t_unit})")
        finite = [t for t in times if _finite(t) and t > 0]
        if finite and max(finite) > 5 * min(finite):
            ax_t.set_yscale("log")
        else:
            ax_t.set_ylim(bottom=0)

        errorbars(ax_m, direct, ok["orange"], "s", f"peak ({result.memory_kind})", True, "peak_memory_bytes")
        errorbars(ax_m, acc, ok["vermillion"], "s", "peak, accumulation", False, "peak_memory_bytes")
        mm = result.memory_model
        if mm is not None:
            grid = np.geomspace(lo_x, hi_x, 64) / result.accumulate
            ax_m.plot(grid * result.accumulate, mm.predict(grid) / m_scale, color=ok["orange"], linestyle="--",
                      linewidth=0.9, label=f"model: {_size_text(mm.fixed)} + {mm.per_sample / 2 ** 20:.3g} MiB/sample")
        limit_text = f"memory limit {_size_text(limit)}"
        if show_limit:
            ax_m.axhline(limit / m_scale, color=ok["vermillion"], linestyle=":", linewidth=1.0, label=limit_text)
        else:
            ax_m.plot([], [], linestyle="none", label=limit_text + " (off scale)")
        if max_b:
            text = f"largest fitting B: {max_b}{'+' if result.max_micro_lower_bound else ''} ({result.max_micro_source})"
            if show_max:
                ax_m.axvline(max_b, color=ok["vermillion"], linestyle=(0, (1, 2)), linewidth=0.8, label=text)
            else:
                ax_m.plot([], [], linestyle="none", label=text + ", off scale")
        ax_m.set_ylabel(f"peak memory ({m_unit})")
        ax_m.set_xlabel("batch size B")

        if _finite(b_simple) and b_simple > 0:
            lo, hi = noise.b_simple_ci
            has_ci = _finite(lo) and _finite(hi) and hi > lo
            text = f"B_simple ≈ {b_simple:.3g}"
            if has_ci:
                text += f", 95% CI [{lo:.3g}, {hi:.3g}]" + figstyle.shade_interval((ax_t, ax_m), lo, hi, lo_x, hi_x)
            inside = lo_x <= b_simple <= hi_x
            if not inside:
                text += f": {'below' if b_simple < lo_x else 'above'} the batch sizes shown"
            for ax in (ax_t, ax_m):
                if inside:
                    ax.axvline(b_simple, color=ok["black"], linestyle="-.", linewidth=0.9,
                               label=text if ax is ax_t else None)
                elif ax is ax_t:
                    ax.plot([], [], color=ok["black"], linestyle="-.", linewidth=0.9, label=text)
        for ax in (ax_t, ax_m):
            ax.set_xscale("log", base=2)
            ax.set_xlim(lo_x, hi_x)
            ax.xaxis.set_major_locator(FixedLocator(sorted(set(sizes))))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
            ax.grid(True, which="major")
            # above its panel, left-aligned, two columns: off the data, and the panels keep the width
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, borderaxespad=0.0, handletextpad=0.4,
                      columnspacing=1.2)
        return figstyle.save_figure(fig, out_stem)
