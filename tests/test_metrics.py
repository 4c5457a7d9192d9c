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
