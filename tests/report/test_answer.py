"""The Answer section: sentences generated from the numbers change when the numbers change (issue 18.3).

Statistics are built from small synthetic sweeps (a stand-in for ``collect_sweep``'s result: one row
per run) by the real :func:`compute_stats`; nothing is trained.
"""
from __future__ import annotations

import csv
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as st

from landscape.formatting import render_table
from landscape.report.analysis import compute_stats
from landscape.report.answer import MAX_SENTENCES, answer_sentences, compare_ends, headline_data
from landscape.report.tables import config_csv_rows, config_latex, stats_csv_rows, trend_csv_rows

BATCHES = (8, 16, 32, 64, 128, 256)


def _data(lam, test, gap, batches=BATCHES, seeds=(0, 1)):
    """``lam``/``test``/``gap``: functions (batch index, seed) -> value."""
    runs = []
    for i, b in enumerate(batches):
        for s in seeds:
            row = {"batch_size": b, "lr_rule": "sqrt", "accumulate": 1, "seed": s, "test_srcc": test(i, s),
                   "train_srcc": test(i, s) + gap(i, s), "srcc_gap": gap(i, s), "hessian_lambda_max": lam(i, s)}
            runs.append(SimpleNamespace(status="finished", row=row))
    return SimpleNamespace(runs=runs, measures=["hessian_lambda_max"], cross_names=[])


def _stats(*args, **kw):
    return compute_stats(_data(*args, **kw), n_boot=2000)


def _noise(s):
    return 0.01 * (1 if s else -1)


RISING = dict(lam=lambda i, s: 1.0 + i + 0.05 * s, test=lambda i, s: 0.85 + _noise(s),
              gap=lambda i, s: 0.05 + _noise(s))


def test_rising_vs_falling_measure():
    up = answer_sentences(_stats(**RISING))
    down = answer_sentences(_stats(**{**RISING, "lam": lambda i, s: 10.0 - i + 0.05 * s}))
    assert len(up) <= MAX_SENTENCES and len(down) <= MAX_SENTENCES
    tau_ci = "95% CI +1.00 to +1.00"      # a perfect ordering of 6 configurations: every resample agrees
    assert up[0] == ("From B = 8 to B = 256 (Kendall τ_b between batch size and the seed-averaged measure, 95% "
                     f"bootstrap CI): λ_max rises (1.02 → 6.03; τ_b = +1.00, {tau_ci}).")
    assert down[0] == ("From B = 8 to B = 256 (Kendall τ_b between batch size and the seed-averaged measure, 95% "
                       "bootstrap CI): λ_max falls (10 → 5.03; τ_b = -1.00, 95% CI -1.00 to -1.00).")
    # no trend: a zigzag whose bootstrap interval contains 0
    flat = answer_sentences(_stats(**{**RISING, "lam": lambda i, s: (1.0, 3.0, 2.0, 2.5, 1.5, 2.2)[i]}))
    assert flat[0].startswith("From B = 8 to B = 256") and "λ_max shows no clear trend (1 → 2.2; τ_b = +0.07" in flat[0]


def test_difference_inside_vs_outside_seed_spread():
    inside = answer_sentences(_stats(**RISING))
    assert inside[1] == ("Test SRCC is 0.850 ± 0.014 at B = 8 and 0.850 ± 0.014 at B = 256 (mean ± std over 2 "
                         "seeds): a difference of +0.000, within the seed-to-seed spread (the mean ± std intervals "
                         "overlap).")
    falling = {**RISING, "test": lambda i, s: 0.85 - 0.05 * i + _noise(s), "gap": lambda i, s: 0.05 + 0.04 * i
               + _noise(s)}
    outside = answer_sentences(_stats(**falling))
    assert outside[1] == ("Test SRCC is 0.850 ± 0.014 at B = 8 and 0.600 ± 0.014 at B = 256 (mean ± std over 2 "
                          "seeds): a difference of -0.250, larger than the seed-to-seed spread (the mean ± std "
                          "intervals do not overlap).")
    assert outside[2].startswith("The SRCC gap (train − test) is 0.050 ± 0.014 at B = 8 and 0.250 ± 0.014 at "
                                 "B = 256") and "larger than the seed-to-seed spread" in outside[2]
    e = compare_ends(_stats(**falling), "test_srcc")
    assert e.diff == pytest.approx(-0.25) and e.std_s == pytest.approx(np.std([0.84, 0.86], ddof=1)) and e.exceeds
    # lambda_max tracks the gap exactly: sharpness predicts it, significant after Holm (one measure)
    p = st.kendalltau(range(6), range(6)).pvalue
    assert outside[3] == ("Sharpness predicts the gap: the strongest measure, λ_max, has Kendall τ_b = +1.00 with "
                          f"the SRCC gap (95% CI +1.00 to +1.00; Holm-adjusted p = {p:.2g}; n = 6 configurations); "
                          "sharper minima come with a larger gap.")
    assert inside[3] == ("No sharpness measure could be correlated with the SRCC gap (no measure, a constant gap, "
                         "or fewer than 3 configurations).")
    zigzag = answer_sentences(_stats(**{**RISING, "gap": lambda i, s: (0.1, 0.3, 0.2, 0.25, 0.15, 0.22)[i]}))
    assert zigzag[3].startswith("Sharpness does not predict the gap in this sweep: the strongest measure, λ_max, "
                                "has Kendall τ_b = +0.07 with the SRCC gap (95% CI ")


