"""2-D test functions for optimizers, and optimizer paths on them (Ruder's animations, measured).

- `valley`: Rosenbrock's banana, (1 - x)^2 + 100 (y - x^2)^2: a long, narrow, curved valley
  (minimum 0 at (1, 1)) where gradient descent zig-zags across and crawls along.
- `beale`: Beale's function, flat plateaus and steep walls (minimum 0 at (3, 0.5)).
- `saddle`: x^2 + y^4/4 - y^2/2, a saddle point at the origin between two minima -1/4 at (0, +-1);
  a start just off the ridge shows how fast each method escapes (the gradient there is tiny).

`optimizer_paths` runs optax optimizers from start points for many learning rates at once: every
optimizer of `nnbasics.engine.optim` multiplies its update by the learning rate, so each chain is built
once at learning rate 1 and the update is scaled per member (vmapped `lax.scan`s, one program).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnbasics.registry import Registry


@dataclasses.dataclass(frozen=True)
class TestFunction:
    """A 2-D objective with a start point, its minima and a window to draw it in."""

    __test__ = False  # not a pytest test class

    name: str
    fn: Callable[[jax.Array], jax.Array]  # (2,) -> scalar
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    f_min: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    description: str = ""

    def __call__(self, w: jax.Array) -> jax.Array:
        return self.fn(w)

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, f) on an n x n grid over the drawing window (for contour plots)."""
        xs = np.linspace(*self.xlim, n)
        ys = np.linspace(*self.ylim, n)
        gx, gy = np.meshgrid(xs, ys)
        pts = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], -1), jnp.float32)
        z = np.asarray(jax.jit(jax.vmap(self.fn))(pts)).reshape(gx.shape)
        return gx, gy, z


def rosenbrock(w: jax.Array, a: float = 1.0, b: float = 100.0) -> jax.Array:
    """(a - x)^2 + b (y - x^2)^2."""
    x, y = w[0], w[1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def beale(w: jax.Array) -> jax.Array:
    """(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2."""
    x, y = w[0], w[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(w: jax.Array) -> jax.Array:
    """x^2 + y^4/4 - y^2/2: a saddle at the origin, minima -1/4 at (0, +-1)."""
    x, y = w[0], w[1]
    return x**2 + 0.25 * y**4 - 0.5 * y**2


TEST_FUNCTIONS: Registry[TestFunction] = Registry("test function")
TEST_FUNCTIONS.register("valley", TestFunction(
    "valley", rosenbrock, (-1.5, 2.0), ((1.0, 1.0),), 0.0, (-2.0, 2.0), (-1.0, 3.0),
    "Rosenbrock's narrow curved valley",
))
TEST_FUNCTIONS.register("beale", TestFunction(
    "beale", beale, (1.0, 1.5), ((3.0, 0.5),), 0.0, (-4.5, 4.5), (-4.5, 4.5),
    "Beale's function: plateaus and steep walls",
))
TEST_FUNCTIONS.register("saddle", TestFunction(
    "saddle", saddle, (1.0, 1e-3), ((0.0, 1.0), (0.0, -1.0)), -0.25, (-1.5, 1.5), (-1.5, 1.5),
    "a saddle point between two minima",
))


def get_test_function(name: str) -> TestFunction:
    return TEST_FUNCTIONS.get(name)


def optimizer_paths(
    fn: Callable[[jax.Array], jax.Array],
    optimizers: Mapping[str, optax.GradientTransformation],
    starts: np.ndarray | Sequence[float],
    learning_rates: np.ndarray | Sequence[float],
    steps: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each optimizer (built with learning rate 1): paths (M, steps + 1, 2) and values
    (M, steps + 1) of its M members, member m starting at starts[m] with its update scaled by
    learning_rates[m] (a single start (2,) is shared). All optimizers compile into one program."""
    lrs = jnp.asarray(np.atleast_1d(np.asarray(learning_rates, np.float32)))
    w0s = jnp.asarray(np.broadcast_to(np.asarray(starts, np.float32), (lrs.shape[0], 2)))
    value_and_grad = jax.value_and_grad(fn)

    def member(tx, w0, lr):
        def body(carry, _):
            w, s = carry
            _, g = value_and_grad(w)
            u, s = tx.update(g, s, w)
            w = w + lr * u
            return (w, s), (w, fn(w))

        _, (ws, vs) = jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)
        return jnp.concatenate([w0[None], ws]), jnp.concatenate([fn(w0)[None], vs])

    @jax.jit
    def run_all(w0s, lrs):
        return {name: jax.vmap(lambda w0, lr, tx=tx: member(tx, w0, lr))(w0s, lrs) for name, tx in optimizers.items()}

    out = jax.device_get(run_all(w0s, lrs))
    return {k: (np.asarray(p, np.float64), np.asarray(v, np.float64)) for k, (p, v) in out.items()}


def steps_to_converge(values: np.ndarray, f_min: float, tol: float) -> float:
    """The first step from which f - f_min stays <= tol to the end (inf if it never settles)."""
    v = np.asarray(values, np.float64)
    bad = ~(np.isfinite(v) & (v - f_min <= tol))
    if bad[-1]:
        return float("inf")
    idx = np.flatnonzero(bad)
    return float(idx[-1] + 1) if idx.size else 0.0


def best_member(values: np.ndarray, f_min: float, tol: float) -> int:
    """The member that settles within `tol` of `f_min` first; if none does, the one with the
    lowest final value (non-finite values count as +inf)."""
    v = np.asarray(values, np.float64)
    steps = np.array([steps_to_converge(row, f_min, tol) for row in v])
    if np.isfinite(steps).any():
        return int(np.argmin(steps))
    final = np.where(np.isfinite(v[:, -1]), v[:, -1], np.inf)
    return int(np.argmin(final))


def steps_to_tolerance(values: np.ndarray, f_min: float, tol: float) -> float:
    """First step at which f - f_min <= tol (inf if never)."""
    v = np.asarray(values, np.float64)
    hit = np.flatnonzero(np.isfinite(v) & (v - f_min <= tol))
    return float(hit[0]) if hit.size else float("inf")
