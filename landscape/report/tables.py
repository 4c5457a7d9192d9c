"""Report tables: the rows of the per-configuration and statistics tables, and the files they go to.

Rows are built here; every table is rendered by :func:`landscape.formatting.render_table`
and every cell by :func:`landscape.formatting.fmt`. The configuration tables for people
(Markdown, LaTeX, HTML) are split by topic (:data:`TOPICS`: SRCC and gap, PLCC, cross-dataset,
sharpness, cost) and show ``mean ± std`` over seeds (sample std, ddof = 1; no ``±`` part for a
single seed; ``-`` when absent), the mean with 4 significant digits and the std with 2; the
LaTeX tables are booktabs with at most :data:`TEX_MAX_COLUMNS` value columns each and LaTeX
symbols (``$\\lambda_{\\max}$``). The tables for programs (CSV) hold numbers only: per value
column ``c`` the columns ``c``, ``c_std``, ``c_se``, ``c_n`` (unrounded; empty when undefined);
``stats.csv`` one column per statistic and CI bound. The per-run CSV holds the stored values
unrounded. The settings table names, per measure, the setting used.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from landscape.formatting import TeX, fmt, latex_escape, render_table
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


#: Units of report columns, shown in axis labels and table headers (:func:`axis_label`).
UNITS = {"keskar_": "%"}

#: LaTeX headers of report columns (the rest: :func:`landscape.formatting.latex_escape` of the label).
TEX_LABELS = {
    "hessian_lambda_max": r"$\lambda_{\max}$", "hessian_trace": r"$\mathrm{tr}(H)$",
    "noise_b_simple": r"$B_{\mathrm{simple}}$", "srcc_gap": r"SRCC gap", "adaptive_linf": r"adaptive $\ell_\infty$",
    "adaptive_l2": r"adaptive $\ell_2$", "peak_memory_mib": "peak memory (MiB)", "batch_size": "batch size",
    "lr_rule": "LR rule", "accumulate": "accumulation",
}

#: Topics of the per-configuration tables: (key, title, columns or a predicate on a column).
TOPICS = (
    ("srcc", "Rank correlation with the subjective scores (SRCC) and the generalisation gap",
     ("train_srcc", "val_srcc", "test_srcc", "srcc_gap")),
    ("plcc", "Linear correlation with the subjective scores (PLCC)", ("train_plcc", "val_plcc", "test_plcc")),
    ("cross", "Cross-dataset SRCC and its drop", "cross"),
    ("sharpness", "Sharpness and curvature measures", "measure"),
    ("cost", "Training length and cost", ("epochs_run", "samples_per_s", "epoch_time_s", "peak_memory_mib")),
)
#: Most value columns of one LaTeX tabular (wider topics are split into several tables).
TEX_MAX_COLUMNS = 4


def axis_label(col: str) -> str:
    """:func:`label` with the column's unit, e.g. ``Keskar φ random ε=0.001 (%)``."""
    unit = next((u for prefix, u in UNITS.items() if col.startswith(prefix)), None)
    return f"{label(col)} ({unit})" if unit else label(col)


#: Matplotlib mathtext of the columns whose plain label has a subscript.
FIGURE_LABELS = {"hessian_lambda_max": r"$\lambda_{\max}$", "noise_b_simple": r"$B_{\mathrm{simple}}$"}


def figure_label(col: str) -> str:
    """The axis label of a column in a figure: mathtext for subscripts, the unit in parentheses."""
    return FIGURE_LABELS.get(col, axis_label(col))


def tex_label(col: str) -> TeX:
    """The LaTeX header of a column (``$\\lambda_{\\max}$``, escaped underscores elsewhere)."""
    if col in TEX_LABELS:
        return TeX(TEX_LABELS[col])
    return TeX(latex_escape(axis_label(col)))


def _present(st: ReportStats) -> list[str]:
    return [c for c in st.columns if any(a.n.get(c, 0) for a in st.configs)]


def topic_columns(st: ReportStats) -> list[tuple[str, str, list[str]]]:
    """``(key, title, columns)`` per topic with at least one present column (:data:`TOPICS`)."""
    present = _present(st)
    measures = set(st.measures)
    out = []
    for key, title, spec in TOPICS:
        if spec == "measure":
            cols = [c for c in present if c in measures]
        elif spec == "cross":
            cols = [c for c in present if c.startswith("cross")]
        else:
            cols = [c for c in spec if c in present]
        if cols:
            out.append((key, title, cols))
    return out


