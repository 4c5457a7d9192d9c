"""Statistics that link a sharpness measure to a generalisation gap.

All functions take plain numbers (one value per configuration or per run) and
return typed results; nothing here reads files.

- ``rank_correlation``: Kendall tau-b and Spearman rho (scipy), their p-values and
  percentile bootstrap CIs over configurations (indices resampled with
  replacement; resamples in which the measure or the gap is constant leave both
  statistics undefined and are skipped and counted).
- ``granulated_kendall``: Jiang et al. (2020), "Fantastic generalization measures",
  Eq. 4: for axis i, ``psi_i = (1/m_-i) sum_{settings of the other axes} tau(group)``
  where a group is the set of configurations sharing every other axis, and
  ``Psi = mean_i psi_i``.
- ``holm``: Holm-Bonferroni step-down adjusted p-values.
- ``aggregate_seeds``, ``seed_spread_test``: per-configuration mean +- std over
  seeds, and whether differences between configurations exceed the seed spread.
- ``sufficiency_statement``: a plain sentence when there are too few
  configurations (< ``MIN_CONFIGS``) or seeds (< ``MIN_SEEDS``) to conclude anything.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats as _st

from landscape.errors import LandscapeError

#: Fewest configurations for a rank correlation to mean anything: with n = 4 the
#: exact two-sided Kendall p-value of a perfect ordering is 2/4! = 0.083 > 0.05, so no
#: result could be significant; with n = 5 it is 2/5! = 0.017.
MIN_CONFIGS = 5
#: Fewest seeds per configuration for a seed-to-seed spread (std with ddof=1) to exist.
MIN_SEEDS = 2
#: Fewest configurations for ``seed_spread_test`` (a between-configuration spread
#: from two means is a single difference; three is the least that shows a spread).
MIN_SPREAD_CONFIGS = 3


def _vector(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise LandscapeError(f"{name}: not a sequence of numbers") from None
    if arr.ndim != 1:
        raise LandscapeError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- correlation


@dataclass(frozen=True)
class CorrelationResult:
    """Rank correlation of a measure with a gap across ``n`` configurations.

    ``tau`` is Kendall tau-b, ``rho`` Spearman rho; ``*_p`` are scipy's two-sided
    p-values; ``*_ci`` are percentile bootstrap intervals at level ``ci`` from
    ``n_boot_used`` of ``n_boot`` resamples (``n_boot_skipped`` were all-tied on one
    side). ``n_dropped`` pairs were removed because a value was NaN or infinite.
    Statistics are NaN when ``n < 3`` or a side is constant.
    """

    n: int
    tau: float
    tau_p: float
    tau_ci: tuple[float, float]
    rho: float
    rho_p: float
    rho_ci: tuple[float, float]
    ci: float
    n_boot: int
    n_boot_used: int
    n_boot_skipped: int
    seed: int
    n_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tau_text(self, digits: int = 2) -> str:
        """E.g. ``"τ_b = 0.43 [0.10, 0.71], n = 8"``."""
        lo, hi = self.tau_ci
        return (f"τ_b = {self.tau:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}], n = {self.n}")


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray, chunk_elems: int = 4_000_000) -> np.ndarray:
    """Kendall tau-b of each row pair ``(x[k], y[k])`` (shape ``(B, n)``), vectorised.

    ``tau_b = sum_{i<j} s^x_ij s^y_ij / sqrt(sum_{i<j} (s^x_ij)^2 * sum_{i<j} (s^y_ij)^2)``
    with ``s_ij = sign(v_j - v_i)``: the numerator is P - Q, the sums of squares are
    the pairs untied in x and in y, i.e. scipy's ``(P-Q)/sqrt((P+Q+T)(P+Q+U))``.
    NaN for a row where one side is constant.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    b, n = x.shape
    out = np.empty(b)
    step = max(1, chunk_elems // max(n * n, 1))
    iu = np.triu_indices(n, k=1)
    for start in range(0, b, step):
        xs, ys = x[start:start + step], y[start:start + step]
        sx = np.sign(xs[:, None, :] - xs[:, :, None])[:, iu[0], iu[1]]
        sy = np.sign(ys[:, None, :] - ys[:, :, None])[:, iu[0], iu[1]]
        num = (sx * sy).sum(axis=1)
        den = np.sqrt((sx * sx).sum(axis=1) * (sy * sy).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + step] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (average ranks for ties); NaN where a side is constant."""
    rx = _st.rankdata(np.atleast_2d(x), axis=1)
    ry = _st.rankdata(np.atleast_2d(y), axis=1)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    num = (rx * ry).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _percentile_ci(values: np.ndarray, ci: float) -> tuple[float, float]:
    if values.size == 0:
        return (float("nan"), float("nan"))
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return (float(lo), float(hi))


def rank_correlation(measure: Sequence[float], gap: Sequence[float], *, n_boot: int = 2000,
                     seed: int = 0, ci: float = 0.95) -> CorrelationResult:
    """Kendall tau-b and Spearman rho of ``measure`` vs ``gap`` with bootstrap CIs.

    One value per configuration (average seeds first). Pairs with a non-finite value
    are dropped and counted. Bootstrap: ``n_boot`` resamples of the ``n``
    configuration indices with replacement (``numpy.random.default_rng(seed)``);
    the CI is the ``[(1-ci)/2, (1+ci)/2]`` quantile range of the statistics over the
    resamples where both are defined.
    """
    m, g = _vector(measure, "measure"), _vector(gap, "gap")
    if m.shape != g.shape:
        raise LandscapeError(f"measure ({m.size}) and gap ({g.size}) differ in length")
    if not 0.0 < ci < 1.0:
        raise LandscapeError(f"ci={ci}: must lie strictly between 0 and 1")
    if n_boot < 0:
        raise LandscapeError(f"n_boot={n_boot}: must be >= 0")
    ok = np.isfinite(m) & np.isfinite(g)
    m, g = m[ok], g[ok]
    n, dropped = int(m.size), int((~ok).sum())
    nan2 = (float("nan"), float("nan"))
    if n < 3 or np.ptp(m) == 0 or np.ptp(g) == 0:
        return CorrelationResult(n, float("nan"), float("nan"), nan2, float("nan"), float("nan"),
                                 nan2, ci, n_boot, 0, 0, seed, dropped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = _st.kendalltau(m, g)
        sr = _st.spearmanr(m, g)
    used = skipped = 0
    tau_ci = rho_ci = nan2
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        mb, gb = m[idx], g[idx]
        valid = (np.ptp(mb, axis=1) > 0) & (np.ptp(gb, axis=1) > 0)
        skipped = int((~valid).sum())
        used = int(valid.sum())
        if used:
            tau_ci = _percentile_ci(kendall_tau_b_rows(mb[valid], gb[valid]), ci)
            rho_ci = _percentile_ci(spearman_rows(mb[valid], gb[valid]), ci)
    return CorrelationResult(n, float(kt.statistic), float(kt.pvalue), tau_ci,
                             float(sr.statistic), float(sr.pvalue), rho_ci,
                             ci, n_boot, used, skipped, seed, dropped)


# --------------------------------------------------------------------- granulated Kendall


@dataclass(frozen=True)
class GroupTau:
    """Kendall tau within one group: configurations sharing ``setting`` on the other axes."""

    setting: dict[str, Any]
    n: int
    tau: float


@dataclass(frozen=True)
class AxisTau:
    """``tau`` = mean of the groups' taus (``n_groups`` groups with >= 2 members and a
    defined tau); ``n_undefined`` groups of >= 2 had an undefined tau-b (variant "b" only)."""

    axis: str
    tau: float
    n_groups: int
    n_undefined: int
    groups: tuple[GroupTau, ...]


@dataclass(frozen=True)
class GranulatedResult:
    """Granulated Kendall per axis and ``psi`` = mean of the defined per-axis taus.

    ``variant`` "a": per-group tau = mean over pairs of sign(dm) sign(dg) (Jiang et
    al.'s definition; ties count 0, always defined); "b": scipy tau-b per group.
    """

    psi: float
    axes: dict[str, AxisTau]
    variant: str
    n_rows: int
    n_dropped: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(table: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[Mapping[str, Any]]:
    """Accept a list of row dicts or a dict of equal-length columns."""
    if isinstance(table, Mapping):
        cols = {k: list(v) for k, v in table.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise LandscapeError(f"table columns differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    return list(table)


def _get(row: Mapping[str, Any], key: str, i: int) -> Any:
    try:
        return row[key]
    except (KeyError, TypeError):
        raise LandscapeError(f"table row {i}: missing column {key!r}") from None


def _float_or_nan(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _tau_a(m: np.ndarray, g: np.ndarray) -> float:
    iu = np.triu_indices(m.size, k=1)
    s = np.sign(m[None, :] - m[:, None])[iu] * np.sign(g[None, :] - g[:, None])[iu]
    return float(s.mean())


def granulated_kendall(table: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
                       measure_col: str, gap_col: str, axes: Sequence[str], *,
                       variant: Literal["a", "b"] = "a") -> GranulatedResult:
    """Granulated Kendall coefficient (Jiang et al. 2020, Eq. 4) of a measure vs a gap.

    For axis i, rows are grouped by their values on all the other axes; in each group
    with >= 2 rows (configurations that differ only in axis i) the Kendall tau between
    ``measure_col`` and ``gap_col`` is computed; ``psi_i`` is the unweighted mean of the
    group taus (the average over the other axes' settings), and ``Psi`` the mean of the
    defined ``psi_i``. On a complete grid this is exactly Jiang et al.'s
    ``psi_i = (1/m_-i) sum_{theta_-i} tau(...)``; on an incomplete grid, groups with a
    single row (no pair differing only in axis i) are left out of the mean. Rows must be
    unique configurations over ``axes`` (average seeds first, or list ``seed`` as an
    axis); rows with a non-finite measure or gap are dropped and counted.
    """
    if variant not in ("a", "b"):
        raise LandscapeError(f"variant={variant!r}: must be 'a' or 'b'")
    axes = list(axes)
    if not axes:
        raise LandscapeError("axes: need at least one hyperparameter axis")
    if len(set(axes)) != len(axes):
        raise LandscapeError(f"axes {axes}: listed twice")
    rows = _rows(table)
    keys, ms, gs = [], [], []
    dropped = 0
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        key = tuple(_get(row, a, i) for a in axes)
        try:
            hash(key)
        except TypeError:
            raise LandscapeError(f"table row {i}: axis values {key} are not hashable") from None
        if key in seen:
            raise LandscapeError(
                f"table rows {seen[key]} and {i} share the configuration "
                f"{dict(zip(axes, key))}: average seeds first or add 'seed' to the axes")
        seen[key] = i
        m, g = _float_or_nan(_get(row, measure_col, i)), _float_or_nan(_get(row, gap_col, i))
        if not (math.isfinite(m) and math.isfinite(g)):
            dropped += 1
            continue
        keys.append(key)
        ms.append(m)
        gs.append(g)
    m_arr, g_arr = np.asarray(ms), np.asarray(gs)
    per_axis: dict[str, AxisTau] = {}
    for ai, axis in enumerate(axes):
        groups: dict[tuple, list[int]] = {}
        for r, key in enumerate(keys):
            groups.setdefault(key[:ai] + key[ai + 1:], []).append(r)
        out: list[GroupTau] = []
        undefined = 0
        for other, members in groups.items():
            if len(members) < 2:
                continue
            mm, gg = m_arr[members], g_arr[members]
            if variant == "a":
                tau = _tau_a(mm, gg)
            else:
                tau = float(kendall_tau_b_rows(mm[None], gg[None])[0])
            setting = dict(zip(axes[:ai] + axes[ai + 1:], other))
            if math.isnan(tau):
                undefined += 1
            out.append(GroupTau(setting, len(members), tau))
        taus = [gt.tau for gt in out if not math.isnan(gt.tau)]
        mean = float(np.mean(taus)) if taus else float("nan")
        per_axis[axis] = AxisTau(axis, mean, len(taus), undefined, tuple(out))
    defined = [a.tau for a in per_axis.values() if not math.isnan(a.tau)]
    psi = float(np.mean(defined)) if defined else float("nan")
    return GranulatedResult(psi, per_axis, variant, len(rows), dropped)


# --------------------------------------------------------------------------------- Holm


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ``p_(1) <= ... <= p_(m)``:
    ``adj_(k) = min(1, max_{j <= k} (m - j + 1) p_(j))`` (step-down, monotone).
    NaN p-values (undefined tests) stay NaN and do not count in m.
    """
    p = _vector(pvalues, "pvalues")
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise LandscapeError(f"pvalues {p.tolist()}: must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        scaled = (m - np.arange(m)) * p[order]
        out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.tolist()


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


def _mean_std(vals: Sequence[float]) -> tuple[float, float]:
    if not vals:
        return float("nan"), float("nan")
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def aggregate_seeds(rows: Iterable[Mapping[str, Any]], keys: Sequence[str],
                    value_cols: Sequence[str]) -> list[SeedAggregate]:
    """Group ``rows`` (one per run) by ``keys`` and summarise each value column.

    Missing, None or non-finite values are left out of that column's n. Configurations
    are sorted by their key tuple when comparable, else kept in first-seen order.
    """
    keys, value_cols = list(keys), list(value_cols)
    groups: dict[tuple, dict[str, list[float]]] = {}
    for i, row in enumerate(rows):
        key = tuple(_get(row, k, i) for k in keys)
        bucket = groups.setdefault(key, {c: [] for c in value_cols})
        for c in value_cols:
            v = _float_or_nan(row.get(c) if isinstance(row, Mapping) else None)
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
        stats = {c: _mean_std(vals[c]) for c in value_cols}
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        arr = _vector(list(vals), f"{name}, configuration {cfg!r}")
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
