"""Why momentum really works (Goh, Distill 2017): optimal step sizes and rates on a quadratic.

On f(w) = 1/2 w^T A w with the eigenvalues of A in [lmin, lmax] (condition number
kappa = lmax / lmin):
- gradient descent with the optimal step alpha = 2 / (lmin + lmax) converges at rate
  (kappa - 1) / (kappa + 1) per step;
- momentum (heavy ball: z <- beta z + grad, w <- w - alpha z, exactly `optax.sgd(alpha,
  momentum=beta)`) with alpha = (2 / (sqrt(lmin) + sqrt(lmax)))^2 and
  beta = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2 converges at (sqrt(kappa) - 1) / (sqrt(kappa) + 1).
For any (alpha, beta) the rate is the largest root modulus of t^2 - (1 + beta - alpha l) t + beta
over the eigenvalues l. `run_on_quadratic` measures the rate: it runs an optax optimizer with
`lax.scan` and fits the slope of log ||w_k - w*||. The minimizer is placed at 0: the error obeys
the same linear recursion wherever the minimum is, and with w* = 0 float64 follows it for
hundreds of decades instead of stopping at 1e-16 relative to ||w*||.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Scoped double precision (`jax.enable_x64`); the global setting is restored on exit."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # older jax
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


# ----------------------------------------------------------------------------------- theory


def gd_optimal(lmin: float, lmax: float) -> tuple[float, float]:
    """(step, rate) of gradient descent with the optimal step 2 / (lmin + lmax)."""
    kappa = lmax / lmin
    return 2.0 / (lmin + lmax), (kappa - 1.0) / (kappa + 1.0)


def momentum_optimal(lmin: float, lmax: float) -> tuple[float, float, float]:
    """(step, momentum, rate) of heavy-ball momentum with Goh's optimal parameters."""
    sk = math.sqrt(lmax / lmin)
    alpha = (2.0 / (math.sqrt(lmin) + math.sqrt(lmax))) ** 2
    rate = (sk - 1.0) / (sk + 1.0)
    return alpha, rate**2, rate


def gd_rate(alpha: float, eigenvalues: Sequence[float] | np.ndarray) -> float:
    """Worst-case per-step contraction of gradient descent: max |1 - alpha l|."""
    lam = np.asarray(eigenvalues, np.float64)
    return float(np.max(np.abs(1.0 - alpha * lam)))


