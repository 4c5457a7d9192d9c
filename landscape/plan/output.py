"""Planner outputs: the terminal table, one CSV row per B, and the plan folder.

:func:`write_plan` writes, each atomically: ``plan.json`` (:meth:`PlanResult.as_dict` under
``kind = "landscape-plan"``), ``plan.csv`` (:func:`csv_rows`: direct columns, ``acc_*``
columns of the accumulation plan, ``lr_<rule>``, ``b_over_b_simple``, ``noise_position``),
``plan.txt`` (:func:`format_table`) and ``plan.{pdf,png,svg}``
(:func:`landscape.figures.plan.plan_figure`). Memory is shown in MiB below 1 GiB, else GiB;
durations in s, min (from 90 s) or h (from 1.5 h).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from landscape.figures.plan import plan_figure
from landscape.formatting import fmt, render
from landscape.plan.result import PLAN_KIND, PlanResult, PlanRow
from landscape.store import atomic_path, write_json

STAT_FIELDS = ("micro_batch", "accumulate", "samples_per_s", "samples_per_s_std", "epoch_time_s", "epoch_time_se_s",
               "epoch_time_min_s", "epoch_time_max_s", "data_fraction", "peak_memory_bytes")


def format_bytes(n: float | None) -> str:
    """``"1.50 GiB"`` from 1 GiB up, else ``"512 MiB"``; ``"-"`` for None/NaN."""
    if n is None or not math.isfinite(n):
        return "-"
    if abs(n) >= 2 ** 30:
        return f"{n / 2 ** 30:.2f} GiB"
    return f"{n / 2 ** 20:.0f} MiB"


def format_duration(s: float, se: float = float("nan")) -> str:
    """``"12.5 ± 0.3 min"``: seconds below 90 s, minutes below 1.5 h, else hours; ``"-"`` for NaN."""
    if not math.isfinite(s):
        return "-"
    unit, scale = ("h", 3600.0) if s >= 5400 else ("min", 60.0) if s >= 90 else ("s", 1.0)
    return f"{fmt(s / scale, se / scale, digits=3)} {unit}"


def csv_row(row: PlanRow) -> dict[str, Any]:
    """One CSV row: B, fits, note, the direct and ``acc_`` statistics, LR per rule, B / B_simple."""
    out: dict[str, Any] = {"batch_size": row.batch_size, "fits": row.fits, "note": row.note}
    for prefix, stats in (("", row.direct), ("acc_", row.accumulated)):
        for name in STAT_FIELDS:
            out[prefix + name] = "" if stats is None else getattr(stats, name)
    for rule, value in row.lr.items():
        out[f"lr_{rule}"] = value
    out["b_over_b_simple"] = row.b_over_b_simple
    out["noise_position"] = row.noise_position
    out["outlier"] = row.outlier
    return out


def csv_rows(result: PlanResult) -> list[dict[str, Any]]:
    """:func:`csv_row` of every row of ``result``."""
    return [csv_row(r) for r in result.rows]


def _header(result: PlanResult) -> list[str]:
    lines = [f"device: {result.device_name} ({result.device}); {result.n_train_images} training images x "
             f"{result.train_patches} patches = {result.n_train_patches} patches/epoch; "
             f"{result.warmup} warm-up + {result.steps} timed steps; amp={'on' if result.amp else 'off'}",
             f"memory limit: {format_bytes(result.memory_limit_bytes)} ({result.memory_limit_source}); "
             f"peak = {result.memory_kind}"]
    mm = result.memory_model
    if mm is not None:
        lines.append(f"memory model: peak(b) = {format_bytes(mm.fixed)} + {mm.per_sample / 2 ** 20:.3g} MiB x b "
                     f"(RMS residual {format_bytes(mm.residual_rms)}, {mm.n_points} sizes)")
    if result.max_micro_batch is not None:
        bound = " (lower bound: search cap reached)" if result.max_micro_lower_bound else ""
        lines.append(f"largest fitting micro-batch: {result.max_micro_batch} ({result.max_micro_source}){bound}")
    if result.noise is not None:
        n = result.noise
        lo, hi = n.b_simple_ci
        lines.append(f"B_simple = {fmt(n.b_simple, n.b_simple_se, digits=3)} ({int(round(100 * n.ci))}% CI "
                     f"[{lo:.3g}, {hi:.3g}]; B={n.b_small},{n.b_big} x{n.n_repeats}, pool {n.n_pool}, "
                     f"{result.noise_settings.get('loss', '?')} loss, {result.noise_settings.get('weights', '?')})")
        if not (math.isfinite(n.b_simple) and n.b_simple > 0):
            lines.append("  B_simple not resolved: the estimate is <= 0 or undefined; positions use the CI "
                         "upper bound where the gradient signal was measured (|G|^2 > 0)")
    return lines


def _cells(row: PlanRow, rules: list[str]) -> dict[str, str]:
    s = row.best
    peak = s.peak_memory_bytes if s else (row.direct.peak_memory_bytes if row.direct else None)
    cells = {
        "B": str(row.batch_size),
        "micro x K": "-" if s is None else f"{s.micro_batch} x {s.accumulate}",
        "fits": "yes" if row.fits else ("no" + ("" if s is None else ", acc")),
        "samples/s": "-" if s is None else fmt(s.samples_per_s, s.samples_per_s_std),
        "epoch time": "-" if s is None else format_duration(s.epoch_time_s, s.epoch_time_se_s),
        "data": "-" if s is None or not math.isfinite(s.data_fraction) else f"{100 * s.data_fraction:.0f}%",
        "peak memory": format_bytes(peak),
        "B/B_simple": ("-" if not math.isfinite(row.b_over_b_simple)
                       else f"{row.b_over_b_simple:.2g} ({row.noise_position})"),
    }
    cells.update({f"lr {k}": fmt(float(row.lr[k]), digits=3) for k in rules})
    return cells


def format_table(result: PlanResult) -> str:
    """The terminal table: a header with limit, memory model and B_simple, then one line per B."""
    rules = list(result.rows[0].lr) if result.rows else []
    columns = ["B", "micro x K", "fits", "samples/s", "epoch time", "data", "peak memory",
               *[f"lr {r}" for r in rules], "B/B_simple"]
    lines = [*_header(result), "", render([_cells(r, rules) for r in result.rows], columns)]
    notes = [f"B={r.batch_size}: {r.note}" for r in result.rows if r.note]
    if notes:
        lines += ["", *notes]
    lines.append("samples/s: mean ± std over timed steps; epoch time: training pass only "
                 "(evaluation excluded), ± standard error; data: share of step time spent loading.")
    return "\n".join(lines)


def write_plan(result: PlanResult, out_dir: str | Path) -> dict[str, Path]:
    """Atomically write ``plan.json``, ``plan.csv``, ``plan.txt`` and ``plan.{pdf,png,svg}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "plan.json", "csv": out / "plan.csv", "txt": out / "plan.txt"}
    write_json(paths["json"], {"kind": PLAN_KIND, **result.as_dict()})
    rows = csv_rows(result)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(paths["csv"]) as tmp:
        tmp.write_text(buf.getvalue())
    with atomic_path(paths["txt"]) as tmp:
        tmp.write_text(format_table(result) + "\n")
    for p in plan_figure(result, out / "plan"):
        paths[p.suffix.lstrip(".")] = p
    return paths


__all__ = ["format_table", "format_bytes", "format_duration", "csv_row", "csv_rows", "write_plan"]
