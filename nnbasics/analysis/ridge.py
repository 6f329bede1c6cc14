"""Ridge (Tikhonov) regression on a polynomial basis, in closed form: the lecture's "regularized
least squares" (Bishop, PRML Sec. 1.1).

    f_theta(x) = sum_{k=0}^K theta_k x^k,    J(theta) = ||Phi theta - y||^2 + lam ||theta||^2
    theta* = (Phi^T Phi + lam I)^{-1} Phi^T y

Solved through the SVD Phi = U S V^T, theta* = V diag(s / (s^2 + lam)) U^T y, which stays
accurate when Phi^T Phi is nearly singular (a degree-9 Vandermonde matrix is) and gives the
minimum-norm least-squares fit at lam = 0. Computed in float64 with NumPy on purpose: in float32
the unregularized fit would be rounding noise rather than the overfitting the lecture shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
    """The design matrix Phi (N, degree + 1) with columns 1, x, x^2, ..., x^degree (x of shape (N,) or (N, 1))."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    x = np.asarray(x, np.float64).reshape(-1)
    return x[:, None] ** np.arange(degree + 1)[None, :]


def ridge_path(features: np.ndarray, y: np.ndarray, lams: Sequence[float], rcond: float = 1e-15) -> np.ndarray:
    """theta*(lam) for every lam in `lams` from one SVD: (len(lams), P) for y (N,) or (N, 1).
    Singular values below rcond * s_max are treated as zero (matters only for lam = 0)."""
    phi = np.asarray(features, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    lams = np.asarray(lams, np.float64).reshape(-1)
    if np.any(lams < 0):
        raise ValueError(f"lambda must be >= 0, got {lams.min()}")
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    uty = u.T @ y
    keep = s > rcond * s.max()
    s_safe = np.where(keep, s, 1.0)
    filt = np.where(keep[None, :], s_safe[None, :] / (s_safe[None, :] ** 2 + lams[:, None]), 0.0)
    return (filt * uty[None, :]) @ vt


def ridge_fit(features: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """The ridge solution theta* (P,) minimizing ||Phi theta - y||^2 + lam ||theta||^2."""
    return ridge_path(features, y, [lam])[0]


def ridge_objective(theta: np.ndarray, features: np.ndarray, y: np.ndarray, lam: float) -> float:
    """J(theta) = ||Phi theta - y||^2 + lam ||theta||^2 (what `ridge_fit` minimizes)."""
    r = np.asarray(features, np.float64) @ theta - np.asarray(y, np.float64).reshape(-1)
    return float(r @ r + lam * theta @ theta)


def rms_error(features: np.ndarray, y: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """Root-mean-square error of the fit(s) theta (P,) or (L, P) on (Phi, y): Bishop's E_RMS."""
    pred = np.atleast_2d(thetas) @ np.asarray(features, np.float64).T  # (L, N)
    err = np.sqrt(np.mean((pred - np.asarray(y, np.float64).reshape(1, -1)) ** 2, axis=1))
    return err if np.ndim(thetas) == 2 else err[0]
