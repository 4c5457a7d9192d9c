"""Average-case adaptive sharpness (Andriushchenko et al. 2023).

    S_avg(rho) = E_z[ L(w + rho * c * z) - L(w) ],  z ~ N(0, I),  c = |w| (adaptive) or 1,

estimated from ``n_samples`` seeded draws (default 20) on the first
``max_examples`` (default 1024) examples, as the mean of the per-draw
increases with its Monte Carlo standard error (std with ddof=1 / sqrt(n)).
Every draw perturbs all the data at once (the mean over m-batches of the
reference code has the same expectation). The SRCC drop SRCC(w) - SRCC(w + delta)
is reported the same way (NaN without one scalar output per example).

Default grid ``rho`` = 0.025 ... 0.4: the per-weight relative noise std; the
reference runs used 0.05-0.4 (ResNets) and 0.1-0.8 (ViTs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from landscape.batches import Batch, Criterion
from landscape.errors import check_positive_int, check_positive_number
from landscape.sharpness.objective import (
    PerturbedLoss,
    gaussian,
    guarded,
    n_examples,
    prepare,
    score_targets,
    srcc_of,
    take_examples,
)
from landscape.uncertainty import mean_se

RHO_AVERAGE = (0.025, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class AverageConfig:
    rho: float = 0.1
    adaptive: bool = True
    n_samples: int = 20
    max_examples: int | None = 1024
    seed: int = 0
    train: bool = False


@dataclass(frozen=True)
class AverageResult:
    """``sharpness`` = mean loss increase over draws, ``sharpness_se`` its Monte Carlo standard error."""

    rho: float
    adaptive: bool
    n_samples: int
    n_examples: int
    base_loss: float
    sharpness: float
    sharpness_se: float
    per_sample_increase: list[float]
    srcc_base: float
    srcc_drop: float
    srcc_drop_se: float
    per_sample_srcc_drop: list[float]
    seed: int
    mode: str
    n_params: int


def average_sharpness(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                      config: AverageConfig = AverageConfig()) -> AverageResult:
    """Average-case sharpness of ``model`` at noise level ``config.rho``; the model is left as it was."""
    rho = check_positive_number("rho", config.rho)
    n_samples = check_positive_int("n_samples", config.n_samples, minimum=2)
    data = take_examples(prepare(model, batches), config.max_examples)
    targets = score_targets(data)
    want = targets is not None
    with guarded(model, config.train) as mode:
        obj = PerturbedLoss(model, criterion)
        c = obj.base.abs() if config.adaptive else torch.ones_like(obj.base)
        base = obj.evaluate(data, scores=want, what="loss at the base weights")
        s0 = srcc_of(base.scores, targets)
        inc, drops = [], []
        for k in range(n_samples):
            delta = rho * c * gaussian(obj.n, config.seed, 6, k, like=obj.base)
            ev = obj.evaluate(data, delta, scores=want, what="loss at a Gaussian weight perturbation")
            inc.append(ev.loss - base.loss)
            drops.append(s0 - srcc_of(ev.scores, targets))
    sharp, sharp_se = mean_se(inc)
    drop, drop_se = mean_se(drops)
    return AverageResult(
        rho=rho, adaptive=bool(config.adaptive), n_samples=n_samples,
        n_examples=n_examples(data), base_loss=base.loss, sharpness=sharp,
        sharpness_se=sharp_se, per_sample_increase=[float(v) for v in inc], srcc_base=s0, srcc_drop=drop,
        srcc_drop_se=drop_se, per_sample_srcc_drop=[float(v) for v in drops], seed=int(config.seed), mode=mode,
        n_params=obj.n)
