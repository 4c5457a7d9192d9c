"""Report tables: the rows of the per-configuration and statistics tables, and the files they go to.

Rows are built here; every table is rendered by :func:`landscape.formatting.render_table`
and every cell by :func:`landscape.formatting.fmt`. The configuration tables show
``mean ± std`` over seeds (sample std, ddof = 1; no ``±`` part for a single seed; ``-``
when absent), the mean with 4 significant digits and the std with 2. The per-run CSV holds
the stored values unrounded. The settings table names, per measure, the setting used.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from landscape.formatting import fmt, render_table
from landscape.report.analysis import ReportStats
from landscape.report.collect import AXES, SweepData
from landscape.report.stats import ci_text
from landscape.store import atomic_path

LABELS = {
    "epochs_run": "epochs", "train_srcc": "train SRCC", "val_srcc": "val SRCC", "test_srcc": "test SRCC",
    "train_plcc": "train PLCC", "val_plcc": "val PLCC", "test_plcc": "test PLCC", "srcc_gap": "SRCC gap",
    "samples_per_s": "samples/s", "epoch_time_s": "epoch time (s)", "peak_memory_mib": "peak memory (MiB)",
    "hessian_lambda_max": "λ_max", "hessian_trace": "tr(H)", "pacbayes_flatness": "PAC-Bayes flatness",
    "noise_b_simple": "B_simple", "average": "avg. sharpness", "adaptive_linf": "adaptive ℓ∞",
    "adaptive_l2": "adaptive ℓ2",
}


def label(col: str) -> str:
    """The readable name of a report column (``keskar_random_eps0.001`` -> ``Keskar φ random ε=0.001``)."""
    if col in LABELS:
        return LABELS[col]
    if col.startswith("keskar_"):
        _, space, eps = col.split("_", 2)
        return f"Keskar φ {space} ε={eps[3:]}"
    if col.startswith("cross") and col.endswith("_drop"):
        return col[:-5] + " SRCC drop"
    if col.startswith("cross") and col.endswith("_srcc"):
        return col[:-5] + " SRCC"
    return col


def config_rows(st: ReportStats) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-configuration table: the axes, the seed count, ``mean ± std`` per column."""
    cols = [c for c in st.columns if any(a.n.get(c, 0) for a in st.configs)]
    header = [*AXES, "seeds", *[label(c) for c in cols]]
    body = []
    for a in st.configs:
        n_seeds = max(a.n.values()) if a.n else 0
        body.append([str(a.config[k]) for k in AXES] + [str(n_seeds)]
                    + [fmt(a.mean[c], a.std[c]) for c in cols])
    return header, body


def run_rows(data: SweepData) -> tuple[list[str], list[list[Any]]]:
    """Per-run CSV: every scalar column of every run, unrounded (the stored values)."""
    cols: list[str] = []
    for r in data.runs:
        for k, v in r.row.items():
            if k not in cols and not isinstance(v, (list, dict)):
                cols.append(k)
    cols = ["status", *cols]
    return cols, [[r.status, *[r.row.get(c, "") for c in cols[1:]]] for r in data.runs]


def stats_rows(st: ReportStats) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the statistics table: per measure and target, tau_b and rho with CIs, Holm p, Psi."""
    header = ["measure", "target", "n", "Kendall τ_b [95% CI]", "p (Holm)", "Spearman ρ [95% CI]",
              "granulated Ψ"]
    body = []
    for ms in st.correlations:
        c = ms.correlation
        tau = "-" if not math.isfinite(c.tau) else f"{c.tau:+.3f} [{ci_text(c.tau_ci, c.n)}]"
        rho = "-" if not math.isfinite(c.rho) else f"{c.rho:+.3f} [{ci_text(c.rho_ci, c.n)}]"
        p = "-" if not math.isfinite(ms.tau_p_holm) else f"{ms.tau_p_holm:.3g}"
        psi = "-" if ms.granulated is None or not math.isfinite(ms.granulated.psi) else f"{ms.granulated.psi:+.3f}"
        body.append([label(ms.measure), label(ms.target), str(c.n), tau, p, rho, psi])
    return header, body


def settings_rows(data: SweepData) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the settings table: per measure, the setting used (its key, the runs that
    have it and every setting), or ``not compared`` with the reason."""
    from landscape.report.settings import describe

    header = ["measure", "runs", "setting key", "settings"]
    body = []
    for c in data.choices:
        if c.settings is not None:
            body.append([label(c.measure), str(len(c.runs)), c.key, describe(c.settings)])
        elif c.reason:
            body.append([label(c.measure), "0", "not compared", c.reason.split(": not compared: ", 1)[-1]])
    return header, body


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_tables(data: SweepData, st: ReportStats, out: Path) -> dict[str, Path]:
    """``table.{md,tex,csv}`` (per configuration), ``runs.csv`` (per run), ``stats.{md,csv}`` into ``out``."""
    header, body = config_rows(st)
    rh, rb = run_rows(data)
    sh, sb = stats_rows(st)
    return {"markdown": write_text(out / "table.md", render_table(header, body, "markdown")),
            "latex": write_text(out / "table.tex", render_table(header, body, "latex")),
            "csv": write_text(out / "table.csv", render_table(header, body, "csv")),
            "runs_csv": write_text(out / "runs.csv", render_table(rh, rb, "csv")),
            "settings_markdown": write_text(out / "settings.md", render_table(*settings_rows(data), "markdown")),
            "stats_markdown": write_text(out / "stats.md", render_table(sh, sb, "markdown")),
            "stats_csv": write_text(out / "stats.csv", render_table(sh, sb, "csv"))}
