"""Magnitude-aware PAC-Bayes flatness (Jiang et al. 2020, "Fantastic generalization measures").

    sigma' = max { sigma in [0, sigma_max] : D(sigma) <= d },   flatness = 1 / sigma'^2,

with ``u_i ~ N(0, sigma^2 w_i^2 + floor^2)`` (``floor`` = 1e-3; the plain
version ``magnitude_aware=False`` uses ``u ~ N(0, sigma^2 I)``). ``sigma`` is a
standard deviation: ``u = sqrt(sigma^2 w^2 + floor^2) * z`` (public ports pass
the variance as the std; not here). The deviation ``D`` and target ``d`` are
(``kind``, stored in the result with the absolute bound ``threshold``):

- ``"loss_relative"`` (default, d = 0.1): ``E_u[L(w+u)] - L(w) <= d * L(w)``, a 10 %
  increase of the training loss ``L`` (scale-free; needs L(w) > 0). This is *not*
  the paper's criterion; it is kept as the default so stored results stay comparable;
- ``"loss"``: an absolute increase of the training loss ``E_u[L(w+u)] - L(w) <= d``;
- ``"l1_increase"`` (Jiang et al.'s criterion for regression): an absolute increase
  ``E_u[E1(w+u)] - E1(w) <= d`` of the training error measure
  ``E1 = mean_i |f(x_i) - y_i|`` (mean absolute error of the scores, whatever the
  training loss; needs one scalar output per example);
- ``"srcc"`` (Jiang et al.'s criterion with SRCC as the error measure): an absolute
  SRCC drop ``SRCC(w) - E_u[SRCC(w+u)] <= d`` (needs one scalar output per example;
  d = 0.05 is a sensible IQA choice).

Jiang et al. 2020 bound an absolute deviation d (0.1) of the training *error*;
``PAPER_KINDS`` names the kinds that do that for regression.

``E_u`` is the mean over ``n_samples`` (10) seeded draws ``z_k``; the same
draws are reused at every sigma (common random numbers), so the estimate is a
smooth function of sigma and bisection on ``[0, sigma_max]`` (2) with
``depth`` (15) halvings brackets its root to ``sigma_max / 2^depth``; the
reported sigma is the middle of the final bracket. ``saturated`` is
``"upper"`` when no tested sigma reached the target (sigma' >= sigma_max) and
``"lower"`` when all did.

Uncertainty: the deviation is evaluated again at ``sigma'`` and at
``sigma' (1 +- se_step)``; ``sigma_se = SE(D(sigma')) / D'(sigma')`` (delta
method with a central-difference slope, SE over the draws) and
``flatness_se = 2 sigma_se / sigma'^3``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError, check_choice, check_positive_int, check_positive_number
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

KINDS = ("loss_relative", "loss", "l1_increase", "srcc")
#: Kinds that follow Jiang et al. 2020: absolute deviation d of a training error measure.
PAPER_KINDS = ("l1_increase", "srcc")
DEFAULT_KIND = "loss_relative"


@dataclass(frozen=True)
class PacBayesConfig:
    """``kind`` (default ``"loss_relative"``: E_u[L(w+u)] - L(w) <= target * L(w)) and
    ``target`` d (default 0.1) select the criterion (module docstring); Jiang et al.'s
    absolute error deviation is ``kind="l1_increase"`` or ``"srcc"`` with an absolute d."""

    target: float = 0.1
    kind: str = DEFAULT_KIND
    sigma_max: float = 2.0
    depth: int = 15
    n_samples: int = 10
    floor: float = 1e-3
    magnitude_aware: bool = True
    se_step: float = 0.05
    max_examples: int | None = None
    seed: int = 0
    train: bool = False
    max_cached_bytes: int = 2 ** 31


@dataclass(frozen=True)
class PacBayesResult:
    """``sigma`` (std multiplier), ``flatness = 1/sigma^2`` and the criterion used.

    ``kind`` and ``target`` name the criterion; ``threshold`` is the absolute bound on
    the deviation (``target * base_loss`` for ``loss_relative``, else ``target``).
    ``loss_increase``/``srcc_drop`` are the Monte Carlo means at ``sigma`` (with
    standard errors); ``deviation`` is that of ``kind`` (for ``l1_increase`` the
    mean-absolute-error increase). ``trace_*``: the bisection steps.
    """

    sigma: float
    sigma_se: float
    flatness: float
    flatness_se: float
    target: float
    kind: str
    threshold: float
    saturated: str
    deviation: float
    deviation_se: float
    base_loss: float
    srcc_base: float
    loss_increase: float
    loss_increase_se: float
    srcc_drop: float
    srcc_drop_se: float
    trace_sigma: list[float]
    trace_deviation: list[float]
    magnitude_aware: bool
    floor: float
    sigma_max: float
    depth: int
    n_samples: int
    n_examples: int
    seed: int
    mode: str
    n_params: int


def pacbayes_flatness(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                      config: PacBayesConfig = PacBayesConfig()) -> PacBayesResult:
    """Magnitude-aware PAC-Bayes sigma' and flatness 1/sigma'^2 (module docstring); the model is left as it was."""
    check_choice("kind", config.kind, KINDS)
    target = check_positive_number("target", config.target)
    sigma_max = check_positive_number("sigma_max", config.sigma_max)
    depth = check_positive_int("depth", config.depth)
    n_samples = check_positive_int("n_samples", config.n_samples, minimum=2)
    if config.floor < 0 or not math.isfinite(config.floor):
        raise LandscapeError(f"floor={config.floor!r} must be a finite number >= 0")
    step = check_positive_number("se_step", config.se_step)
    if step >= 1:
        raise LandscapeError(f"se_step={config.se_step!r} must be < 1")
    data = take_examples(prepare(model, batches), config.max_examples)
    targets = score_targets(data)
    if config.kind in PAPER_KINDS and targets is None:
        raise LandscapeError(f"kind={config.kind!r} needs one scalar output and target per example")
    want = targets is not None
    with guarded(model, config.train) as mode:
        obj = PerturbedLoss(model, criterion)
        base = obj.evaluate(data, scores=want, what="loss at the base weights")
        s0 = srcc_of(base.scores, targets)
        e0 = _l1(base.scores, targets)
        if config.kind == "l1_increase" and not math.isfinite(e0):
            raise LandscapeError("kind='l1_increase' needs one finite scalar output per example at the base "
                                 f"weights (got mean absolute error {e0}); use kind='loss' or 'loss_relative'")
        if config.kind == "srcc" and not math.isfinite(s0):
            raise LandscapeError("kind='srcc' needs one scalar output per example and a defined SRCC at the "
                                 f"base weights (got {s0}); use kind='loss' or 'loss_relative'")
        if config.kind == "loss_relative":
            if base.loss <= 0:
                raise LandscapeError(f"kind='loss_relative' needs a positive base loss, got {base.loss}; use kind='loss'")
            threshold = target * base.loss
        else:
            threshold = target
        w2 = obj.base ** 2 if config.magnitude_aware else torch.ones_like(obj.base)
        floor2 = config.floor ** 2 if config.magnitude_aware else 0.0
        itemsize = obj.base.element_size()
        cache: dict[int, torch.Tensor] | None = {} if obj.n * n_samples * itemsize <= config.max_cached_bytes else None

        def noise(k: int) -> torch.Tensor:
            if cache is not None and k in cache:
                return cache[k]
            z = gaussian(obj.n, config.seed, 7, k, like=obj.base)
            if cache is not None:
                cache[k] = z
            return z

        def deviations(sigma: float) -> tuple[np.ndarray, np.ndarray]:
            std = torch.sqrt(sigma ** 2 * w2 + floor2)
            inc, drop, l1 = [], [], []
            for k in range(n_samples):
                ev = obj.evaluate(data, std * noise(k), scores=want, what=f"loss at PAC-Bayes sigma={sigma:.6g}")
                inc.append(ev.loss - base.loss)
                drop.append(s0 - srcc_of(ev.scores, targets))
                l1.append(_l1(ev.scores, targets) - e0)
            return np.asarray(inc), np.asarray(drop), np.asarray(l1)

        def deviation(inc: np.ndarray, drop: np.ndarray, l1: np.ndarray) -> np.ndarray:
            return drop if config.kind == "srcc" else l1 if config.kind == "l1_increase" else inc

        lo, hi, trace_s, trace_d = 0.0, sigma_max, [], []
        for _ in range(depth):
            mid = 0.5 * (lo + hi)
            d = float(np.mean(deviation(*deviations(mid))))
            trace_s.append(mid)
            trace_d.append(d)
            if d > threshold:
                hi = mid
            else:
                lo = mid
        sigma = 0.5 * (lo + hi)
        saturated = "upper" if hi == sigma_max else "lower" if lo == 0.0 else ""
        inc, drop, l1 = deviations(sigma)
        dev, dev_se = mean_se(deviation(inc, drop, l1))
        sigma_se = float("nan")
        if not saturated:
            d_plus = float(np.mean(deviation(*deviations(sigma * (1 + step)))))
            d_minus = float(np.mean(deviation(*deviations(sigma * (1 - step)))))
            slope = (d_plus - d_minus) / (2 * step * sigma)
            if slope > 0:
                sigma_se = dev_se / slope
    loss_inc, loss_inc_se = mean_se(inc)
    srcc_drop, srcc_drop_se = mean_se(drop)
    flat = 1.0 / sigma ** 2 if sigma > 0 else float("inf")
    return PacBayesResult(
        sigma=sigma, sigma_se=sigma_se, flatness=flat, flatness_se=2 * sigma_se / sigma ** 3 if sigma > 0 else float("nan"),
        target=target, kind=config.kind, threshold=threshold, saturated=saturated, deviation=dev,
        deviation_se=dev_se, base_loss=base.loss, srcc_base=s0, loss_increase=loss_inc,
        loss_increase_se=loss_inc_se, srcc_drop=srcc_drop, srcc_drop_se=srcc_drop_se, trace_sigma=trace_s,
        trace_deviation=trace_d, magnitude_aware=bool(config.magnitude_aware), floor=float(config.floor),
        sigma_max=sigma_max, depth=depth, n_samples=n_samples, n_examples=n_examples(data),
        seed=int(config.seed), mode=mode, n_params=obj.n)


def _l1(scores, targets) -> float:
    """Mean absolute error ``mean_i |f(x_i) - y_i|`` of per-example scores; NaN without scores."""
    if scores is None or targets is None:
        return float("nan")
    return float(np.mean(np.abs(np.asarray(scores, dtype=np.float64).reshape(-1)
                                - np.asarray(targets, dtype=np.float64).reshape(-1))))
