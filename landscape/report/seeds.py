"""Seeds: per-configuration mean +- std over seeds, the seed-spread test, and whether there is enough data.

- ``aggregate_seeds``: group runs by configuration and give, per value column, the mean,
  the sample std over seeds (:func:`landscape.uncertainty.mean_std`: ddof = 1, NaN for
  one seed) and n of the finite values.
- ``seed_spread_test``: do differences between configurations exceed the seed-to-seed
  spread (one-way ANOVA, Kruskal-Wallis, ratio of spreads)?
- ``sufficiency_statement``: a plain sentence when there are too few
  configurations (< ``MIN_CONFIGS``) or seeds (< ``MIN_SEEDS``) to conclude anything.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as _st

from landscape.errors import LandscapeError
from landscape.report.stats import float_or_nan, row_value
from landscape.uncertainty import as_vector, mean_std

#: Fewest configurations for a rank correlation to mean anything: with n = 4 the
#: exact two-sided Kendall p-value of a perfect ordering is 2/4! = 0.083 > 0.05, so no
#: result could be significant; with n = 5 it is 2/5! = 0.017.
MIN_CONFIGS = 5
#: Fewest seeds per configuration for a seed-to-seed spread (std with ddof=1) to exist.
MIN_SEEDS = 2
#: Fewest configurations for ``seed_spread_test`` (a between-configuration spread
#: from two means is a single difference; three is the least that shows a spread).
MIN_SPREAD_CONFIGS = 3

# ------------------------------------------------------------------------------ seeds


@dataclass(frozen=True)
class SeedAggregate:
    """One configuration: ``config`` (key -> value) and, per value column, the mean,
    std (ddof=1; NaN when n = 1) and n of the finite values, plus the values themselves."""

    config: dict[str, Any]
    mean: dict[str, float]
    std: dict[str, float]
    n: dict[str, int]
    values: dict[str, list[float]] = field(repr=False)

    def as_row(self) -> dict[str, Any]:
        """Flat dict: config keys, then ``<col>_mean``, ``<col>_std``, ``<col>_n``."""
        row: dict[str, Any] = dict(self.config)
        for col in self.mean:
            row[f"{col}_mean"] = self.mean[col]
            row[f"{col}_std"] = self.std[col]
            row[f"{col}_n"] = self.n[col]
        return row


def aggregate_seeds(rows: Iterable[Mapping[str, Any]], keys: Sequence[str],
                    value_cols: Sequence[str]) -> list[SeedAggregate]:
    """Group ``rows`` (one per run) by ``keys`` and summarise each value column.

    Missing, None or non-finite values are left out of that column's n. Configurations
    are sorted by their key tuple when comparable, else kept in first-seen order.
    """
    keys, value_cols = list(keys), list(value_cols)
    groups: dict[tuple, dict[str, list[float]]] = {}
    for i, row in enumerate(rows):
        key = tuple(row_value(row, k, i) for k in keys)
        bucket = groups.setdefault(key, {c: [] for c in value_cols})
        for c in value_cols:
            v = float_or_nan(row.get(c) if isinstance(row, Mapping) else None)
            if math.isfinite(v):
                bucket[c].append(v)
    order = list(groups)
    try:
        order = sorted(order)
    except TypeError:
        pass
    out = []
    for key in order:
        vals = groups[key]
        stats = {c: mean_std(vals[c]) for c in value_cols}
        out.append(SeedAggregate(dict(zip(keys, key)), {c: s[0] for c, s in stats.items()},
                                 {c: s[1] for c, s in stats.items()},
                                 {c: len(vals[c]) for c in value_cols}, vals))
    return out


@dataclass(frozen=True)
class SeedSpreadResult:
    """Do differences between configurations exceed the seed-to-seed spread?

    ``anova_F/anova_p``: one-way ANOVA across configurations; ``kruskal_H/kruskal_p``:
    Kruskal-Wallis; ``between_std``: std (ddof=1) of the configuration means;
    ``within_std``: mean of the per-configuration seed stds (ddof=1); ``ratio`` =
    between / within (about 1/sqrt(seeds) under pure noise). ``exceeds``: ANOVA p <
    ``alpha`` (None when too few seeds or configurations). ``verdict``: one sentence.
    """

    name: str
    n_configs: int
    n_seeds: dict[str, int]
    anova_F: float
    anova_p: float
    kruskal_H: float
    kruskal_p: float
    between_std: float
    within_std: float
    ratio: float
    alpha: float
    exceeds: bool | None
    verdict: str
    n_dropped: int = 0


def seed_spread_test(groups: Mapping[Hashable, Sequence[float]], *, name: str = "the metric",
                     alpha: float = 0.05) -> SeedSpreadResult:
    """Test whether per-configuration values (one per seed) differ beyond seed noise.

    ``groups``: configuration -> values over seeds. Non-finite values are dropped and
    counted; ``n_seeds`` is keyed by ``str(config)``. Needs >= ``MIN_SPREAD_CONFIGS`` configurations each with >= ``MIN_SEEDS``
    values, otherwise the verdict says so and the statistics are NaN. The decision is
    the one-way ANOVA at level ``alpha``; Kruskal-Wallis and the spread ratio are
    reported beside it.
    """
    clean: dict[str, np.ndarray] = {}
    dropped = 0
    for cfg, vals in groups.items():
        arr = as_vector(list(vals), f"{name}, configuration {cfg!r}")
        dropped += int((~np.isfinite(arr)).sum())
        clean[str(cfg)] = arr[np.isfinite(arr)]
    n_seeds = {k: int(v.size) for k, v in clean.items()}
    nan = float("nan")
    few = [k for k, n in n_seeds.items() if n < MIN_SEEDS]
    if len(clean) < MIN_SPREAD_CONFIGS or few:
        reasons = []
        if len(clean) < MIN_SPREAD_CONFIGS:
            reasons.append(f"{len(clean)} configuration(s), need >= {MIN_SPREAD_CONFIGS}")
        if few:
            reasons.append(f"fewer than {MIN_SEEDS} seeds for {', '.join(few)}")
        verdict = (f"Too few seeds/configurations to conclude whether differences in {name} "
                   f"exceed the seed-to-seed spread ({'; '.join(reasons)}).")
        return SeedSpreadResult(name, len(clean), n_seeds, nan, nan, nan, nan, nan, nan, nan,
                                alpha, None, verdict, dropped)
    arrays = list(clean.values())
    means = np.array([a.mean() for a in arrays])
    between = float(means.std(ddof=1))
    within = float(np.mean([a.std(ddof=1) for a in arrays]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = _st.f_oneway(*arrays)
        try:
            kw = _st.kruskal(*arrays)
            kh, kp = float(kw.statistic), float(kw.pvalue)
        except ValueError:  # all values identical
            kh, kp = nan, nan
    F, p = float(an.statistic), float(an.pvalue)
    if all(np.ptp(a) == 0 for a in arrays):  # no seed noise at all: any difference is real
        within = 0.0
        if np.ptp(np.concatenate(arrays)) == 0:
            between, F, p = 0.0, nan, 1.0
        else:
            F, p = math.inf, 0.0
    ratio = between / within if within > 0 else (math.inf if between > 0 else nan)
    exceeds = bool(p < alpha)
    detail = (f"one-way ANOVA F = {F:.3g}, p = {p:.3g}; Kruskal-Wallis p = {kp:.3g}; "
              f"std of configuration means / mean seed std = {ratio:.3g}; "
              f"{len(arrays)} configurations, {min(n_seeds.values())}-{max(n_seeds.values())} seeds")
    if exceeds:
        verdict = f"Differences between configurations in {name} exceed the seed-to-seed spread ({detail})."
    else:
        verdict = (f"Differences between configurations in {name} do not exceed the seed-to-seed "
                   f"spread at alpha = {alpha:g} ({detail}).")
    return SeedSpreadResult(name, len(arrays), n_seeds, F, p, kh, kp, between, within, ratio,
                            alpha, exceeds, verdict, dropped)


# ------------------------------------------------------------------------ sufficiency


@dataclass(frozen=True)
class Sufficiency:
    """``ok`` when ``n_configs >= MIN_CONFIGS`` and ``n_seeds >= MIN_SEEDS``;
    ``statement`` is a plain sentence either way."""

    ok: bool
    n_configs: int
    n_seeds: int
    statement: str


def sufficiency_statement(n_configs: int, n_seeds: int) -> Sufficiency:
    """Say whether ``n_configs`` configurations with ``n_seeds`` seeds each (the minimum
    over configurations) can support a conclusion.

    Thresholds: ``MIN_CONFIGS = 5`` (below it no Kendall tau can reach p < 0.05: the
    exact two-sided p of a perfect ordering of n items is 2/n!, 0.083 for n = 4) and
    ``MIN_SEEDS = 2`` (one seed gives no seed-to-seed spread).
    """
    if n_configs < 0 or n_seeds < 0:
        raise LandscapeError(f"n_configs={n_configs}, n_seeds={n_seeds}: counts must be >= 0")
    problems = []
    if n_configs < MIN_CONFIGS:
        problems.append(f"only {n_configs} configuration(s) (a rank correlation needs at least "
                        f"{MIN_CONFIGS} to reach p < 0.05 even for a perfect ordering)")
    if n_seeds < MIN_SEEDS:
        problems.append(f"only {n_seeds} seed(s) per configuration (at least {MIN_SEEDS} are "
                        f"needed to measure the seed-to-seed spread)")
    if problems:
        statement = ("Too little data to conclude anything: " + "; ".join(problems)
                     + ". The numbers below are descriptive only.")
        return Sufficiency(False, n_configs, n_seeds, statement)
    statement = (f"{n_configs} configurations with at least {n_seeds} seeds each: enough for "
                 f"rank correlations and seed-spread tests, read with their confidence intervals.")
    return Sufficiency(True, n_configs, n_seeds, statement)
