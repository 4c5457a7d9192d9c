"""Per-configuration aggregation and the measure-vs-gap statistics of a report.

Configurations are ``(batch_size, lr_rule, accumulate)``; seeds are averaged first
(mean, sample std with ddof = 1, n). For each measure, against the SRCC gap
(train SRCC - test SRCC) and against test SRCC, over configuration means:
Kendall tau-b and Spearman rho with percentile-bootstrap 95% CIs (``n_boot`` >= 2000
resamples of configurations), granulated Kendall per hyperparameter axis (Jiang et
al. 2020; axes with one setting are skipped) and Holm-adjusted p-values across
measures (one family per target). Per metric, a seed-spread test says whether
differences between configurations exceed seed-to-seed spread. Per measure (and for test SRCC
and the gap), ``batch_trends`` holds Kendall tau-b / Spearman rho between the batch size and
the configuration means (the same bootstrap): does it rise or fall with batch size?
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from landscape.report import seeds, stats
from landscape.report.collect import AXES, TRAIN_COLUMNS, SweepData

TARGETS = ("srcc_gap", "test_srcc")


@dataclass
class MeasureStats:
    measure: str
    target: str
    correlation: stats.CorrelationResult
    granulated: stats.GranulatedResult | None
    tau_p_holm: float = float("nan")


@dataclass
class ReportStats:
    configs: list[seeds.SeedAggregate]
    columns: list[str]
    correlations: list[MeasureStats]
    seed_spread: dict[str, seeds.SeedSpreadResult]
    sufficiency: seeds.Sufficiency
    axes_varied: list[str]
    notes: list[str] = field(default_factory=list)
    #: column -> rank correlation of the batch size with the configuration means of that column
    batch_trends: dict[str, stats.CorrelationResult] = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)


def value_columns(data: SweepData) -> list[str]:
    cross = [f"{c}_{s}" for c in data.cross_names for s in ("srcc", "drop")]
    return [*TRAIN_COLUMNS, *cross, *data.measures]


def finished_rows(data: SweepData) -> list[dict[str, Any]]:
    return [r.row for r in data.runs if r.status == "finished"]


def compute_stats(data: SweepData, *, n_boot: int = 2000, seed: int = 0) -> ReportStats:
    rows = finished_rows(data)
    columns = value_columns(data)
    configs = seeds.aggregate_seeds(rows, AXES, columns)
    axes_varied = [a for a in AXES if len({r[a] for r in rows}) > 1]
    seeds_per_config = min((c.n.get("test_srcc", 0) for c in configs), default=0)
    sufficiency = seeds.sufficiency_statement(len(configs), seeds_per_config)
    correlations: list[MeasureStats] = []
    for target in TARGETS:
        family = []
        for measure in data.measures:
            pairs = [(c.mean[measure], c.mean[target]) for c in configs]
            corr = stats.rank_correlation([p[0] for p in pairs], [p[1] for p in pairs], n_boot=n_boot, seed=seed)
            gran = None
            if axes_varied:
                table = [{**c.config, measure: c.mean[measure], target: c.mean[target]} for c in configs]
                gran = stats.granulated_kendall(table, measure, target, axes_varied)
            family.append(MeasureStats(measure, target, corr, gran))
        for ms, p in zip(family, stats.holm([m.correlation.tau_p for m in family])):
            ms.tau_p_holm = p
        correlations += family
    spread = {}
    for col in ("test_srcc", "srcc_gap", *data.measures):
        groups = {tuple(sorted(c.config.items())): c.values[col] for c in configs}
        spread[col] = seeds.seed_spread_test(groups, name=col)
    notes = []
    if len(axes_varied) == 0:
        notes.append("Only one configuration: no comparison between batch sizes is possible.")
    sizes = [float(c.config["batch_size"]) for c in configs]
    trends = {col: stats.rank_correlation(sizes, [c.mean[col] for c in configs], n_boot=n_boot, seed=seed)
              for col in ("test_srcc", "srcc_gap", *data.measures)}
    return ReportStats(configs, columns, correlations, spread, sufficiency, axes_varied, notes, trends,
                       list(data.measures))
