"""The answer first: at most 8 sentences generated from the numbers, and the headline figure's data.

The question: "if I raise the batch size, do I land in a sharper minimum and lose SRCC on unseen
images?" :func:`answer_sentences` answers it from :class:`~landscape.report.analysis.ReportStats`
alone (a pure function: the same statistics give the same sentences):

(a) per measure, whether it rises with batch size: Kendall tau-b between the batch size and the
    configuration means (seeds averaged first) with its 95% percentile-bootstrap CI. "rises" /
    "falls" when the CI excludes 0, "shows no clear trend" when it contains 0, and "tends to rise /
    fall" with ``CI n/a (n < 5)`` when fewer than :data:`~landscape.report.stats.MIN_CI_N`
    configurations allow no interval; the seed-averaged values at the smallest and largest batch
    size are quoted;
(b) test SRCC and the SRCC gap (train - test) at the smallest and the largest batch size as
    ``mean ± std`` over seeds (sample std, ddof = 1; the seed values of every configuration with
    that batch size pooled), and whether the difference exceeds the seed-to-seed spread: it does
    when ``|mean_L - mean_S| > std_S + std_L``, i.e. the two ``mean ± std`` intervals do not overlap;
(c) whether sharpness predicts the gap: the measure with the smallest Holm-adjusted p of its Kendall
    tau-b against the gap (ties: the larger ``|tau|``), with its CI; "predicts" only when the Holm p
    is below 0.05 and the CI excludes 0;
(d) what the sweep cannot tell: too few configurations for intervals or significance, too few
    seeds for a spread, overlapping intervals, and the batch-size range covered.

:func:`headline_data` gives the headline figure's numbers: per batch size the per-seed test SRCC
and gap, and each measure's seed-averaged value divided by its value at the smallest batch size
(measures whose smallest-batch value is not a positive finite number cannot be normalised and are
listed instead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from landscape.report.analysis import ReportStats
from landscape.report.stats import MIN_CI_N, CorrelationResult, ci_text
from landscape.report.tables import axis_label, label
from landscape.uncertainty import finite_values, mean_std

MAX_SENTENCES = 8
ALPHA = 0.05


def _batches(st: ReportStats) -> list[int]:
    return sorted({int(a.config["batch_size"]) for a in st.configs})


def seed_values(st: ReportStats, col: str, batch: int) -> list[float]:
    """Every seed's value of ``col`` over the configurations with batch size ``batch``."""
    out: list[float] = []
    for a in st.configs:
        if int(a.config["batch_size"]) == batch:
            out.extend(a.values.get(col, []))
    return out


def batch_mean(st: ReportStats, col: str, batch: int) -> float:
    """Mean of the configuration means of ``col`` at batch size ``batch`` (NaN when none is finite)."""
    vals = finite_values([a.mean.get(col, math.nan) for a in st.configs if int(a.config["batch_size"]) == batch])
    return float(vals.mean()) if vals.size else math.nan


def _num(x: float) -> str:
    return f"{x:.3g}"


def _excludes_zero(c: CorrelationResult) -> bool | None:
    """True/False when the CI is defined, None when it is not (n < 5 or undefined)."""
    lo, hi = c.tau_ci
    if c.n < MIN_CI_N or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return lo > 0 or hi < 0


def _trend_phrase(st: ReportStats, col: str, lo_b: int, hi_b: int) -> str:
    """E.g. ``λ_max tends to fall (1.4 → 0.68; τ_b = -1.00)``; the CI is quoted where one is estimated."""
    c = st.batch_trends.get(col)
    name = axis_label(col)
    if c is None or not math.isfinite(c.tau):
        return f"{name} has no defined trend (constant, or fewer than 3 configurations with a value)"
    ends = f"{_num(batch_mean(st, col, lo_b))} → {_num(batch_mean(st, col, hi_b))}"
    sure = _excludes_zero(c)
    ci = "" if sure is None else f", 95% CI {ci_text(c.tau_ci, c.n, sep=' to ')}"
    stat = f"{ends}; τ_b = {c.tau:+.2f}{ci}"
    if c.tau == 0 or sure is False:
        return f"{name} shows no clear trend ({stat})"
    direction = "rises" if c.tau > 0 else "falls"
    return f"{name} {direction if sure else 'tends to ' + direction[:-1]} ({stat})"