def shown_axes(st: ReportStats) -> tuple[list[str], dict[str, Any]]:
    """The axes shown as columns (batch size, and every axis that varies) and the constant ones."""
    shown = [a for a in AXES if a == "batch_size" or a in st.axes_varied]
    const = {a: st.configs[0].config[a] for a in AXES if a not in shown and st.configs}
    return shown, const


def config_rows(st: ReportStats, cols: list[str] | None = None, tex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a per-configuration table: the shown axes, the seed count, ``mean ± std`` per
    column (``cols``, default every present column); ``tex``: LaTeX headers."""
    cols = _present(st) if cols is None else cols
    axes, _ = shown_axes(st)
    name = tex_label if tex else (lambda c: label(c) if c in AXES else axis_label(c))
    header = [*[name(a) if tex else a.replace("_", " ") for a in axes], "seeds", *[name(c) for c in cols]]
    body = []
    for a in st.configs:
        n_seeds = max(a.n.values()) if a.n else 0
        body.append([str(a.config[k]) for k in axes] + [str(n_seeds)]
                    + [fmt(a.mean[c], a.std[c]) for c in cols])
    return header, body


def config_csv_rows(st: ReportStats) -> tuple[list[str], list[list[Any]]]:
    """The per-configuration CSV: the axes, then per column ``c`` four numeric columns, ``c`` (seed mean),
    ``c_std`` (sample std over seeds, ddof = 1), ``c_se`` (``c_std / sqrt(c_n)``), ``c_n`` (finite seed
    values); an empty field where a value is undefined. Numbers unrounded."""
    cols = _present(st)
    header = [*AXES, "seeds", *[f"{c}{s}" for c in cols for s in ("", "_std", "_se", "_n")]]

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None
    body: list[list[Any]] = []
    for a in st.configs:
        row: list[Any] = [a.config[k] for k in AXES] + [max(a.n.values()) if a.n else 0]
        for c in cols:
            n = a.n.get(c, 0)
            std = a.std[c]
            row += [num(a.mean[c]), num(std), num(std / math.sqrt(n)) if n > 1 else None, n]
        body.append(row)
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


def stats_rows(st: ReportStats, tex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the statistics table: per measure and target, tau_b and rho with CIs, Holm p, Psi."""
    header = ["measure", "target", "n", "Kendall τ_b [95% CI]", "p (Holm)", "Spearman ρ [95% CI]",
              "granulated Ψ"]
    if tex:
        header = [TeX(latex_escape(h)) for h in header]
    name = tex_label if tex else axis_label
    body = []
    for ms in st.correlations:
        c = ms.correlation
        tau = "-" if not math.isfinite(c.tau) else f"{c.tau:+.3f} [{ci_text(c.tau_ci, c.n)}]"
        rho = "-" if not math.isfinite(c.rho) else f"{c.rho:+.3f} [{ci_text(c.rho_ci, c.n)}]"
        p = "-" if not math.isfinite(ms.tau_p_holm) else f"{ms.tau_p_holm:.3g}"
        psi = "-" if ms.granulated is None or not math.isfinite(ms.granulated.psi) else f"{ms.granulated.psi:+.3f}"
        body.append([name(ms.measure), name(ms.target), str(c.n), tau, p, rho, psi])
    return header, body


def _num(x: float) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


_CORR_CSV = ("n", "tau", "tau_ci_low", "tau_ci_high", "tau_p", "rho", "rho_ci_low", "rho_ci_high", "rho_p",
             "n_boot_used")


def _corr_cells(c: Any) -> list[Any]:
    return [c.n, _num(c.tau), _num(c.tau_ci[0]), _num(c.tau_ci[1]), _num(c.tau_p), _num(c.rho),
            _num(c.rho_ci[0]), _num(c.rho_ci[1]), _num(c.rho_p), c.n_boot_used]


def stats_csv_rows(st: ReportStats) -> tuple[list[str], list[list[Any]]]:
    """``stats.csv``: one numeric column per statistic (column names, not labels; empty where undefined,
    e.g. the CIs at n < 5)."""
    header = ["measure", "target", *_CORR_CSV, "tau_p_holm", "granulated_psi"]
    body = [[ms.measure, ms.target, *_corr_cells(ms.correlation), _num(ms.tau_p_holm),
             _num(ms.granulated.psi) if ms.granulated is not None else None] for ms in st.correlations]
    return header, body


def trend_rows(st: ReportStats, tex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Per column, Kendall tau_b and Spearman rho between the batch size and the configuration means."""
    header = ["against batch size", "n", "Kendall τ_b [95% CI]", "p", "Spearman ρ [95% CI]"]
    if tex:
        header = [TeX(latex_escape(h)) for h in header]
    name = tex_label if tex else axis_label
    body = []
    for col, c in st.batch_trends.items():
        tau = "-" if not math.isfinite(c.tau) else f"{c.tau:+.3f} [{ci_text(c.tau_ci, c.n)}]"
        rho = "-" if not math.isfinite(c.rho) else f"{c.rho:+.3f} [{ci_text(c.rho_ci, c.n)}]"
        p = "-" if not math.isfinite(c.tau_p) else f"{c.tau_p:.3g}"
        body.append([name(col), str(c.n), tau, p, rho])
    return header, body


def trend_csv_rows(st: ReportStats) -> tuple[list[str], list[list[Any]]]:
    """``trends.csv``: per column, the numeric rank correlation with the batch size."""
    return (["column", *_CORR_CSV], [[col, *_corr_cells(c)] for col, c in st.batch_trends.items()])


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


def constants_note(st: ReportStats) -> str:
    _, const = shown_axes(st)
    return ", ".join(f"{label(k) if k in LABELS else k} = {v}" for k, v in const.items())


def _tex_table(header: list, body: list[list[str]], caption: str, tag: str) -> str:
    return ("\\begin{table}[htbp]\n\\centering\n\\small\n\\caption{" + caption + "}\n\\label{tab:" + tag + "}\n"
            + render_table(header, body, "latex") + "\\end{table}\n")


def config_latex(st: ReportStats) -> str:
    """``table.tex``: one booktabs table per topic, at most :data:`TEX_MAX_COLUMNS` value columns each
    (needs ``\\usepackage{booktabs}``); cells ``mean $\\pm$ std`` over seeds, constant axes in the caption."""
    note = constants_note(st)
    parts = ["% landscape report: per-configuration tables, mean $\\pm$ sample std over seeds (ddof = 1).",
             "% Needs \\usepackage{booktabs}.", ""]
    for key, title, cols in topic_columns(st):
        chunks = [cols[i:i + TEX_MAX_COLUMNS] for i in range(0, len(cols), TEX_MAX_COLUMNS)]
        for j, chunk in enumerate(chunks):
            header, body = config_rows(st, chunk, tex=True)
            part = f" ({j + 1} of {len(chunks)})" if len(chunks) > 1 else ""
            caption = latex_escape(f"{title}{part}: mean ± std over seeds" + (f"; {note}" if note else "") + ".")
            parts.append(_tex_table(header, body, caption, f"{key}{j + 1 if len(chunks) > 1 else ''}"))
    return "\n".join(parts)


def config_markdown(st: ReportStats) -> str:
    """``table.md``: one pipe table per topic under its heading."""
    note = constants_note(st)
    text = "Per configuration: mean ± sample std over seeds (ddof = 1)" + (f"; {note}" if note else "") + ".\n"
    for _, title, cols in topic_columns(st):
        text += f"\n## {title}\n\n" + render_table(*config_rows(st, cols), "markdown")
    return text


def write_tables(data: SweepData, st: ReportStats, out: Path) -> dict[str, Path]:
    """``table.{md,tex,csv}`` (per configuration), ``runs.csv`` (per run), ``stats.{md,tex,csv}``,
    ``trends.csv`` and ``settings.md`` into ``out``."""
    rh, rb = run_rows(data)
    sh, sb = stats_rows(st)
    th, tb = trend_rows(st)
    stats_md = (render_table(sh, sb, "markdown") + "\n## Against batch size\n\n" + render_table(th, tb, "markdown"))
    stats_tex = (_tex_table(*stats_rows(st, tex=True), "Sharpness measures against the SRCC gap and test SRCC "
                            "(bootstrap 95\\% CIs over configurations; p Holm-adjusted per target).", "stats")
                 + "\n" + _tex_table(*trend_rows(st, tex=True), "Rank correlation with the batch size "
                                      "(configuration means; bootstrap 95\\% CIs).", "trends"))
    return {"markdown": write_text(out / "table.md", config_markdown(st)),
            "latex": write_text(out / "table.tex", config_latex(st)),
            "csv": write_text(out / "table.csv", render_table(*config_csv_rows(st), "csv")),
            "runs_csv": write_text(out / "runs.csv", render_table(rh, rb, "csv")),
            "settings_markdown": write_text(out / "settings.md", render_table(*settings_rows(data), "markdown")),
            "stats_markdown": write_text(out / "stats.md", stats_md),
            "stats_latex": write_text(out / "stats.tex", stats_tex),
            "stats_csv": write_text(out / "stats.csv", render_table(*stats_csv_rows(st), "csv")),
            "trends_csv": write_text(out / "trends.csv", render_table(*trend_csv_rows(st), "csv"))}
