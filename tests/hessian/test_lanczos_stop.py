"""The ``stop='eigenvalue'`` rule of :func:`landscape.linalg.lanczos`: top-k to relative 1e-3 on known spectra.

Dense symmetric ``A = Q diag(spec) Q^T`` (random orthogonal ``Q``, float64); every returned top-k is
compared with ``numpy.linalg.eigvalsh``, and the products are counted against the residual rule.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import linalg
from landscape.errors import LandscapeError
from landscape.linalg.lanczos import CONSECUTIVE, error_estimates

DT = torch.float64
N = 400


def dense(spec: np.ndarray, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.standard_normal((len(spec), len(spec))))
    return torch.from_numpy((q * spec) @ q.T)


def spectra() -> dict[str, np.ndarray]:
    rest = N - 5
    return {
        "separated": np.r_[10.0, 8.0, 6.0, 4.0, 3.0, np.linspace(2.0, 0.0, rest)],
        "clustered": np.r_[10.0, 9.999, 9.99, 5.0, 4.5, np.linspace(4.0, 0.0, rest)],
        "repeated": np.r_[10.0, 7.0, 7.0, 5.0, 4.0, np.linspace(3.0, -1.0, rest)],
        # the two most negative eigenvalues are larger in magnitude than the top one
        "negative": np.r_[10.0, 8.0, 6.0, 5.0, 4.0, np.linspace(3.0, 0.0, rest - 2), -15.0, -20.0],
        # an outlier over a dense bulk whose top touches the 5th value (Hessian-like)
        "bulk": np.r_[10.23, 1.0316, 1.0104, 0.9913, 0.9759, 0.965,
                      np.linspace(0.95, 0.0, rest - 1)],
    }


def top5(A: torch.Tensor, stop: str, seed: int, which: str = "LA"):
    return linalg.lanczos(lambda V: A @ V, A.shape[0], 5, which=which, tol=1e-3, stop=stop, seed=seed, dtype=DT)


def rel_err(res, exact: np.ndarray) -> float:
    return float(np.max(np.abs(res.eigenvalues - exact) / np.abs(exact)))


@pytest.mark.parametrize("name", list(spectra()))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigenvalue_stop_meets_tolerance(name, seed):
    spec = spectra()[name]
    A = dense(spec, seed)
    exact = np.sort(np.linalg.eigvalsh(A.numpy()))[::-1][:5]
    res = top5(A, "eigenvalue", seed)
    assert res.stop == "eigenvalue" and res.converged.all()
    assert rel_err(res, exact) <= 1e-3
    # the reported bounds hold (up to rounding, 1e-10 |lambda_1|): each >= the true error, <= the residual
    assert np.all(np.abs(res.eigenvalues - exact) <= res.error_estimates + 1e-10 * abs(exact[0]))
    assert np.all(res.error_estimates <= res.residuals)


def test_eigenvalue_stop_needs_fewer_products_than_residual_stop():
    A = dense(spectra()["separated"], 0)
    exact = np.sort(np.linalg.eigvalsh(A.numpy()))[::-1][:5]
    by_val, by_res = top5(A, "eigenvalue", 0), top5(A, "residual", 0)
    assert rel_err(by_val, exact) <= 1e-3 and rel_err(by_res, exact) <= 1e-3
    # measured: 13 products against the residual rule's 14 (the residual rule reaches ~1e-6)
    assert by_val.n_matvecs == 13 and by_res.n_matvecs == 14
    assert by_val.n_matvecs < by_res.n_matvecs


def test_consecutive_steps_are_required():
    """The stop comes CONSECUTIVE steps after the first step at which every bound passed."""
    A = dense(spectra()["separated"], 0)
    passes = []

    def watch(mv, theta, res, err):
        passes.append(bool(len(theta) == 5 and np.all(err <= 1e-3 * np.abs(theta))))

    r = linalg.lanczos(lambda V: A @ V, N, 5, tol=1e-3, stop="eigenvalue", dtype=DT, callback=watch)
    assert CONSECUTIVE == 2 and len(passes) == r.n_matvecs
    assert passes[-CONSECUTIVE:] == [True] * CONSECUTIVE and passes[-CONSECUTIVE - 1] is False


def test_smallest_algebraic_with_eigenvalue_stop():
    spec = -spectra()["negative"]                     # top of -A: its most negative values
    A = dense(spec, 3)
    exact = np.sort(np.linalg.eigvalsh(A.numpy()))[:5]
    res = top5(A, "eigenvalue", 3, which="SA")
    assert rel_err(res, exact) <= 1e-3


def test_error_estimates_closed_form():
    """Wanted {10, 9} (residuals 0.01, 0.02) above unwanted 5 (residual 1): gap to the other wanted
    value 1 - r_other, block gap delta = 9 - (5 + 1) = 3 with ||R||^2 = 5e-4."""
    theta = np.array([5.0, 9.0, 10.0])
    est = error_estimates(theta, np.array([2, 1]), np.array([0.01, 0.02]), np.array([1.0, 0.02, 0.01]))
    block = (0.01 ** 2 + 0.02 ** 2) / 3.0
    assert est == pytest.approx([min(0.01 ** 2 / (1 - 0.02), block), min(0.02 ** 2 / (1 - 0.01), block)], rel=1e-12)
    # an unconverged neighbour (5 +- 4.5) reaching past the wanted 9: no block bound, no quadratic
    # bound for 9 (r alone), and 10's gap shrinks to 10 - 9.5
    est = error_estimates(theta, np.array([2, 1]), np.array([0.01, 0.02]), np.array([4.5, 0.02, 0.01]))
    assert est == pytest.approx([0.01 ** 2 / 0.5, 0.02], rel=1e-12)
    est = error_estimates(theta, np.array([2, 1]), np.array([0.01, 0.5]), np.array([4.5, 0.5, 0.01]))
    assert est == pytest.approx([0.01 ** 2 / 0.5, 0.5], rel=1e-12)


def test_unknown_stop_rule_is_one_line_error():
    A = dense(spectra()["separated"], 0)
    with pytest.raises(LandscapeError, match="stop"):
        linalg.lanczos(lambda V: A @ V, N, 5, stop="ritz", dtype=DT)