@dataclass(frozen=True)
class EndComparison:
    """A column at the smallest (``s``) and largest (``l``) batch size: seed mean, std, n."""

    col: str
    mean_s: float
    std_s: float
    n_s: int
    mean_l: float
    std_l: float
    n_l: int

    @property
    def diff(self) -> float:
        return self.mean_l - self.mean_s

    @property
    def exceeds(self) -> bool | None:
        """``|diff| > std_s + std_l`` (the mean ± std intervals do not overlap); None without two seeds."""
        if not (math.isfinite(self.std_s) and math.isfinite(self.std_l) and math.isfinite(self.diff)):
            return None
        return abs(self.diff) > self.std_s + self.std_l


def compare_ends(st: ReportStats, col: str) -> EndComparison | None:
    """``col`` at the smallest vs the largest batch size (None with fewer than two batch sizes)."""
    bs = _batches(st)
    if len(bs) < 2:
        return None
    s, l_ = finite_values(seed_values(st, col, bs[0])), finite_values(seed_values(st, col, bs[-1]))
    (ms, ss), (ml, sl) = mean_std(s), mean_std(l_)
    return EndComparison(col, ms, ss, int(s.size), ml, sl, int(l_.size))


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else "")


def _ends_sentence(st: ReportStats, col: str, what: str) -> str:
    bs = _batches(st)
    e = compare_ends(st, col)
    if e is None or not (math.isfinite(e.mean_s) and math.isfinite(e.mean_l)):
        return f"{what} cannot be compared between batch sizes (no value at the smallest or the largest)."
    seeds = f"{e.n_s}" if e.n_s == e.n_l else f"{e.n_s} and {e.n_l}"
    head = (f"{what} is {_pm(e.mean_s, e.std_s)} at B = {bs[0]} and {_pm(e.mean_l, e.std_l)} at B = {bs[-1]} "
            f"(mean ± std over {seeds} seeds): a difference of {e.diff:+.3f}")
    if e.exceeds is None:
        return head + ", which cannot be set against the seed-to-seed spread (fewer than 2 seeds)."
    if e.exceeds:
        return head + ", larger than the seed-to-seed spread (the mean ± std intervals do not overlap)."
    return head + ", within the seed-to-seed spread (the mean ± std intervals overlap)."


def best_gap_measure(st: ReportStats):
    """The measure-vs-gap statistics with the smallest Holm p (ties: larger |tau|); None if none is defined."""
    cands = [m for m in st.correlations if m.target == "srcc_gap" and math.isfinite(m.correlation.tau)]
    if not cands:
        return None
    return min(cands, key=lambda m: (m.tau_p_holm if math.isfinite(m.tau_p_holm) else 2.0, -abs(m.correlation.tau)))


def _gap_sentence(st: ReportStats) -> str:
    best = best_gap_measure(st)
    if best is None:
        return ("No sharpness measure could be correlated with the SRCC gap (no measure, a constant gap, or fewer "
                "than 3 configurations).")
    c, p = best.correlation, best.tau_p_holm
    detail = (f"the strongest measure, {label(best.measure)}, has Kendall τ_b = {c.tau:+.2f} with the SRCC gap "
              f"(95% CI {ci_text(c.tau_ci, c.n, sep=' to ')}; Holm-adjusted p = {p:.2g}; n = {c.n} configurations)")
    if p < ALPHA and _excludes_zero(c):
        sign = "sharper minima come with a larger gap" if (c.tau > 0) == _sharper_is_larger(best.measure) \
            else "sharper minima come with a smaller gap"
        return f"Sharpness predicts the gap: {detail}; {sign}."
    return f"Sharpness does not predict the gap in this sweep: {detail}."


