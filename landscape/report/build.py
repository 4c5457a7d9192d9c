"""``landscape report``: tables, statistics, figures and a self-contained HTML index.

Everything is read from stored results (:mod:`.collect`); nothing is recomputed, so the
report can be regenerated at any time. Output folder layout: ``table.{md,tex,csv}``,
``runs.csv``, ``stats.{md,tex,csv}``, ``trends.csv``, ``stats.json``, ``settings.md``, ``summary.md``,
``figures/*.{pdf,png,svg}``, ``index.html``, ``report.json`` (marks the folder as a complete
landscape report). ``summary.md`` and ``index.html`` open with the Answer
(:mod:`landscape.report.answer`), then the headline figure (``figures/headline.*``), then the details.
``.report-incomplete`` is written first and removed last: a report killed
half-way is recognised and regenerated in place (no ``--force``).

Per measure the report uses one setting (:mod:`landscape.report.settings`), states it (the
settings table in ``summary.md``, ``settings.md``, ``index.html``, ``report.json``) and never
mixes settings: a measure analysed with different settings on different runs is not compared,
with one line naming the runs, the settings and the option (``--samples N``, ``--setting
MEASURE.KEY=VALUE``). Values left out of the means (non-finite ...) are listed, the run named.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from landscape.errors import LandscapeError
from landscape.figures import headline as hf
from landscape.figures import sweep as rf
from landscape.formatting import render_table
from landscape.provenance import provenance
from landscape.report.analysis import ReportStats, compute_stats
from landscape.report.answer import answer_sentences, headline_data
from landscape.report.collect import SweepData, collect_sweep
from landscape.report.page import write_html
from landscape.report.settings import parse_filters
from landscape.report.stats import ci_text
from landscape.report.tables import figure_label, label, settings_rows, write_tables, write_text
from landscape.store import read_json, safe_rmtree, write_json

KIND = "landscape-report"
INCOMPLETE = ".report-incomplete"     # written first, removed last: a killed report is regenerated in place


@dataclass
class ReportResult:
    out: Path
    index: Path
    figures: dict[str, list[Path]]
    missing: list[str]
    summary: list[str]
    not_compared: list[str] = dataclasses.field(default_factory=list)
    invalid: list[str] = dataclasses.field(default_factory=list)
    answer: list[str] = dataclasses.field(default_factory=list)


def _prepare(out: Path, force: bool, sweep_dir: Path) -> None:
    """Use ``out`` if it is empty, missing or holds the report of this very sweep, complete
    (``report.json``) or left incomplete by a killed report (``.report-incomplete``): regenerated in
    place; a folder with other content or another sweep's report is replaced only with ``force``."""
    marker = out / "report.json"
    if out.exists() and any(out.iterdir()):
        old = read_json(marker) if marker.is_file() else {}
        if not old and (out / INCOMPLETE).is_file():
            old = read_json(out / INCOMPLETE)
        if old.get("kind") == KIND and old.get("sweep") == str(Path(sweep_dir).resolve()):
            return
        if not force:
            what = (f"holds the report of another sweep ({old.get('sweep')})" if old.get("kind") == KIND
                    else "is not empty and holds no landscape report")
            raise LandscapeError(f"{out}: folder {what}; use another --out or --force to replace it")
        safe_rmtree(out, [sweep_dir])
    out.mkdir(parents=True, exist_ok=True)


