"""landscape.uncertainty: the one mean +- SE against numpy/scipy, and its n < 2 / NaN conventions."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from landscape.uncertainty import finite_values, mean_se, mean_std


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_mean_se_and_mean_std_match_numpy_and_scipy(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, size=n)
    mean, se = mean_se(x)
    assert mean == pytest.approx(np.mean(x), rel=1e-14)
    assert se == pytest.approx(stats.sem(x), rel=1e-12)
    assert se == pytest.approx(np.std(x, ddof=1) / math.sqrt(n), rel=1e-12)
    m2, sd = mean_std(x)
    assert m2 == mean and sd == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    assert isinstance(mean, float) and isinstance(se, float)


def test_fewer_than_two_values_give_nan_spread():
    for f in (mean_se, mean_std):
        m, s = f([2.5])
        assert m == 2.5 and math.isnan(s)           # cannot be estimated: NaN, never inf or 0
        m, s = f([])
        assert math.isnan(m) and math.isnan(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # scipy warns about the small sample
        assert math.isnan(stats.sem([2.5]))        # and agrees: NaN for one value


def test_non_finite_values_are_dropped():
    x = [1.0, np.nan, 2.0, np.inf, 4.0, -np.inf]
    assert finite_values(x).tolist() == [1.0, 2.0, 4.0]
    assert mean_se(x) == pytest.approx((7 / 3, stats.sem([1.0, 2.0, 4.0])))
    m, s = mean_se([np.nan, 1.0])                  # one finite value left
    assert m == 1.0 and math.isnan(s)
    assert finite_values(np.ones((2, 3))).shape == (6,)
