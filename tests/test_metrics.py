import numpy as np
import pytest
from scipy import stats

from landscape import metrics
from landscape.errors import LandscapeError


def test_correlations_equal_scipy():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 100, 200)
    p = y + rng.normal(0, 20, 200)
    p[:10] = p[10]  # ties
    assert metrics.srcc(p, y) == pytest.approx(stats.spearmanr(p, y).statistic, abs=1e-12)
    assert metrics.plcc(p, y) == pytest.approx(stats.pearsonr(p, y).statistic, abs=1e-12)
    assert metrics.krcc(p, y) == pytest.approx(stats.kendalltau(p, y).statistic, abs=1e-12)
    s = metrics.iqa_scores(p, y)
    assert s.n == 200 and s.srcc == metrics.srcc(p, y)


def test_logistic4_recovers_monotone_nonlinearity():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 300)
    y = metrics.logistic4(x, 90.0, 10.0, 0.5, 0.7) + rng.normal(0, 1.0, 300)
    fit = metrics.plcc_logistic4(x, y)
    assert fit.fitted
    assert fit.plcc > metrics.plcc(x, y) + 0.01
    mapped = metrics.logistic4(x, *fit.params)
    assert fit.plcc == pytest.approx(stats.pearsonr(mapped, y).statistic, abs=1e-12)


def test_logistic4_falls_back_with_warning():
    x = np.array([1.0, 1.0, 1.0, 2.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.warns(RuntimeWarning):
        fit = metrics.plcc_logistic4(x, y, maxfev=5)
    assert not fit.fitted and fit.plcc == pytest.approx(metrics.plcc(x, y))


def test_bad_input():
    with pytest.raises(LandscapeError):
        metrics.srcc([1, 2, 3], [1, 2])
    with pytest.raises(LandscapeError):
        metrics.srcc([1], [1])
    assert np.isnan(metrics.plcc([1, 1, 1], [1, 2, 3]))


def test_numpy_correlations_equal_scipy_on_small_tied_constant_and_nan_inputs():
    """The numpy SRCC/PLCC (no scipy call per surface cell) give scipy's values, NaN included."""
    import warnings
    rng = np.random.default_rng(7)
    cases = []
    for n in (2, 3, 5, 16, 50):
        for _ in range(20):
            y = rng.normal(size=n)
            p = rng.normal(size=n) + y
            cases.append((p, y))
            cases.append((np.round(p, 0), np.round(y, 1)))        # ties on both sides
    cases += [(np.ones(5), np.arange(5.0)), (np.arange(5.0), np.full(5, 2.0)),
              (np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0])),
              (np.array([1.0, np.inf, 3.0]), np.array([1.0, 2.0, 3.0])),
              (np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])),
              (np.array([1e200, -3e200, 2e200, 5e199]), np.array([1.0, 2.0, 4.0, 3.0]))]   # squares overflow
    for p, y in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_s, ref_p = stats.spearmanr(p, y).statistic, stats.pearsonr(p, y).statistic
        for ours, ref in ((metrics.srcc(p, y), ref_s), (metrics.plcc(p, y), ref_p)):
            if np.isfinite(ref):
                assert ours == pytest.approx(ref, abs=1e-12), (p, y)
            else:
                assert np.isnan(ours), (p, y)
    assert metrics.srcc([3.0, 2.0, 1.0], [1.0, 2.0, 3.0]) == -1.0


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(2)
    for x in (rng.normal(size=30), np.round(rng.normal(size=40)), np.array([np.inf, 1.0, np.inf, -np.inf]),
              np.array([2.0]), np.zeros(4)):
        assert np.array_equal(metrics.average_ranks(x), stats.rankdata(x))