def _sharper_is_larger(measure: str) -> bool:
    """Larger values mean a sharper minimum for every measure except PAC-Bayes flatness and B_simple."""
    return measure not in ("pacbayes_flatness", "noise_b_simple")


def _limits_sentence(st: ReportStats) -> str:
    bs = _batches(st)
    n = len(st.configs)
    seeds = st.sufficiency.n_seeds
    limits = []
    if n < MIN_CI_N:
        limits.append(f"with only {n} configuration(s) no bootstrap interval is estimated and no Kendall τ can "
                      f"reach p < 0.05 (both need at least {MIN_CI_N})")
    if seeds < 2:
        limits.append("with one seed per configuration there is no seed-to-seed spread")
    overlap = [label(col) for col in ("test_srcc", "srcc_gap")
               if (e := compare_ends(st, col)) is not None and e.exceeds is False]
    unsure = [label(col) for col, c in st.batch_trends.items()
              if math.isfinite(c.tau) and _excludes_zero(c) is False]
    if overlap:
        limits.append(f"the intervals of {' and '.join(overlap)} at the two ends overlap, so a change of that "
                      f"size is not resolved")
    if unsure:
        limits.append(f"the trend intervals of {', '.join(unsure)} include zero")
    span = f"batch sizes {bs[0]} to {bs[-1]}" if len(bs) > 1 else f"batch size {bs[0]}" if bs else "no batch size"
    if not limits:
        return (f"The sweep covers {span} only ({n} configurations, at least {seeds} seeds each); nothing "
                f"is said beyond that range or this dataset.")
    return f"What this sweep cannot tell: {'; '.join(limits)}; and nothing beyond {span}."


def answer_sentences(st: ReportStats) -> list[str]:
    """The "Answer" section: at most :data:`MAX_SENTENCES` sentences (module docstring, (a)-(d))."""
    bs = _batches(st)
    if len(bs) < 2:
        return [f"The sweep has {len(bs)} batch size(s): it cannot say how anything changes with batch size."]
    measures = [m for m in st.measures if m in st.batch_trends]
    out = []
    if measures:
        no_ci = all(_excludes_zero(st.batch_trends[m]) is None for m in measures)
        lead = (f"From B = {bs[0]} to B = {bs[-1]} (Kendall τ_b between batch size and the seed-averaged measure"
                + (f"; no 95% CI with fewer than {MIN_CI_N} configurations" if no_ci else ", 95% bootstrap CI") + "): ")
        out.append(lead + "; ".join(_trend_phrase(st, m, bs[0], bs[-1]) for m in measures) + ".")
    else:
        out.append("No sharpness measure is stored for this sweep, so the report cannot say whether "
                   "larger batches land in sharper minima.")
    out.append(_ends_sentence(st, "test_srcc", "Test SRCC"))
    out.append(_ends_sentence(st, "srcc_gap", "The SRCC gap (train − test)"))
    out.append(_gap_sentence(st))
    out.append(_limits_sentence(st))
    return out[:MAX_SENTENCES]


@dataclass
class HeadlineData:
    """The headline figure's numbers: per batch size per-seed values; normalised measure means."""

    metrics: dict[str, dict[int, list[float]]]
    normalised: dict[str, dict[int, float]]
    not_normalised: list[str] = field(default_factory=list)


def headline_data(st: ReportStats) -> HeadlineData:
    """Test SRCC and the gap per seed at each batch size; each measure's mean over its smallest-batch mean."""
    bs = _batches(st)
    metrics = {label(col): {b: seed_values(st, col, b) for b in bs} for col in ("test_srcc", "srcc_gap")}
    normalised: dict[str, dict[int, float]] = {}
    skipped = []
    for m in st.measures:
        means = {b: batch_mean(st, m, b) for b in bs}
        finite = [b for b in bs if math.isfinite(means[b])]
        ref = means[finite[0]] if finite else math.nan
        if len(finite) < 2 or not ref > 0:
            skipped.append(label(m))
            continue
        normalised[label(m)] = {b: means[b] / ref for b in finite}
    return HeadlineData(metrics, normalised, skipped)