def _per_batch(st: ReportStats, col: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for a in st.configs:
        out.setdefault(int(a.config["batch_size"]), []).extend(a.values.get(col, []))
    return out


def _first_run_per_batch(data: SweepData) -> dict[int, Any]:
    picks: dict[int, Any] = {}
    for r in sorted(data.runs, key=lambda r: (r.row.get("seed", 0), r.name)):
        b = r.row.get("batch_size")
        if r.status == "finished" and b is not None and b not in picks:
            picks[int(b)] = r
    return dict(sorted(picks.items()))


def make_figures(data: SweepData, st: ReportStats, fig_dir: Path, log: Callable[[str], None]) -> dict[str, list[Path]]:
    figs: dict[str, list[Path]] = {}

    def attempt(name: str, fn: Callable[[], list[Path]]) -> None:
        try:
            figs[name] = fn()
        except LandscapeError as e:
            log(f"figure {name} skipped: {e}")

    hd = headline_data(st)
    if any(any(v) for v in hd.metrics.values()):
        attempt("headline", lambda: hf.headline(hd.metrics, hd.normalised, fig_dir / "headline"))
    bs = [int(a.config["batch_size"]) for a in st.configs]
    rules = [str(a.config["lr_rule"]) for a in st.configs]
    for ms in st.correlations:
        if ms.target != "srcc_gap":
            continue
        m = ms.measure
        if sum(a.n.get(m, 0) > 0 for a in st.configs) < 2:
            continue
        attempt(f"{m}_vs_gap", lambda m=m, ms=ms: rf.measure_vs_gap(
            bs, [a.mean[m] for a in st.configs], [a.mean["srcc_gap"] for a in st.configs], fig_dir / f"{m}_vs_gap",
            measure_std=[a.std[m] for a in st.configs], gap_std=[a.std["srcc_gap"] for a in st.configs],
            measure_label=figure_label(m), correlation=ms.correlation,
            groups=rules if len(set(rules)) > 1 else None,
            log_measure=all(a.mean[m] > 0 for a in st.configs if math.isfinite(a.mean[m]))))
    panels = {"test SRCC": _per_batch(st, "test_srcc"), "SRCC gap (train − test)": _per_batch(st, "srcc_gap")}
    if data.measures:
        main = "hessian_lambda_max" if "hessian_lambda_max" in data.measures else data.measures[0]
        panels[figure_label(main)] = _per_batch(st, main)
    attempt("vs_batch_size", lambda: rf.metric_vs_batch_size(panels, fig_dir / "vs_batch_size"))
    picks = _first_run_per_batch(data)
    dens = {b: (r.density["grid"], r.density["density"]) for b, r in picks.items() if r.density}
    if dens:
        attempt("spectral_density", lambda: rf.spectral_densities(dens, fig_dir / "spectral_density"))
    if data.interpolations:
        it = data.interpolations[-1]
        v = it.values
        ends = tuple(it.attrs.get("endpoint_labels", ("A", "B")))
        attempt("interpolation", lambda: rf.interpolation_1d(
            it.x, fig_dir / "interpolation", train_loss=v.get("train_loss"), test_loss=v.get("test_loss"),
            train_srcc=v.get("train_srcc"), test_srcc=v.get("test_srcc"), endpoint_labels=ends))
    surf = {}
    for b, r in picks.items():
        planes = [s for s in data.surfaces.get(r.name, []) if s.y is not None and "train_loss" in s.values]
        if planes:
            surf[f"B = {b}"] = planes[-1]
    if surf:
        first = next(iter(surf.values()))
        same = {k: s for k, s in surf.items() if s.x.shape == first.x.shape and s.y.shape == first.y.shape}
        attempt("surfaces", lambda: rf.contours_side_by_side(
            {k: s.values["train_loss"] for k, s in same.items()}, fig_dir / "surfaces", x=first.x, y=first.y,
            cbar_label="training loss"))
    curves = [{"batch_size": r.row["batch_size"], "seed": r.row.get("seed"), "epoch": [h["epoch"] for h in r.history],
               "train_loss": [h["train_loss"] for h in r.history],
               "val_srcc": [h["val"]["srcc"] for h in r.history]} for r in data.runs if r.history]
    if curves:
        attempt("training_curves", lambda: rf.training_curves(curves, fig_dir / "training_curves"))
    if st.configs:
        b_simple, b_ci = None, None
        noise = (data.plan or {}).get("noise") or {}
        planned = noise.get("b_simple")
        if planned is not None and math.isfinite(planned) and planned > 0:
            b_simple = planned
            ci = noise.get("b_simple_ci")
            b_ci = (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
        elif "noise_b_simple" in data.measures:
            vals = [a.mean["noise_b_simple"] for a in st.configs if math.isfinite(a.mean["noise_b_simple"])]
            b_simple = float(np.median(vals)) if vals else None
        attempt("throughput_memory", lambda: rf.throughput_memory(
            bs, [a.mean["samples_per_s"] for a in st.configs], [a.mean["peak_memory_mib"] for a in st.configs],
            fig_dir / "throughput_memory", samples_per_s_std=[a.std["samples_per_s"] for a in st.configs],
            b_simple=b_simple, b_simple_ci=b_ci))
    return figs


def summarize(data: SweepData, st: ReportStats) -> list[str]:
    """Plain-language findings, each with its uncertainty."""
    lines = [st.sufficiency.statement, *st.notes]
    for ms in st.correlations:
        c = ms.correlation
        if ms.target != "srcc_gap" or not math.isfinite(c.tau):
            continue
        verdict = ("significant after Holm correction" if ms.tau_p_holm < 0.05
                   else "not significant after Holm correction")
        lines.append(f"{label(ms.measure)} vs SRCC gap: Kendall τ_b = {c.tau:+.2f} (95% CI "
                     f"{ci_text(c.tau_ci, c.n, sep=' to ')}, n = {c.n} configurations), {verdict} "
                     f"(p = {ms.tau_p_holm:.3g}).")
    for col, res in st.seed_spread.items():
        lines.append(f"{label(col)}: {res.verdict}")
    if data.not_compared:
        lines.append(f"{len(data.not_compared)} measure(s) not compared: analysed with different settings "
                     f"(listed below, with the option to choose one).")
    if data.invalid:
        lines.append(f"{len(data.invalid)} value(s) left out of every mean and correlation (listed below).")
    if data.missing:
        lines.append(f"{len(data.missing)} analyses are missing (listed below).")
    return lines


def summary_markdown(data: SweepData, summary: list[str], answer: Sequence[str] = (),
                     headline: Path | None = None) -> str:
    """``summary.md``: the Answer, the headline figure, the findings, the settings used per measure, what
    was not compared, left out, missing."""
    text = "# Answer\n\n" + " ".join(answer) + "\n" if answer else ""
    if headline is not None:
        text += f"\n![What changes with batch size](figures/{headline.name})\n"
    text += ("\n## Findings\n\n" if answer else "") + "\n".join(f"- {s}" for s in summary) + "\n"
    header, body = settings_rows(data)
    text += "\n## Settings\n\n" + (render_table(header, body, "markdown") if body else "No analysis measures.\n")
    for title, items in (("Not compared", data.not_compared), ("Left out of means", data.invalid),
                         ("Missing analyses", data.missing)):
        text += f"\n## {title}\n\n" + ("".join(f"- {m}\n" for m in items) if items else "None.\n")
    return text


def _settings_json(data: SweepData) -> dict[str, Any]:
    return {c.measure: {"settings": c.settings, "key": c.key, "runs": c.runs, "not_compared": c.reason or None}
            for c in data.choices}


def build_report(sweep_dir: str | Path, out: str | Path, *, force: bool = False, n_boot: int = 2000,
                 samples: int | None = None, settings: Sequence[str] = (),
                 log: Callable[[str], None] = print) -> ReportResult:
    """Collect stored results of ``sweep_dir`` and write the full report into ``out``.

    ``samples`` / ``settings`` (``MEASURE.KEY=VALUE``): use only results of that sample count /
    setting (module docstring)."""
    if n_boot < 2000:
        raise LandscapeError(f"--n-boot must be >= 2000, got {n_boot}")
    out = Path(out)
    filters = parse_filters(samples, settings)
    data = collect_sweep(Path(sweep_dir), filters)
    for line in data.skipped:
        log(f"not used: {line}")
    if not any(r.status == "finished" for r in data.runs):
        raise LandscapeError(f"{sweep_dir}: no finished run to report on")
    _prepare(out, force, Path(sweep_dir))
    write_json(out / INCOMPLETE, {"kind": KIND, "sweep": str(Path(sweep_dir).resolve())})
    st = compute_stats(data, n_boot=n_boot)
    write_tables(data, st, out)
    write_json(out / "stats.json", {
        "correlations": [{"measure": m.measure, "target": m.target, **m.correlation.as_dict(),
                          "tau_p_holm": m.tau_p_holm,
                          "granulated_psi": m.granulated.psi if m.granulated else None} for m in st.correlations],
        "seed_spread": {k: {"verdict": v.verdict, "anova_p": v.anova_p, "ratio": v.ratio}
                        for k, v in st.seed_spread.items()},
        "sufficiency": asdict(st.sufficiency), "settings": _settings_json(data)})
    figs = make_figures(data, st, out / "figures", log)
    summary = summarize(data, st)
    answer = answer_sentences(st)
    head_png = next((p for p in figs.get("headline", []) if p.suffix == ".png"), None)
    write_text(out / "summary.md", summary_markdown(data, summary, answer, head_png))
    index = write_html(out, data, st, figs, summary, answer)
    write_json(out / "report.json", {"kind": KIND, "sweep": str(Path(sweep_dir).resolve()), "missing": data.missing,
                                     "not_compared": data.not_compared, "left_out": data.invalid,
                                     "settings": _settings_json(data), "answer": answer,
                                     "figures": {k: [str(p) for p in v] for k, v in figs.items()},
                                     "provenance": provenance()})
    (out / INCOMPLETE).unlink(missing_ok=True)
    return ReportResult(out, index, figs, data.missing, summary, data.not_compared, data.invalid, answer)
