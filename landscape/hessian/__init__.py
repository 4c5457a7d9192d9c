"""Hessian of the full-data loss: a block Hessian-vector-product operator and its spectrum.

The loss is the size-weighted mean over a fixed list of batches,
``L(theta) = sum_b (n_b / N) * criterion(f(x_b; theta), y_b)`` (mean-reduced criterion),
evaluated in eval mode by default (train mode on request). ``H = d^2 L / d theta^2`` over the
trainable parameters (or a block of them), plus ``weight_decay * I`` when asked.

Modules, one job each (imports go down this list):
``operator`` (:class:`HessianOperator`, ``H @ V`` by double backward, and the
:class:`CurvatureOperator` contract), ``results`` (frozen result dataclasses), ``blocks``
(parameter groups, diagonal-block operators), ``estimators`` (:func:`top_eigenvalues`,
:func:`hessian_trace`, :func:`spectral_density`), ``storage`` (HDF5 layout), ``analyze``
(:class:`HessianConfig`, :func:`analyze_hessian`: all parts, stored and resumable),
``parallel`` (:class:`DataParallelHessian`, :func:`parallel_hessian`: batches split over
ranks), ``pyhessian`` (:func:`pyhessian_top_eigenvalues`, the PyHessian package as a cross-check).
"""
from landscape.hessian.analyze import HessianConfig, analyze_hessian
from landscape.hessian.blocks import block_operators, parameter_groups
from landscape.hessian.estimators import (
    START_NOISE,
    STARTS,
    TRACE_METHODS,
    hessian_trace,
    spectral_density,
    start_vector,
    top_eigenvalues,
)
from landscape.hessian.operator import CurvatureOperator, HessianOperator, weighted_batch_sum
from landscape.hessian.parallel import DataParallelHessian, parallel_hessian
from landscape.hessian.pyhessian import pyhessian_top_eigenvalues
from landscape.hessian.results import HessianAnalysis, HessianDensity, HessianEigen, HessianTrace
from landscape.hessian.storage import H5_GROUP, load_hessian_result, save_hessian_result, stored_key

__all__ = [
    "CurvatureOperator", "DataParallelHessian", "H5_GROUP", "HessianAnalysis", "HessianConfig", "HessianDensity",
    "HessianEigen", "HessianOperator", "HessianTrace", "STARTS", "START_NOISE", "TRACE_METHODS", "analyze_hessian",
    "block_operators", "hessian_trace", "load_hessian_result", "parallel_hessian", "parameter_groups",
    "pyhessian_top_eigenvalues", "save_hessian_result", "spectral_density", "start_vector", "stored_key",
    "top_eigenvalues", "weighted_batch_sum",
]
