import math

import numpy as np
import pytest
from scipy import stats as st

from landscape.errors import LandscapeError
from landscape.report.seeds import MIN_CONFIGS, aggregate_seeds, seed_spread_test, sufficiency_statement
from landscape.report.stats import granulated_kendall, holm, kendall_tau_b_rows, rank_correlation, spearman_rows


def _tied_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, n).astype(float)  # many ties
    y = 0.5 * x + rng.integers(0, 4, n)
    return x, y


# ------------------------------------------------------------------ rank correlation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlation_equals_scipy_with_ties(seed):
    x, y = _tied_data(17, seed)
    r = rank_correlation(x, y, n_boot=200, seed=seed)
    kt, sr = st.kendalltau(x, y), st.spearmanr(x, y)
    assert r.n == 17
    assert r.tau == pytest.approx(kt.statistic, abs=1e-12)
    assert r.tau_p == pytest.approx(kt.pvalue, abs=1e-12)
    assert r.rho == pytest.approx(sr.statistic, abs=1e-12)
    assert r.rho_p == pytest.approx(sr.pvalue, abs=1e-12)


def test_vectorised_row_statistics_equal_scipy_on_resamples():
    x, y = _tied_data(12, 5)
    idx = np.random.default_rng(0).integers(0, 12, size=(40, 12))
    xb, yb = x[idx], y[idx]
    taus, rhos = kendall_tau_b_rows(xb, yb), spearman_rows(xb, yb)
    for k in range(40):
        if np.ptp(xb[k]) == 0 or np.ptp(yb[k]) == 0:
            assert math.isnan(taus[k]) and math.isnan(rhos[k])
            continue
        assert taus[k] == pytest.approx(st.kendalltau(xb[k], yb[k]).statistic, abs=1e-12)
        assert rhos[k] == pytest.approx(st.spearmanr(xb[k], yb[k]).statistic, abs=1e-12)
    # chunking does not change the result
    np.testing.assert_allclose(kendall_tau_b_rows(xb, yb, chunk_elems=300), taus, equal_nan=True)


def test_bootstrap_ci_contains_estimate_is_deterministic_and_narrows():
    rng = np.random.default_rng(3)
    xs = rng.normal(size=200)
    ys = xs + rng.normal(size=200)
    small = rank_correlation(xs[:12], ys[:12], n_boot=2000, seed=7)
    again = rank_correlation(xs[:12], ys[:12], n_boot=2000, seed=7)
    other = rank_correlation(xs[:12], ys[:12], n_boot=2000, seed=8)
    large = rank_correlation(xs, ys, n_boot=2000, seed=7)
    for r in (small, large):
        assert r.tau_ci[0] <= r.tau <= r.tau_ci[1]
        assert r.rho_ci[0] <= r.rho <= r.rho_ci[1]
        assert r.n_boot_used + r.n_boot_skipped == 2000
    assert small.tau_ci == again.tau_ci and small.rho_ci == again.rho_ci
    assert small.tau_ci != other.tau_ci
    assert (large.tau_ci[1] - large.tau_ci[0]) < 0.6 * (small.tau_ci[1] - small.tau_ci[0])
    assert (large.rho_ci[1] - large.rho_ci[0]) < 0.6 * (small.rho_ci[1] - small.rho_ci[0])


def test_bootstrap_counts_all_tied_resamples():
    # 3 configurations, two share the measure value: P(resample constant in x) > 0
    r = rank_correlation([1.0, 1.0, 2.0], [0.1, 0.2, 0.3], n_boot=3000, seed=0)
    # measure constant iff all 3 draws lie in {0,1} (8/27) or all are 2 (1/27); the gap is
    # constant only when all draws are equal, a subset of those: 9/27 = 1/3 skipped.
    idx = np.random.default_rng(0).integers(0, 3, size=(3000, 3))
    m = np.array([1.0, 1.0, 2.0])[idx]
    g = np.array([0.1, 0.2, 0.3])[idx]
    expected = int(((np.ptp(m, axis=1) == 0) | (np.ptp(g, axis=1) == 0)).sum())
    assert r.n_boot_skipped == expected
    assert 0.3 * 3000 < expected < 0.37 * 3000
    assert r.n_boot_used == 3000 - expected


def test_rank_correlation_drops_nonfinite_and_handles_degenerate():
    r = rank_correlation([1, 2, np.nan, 4, 5], [1, 3, 2, np.inf, 6], n_boot=50)
    assert r.n == 3 and r.n_dropped == 2
    assert r.tau == pytest.approx(1.0)
    const = rank_correlation([1, 1, 1, 1], [1, 2, 3, 4], n_boot=50)
    assert math.isnan(const.tau) and math.isnan(const.tau_ci[0])
    assert math.isnan(rank_correlation([1, 2], [2, 1]).tau)
    with pytest.raises(LandscapeError, match="differ in length"):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(LandscapeError, match="ci="):
        rank_correlation([1, 2, 3], [1, 2, 3], ci=1.5)


# ---------------------------------------------------------------- granulated Kendall

