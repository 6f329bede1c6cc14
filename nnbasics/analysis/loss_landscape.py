"""Loss landscapes along filter-normalized random directions (Li, Xu, Taylor, Studer & Goldstein 2018).

A 2-D slice of the loss around trained weights w: f(a, b) = L(w + a d1 + b d2), where d1, d2 are
Gaussian directions rescaled filter by filter, d[filter] <- d[filter] / ||d[filter]|| * ||w[filter]||,
so that a step of size 1 changes every filter by its own norm (which removes the scale invariance
of ReLU + BatchNorm nets from the picture). A filter is one output channel of a convolution or one
output unit of a dense layer; biases and normalization parameters get a zero direction (Li et al.'s
"biasbn" option).

The whole grid is one compiled program: `lax.map` over the grid points (optionally `batch_size`
points vmapped at a time), not a Python loop. Convexity of the 2-D surface is measured with its
finite-difference Hessian at every interior grid point (`nonconvex_fraction`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _path_names(path: tuple[Any, ...]) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def default_stacked_axes(path: tuple[Any, ...]) -> int:
    """Leading axes that stack several layers (the `nn.scan` blocks of `nnbasics.models.resnet`,
    whose scope names end in "_blocks"); each stacked layer has its own filters."""
    return sum(name.endswith("_blocks") for name in _path_names(path))


def filter_normalize(direction: Any, params: Any, stacked_axes: Callable[[tuple[Any, ...]], int] = default_stacked_axes) -> Any:
    """Rescale every filter of `direction` to the norm of the same filter of `params`; zero the rest.

    Leaves named "kernel" hold filters along the last axis (output channels); their norms are
    taken over the other axes, apart from leading stacked-layer axes. Other leaves (biases,
    scales of normalizers) are set to zero."""

    def one(path, d, w):
        if _path_names(path)[-1] != "kernel" or w.ndim < 2:
            return jnp.zeros_like(d)
        s = stacked_axes(path)
        axes = tuple(range(s, w.ndim - 1))
        wn = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
        dn = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        return d * wn / (dn + 1e-10)

    return jax.tree_util.tree_map_with_path(one, direction, params)


@functools.partial(jax.jit, static_argnums=2)
def random_direction(key: jax.Array, params: Any, stacked_axes: Callable[[tuple[Any, ...]], int] = default_stacked_axes) -> Any:
    """A Gaussian direction in parameter space, filter-normalized to `params` (one compiled program)."""
    leaves, treedef = jax.tree.flatten(params)
    sizes = [int(np.prod(w.shape)) for w in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)  # one draw for all leaves: one small program
    parts = jnp.split(flat, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [flat]
    d = jax.tree.unflatten(treedef, [p.reshape(w.shape).astype(w.dtype) for p, w in zip(parts, leaves)])
    return filter_normalize(d, params, stacked_axes)


def loss_surface(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    d1: Any,
    d2: Any,
    alphas: np.ndarray,
    betas: np.ndarray,
    batch_size: int | None = None,
) -> np.ndarray:
    """loss_fn(params + a d1 + b d2) on the grid alphas x betas, shape (len(alphas), len(betas)), followed
    by the shape of loss_fn's value when it is not a scalar (e.g. one loss per member of stacked params:
    several nets' surfaces in one program, see `stacked_loss`).

    One jit-compiled `lax.map` over the points; `batch_size` points at a time are vmapped."""
    aa, bb = np.meshgrid(np.asarray(alphas, np.float32), np.asarray(betas, np.float32), indexing="ij")
    points = jnp.stack([aa.ravel(), bb.ravel()], axis=1)

    @jax.jit
    def grid(params, d1, d2, points):
        def at(ab):
            p = jax.tree.map(lambda w, u, v: w + ab[0] * u + ab[1] * v, params, d1, d2)
            return loss_fn(p)

        return jax.lax.map(at, points, batch_size=batch_size)

    out = np.asarray(grid(params, d1, d2, points))
    return out.reshape(*aa.shape, *out.shape[1:])


def stacked_loss(loss_fn: Callable[..., jax.Array], *args: Any) -> Callable[[Any], jax.Array]:
    """A loss of stacked parameters (a leading member axis on every leaf) with one value per member:
    `loss_fn(params_i, *args_i)` vmapped over the members. With stacked directions, `loss_surface`
    then evaluates every member's surface in one compiled program (one compile, and the members'
    small operations batched together), shape (len(alphas), len(betas), members)."""
    batched = jax.vmap(loss_fn)
    return lambda params: batched(params, *args)


def surface_hessians(surface: np.ndarray, step_a: float, step_b: float) -> np.ndarray:
    """Central finite-difference 2x2 Hessians of a gridded surface at its interior points,
    shape (n_a - 2, n_b - 2, 2, 2)."""
    f = np.asarray(surface, np.float64)
    faa = (f[2:, 1:-1] - 2 * f[1:-1, 1:-1] + f[:-2, 1:-1]) / step_a**2
    fbb = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / step_b**2
    fab = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * step_a * step_b)
    return np.stack([np.stack([faa, fab], -1), np.stack([fab, fbb], -1)], -2)


def nonconvex_fraction(surface: np.ndarray, alphas: np.ndarray, betas: np.ndarray, radius: float | None = None,
                       rel_tol: float = 0.0) -> float:
    """Fraction of interior grid points (within `radius` of the centre, if given) where the 2-D
    surface is not locally convex: the smaller Hessian eigenvalue is below -rel_tol * |larger|."""
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    h = surface_hessians(surface, alphas[1] - alphas[0], betas[1] - betas[0])
    eig = np.linalg.eigvalsh(h)  # ascending
    lo, hi = eig[..., 0], eig[..., 1]
    bad = lo < -rel_tol * np.abs(hi)
    aa, bb = np.meshgrid(alphas[1:-1], betas[1:-1], indexing="ij")
    mask = np.ones_like(bad) if radius is None else (np.hypot(aa, bb) <= radius + 1e-9)
    return float(bad[mask].mean())


def eigen_ratio_map(surface: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """|lambda_min / lambda_max| of the surface's 2x2 Hessian at the interior points (Li et al.'s
    convexity map, here of the 2-D slice): near 0 where convex, large where strongly non-convex;
    points with a positive smaller eigenvalue are convex and get 0."""
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    eig = np.linalg.eigvalsh(surface_hessians(surface, alphas[1] - alphas[0], betas[1] - betas[0]))
    lo, hi = eig[..., 0], eig[..., 1]
    ratio = np.abs(lo) / np.maximum(np.abs(hi), 1e-12)
    return np.where(lo >= 0, 0.0, ratio)


def local_minima(surface: np.ndarray) -> int:
    """Number of interior grid points lower than all eight neighbours (a chaotic surface has many)."""
    z = np.asarray(surface, np.float64)
    inner = z[1:-1, 1:-1]
    n0, n1 = z.shape
    neighbours = [z[1 + i:n0 - 1 + i, 1 + j:n1 - 1 + j] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    return int(np.sum(inner < np.min(neighbours, axis=0)))
