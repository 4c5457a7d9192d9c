"""Statistics that link a sharpness measure to a generalisation gap across configurations.

All functions take plain numbers (one value per configuration) and return typed
results; nothing here reads files.

- ``rank_correlation``: Kendall tau-b and Spearman rho (scipy), their p-values and
  percentile bootstrap CIs over configurations (indices resampled with
  replacement; resamples in which the measure or the gap is constant leave both
  statistics undefined and are skipped and counted).
- ``granulated_kendall``: Jiang et al. (2020), "Fantastic generalization measures",
  Eq. 4: for axis i, ``psi_i = (1/m_-i) sum_{settings of the other axes} tau(group)``
  where a group is the set of configurations sharing every other axis, and
  ``Psi = mean_i psi_i``.
- ``holm``: Holm-Bonferroni step-down adjusted p-values.

Seeds (per-configuration mean +- std, the seed-spread test, whether there is enough
data at all) are in :mod:`landscape.report.seeds`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from scipy import stats as _st

from landscape.errors import LandscapeError
from landscape.uncertainty import as_vector

#: Fewest configurations for a bootstrap interval; below it ``rank_correlation`` reports none
#: (at n = 4 a percentile bootstrap of tau gives e.g. [+1.00, +1.00], which looks certain).
MIN_CI_N = 5


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
        """E.g. ``"τ_b = 0.43 [0.10, 0.71], n = 8"`` (``"[n/a (n < 5)]"`` for an interval not estimated)."""
        return f"τ_b = {self.tau:.{digits}f} [{ci_text(self.tau_ci, self.n, digits, sign=False)}], n = {self.n}"


def ci_text(interval: tuple[float, float], n: int, digits: int = 2, sep: str = ", ", sign: bool = True) -> str:
    """``"+0.10, +0.71"`` (joined by ``sep``), or ``"n/a (n < 5)"`` when ``n < MIN_CI_N`` or the interval is
    undefined: a bootstrap over fewer than :data:`MIN_CI_N` configurations cannot estimate one."""
    lo, hi = interval
    if n < MIN_CI_N:
        return f"n/a (n < {MIN_CI_N})"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    fmt = f"{'+' if sign else ''}.{digits}f"
    return f"{lo:{fmt}}{sep}{hi:{fmt}}"


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
    resamples where both are defined. With fewer than :data:`MIN_CI_N` configurations
    the resamples are still drawn and counted but the CIs are NaN (shown as
    ``n/a (n < 5)`` by :func:`ci_text`).
    """
    m, g = as_vector(measure, "measure"), as_vector(gap, "gap")
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
        if used and n >= MIN_CI_N:
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


def row_value(row: Mapping[str, Any], key: str, i: int) -> Any:
    """``row[key]``; a one-line error naming row ``i`` and the column when it is missing."""
    try:
        return row[key]
    except (KeyError, TypeError):
        raise LandscapeError(f"table row {i}: missing column {key!r}") from None


def float_or_nan(value: Any) -> float:
    """``float(value)``, NaN for None or anything that is not a number."""
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
        key = tuple(row_value(row, a, i) for a in axes)
        try:
            hash(key)
        except TypeError:
            raise LandscapeError(f"table row {i}: axis values {key} are not hashable") from None
        if key in seen:
            raise LandscapeError(
                f"table rows {seen[key]} and {i} share the configuration "
                f"{dict(zip(axes, key))}: average seeds first or add 'seed' to the axes")
        seen[key] = i
        m, g = float_or_nan(row_value(row, measure_col, i)), float_or_nan(row_value(row, gap_col, i))
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
    p = as_vector(pvalues, "pvalues")
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
