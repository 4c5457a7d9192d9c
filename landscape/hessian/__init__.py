"""Hessian of the full-data loss: a block Hessian-vector-product operator and its spectrum.

The loss is the size-weighted mean over a fixed list of batches,
``L(theta) = sum_b (n_b / N) * criterion(f(x_b; theta), y_b)`` (mean-reduced criterion),
evaluated in eval mode by default (train mode on request; the mode used is recorded and
every submodule's flag restored). ``H = d^2 L / d theta^2`` over the trainable parameters
(or a block of them), plus ``weight_decay * I`` when asked (the Hessian of
``L + wd/2 ||theta||^2``).

- :class:`HessianOperator`: ``H @ V`` for ``V`` of shape ``[n, m]`` by double backward.
- :func:`top_eigenvalues` (Lanczos), :func:`hessian_trace` (Hutch++/Hutchinson),
  :func:`spectral_density` (stochastic Lanczos quadrature): results as dataclasses.
- :func:`analyze_hessian`: all of them, per block on request, each part stored in the run's
  analysis HDF5 under ``hessian/<part>`` as soon as it is done and skipped when already
  stored with the same content key (resumable).
- :func:`pyhessian_top_eigenvalues`: the PyHessian package on the same model and data.
"""
from landscape.hessian.analyze import (  # noqa: F401
    H5_GROUP,
    HessianAnalysis,
    HessianDensity,
    HessianEigen,
    HessianOperator,
    HessianTrace,
    STARTS,
    START_NOISE,
    TRACE_METHODS,
    analyze_hessian,
    block_operators,
    hessian_trace,
    load_hessian_result,
    parameter_groups,
    pyhessian_top_eigenvalues,
    save_hessian_result,
    spectral_density,
    start_vector,
    stored_key,
    top_eigenvalues,
    weighted_batch_sum,
)
