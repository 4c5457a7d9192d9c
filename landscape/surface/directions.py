"""Random directions in parameter space, normalised to the weights (Li et al. 2018).

A direction is one tensor per trainable parameter, drawn ``N(0, 1)`` from a seeded
CPU ``torch.Generator`` (float32, then cast to the parameter's dtype and device),
so the same seed gives the same directions on any device. Normalisations, for a
weight tensor ``w`` and its raw direction ``d``:

- ``filter`` (default, the paper's method): for ``w.dim() >= 2`` each slice along
  dim 0 (an output channel / neuron row) ``d_i <- d_i * ||w_i|| / (||d_i|| + 1e-10)``.
- ``layer``: the whole tensor, ``d <- d * ||w|| / (||d|| + 1e-10)``.
- ``elementwise``: ``d <- d * w`` (the reference code's ``weight`` mode; as ``d``
  is symmetric this is distributed like ``d * |w|``).
- ``none``: the raw Gaussian.

With ``ignore_1d=True`` (default; the reference's ``ignore='biasbn'``) tensors of
``dim <= 1`` (biases, norm scales and shifts) get a zero direction. With
``ignore_1d=False`` they are normalised as one slice (``layer`` rule) in the
``filter``/``layer`` modes.

Orthogonalisation of the second direction: global Gram-Schmidt
``d2 <- d2 - (<d2, d1> / <d1, d1>) d1`` followed by re-normalisation. The
trade-off: re-normalising rescales each filter, which breaks exact
orthogonality again (the residual cosine is roughly the original one times the
mean squared per-filter cosine, i.e. much smaller); not re-normalising would
break the filter-norm property instead. We alternate the two steps up to
``ortho_iters`` times, keeping the filter-norm property exact and reporting the
remaining cosine in :attr:`Directions.cosine`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.params import trainable_parameters
from landscape.provenance import content_key, hash_state

NORMALIZATIONS = ("filter", "layer", "elementwise", "none")
EPS = 1e-10


@dataclass(frozen=True)
class DirectionSpec:
    """How random directions are drawn: seed, normalisation, 1-D handling, orthogonalisation."""

    seed: int = 0
    normalization: str = "filter"
    ignore_1d: bool = True
    orthogonalize: bool = False
    ortho_iters: int = 10
    count: int = 2

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise LandscapeError(f"normalization '{self.normalization}': expected one of {', '.join(NORMALIZATIONS)}")
        if self.count not in (1, 2):
            raise LandscapeError(f"direction count {self.count}: expected 1 or 2")
        if self.ortho_iters < 1:
            raise LandscapeError(f"ortho_iters {self.ortho_iters}: must be >= 1")


@dataclass
class Directions:
    """Directions in parameter space: ``vectors[k][j]`` is direction ``k`` for parameter ``names[j]``.

    ``key`` identifies how they were made (content key of the generation spec);
    ``spec`` records it; ``cosine`` is the cosine between the two directions (None
    for one direction).
    """

    names: tuple[str, ...]
    vectors: list[list[torch.Tensor]]
    key: str
    spec: dict = field(default_factory=dict)
    cosine: float | None = None

    def digest(self) -> str:
        """SHA-256 of the direction tensors (names, dtypes, shapes, bytes)."""
        return hash_state({f"{k}/{n}": t for k, vec in enumerate(self.vectors) for n, t in zip(self.names, vec)})


def slice_norms(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each slice along dim 0 (one value per filter); a 0/1-D tensor is one slice."""
    if t.dim() <= 1:
        return t.reshape(1, -1).norm(dim=1)
    return t.reshape(t.shape[0], -1).norm(dim=1)


