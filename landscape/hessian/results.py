"""What the Hessian estimators return: frozen dataclasses, one per part, and their bundle.

Units: eigenvalues, traces and density nodes are in units of the loss per squared
parameter unit (the loss's own unit, parameters being dimensionless). Arrays are NumPy
(float64 unless stated). ``mode`` (``"eval"``/``"train"``), ``n_params``, ``weight_decay``,
``seed`` and ``block`` (``""`` for the whole model) say what the number is of.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class HessianEigen:
    """Top-k eigenvalues (float64, most wanted first) with residual norms and convergence flags.

    ``residuals[i] = ||H v_i - eigenvalues[i] v_i||`` for the unit Ritz vector ``v_i`` (a
    guaranteed bound on the eigenvalue error); ``error_estimates[i] = min(r, r^2/gap)``
    (:func:`landscape.linalg.error_estimates`). ``converged[i]``: ``residuals[i] <= tol * |eigenvalues[i]|``
    (``stop='residual'``, default) or ``error_estimates[i] <= tol * |eigenvalues[i]|``
    (``stop='eigenvalue'``). ``eigenvectors``: ``[n, k]`` array or None.
    ``method``: ``lanczos`` or ``pyhessian``.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    error_estimates: np.ndarray
    converged: np.ndarray
    which: str
    tol: float
    stop: str
    max_iter: int
    n_matvecs: int
    n_restarts: int
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    method: str = "lanczos"
    block: str = ""
    start: str = "random"
    eigenvectors: np.ndarray | None = None


@dataclass(frozen=True)
class HessianTrace:
    """``trace +- stderr`` of H; ``samples``: quadratic forms of the stochastic part.

    Hutch++: ``trace = exact_part + mean(samples)``, ``stderr`` of the Hutchinson part on the
    deflated residual only (the sketch part ``exact_part`` is exact given the sketch).
    """

    trace: float
    stderr: float
    method: str
    n_matvecs: int
    exact_part: float
    samples: np.ndarray
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    block: str = ""


@dataclass(frozen=True)
class HessianDensity:
    """Spectral density by SLQ: per-run Gauss rules and the Gaussian-smoothed curve.

    ``nodes``/``weights``: ``[n_runs, steps]`` (NaN/0 padding after ``lengths[r]``);
    ``density`` on ``grid`` integrates to 1 (kernel width ``sigma``, default 1% of the node
    span). ``mean_eigenvalue = mean_r sum_i w_ri node_ri`` estimates ``trace / n_params``;
    ``trace = n_params * mean_eigenvalue`` with ``trace_stderr`` from the spread of the runs.
    """

    nodes: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_runs: int
    steps: int
    mean_eigenvalue: float
    trace: float
    trace_stderr: float
    n_matvecs: int
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    block: str = ""


#: Stored part name -> its result type (the HDF5 layout of :mod:`landscape.hessian.storage`).
PART_TYPES: dict[str, type] = {"topk": HessianEigen, "trace": HessianTrace, "density": HessianDensity}


@dataclass(frozen=True)
class HessianAnalysis:
    """What :func:`landscape.hessian.analyze_hessian` computed or loaded, for the whole model and per block.

    ``loaded``: parts (``"topk"``, ``"blocks/layers.0/trace"``, ...) taken from storage;
    ``n_matvecs``: Hessian-vector products done in this call; ``loss``: the full-data loss.
    """

    topk: HessianEigen | None = None
    trace: HessianTrace | None = None
    density: HessianDensity | None = None
    blocks: dict[str, HessianAnalysis] = field(default_factory=dict)
    loss: float | None = None
    mode: str = "eval"
    n_params: int = 0
    n_matvecs: int = 0
    loaded: list[str] = field(default_factory=list)