# 2 axes x 3 settings. Rows: (bs, lr, measure, gap).
TABLE = [
    (16, "lin", 1, 0.10), (64, "lin", 2, 0.20), (256, "lin", 3, 0.15),
    (16, "sqrt", 2, 0.30), (64, "sqrt", 1, 0.10), (256, "sqrt", 4, 0.40),
    (16, "const", 5, 0.50), (64, "const", 3, 0.60), (256, "const", 1, 0.70),
]


def test_granulated_kendall_hand_computed():
    rows = [{"bs": b, "lr": lr, "m": m, "gap": g} for b, lr, m, g in TABLE]
    res = granulated_kendall(rows, "m", "gap", ["bs", "lr"])
    # axis bs, groups by lr (pairs 16-64, 16-256, 64-256):
    #   lin:   m 1,2,3 / gap .10,.20,.15 -> (+1, +1, -1) -> 1/3
    #   sqrt:  m 2,1,4 / gap .30,.10,.40 -> (+1, +1, +1) -> 1
    #   const: m 5,3,1 / gap .50,.60,.70 -> (-1, -1, -1) -> -1
    #   psi_bs = (1/3 + 1 - 1) / 3 = 1/9
    # axis lr, groups by bs (pairs lin-sqrt, lin-const, sqrt-const):
    #   16:  m 1,2,5 / gap .10,.30,.50 -> (+1, +1, +1) -> 1
    #   64:  m 2,1,3 / gap .20,.10,.60 -> (+1, +1, +1) -> 1
    #   256: m 3,4,1 / gap .15,.40,.70 -> (+1, -1, -1) -> -1/3
    #   psi_lr = (1 + 1 - 1/3) / 3 = 5/9
    # Psi = (1/9 + 5/9) / 2 = 1/3
    assert res.axes["bs"].tau == pytest.approx(1 / 9)
    assert res.axes["lr"].tau == pytest.approx(5 / 9)
    assert res.psi == pytest.approx(1 / 3)
    by_lr = {g.setting["lr"]: g.tau for g in res.axes["bs"].groups}
    assert by_lr == pytest.approx({"lin": 1 / 3, "sqrt": 1.0, "const": -1.0})
    by_bs = {g.setting["bs"]: g.tau for g in res.axes["lr"].groups}
    assert by_bs == pytest.approx({16: 1.0, 64: 1.0, 256: -1 / 3})
    assert res.axes["bs"].n_groups == 3 and all(g.n == 3 for g in res.axes["bs"].groups)
    # same answer from a dict of columns and from tau-b (no ties inside any group)
    cols = {"bs": [r[0] for r in TABLE], "lr": [r[1] for r in TABLE],
            "m": [r[2] for r in TABLE], "gap": [r[3] for r in TABLE]}
    assert granulated_kendall(cols, "m", "gap", ["bs", "lr"], variant="b").psi == pytest.approx(1 / 3)


def test_granulated_kendall_incomplete_grid_ties_and_variants():
    rows = [
        {"bs": 16, "lr": "lin", "m": 1.0, "gap": 0.1},
        {"bs": 64, "lr": "lin", "m": 1.0, "gap": 0.2},   # tie in m with bs=16
        {"bs": 256, "lr": "lin", "m": 2.0, "gap": 0.3},
        {"bs": 16, "lr": "sqrt", "m": 3.0, "gap": 0.0},  # only lr-partner of bs=16
        {"bs": 32, "lr": "sqrt", "m": float("nan"), "gap": 0.5},  # dropped
    ]
    a = granulated_kendall(rows, "m", "gap", ["bs", "lr"])
    # bs axis: group lr=lin: pairs (0, +1, +1) -> tau_a = 2/3; group lr=sqrt has 1 row.
    assert a.axes["bs"].tau == pytest.approx(2 / 3) and a.axes["bs"].n_groups == 1
    # lr axis: group bs=16: lin (1, .1) vs sqrt (3, 0.0) -> discordant -> -1; others singletons.
    assert a.axes["lr"].tau == pytest.approx(-1.0) and a.axes["lr"].n_groups == 1
    assert a.psi == pytest.approx((2 / 3 - 1) / 2)
    assert a.n_dropped == 1 and a.n_rows == 5
    b = granulated_kendall(rows, "m", "gap", ["bs", "lr"], variant="b")
    # tau-b of m (1,1,2) vs gap (.1,.2,.3): P=2, Q=0, ties only in m=1 -> 2/sqrt(3*2)
    assert b.axes["bs"].tau == pytest.approx(2 / math.sqrt(6))
    assert b.axes["bs"].tau == pytest.approx(st.kendalltau([1, 1, 2], [.1, .2, .3]).statistic)


def test_granulated_kendall_rejects_duplicates_and_missing_columns():
    rows = [{"bs": 16, "m": 1, "gap": 0.1}, {"bs": 16, "m": 2, "gap": 0.2}]
    with pytest.raises(LandscapeError, match="share the configuration"):
        granulated_kendall(rows, "m", "gap", ["bs"])
    with pytest.raises(LandscapeError, match="missing column 'lr'"):
        granulated_kendall(rows, "m", "gap", ["bs", "lr"])
    single = granulated_kendall([{"bs": 16, "m": 1, "gap": 0.1}], "m", "gap", ["bs"])
    assert math.isnan(single.psi) and single.axes["bs"].n_groups == 0


