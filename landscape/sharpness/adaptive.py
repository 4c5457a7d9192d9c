"""Worst-case adaptive m-sharpness (Kwon et al. 2021; Andriushchenko et al. 2023).

With ``c = |w|`` (adaptive, default) or ``c = 1``, and ``m``-example batches B:

    S_max(rho) = mean_B [ max_{||delta / c||_p <= rho} L_B(w + delta) - L_B(w) ],  p = inf or 2.

The data passed in are cut to the first ``max_examples`` (default 1024, the
reference protocol) and re-batched into chunks of ``m`` (default 128; a last
partial chunk is dropped and counted). Each chunk's max is found by Auto-PGD
(Croce & Hein 2020) on ``z = delta / c`` with ``||z||_p <= rho``:

- ``x0``: seeded random point of the ball (uniform in the l_inf box; uniform in
  the l2 ball), so that an exact minimum (zero gradient) does not stall;
- step ``s(g) = sign(g)`` (l_inf) or ``g / ||g||_2`` (l2) of ``g = c * dL/d delta``;
  ``z_{k+1} = P(x_k + eta s(g_k))``, ``x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}))``
  with ``a = 1`` at the first step and ``alpha = 0.75`` after ("momentum 0.75");
- ``eta`` starts at ``2 rho``; at the checkpoints ``ceil(p_j n_iter)``,
  ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, eta is
  halved and the iterate restored to the best point (momentum reset) when fewer
  than 75 % of the steps since the last checkpoint increased the loss, or when
  neither eta nor the best loss changed since the last checkpoint;
- ``n_iter`` (20) gradient steps; the max is the best loss seen, including
  ``delta = 0``, so every per-batch value is >= 0.

Projection is Euclidean in ``z`` (exact: a clamp or a rescale). The reference
code steps in ``delta`` and projects onto the ellipsoid by bisection; the
feasible set is the same. Because everything is expressed in ``z``, the whole
trajectory is invariant to rescaling the layers of a ReLU network when c = |w|.

``srcc_drop`` is the mean over chunks of SRCC(base) - SRCC(worst point) on that
chunk (NaN without one scalar output per example). Uncertainty: the standard
error over chunks (std with ddof=1 / sqrt(#chunks)).

Data parallel (sharded batches, :mod:`landscape.distributed`): the chunks are formed from
the global example list and split round-robin over ranks; each chunk's Auto-PGD runs on
one rank, so the result is the single-process one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from landscape.batches import Batch, Criterion, model_device
from landscape.distributed import map_units
from landscape.errors import LandscapeError, check_choice, check_positive_int, check_positive_number
from landscape.sharpness.objective import (
    PerturbedLoss,
    gaussian,
    guarded,
    is_sharded,
    n_examples,
    prepare,
    rebatch,
    score_targets,
    seed_stream,
    srcc_of,
    take_examples,
    uniform,
)
from landscape.uncertainty import mean_se

RHO_LINF = (5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
#: Adaptive l2 radii as in the reference runs (ResNets 0.25-2, ViTs 0.5-4).
RHO_L2 = (0.25, 0.5, 1.0, 2.0, 4.0)
NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AdaptiveConfig:
    """Worst-case m-sharpness settings (defaults of Andriushchenko et al. 2023)."""

    rho: float = 1e-3
    norm: str = "linf"
    adaptive: bool = True
    m: int = 128
    max_examples: int | None = 1024
    n_iter: int = 20
    alpha: float = 0.75
    first_step: float = 2.0
    random_start: bool = True
    seed: int = 0
    train: bool = False


@dataclass(frozen=True)
class AdaptiveResult:
    """``sharpness`` = mean over chunks of (max - base) loss, ``sharpness_se`` its standard error over chunks."""

    rho: float
    norm: str
    adaptive: bool
    m: int
    n_batches: int
    n_examples: int
    n_dropped: int
    base_loss: float
    max_loss: float
    sharpness: float
    sharpness_se: float
    per_batch_base: list[float]
    per_batch_max: list[float]
    srcc_drop: float
    srcc_drop_se: float
    per_batch_srcc_drop: list[float]
    n_iter: int
    n_halvings: int
    seed: int
    mode: str
    n_params: int


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Auto-PGD checkpoints ``ceil(p_j n_iter)`` for j >= 1 (below ``n_iter``)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    steps = {math.ceil(round(q * n_iter, 9)) for q in p[1:]}  # round: 0.7 * 20 must give 14, not 15
    return sorted(s for s in steps if s < n_iter)


class _Ball:
    """The set ``||z||_p <= rho``: projection, ascent direction, random start."""

    def __init__(self, norm: str, rho: float):
        self.norm, self.rho = norm, rho

    def project(self, z: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return z.clamp(-self.rho, self.rho)
        r = float(z.norm())
        return z * (self.rho / r) if r > self.rho else z

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return g.sign()
        r = float(g.norm())
        return g / r if r > 0 else torch.zeros_like(g)

    def random(self, n: int, seed: int, stream: int, like: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return self.rho * uniform(n, seed, 3, stream, like=like)
        d = gaussian(n, seed, 4, stream, like=like)
        u = np.random.default_rng(seed_stream(seed, 5, stream)).random()
        return d * (self.rho * u ** (1.0 / n) / float(d.norm()))


def _apgd(obj: PerturbedLoss, batch: list[Batch], c: torch.Tensor, ball: _Ball, cfg: AdaptiveConfig,
          stream: int, want_scores: bool, checkpoints: set[int]) -> tuple:
    """Auto-PGD ascent on one chunk; returns (base eval, best loss, best scores, #halvings)."""
    what = "loss in the adaptive-sharpness ball"
    base = obj.evaluate(batch, grad=True, scores=want_scores, what="loss at the base weights")
    best = {"f": base.loss, "x": torch.zeros_like(c), "g": c * base.grad, "scores": base.scores}

    def at(x: torch.Tensor, grad: bool = True):
        ev = obj.evaluate(batch, c * x, grad=grad, scores=want_scores, what=what)
        gz = c * ev.grad if grad else None
        if ev.loss > best["f"]:
            best.update(f=ev.loss, x=x.clone(), g=gz, scores=ev.scores)
        return ev.loss, gz

    x = ball.random(obj.n, cfg.seed, stream, like=c) if cfg.random_start else torch.zeros_like(c)
    f, g = at(x)
    if g is None:  # pragma: no cover - grad requested
        raise LandscapeError("internal: missing gradient")
    x_prev = x
    eta = cfg.first_step * ball.rho
    last_cp, eta_cp, best_cp, n_up, halvings = 0, eta, best["f"], 0, 0
    for k in range(cfg.n_iter):
        z = ball.project(x + eta * ball.direction(g))
        a = 1.0 if k == 0 else cfg.alpha
        x_new = ball.project(x + a * (z - x) + (1.0 - a) * (x - x_prev))
        last = k == cfg.n_iter - 1
        f_new, g_new = at(x_new, grad=not last)
        n_up += int(f_new > f)
        x_prev, x, f, g = x, x_new, f_new, g_new
        if (k + 1) in checkpoints:
            cond1 = n_up < 0.75 * (k + 1 - last_cp)
            cond2 = eta == eta_cp and best["f"] == best_cp
            last_cp, eta_cp, best_cp, n_up = k + 1, eta, best["f"], 0
            if cond1 or cond2:
                eta, halvings = eta / 2.0, halvings + 1
                x = x_prev = best["x"]
                f, g = best["f"], best["g"]
    return base, best["f"], best["scores"], halvings


def adaptive_sharpness(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                       config: AdaptiveConfig = AdaptiveConfig()) -> AdaptiveResult:
    """Worst-case (adaptive) m-sharpness of ``model`` (see the module docstring); the model is left as it was."""
    rho = check_positive_number("rho", config.rho)
    check_choice("norm", config.norm, NORMS)
    m = check_positive_int("m", config.m)
    check_positive_int("n_iter", config.n_iter)
    check_positive_number("first_step", config.first_step)
    if not 0 < config.alpha <= 1:
        raise LandscapeError(f"alpha={config.alpha!r} must lie in (0, 1]")
    data = take_examples(prepare(model, batches), config.max_examples)
    total = n_examples(data)
    dev = model_device(model)
    chunks = [(x.to(dev), y.to(dev)) for x, y in rebatch(data, m)]   # sharded data: the global chunks
    ball = _Ball(config.norm, rho)
    checkpoints = set(apgd_checkpoints(config.n_iter))
    with guarded(model, config.train) as mode:
        obj = PerturbedLoss(model, criterion)
        c = obj.base.abs() if config.adaptive else torch.ones_like(obj.base)

        def one(i: int) -> tuple[float, float, float, int]:
            chunk = chunks[i]
            targets = score_targets([chunk])
            base, worst, worst_scores, h = _apgd(obj, [chunk], c, ball, config, i, targets is not None, checkpoints)
            return base.loss, worst, srcc_of(base.scores, targets) - srcc_of(worst_scores, targets), h

        # data parallel: each rank runs Auto-PGD on its chunks, results gathered in chunk order
        rows = map_units(len(chunks), one) if is_sharded(data) else [one(i) for i in range(len(chunks))]
        bases, maxes, drops = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        halvings = sum(r[3] for r in rows)
    diffs = np.asarray(maxes) - np.asarray(bases)
    sharp, sharp_se = mean_se(diffs)
    drop, drop_se = mean_se(drops)
    return AdaptiveResult(
        rho=rho, norm=config.norm, adaptive=bool(config.adaptive), m=m, n_batches=len(chunks),
        n_examples=len(chunks) * m, n_dropped=total - len(chunks) * m, base_loss=float(np.mean(bases)),
        max_loss=float(np.mean(maxes)), sharpness=sharp, sharpness_se=sharp_se, per_batch_base=bases,
        per_batch_max=maxes, srcc_drop=drop, srcc_drop_se=drop_se, per_batch_srcc_drop=[float(d) for d in drops],
        n_iter=int(config.n_iter), n_halvings=halvings, seed=int(config.seed), mode=mode, n_params=obj.n)
