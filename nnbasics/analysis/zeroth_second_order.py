"""Zeroth-, first- and second-order optimization on the same problem (the lecture's three kinds
of knowledge about J: its values, its gradient, its Hessian).

- `random_search`: black-box, values only: a (1+1) evolution strategy (try w + sigma z, keep it if
  it is better) with Rechenberg's 1/5 success rule adapting sigma.
- `gradient_descent`: first order, w <- w - eta grad J(w).
- `newton`: second order, w <- w - H(w)^-1 grad J(w); exact in one step on a quadratic.

Each returns the value J(w_k) after every iteration (k = 0..steps) from one `lax.scan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Objective = Callable[[jax.Array], jax.Array]


def random_search(
    f: Objective, w0: jax.Array, noise: jax.Array, sigma0: float = 0.1,
    up: float = math.exp(1.0 / 3.0), down: float = math.exp(-1.0 / 12.0),
) -> jax.Array:
    """(1+1)-ES for len(noise) iterations, one function evaluation each: try w + sigma z_k
    (z_k = noise[k], standard normal, e.g. `np.random.default_rng(seed).standard_normal((steps, n))`:
    drawn on the host, as XLA compiles a large threefry draw slowly); sigma grows by `up` after a
    success and shrinks by `down` after a failure (up * down^4 = 1: balance at 1/5 success)."""
    w0 = jnp.asarray(w0)
    noise = jnp.asarray(noise, w0.dtype)

    def body(carry, z):
        w, fw, sigma = carry
        cand = w + sigma * z
        fc = f(cand)
        better = fc < fw
        w = jnp.where(better, cand, w)
        fw = jnp.where(better, fc, fw)
        sigma = sigma * jnp.where(better, up, down)
        return (w, fw, sigma), fw

    f0 = f(w0)
    _, fs = jax.lax.scan(body, (w0, f0, jnp.asarray(sigma0, w0.dtype)), noise)
    return jnp.concatenate([f0[None], fs])


def gradient_descent(f: Objective, w0: jax.Array, learning_rate: float, steps: int) -> jax.Array:
    """Plain gradient descent with a fixed step; one gradient per iteration."""
    grad = jax.grad(f)

    def body(w, _):
        w = w - learning_rate * grad(w)
        return w, f(w)

    w0 = jnp.asarray(w0)
    _, fs = jax.lax.scan(body, w0, None, length=steps)
    return jnp.concatenate([f(w0)[None], fs])


def newton(f: Objective, w0: jax.Array, steps: int) -> jax.Array:
    """Newton's method: solve H(w) d = grad J(w), step w <- w - d; one Hessian per iteration."""
    grad, hess = jax.grad(f), jax.hessian(f)

    def body(w, _):
        w = w - jnp.linalg.solve(hess(w), grad(w))
        return w, f(w)

    w0 = jnp.asarray(w0)
    _, fs = jax.lax.scan(body, w0, None, length=steps)
    return jnp.concatenate([f(w0)[None], fs])


def iterations_to_tolerance(values: np.ndarray, f_min: float, rel_tol: float) -> float:
    """First k with J(w_k) - J* <= rel_tol (J(w_0) - J*); inf if never."""
    v = np.asarray(values, np.float64)
    gap = v - f_min
    hit = np.flatnonzero(gap <= rel_tol * gap[0])
    return float(hit[0]) if hit.size else math.inf
