"""``index.html``: the report as a page a person reads, self-contained (figures embedded as PNG).

Order: the Answer (:func:`landscape.report.answer.answer_sentences`), the headline figure, a table of
contents, then the details: findings, the per-configuration tables split by topic (each in a box
that scrolls sideways on its own when wider than the 1,200 px page), the statistics, every figure
at a set width (``FIGURE_WIDTH_PX``; the headline and two-panel figures wider) with a caption that
says what it shows and links to its PDF, the plan and its figure, the settings and what was left
out. Captions are written here from the figure names the report drew (:data:`CAPTIONS`).
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Sequence

from landscape.formatting import render_table
from landscape.report.analysis import ReportStats
from landscape.report.collect import SweepData
from landscape.report.tables import (
    config_rows,
    constants_note,
    label,
    settings_rows,
    stats_rows,
    topic_columns,
    trend_rows,
    write_text,
)

FIGURE_WIDTH_PX = 640
WIDE_FIGURE_PX = 1000
WIDE = ("headline", "training_curves", "surfaces", "vs_batch_size")

CAPTIONS = {
    "headline": "What changes with batch size. Left: test SRCC (top) and the SRCC gap (train − test, bottom), "
                "each on its own scale, mean ± std over seeds, each seed a dot. Right: each sharpness measure's "
                "seed mean divided by its value at the smallest batch size (1 = unchanged; a measure whose "
                "smallest-batch value is not positive cannot be normalised and is left out; on a log axis a "
                "ratio at or below zero is named in the legend and not drawn).",
    "vs_batch_size": "Test SRCC, the SRCC gap and {main} against batch size: mean ± std over seeds, seeds as dots.",
    "spectral_density": "Hessian eigenvalue density (stochastic Lanczos quadrature) of the first seed at each batch "
                        "size; a wider right tail is a sharper minimum.",
    "interpolation": "Loss (solid) and SRCC (dashed) along the straight line between two trained models "
                     "(α = 0 and α = 1, named on the axis), on the training and test images.",
    "surfaces": "Training loss on a random 2-D plane through each model (filter-normalised directions δ, η; "
                "+ the trained weights), one shared colour scale; the first seed at each batch size.",
    "training_curves": "Training loss and validation SRCC per epoch; colour = batch size, line style = seed.",
    "throughput_memory": "Training throughput (samples/s, mean ± std over seeds) and peak memory against batch "
                         "size; B_simple is the gradient noise scale estimated before training.",
}


def caption(name: str, data: SweepData, st: ReportStats) -> str:
    """What figure ``name`` shows (a measure-vs-gap figure is described from its measure)."""
    if name.endswith("_vs_gap"):
        m = name[:-len("_vs_gap")]
        return (f"{label(m)} against the SRCC gap (train − test), one point per configuration: seed means with "
                f"± std bars on both axes, colour = batch size; Kendall τ_b with its bootstrap 95% CI above.")
    text = CAPTIONS.get(name, name)
    if name == "vs_batch_size":
        main = "hessian_lambda_max" if "hessian_lambda_max" in data.measures else (data.measures or ["-"])[0]
        text = text.format(main=label(main))
    if name == "throughput_memory":
        noise = (data.plan or {}).get("noise") or {}
        lo = (noise.get("b_simple_ci") or [None, None])[0]
        b = noise.get("b_simple")
        if b is not None and not b > 0:
            text += f" Its estimate ({b:.3g}) is not positive, so it is not drawn (a noise scale must be > 0)."
        elif lo is not None and lo <= 0:
            text += " The lower end of its 95% interval is ≤ 0 and is clipped at the axis (log scale)."
    return text


def _img(path: Path, width: int) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}" style="width:{width}px">'


def _figure(name: str, paths: Sequence[Path], text: str, out: Path) -> str:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return ""
    pdf = next((p for p in paths if p.suffix == ".pdf"), None)
    link = f' (<a href="{html.escape(os.path.relpath(pdf, out))}">PDF</a>)' if pdf else ""
    width = WIDE_FIGURE_PX if name in WIDE else FIGURE_WIDTH_PX
    return (f'<figure id="fig-{html.escape(name)}">{_img(png, width)}<figcaption>{html.escape(text)}{link}'
            f'</figcaption></figure>')


def _table(header: list, body: list) -> str:
    return f'<div class="scroll">{render_table(header, body, "html")}</div>'


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;"
       "line-height:1.45}"
       ".scroll{overflow-x:auto;max-width:100%;margin:0.5em 0 1em}"
       "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}"
       "th{background:#f0f0f0}figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
       "figcaption{font-size:13px;color:#444;max-width:900px}.answer{font-size:16px;background:#f6f8fa;"
       "border-left:4px solid #0072B2;padding:0.6em 1.2em}nav ol{columns:2}pre{overflow-x:auto;font-size:12px}")


def write_html(out: Path, data: SweepData, st: ReportStats, figs: dict[str, list[Path]], summary: list[str],
               answer: list[str]) -> Path:
    """Write ``out/index.html`` (module docstring); returns its path."""
    sections: list[tuple[str, str, str]] = []          # (anchor, title, html)
    sections.append(("findings", "Findings", "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary)
                     + "</ul>"))
    note = constants_note(st)
    tables = "<p>Mean ± sample std over seeds (ddof = 1)" + html.escape(f"; {note}" if note else "") + ".</p>"
    for key, title, cols in topic_columns(st):
        tables += f'<h3 id="table-{key}">{html.escape(title)}</h3>' + _table(*config_rows(st, cols))
    sections.append(("tables", "Per configuration", tables))
    sections.append(("statistics", "Statistics",
                     "<h3>Measures against the SRCC gap and test SRCC</h3>" + _table(*stats_rows(st))
                     + "<h3>Against batch size</h3>" + _table(*trend_rows(st))))
    others = {k: v for k, v in figs.items() if k not in ("headline", "training_curves")}
    if others:
        sections.append(("figures", "Figures", "".join(_figure(k, v, caption(k, data, st), out)
                                                      for k, v in others.items())))
    if "training_curves" in figs:
        sections.append(("training", "Training curves", _figure("training_curves", figs["training_curves"],
                                                                caption("training_curves", data, st), out)))
    plan_dir = data.root / "plan"
    if data.plan:
        text = (plan_dir / "plan.txt").read_text() if (plan_dir / "plan.txt").exists() else ""
        body = f'<p>Measured before training; files in <a href="{html.escape(os.path.relpath(plan_dir, out))}">' \
               f'{html.escape(str(plan_dir))}</a>.</p><pre>{html.escape(text)}</pre>'
        if (plan_dir / "plan.png").exists():
            body += _figure("plan", [plan_dir / "plan.png", plan_dir / "plan.pdf"],
                            "Planned batch sizes: predicted epoch time (top) and measured peak memory (bottom) "
                            "against batch size B, with the memory model, the memory limit and B_simple.", out)
        sections.append(("plan", "Plan (measured before training)", body))
    seh, seb = settings_rows(data)
    sections.append(("settings", "Settings used per measure", _table(seh, seb) if seb else "<p>None.</p>"))
    for anchor, title, items in (("not-compared", "Not compared (mixed settings)", data.not_compared),
                                 ("left-out", "Left out of means", data.invalid),
                                 ("missing", "Missing analyses", data.missing)):
        sections.append((anchor, title, "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in items) + "</ul>"
                         if items else "<p>None.</p>"))
    toc = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t, _ in sections)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>landscape report</title><style>{CSS}</style>"
        "</head><body>",
        f"<h1>Sharpness and the SRCC generalisation gap</h1><p>Sweep: <code>{html.escape(str(data.root))}</code>, "
        f"{len(data.runs)} runs, {len(st.configs)} configurations.</p>",
        '<h2 id="answer">Answer</h2><div class="answer">' + "".join(f"<p>{html.escape(s)}</p>" for s in answer)
        + "</div>",
    ]
    if "headline" in figs:
        parts.append(_figure("headline", figs["headline"], caption("headline", data, st), out))
    parts.append('<nav><h2>Contents</h2><ol><li><a href="#answer">Answer</a></li>' + toc + "</ol></nav>")
    parts += [f'<h2 id="{a}">{html.escape(t)}</h2>{body}' for a, t, body in sections]
    parts.append("</body></html>")
    return write_text(out / "index.html", "\n".join(parts))
