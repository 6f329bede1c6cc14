"""Pooling, channels last: max and mean pooling over space, and pooling across channels (maxout).

Spatial pooling summarizes a neighbourhood, z_k = max_{j in N(k)} y_j or (1/|N|) sum_{j in N(k)} y_j,
which makes features stable to small shifts. Pooling across feature channels (the max over a
group of filters, e.g. one edge filter at several orientations) gives invariance to whatever
varies across the group. Spatial pools are registered by name in POOLING.

    y = max_pool(x, 2)             # (N, H, W, C) -> (N, H/2, W/2, C)
    y = max_pool_ceil(x, 3, 2)     # PyTorch's MaxPool2d(3, 2, ceil_mode=True): 25 -> 12, 24 -> 12
    z = channel_max_pool(y, 8)     # (N, H, W, 8G) -> (N, H, W, G)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from nnbasics.nn.conv import PaddingLike, explicit_padding
from nnbasics.registry import Registry

Pool = Callable[..., jax.Array]
POOLING: Registry[Pool] = Registry("pooling")


def _window(v: int | Sequence[int], nd: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"{what} must be an int or {nd} ints, got {v}")
    return v


def _reduce(x, init, op, window, strides, padding):
    nd = x.ndim - 2
    if nd < 1:
        raise ValueError(f"pooling needs (N, *spatial, C) inputs, got shape {x.shape}")
    window = _window(window, nd, "window")
    strides = window if strides is None else _window(strides, nd, "strides")
    pads = explicit_padding(padding, x.shape[1:-1], window, strides, (1,) * nd)
    return (
        lax.reduce_window(x, init, op, (1, *window, 1), (1, *strides, 1), [(0, 0), *pads, (0, 0)]),
        window,
        strides,
        pads,
    )


@POOLING.register("max")
def max_pool(
    x: jax.Array, window: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Max over each window (stride defaults to the window: non-overlapping); padding counts as -inf."""
    return _reduce(x, -jnp.inf, lax.max, window, strides, padding)[0]


def ceil_mode_size(size: int, window: int, stride: int, padding: int = 0) -> int:
    """PyTorch's pooled size with `ceil_mode=True`: ceil((size + 2 padding - window) / stride) + 1, less
    one if the last window would start in the right padding (it must start inside the input or the
    left padding)."""
    out = -(-(size + 2 * padding - window) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool_ceil(
    x: jax.Array, window: int | Sequence[int] = 3, strides: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
) -> jax.Array:
    """Max pooling with PyTorch's `MaxPool2d(window, strides, padding, ceil_mode=True)` semantics:
    `padding` pixels of -inf on both sides, then just enough -inf on the high side that the
    output size is `ceil_mode_size` (a partial last window is kept when it starts inside the input).

    Unlike 'SAME' padding this never pads the low side (SAME shifts every window by one for odd
    sizes: 25 -> 13 windows starting at -1, where ceil mode gives 12 windows starting at 0)."""
    nd = x.ndim - 2
    if nd < 1:
        raise ValueError(f"pooling needs (N, *spatial, C) inputs, got shape {x.shape}")
    window = _window(window, nd, "window")
    strides = window if strides is None else _window(strides, nd, "strides")
    padding = _window(padding, nd, "padding")
    pads = []
    for size, k, s, p in zip(x.shape[1:-1], window, strides, padding):
        if 2 * p > k:
            raise ValueError(f"padding {p} must be at most half the window {k} (as in PyTorch)")
        out = ceil_mode_size(size, k, s, p)
        if out < 1:
            raise ValueError(f"input size {size} is too small for a {k}-window pool with stride {s} (shape {x.shape})")
        pads.append((p, (out - 1) * s + k - size - p))  # a negative high pad crops pixels no window reaches
    neg_inf = jnp.array(-jnp.inf, x.dtype)
    xp = lax.pad(x, neg_inf, [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    return lax.reduce_window(xp, neg_inf, lax.max, (1, *window, 1), (1, *strides, 1), "VALID")


@POOLING.register("mean")
def mean_pool(
    x: jax.Array, window: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID", count_include_pad: bool = False,
) -> jax.Array:
    """Mean over each window; with padding, divides by the number of real pixels in the window
    unless `count_include_pad` (then padding counts as zeros, as flax's avg_pool default does)."""
    total, window, strides, pads = _reduce(x, 0.0, lax.add, window, strides, padding)
    if count_include_pad or all(p == (0, 0) for p in pads):
        return total / float(math.prod(window))
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    counts = lax.reduce_window(ones, 0.0, lax.add, (1, *window, 1), (1, *strides, 1), [(0, 0), *pads, (0, 0)])
    return total / counts


def global_pool(x: jax.Array, kind: str = "mean") -> jax.Array:
    """(N, *spatial, C) -> (N, C): the mean (or max) over every spatial position."""
    axes = tuple(range(1, x.ndim - 1))
    if kind == "mean":
        return jnp.mean(x, axis=axes)
    if kind == "max":
        return jnp.max(x, axis=axes)
    raise ValueError(f"global pool kind must be 'mean' or 'max', got {kind!r}")


def channel_max_pool(x: jax.Array, group: int) -> jax.Array:
    """Max over consecutive groups of `group` channels: (..., G * group) -> (..., G).

    This is maxout (Goodfellow et al. 2013) and the lecture's pooling across feature channels."""
    c = x.shape[-1]
    if group <= 0 or c % group:
        raise ValueError(f"channel count {c} must be a positive multiple of the group size {group}")
    return jnp.max(x.reshape(*x.shape[:-1], c // group, group), axis=-1)


def channel_mean_pool(x: jax.Array, group: int) -> jax.Array:
    """Mean over consecutive groups of `group` channels: (..., G * group) -> (..., G)."""
    c = x.shape[-1]
    if group <= 0 or c % group:
        raise ValueError(f"channel count {c} must be a positive multiple of the group size {group}")
    return jnp.mean(x.reshape(*x.shape[:-1], c // group, group), axis=-1)


maxout = channel_max_pool


def get_pooling(name: str) -> Pool:
    """The spatial pooling function registered as `name` ('max' or 'mean')."""
    return POOLING.get(name)