def test_few_configurations_cannot_tell():
    few = answer_sentences(_stats(**RISING, batches=(8, 16, 32, 64)))
    assert "λ_max tends to rise (1.02 → 4.03; τ_b = +1.00)" in few[0]
    assert "no 95% CI with fewer than 5 configurations" in few[0]
    assert few[-1] == ("What this sweep cannot tell: with only 4 configuration(s) no bootstrap interval is "
                       "estimated and no Kendall τ can reach p < 0.05 (both need at least 5); the intervals of test "
                       "SRCC and SRCC gap at the two ends overlap, so a change of that size is not resolved; and "
                       "nothing beyond batch sizes 8 to 64.")
    one_seed = answer_sentences(_stats(**RISING, seeds=(0,)))
    assert "cannot be set against the seed-to-seed spread (fewer than 2 seeds)" in one_seed[1]
    assert "with one seed per configuration there is no seed-to-seed spread" in one_seed[-1]
    assert answer_sentences(_stats(**RISING, batches=(8,))) == [
        "The sweep has 1 batch size(s): it cannot say how anything changes with batch size."]


def test_headline_data_normalises_to_the_smallest_batch():
    hd = headline_data(_stats(**RISING))
    assert list(hd.normalised) == ["λ_max"]
    assert hd.normalised["λ_max"][8] == 1.0
    assert hd.normalised["λ_max"][256] == pytest.approx(6.025 / 1.025)
    assert sorted(hd.metrics["test SRCC"][16]) == pytest.approx([0.84, 0.86])
    neg = headline_data(_stats(**{**RISING, "lam": lambda i, s: i - 1.0}))
    assert neg.normalised == {} and neg.not_normalised == ["λ_max"]


def test_csv_tables_are_numeric_and_latex_uses_booktabs():
    stats = _stats(**RISING)
    rows = list(csv.DictReader(io.StringIO(render_table(*config_csv_rows(stats), "csv"))))
    assert len(rows) == 6 and int(rows[0]["batch_size"]) == 8
    assert float(rows[0]["test_srcc"]) == pytest.approx(0.85)
    assert float(rows[0]["test_srcc_std"]) == pytest.approx(np.std([0.84, 0.86], ddof=1))
    assert float(rows[0]["test_srcc_se"]) == pytest.approx(np.std([0.84, 0.86], ddof=1) / np.sqrt(2))
    assert int(rows[0]["test_srcc_n"]) == 2 and float(rows[5]["hessian_lambda_max"]) == pytest.approx(6.025)
    assert not any("±" in v for r in rows for v in r.values())
    (lam,) = list(csv.DictReader(io.StringIO(render_table(*stats_csv_rows(stats), "csv"))))[:1]
    assert (lam["measure"], lam["target"], int(lam["n"])) == ("hessian_lambda_max", "srcc_gap", 6)
    assert lam["tau"] == lam["tau_ci_low"] == ""         # a constant gap: undefined, an empty field
    trend = {r["column"]: r for r in csv.DictReader(io.StringIO(render_table(*trend_csv_rows(stats), "csv")))}
    assert float(trend["hessian_lambda_max"]["tau"]) == pytest.approx(1.0)
    assert float(trend["hessian_lambda_max"]["tau_ci_low"]) == pytest.approx(1.0)
    tex = config_latex(stats)
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == tex.count(r"\begin{table}")
    assert tex.count(r"\begin{table}") >= 2 and r"$\lambda_{\max}$" in tex
    outside_math = re.sub(r"\$[^$]*\$", "", tex)
    assert not re.search(r"(?<!\\)_", outside_math), "bare underscore outside math"
    for block in re.findall(r"\\begin\{tabular\}\{(l+)\}", tex):
        assert len(block) <= 2 + 4     # batch size, seeds and at most 4 value columns per tabular