def normalize(d: torch.Tensor, w: torch.Tensor, mode: str = "filter", ignore_1d: bool = True) -> torch.Tensor:
    """Normalise one direction tensor ``d`` to its weight tensor ``w`` (see module docstring)."""
    if mode not in NORMALIZATIONS:
        raise LandscapeError(f"normalization '{mode}': expected one of {', '.join(NORMALIZATIONS)}")
    if d.shape != w.shape:
        raise LandscapeError(f"direction shape {tuple(d.shape)} differs from weight shape {tuple(w.shape)}")
    if w.dim() <= 1 and ignore_1d:
        return torch.zeros_like(d)
    if mode == "none":
        return d.clone()
    if mode == "elementwise":
        return d * w
    if mode == "layer" or w.dim() <= 1:
        return d * (w.norm() / (d.norm() + EPS))
    rows_d = d.reshape(d.shape[0], -1)
    scale = rows_d.norm(dim=1) + EPS
    scale = w.reshape(w.shape[0], -1).norm(dim=1) / scale
    return (rows_d * scale[:, None]).reshape(d.shape)


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """``<a, b>`` over lists of tensors, accumulated in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """``<a, b> / (||a|| ||b||)`` (NaN if either is zero)."""
    na, nb = dot(a, a) ** 0.5, dot(b, b) ** 0.5
    return dot(a, b) / (na * nb) if na > 0 and nb > 0 else float("nan")


def orthogonalize(d1: Sequence[torch.Tensor], d2: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                  mode: str = "filter", ignore_1d: bool = True, iters: int = 10,
                  tol: float = 1e-12) -> tuple[list[torch.Tensor], float]:
    """Gram-Schmidt ``d2`` against ``d1``, then re-normalise; repeat up to ``iters`` times.

    Returns the new ``d2`` and its final cosine with ``d1``. In the ``none`` and
    ``elementwise`` modes there is no norm to restore, so one projection is exact.
    """
    out = list(d2)
    n11 = dot(d1, d1)
    if n11 == 0:
        raise LandscapeError("cannot orthogonalise against a zero direction")
    for _ in range(iters):
        c = dot(out, d1) / n11
        out = [b - c * a for a, b in zip(d1, out)]
        if mode in ("filter", "layer"):
            out = [normalize(b, w, mode, ignore_1d) for b, w in zip(out, weights)]
        else:
            break
        if abs(cosine(d1, out)) < tol:
            break
    return out, cosine(d1, out)


def directions_key(spec: DirectionSpec, checkpoint_hash: str, names: Sequence[str],
                   params: Sequence[torch.Tensor]) -> str:
    """Content key of random directions: spec, checkpoint, parameter names, shapes and dtypes."""
    layout = [[n, list(p.shape), str(p.dtype)] for n, p in zip(names, params)]
    return content_key({"kind": "random", **asdict(spec), "checkpoint": checkpoint_hash, "layout": layout})


def random_directions(model: nn.Module, spec: DirectionSpec = DirectionSpec(),
                      checkpoint_hash: str | None = None) -> Directions:
    """``spec.count`` seeded Gaussian directions, one tensor per trainable parameter, normalised.

    ``checkpoint_hash`` (default: hash of the trainable parameters) enters the key
    because the normalisation depends on the weights.
    """
    named = trainable_parameters(model)
    names = tuple(n for n, _ in named)
    weights = [p.detach() for _, p in named]
    if checkpoint_hash is None:
        checkpoint_hash = hash_state(dict(zip(names, weights)))
    gen = torch.Generator(device="cpu").manual_seed(int(spec.seed))
    vectors = []
    for _ in range(spec.count):
        raw = [torch.randn(w.shape, generator=gen, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
               for w in weights]
        vectors.append([normalize(d, w, spec.normalization, spec.ignore_1d) for d, w in zip(raw, weights)])
    cos = None
    if spec.count == 2:
        cos_raw = cosine(vectors[0], vectors[1])
        if spec.orthogonalize:
            vectors[1], cos = orthogonalize(vectors[0], vectors[1], weights, spec.normalization,
                                            spec.ignore_1d, spec.ortho_iters)
        else:
            cos = cos_raw
    record = {"kind": "random", **asdict(spec), "checkpoint": checkpoint_hash}
    return Directions(names, vectors, directions_key(spec, checkpoint_hash, names, weights), record, cos)