# ---------------------------------------------------------------------------- Holm


def test_holm_hand_values():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, NaN kept out of m: m = 2 -> .3*2=.6, .7*1=.7
    out = holm([0.7, float("nan"), 0.3])
    assert out[0] == pytest.approx(0.7) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.4, 0.5, 0.6]) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(LandscapeError):
        holm([0.1, 1.2])


def test_holm_monotone_and_at_least_raw():
    p = np.random.default_rng(0).uniform(size=30) ** 3
    adj = np.array(holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


# ---------------------------------------------------------------------------- seeds


def test_aggregate_seeds():
    rows = [
        {"bs": 64, "lr": "lin", "seed": 0, "gap": 0.10, "srcc": 0.8},
        {"bs": 16, "lr": "lin", "seed": 0, "gap": 0.05, "srcc": 0.9},
        {"bs": 16, "lr": "lin", "seed": 1, "gap": 0.07, "srcc": None},
        {"bs": 16, "lr": "lin", "seed": 2, "gap": 0.09, "srcc": 0.7},
    ]
    agg = aggregate_seeds(rows, ["bs", "lr"], ["gap", "srcc"])
    assert [a.config for a in agg] == [{"bs": 16, "lr": "lin"}, {"bs": 64, "lr": "lin"}]
    a16, a64 = agg
    assert a16.mean["gap"] == pytest.approx(0.07)
    assert a16.std["gap"] == pytest.approx(0.02)  # values .05,.07,.09: ddof=1 std = .02
    assert a16.n == {"gap": 3, "srcc": 2}
    assert a16.std["srcc"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert a64.n["gap"] == 1 and math.isnan(a64.std["gap"]) and a64.mean["gap"] == 0.10
    row = a16.as_row()
    assert row["bs"] == 16 and row["gap_mean"] == pytest.approx(0.07) and row["srcc_n"] == 2


def test_seed_spread_detects_large_differences():
    rng = np.random.default_rng(0)
    groups = {bs: list(mu + 0.05 * rng.normal(size=3)) for bs, mu in [(16, 0.0), (64, 1.0), (256, 2.0)]}
    r = seed_spread_test(groups, name="test SRCC")
    assert r.exceeds is True
    assert r.verdict.startswith("Differences between configurations in test SRCC exceed")
    arrays = [np.asarray(v) for v in groups.values()]
    assert r.anova_F == pytest.approx(st.f_oneway(*arrays).statistic)
    assert r.kruskal_p == pytest.approx(st.kruskal(*arrays).pvalue)
    means = [a.mean() for a in arrays]
    within = np.mean([a.std(ddof=1) for a in arrays])
    assert r.ratio == pytest.approx(np.std(means, ddof=1) / within)
    assert r.ratio > 5


def test_seed_spread_on_pure_noise():
    rng = np.random.default_rng(1)
    groups = {bs: list(rng.normal(size=4)) for bs in (16, 32, 64, 128)}
    r = seed_spread_test(groups, name="gap")
    assert r.anova_p > 0.05
    assert r.exceeds is False and "do not exceed" in r.verdict
    assert r.ratio < 2


def test_seed_spread_too_few():
    r = seed_spread_test({16: [0.1, 0.2], 64: [0.3]}, name="gap")
    assert r.exceeds is None and r.verdict.startswith("Too few seeds/configurations")
    assert "64" in r.verdict and math.isnan(r.anova_p)
    r = seed_spread_test({16: [0.1, 0.2], 64: [0.3, 0.5]})
    assert r.exceeds is None and "2 configuration(s)" in r.verdict
    # NaN seeds are dropped and can make a group too small
    r = seed_spread_test({1: [0.1, float("nan")], 2: [0.2, 0.3], 3: [0.4, 0.5]})
    assert r.exceeds is None and r.n_dropped == 1


def test_seed_spread_without_seed_noise():
    r = seed_spread_test({1: [0.1, 0.1], 2: [0.2, 0.2], 3: [0.3, 0.3]})
    assert r.exceeds is True and math.isinf(r.ratio)
    r = seed_spread_test({1: [0.1, 0.1], 2: [0.1, 0.1], 3: [0.1, 0.1]})
    assert r.exceeds is False


def test_sufficiency_thresholds_match_kendall_exact_p():
    # the threshold's justification: a perfect ordering of 4 items cannot reach p < .05
    assert st.kendalltau(range(4), range(4), method="exact").pvalue > 0.05
    assert st.kendalltau(range(MIN_CONFIGS), range(MIN_CONFIGS), method="exact").pvalue < 0.05
    assert sufficiency_statement(8, 2).ok
    s = sufficiency_statement(4, 2)
    assert not s.ok and "only 4 configuration(s)" in s.statement
    s = sufficiency_statement(8, 1)
    assert not s.ok and "only 1 seed(s)" in s.statement
    assert "configuration(s)" not in s.statement
    with pytest.raises(LandscapeError):
        sufficiency_statement(-1, 2)