def momentum_roots(alpha: float, beta: float, eigenvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Both roots (per eigenvalue, shape (n, 2), complex) of t^2 - (1 + beta - alpha l) t + beta:
    the eigenvalues of the 2x2 iteration matrix [[beta, l], [-alpha beta, 1 - alpha l]]."""
    lam = np.asarray(eigenvalues, np.float64)
    b = 1.0 + beta - alpha * lam
    disc = np.sqrt(b.astype(np.complex128) ** 2 - 4.0 * beta)
    return np.stack([(b + disc) / 2.0, (b - disc) / 2.0], axis=-1)


def momentum_rate(alpha: float, beta: float, eigenvalues: Sequence[float] | np.ndarray) -> float:
    """Worst-case per-step contraction of momentum: the largest root modulus over the eigenvalues."""
    return float(np.max(np.abs(momentum_roots(alpha, beta, eigenvalues))))


def momentum_rate_grid(alphas: np.ndarray, betas: np.ndarray, lmin: float, lmax: float) -> np.ndarray:
    """Rate over a (beta, alpha) grid on a quadratic whose spectrum is [lmin, lmax] (Goh's figure).
    The worst case over the interval sits at an end point or where the roots turn complex, and
    the modulus there is sqrt(beta), so the two end points and sqrt(beta) bound it exactly."""
    a = np.asarray(alphas, np.float64)[None, :, None]
    b = np.asarray(betas, np.float64)[:, None, None]
    lam = np.array([lmin, lmax], np.float64)[None, None, :]
    c = 1.0 + b - a * lam
    disc = np.sqrt((c**2 - 4.0 * b).astype(np.complex128))
    ends = np.maximum(np.abs((c + disc) / 2.0), np.abs((c - disc) / 2.0)).max(axis=-1)
    return np.maximum(ends, np.sqrt(b[..., 0]))


# ------------------------------------------------------------------------------ the problem


@dataclasses.dataclass(frozen=True)
class Quadratic:
    """f(w) = 1/2 w^T A w with A = Q diag(eigenvalues) Q^T (minimum 0 at w = 0)."""

    A: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray  # columns, in the order of `eigenvalues`

    @property
    def kappa(self) -> float:
        return float(self.eigenvalues.max() / self.eigenvalues.min())

    @property
    def lmin(self) -> float:
        return float(self.eigenvalues.min())

    @property
    def lmax(self) -> float:
        return float(self.eigenvalues.max())

    def value(self, w: jax.Array) -> jax.Array:
        return 0.5 * w @ (jnp.asarray(self.A, w.dtype) @ w)


def make_quadratic(kappa: float, dim: int = 20, lmin: float = 1.0, seed: int = 0, rotate: bool = True) -> Quadratic:
    """A quadratic with eigenvalues log-spaced from lmin to kappa * lmin (both ends included),
    in a random orthonormal basis (or the coordinate axes if not `rotate`)."""
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    if not kappa >= 1:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    lam = lmin * np.logspace(0.0, math.log10(kappa), dim)
    if rotate:
        q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))
    else:
        q = np.eye(dim)
    a = (q * lam) @ q.T
    return Quadratic(A=0.5 * (a + a.T), eigenvalues=lam, eigenvectors=q)


def start_point(quad: Quadratic, seed: int = 1) -> np.ndarray:
    """A unit-norm start with equal weight on every eigenvector (so every mode is excited)."""
    signs = np.where(np.random.default_rng(seed).random(len(quad.eigenvalues)) < 0.5, -1.0, 1.0)
    w = quad.eigenvectors @ signs
    return w / np.linalg.norm(w)


# --------------------------------------------------------------------------- measurement


def run_on_quadratic(quad: Quadratic, tx: optax.GradientTransformation, w0: np.ndarray, steps: int) -> np.ndarray:
    """Iterates w_0..w_steps (steps + 1, dim) of `tx` on `quad`, in float64, one `lax.scan`."""
    with float64():
        A = jnp.asarray(quad.A, jnp.float64)

        @jax.jit
        def go(w):
            def body(carry, _):
                w, s = carry
                g = A @ w
                u, s = tx.update(g, s, w)
                w = optax.apply_updates(w, u)
                return (w, s), w

            _, ws = jax.lax.scan(body, (w, tx.init(w)), None, length=steps)
            return jnp.concatenate([w[None], ws])

        return np.asarray(go(jnp.asarray(w0, jnp.float64)), np.float64)


def measured_rate(errors: np.ndarray, start_fraction: float = 0.5, floor: float = 1e-280, ceil: float = 1e280) -> float:
    """exp(slope) of a least-squares line through log(errors[k]) for k in the last part
    (from `start_fraction` of the way) of the longest prefix where the error is finite and
    within [floor, ceil] (so underflow or overflow never enters the fit)."""
    e = np.asarray(errors, np.float64)
    ok = np.isfinite(e) & (e > floor) & (e < ceil)
    end = int(np.argmin(ok)) if not ok.all() else len(e)
    if end < 4:
        raise ValueError(f"too few usable errors to fit a rate ({end}); start closer or run fewer steps")
    k0 = min(int(start_fraction * end), end - 3)
    k = np.arange(k0, end)
    slope = np.polyfit(k, np.log(e[k0:end]), 1)[0]
    return float(math.exp(slope))


def steps_for(rate: float, decades: float = 150.0, cap: int = 400_000) -> int:
    """Steps for an error falling at `rate` per step to drop by `decades` powers of ten."""
    if not 0 < rate < 1:
        return 1000
    return int(min(cap, math.ceil(decades * math.log(10.0) / -math.log(rate))))


def sign_changes(x: np.ndarray) -> int:
    """How often a sequence changes sign (zeros skipped): a count of oscillations."""
    s = np.sign(np.asarray(x))
    s = s[s != 0]
    return int(np.sum(s[1:] != s[:-1]))
