"""Report tables: per-configuration mean +- std over seeds (Markdown, LaTeX, CSV) and per-run CSV.

The per-run CSV holds the stored values unrounded; the configuration tables show
``mean ± std (n)`` rounded to 4 significant digits (std with ddof = 1; ``-`` when absent).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from landscape.store import atomic_path
from landscape.report.analysis import ReportStats
from landscape.report.collect import AXES, SweepData

LABELS = {
    "epochs_run": "epochs", "train_srcc": "train SRCC", "val_srcc": "val SRCC", "test_srcc": "test SRCC",
    "train_plcc": "train PLCC", "val_plcc": "val PLCC", "test_plcc": "test PLCC", "srcc_gap": "SRCC gap",
    "samples_per_s": "samples/s", "epoch_time_s": "epoch time (s)", "peak_memory_mib": "peak memory (MiB)",
    "hessian_lambda_max": "λ_max", "hessian_trace": "tr(H)", "pacbayes_flatness": "PAC-Bayes flatness",
    "noise_b_simple": "B_simple", "average": "avg. sharpness", "adaptive_linf": "adaptive ℓ∞",
    "adaptive_l2": "adaptive ℓ2",
}


def label(col: str) -> str:
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


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "-"
    text = f"{mean:.4g}"
    if n > 1 and math.isfinite(std):
        text += f" ± {std:.2g}"
    return text


def config_rows(st: ReportStats) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in st.columns if any(a.n.get(c, 0) for a in st.configs)]
    header = [*AXES, "seeds", *[label(c) for c in cols]]
    body = []
    for a in st.configs:
        n_seeds = max(a.n.values()) if a.n else 0
        body.append([str(a.config[k]) for k in AXES] + [str(n_seeds)]
                    + [_cell(a.mean[c], a.std[c], a.n[c]) for c in cols])
    return header, body


def markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    repl = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "λ": r"$\lambda$", "φ": r"$\varphi$",
            "ε": r"$\varepsilon$", "ℓ∞": r"$\ell_\infty$", "ℓ2": r"$\ell_2$"}
    for k, v in repl.items():
        text = text.replace(k, v)
    return text


def latex(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    out = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
           " & ".join(_tex_escape(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(_tex_escape(c) for c in r) + r" \\" for r in body]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def csv_text(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue()


def run_rows(data: SweepData) -> tuple[list[str], list[list[Any]]]:
    """Per-run CSV: every scalar column of every run, unrounded (the stored values)."""
    cols: list[str] = []
    for r in data.runs:
        for k, v in r.row.items():
            if k not in cols and not isinstance(v, (list, dict)):
                cols.append(k)
    cols = ["status", *cols]
    return cols, [[r.status, *[r.row.get(c, "") for c in cols[1:]]] for r in data.runs]


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_tables(data: SweepData, st: ReportStats, out: Path) -> dict[str, Path]:
    header, body = config_rows(st)
    rh, rb = run_rows(data)
    return {"markdown": write_text(out / "table.md", markdown(header, body)),
            "latex": write_text(out / "table.tex", latex(header, body)),
            "csv": write_text(out / "table.csv", csv_text(header, body)),
            "runs_csv": write_text(out / "runs.csv", csv_text(rh, rb))}


def stats_rows(st: ReportStats) -> tuple[list[str], list[list[str]]]:
    header = ["measure", "target", "n", "Kendall τ_b [95% CI]", "p (Holm)", "Spearman ρ [95% CI]",
              "granulated Ψ"]
    body = []
    for ms in st.correlations:
        c = ms.correlation
        tau = "-" if not math.isfinite(c.tau) else f"{c.tau:+.3f} [{c.tau_ci[0]:+.2f}, {c.tau_ci[1]:+.2f}]"
        rho = "-" if not math.isfinite(c.rho) else f"{c.rho:+.3f} [{c.rho_ci[0]:+.2f}, {c.rho_ci[1]:+.2f}]"
        p = "-" if not math.isfinite(ms.tau_p_holm) else f"{ms.tau_p_holm:.3g}"
        psi = "-" if ms.granulated is None or not math.isfinite(ms.granulated.psi) else f"{ms.granulated.psi:+.3f}"
        body.append([label(ms.measure), label(ms.target), str(c.n), tau, p, rho, psi])
    return header, body
