"""Translation equivariance, shift invariance and stability to small deformations, measured.

A convolution commutes with translation, f(translate(x)) = translate(f(x)) (exactly for circular
shifts with circular padding); pooling turns that into approximate invariance,
f(translate(x)) ~ f(x); and conv nets with pooling are stable to small smooth deformations
(diffeomorphisms), the lecture's "why pooling". Every function takes any `f` from a batch
(N, *spatial, C) to an array, so it works for any model (`lambda x: model.apply(v, x, train=False)`).
The measurements compare f's outputs on the host with NumPy (no compilation per array shape);
`translate` and `warp` work on NumPy and JAX arrays (inside `jit` too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Fn = Callable[[jax.Array], jax.Array]


def translate(x: jax.Array, shift: Sequence[int], circular: bool = True) -> jax.Array:
    """Shift a batch (N, *spatial, C) by `shift` pixels per spatial axis (positive = down/right).

    Circular shifts wrap around; otherwise the pixels shifted in are zeros."""
    xp = np if isinstance(x, np.ndarray) else jnp
    axes = tuple(range(1, 1 + len(shift)))
    if circular:
        return xp.roll(x, tuple(int(s) for s in shift), axis=axes)
    out = x
    for ax, s in zip(axes, shift):
        s = int(s)
        if s == 0:
            continue
        n = x.shape[ax]
        if abs(s) >= n:
            out = xp.zeros_like(out)
            continue
        pad = [(0, 0)] * x.ndim
        pad[ax] = (s, 0) if s > 0 else (0, -s)
        idx = [slice(None)] * x.ndim
        idx[ax] = slice(0, n) if s > 0 else slice(-s, n - s)
        out = xp.pad(out, pad)[tuple(idx)]
    return out


def relative_difference(a: jax.Array, b: jax.Array) -> float:
    """||a - b|| / ||b|| (Frobenius norms over everything, in float64 on the host)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-12))


def _crop(y: jax.Array, nd: int, border: int) -> jax.Array:
    if border <= 0:
        return y
    idx = (slice(None), *([slice(border, -border)] * nd))
    return y[idx]


def equivariance_error(
    f: Fn, x: jax.Array, shift: Sequence[int], stride: int = 1, circular: bool = True, border: int = 0
) -> float:
    """||f(translate(x, s)) - translate(f(x), s / stride)|| / ||f(x)||: 0 for an equivariant f.

    `stride` is the network's total downsampling (the shift must be a multiple of it); `border`
    crops that many output pixels per side before comparing (for zero shifts / zero padding)."""
    if any(int(s) % stride for s in shift):
        raise ValueError(f"shift {tuple(shift)} must be a multiple of the stride {stride}")
    nd = len(shift)
    y = np.asarray(f(x))
    expected = translate(y, [int(s) // stride for s in shift], circular)
    got = np.asarray(f(translate(x, shift, circular)))
    return relative_difference(_crop(got, nd, border), _crop(expected, nd, border))


def invariance_error(f: Fn, x: jax.Array, shift: Sequence[int], circular: bool = True) -> float:
    """||f(translate(x, s)) - f(x)|| / ||f(x)||: 0 for a shift-invariant f."""
    return relative_difference(f(translate(x, shift, circular)), f(x))


def shift_sensitivity(f: Fn, x: jax.Array, shifts: Sequence[Sequence[int]], circular: bool = False) -> float:
    """The mean relative change of f's output over `shifts` (the lecture's stability to small shifts)."""
    y = np.asarray(f(x))
    return float(np.mean([relative_difference(f(translate(x, s, circular)), y) for s in shifts]))


# --------------------------------------------------------------------------- small deformations


def smooth_displacement(
    rng: np.random.Generator | int, shape: Sequence[int], max_pixels: float, cycles: float = 1.5, modes: int = 6
) -> np.ndarray:
    """A random smooth displacement field (H, W, 2) whose largest displacement is `max_pixels`:
    a sum of `modes` random sinusoids with at most `cycles` periods across the image, so the warp
    it defines is a small diffeomorphism (an elastic deformation) for small `max_pixels`.
    `rng` is a NumPy generator or a seed (NumPy: no compilation per image size)."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    h, w = int(shape[0]), int(shape[1])
    freqs = rng.uniform(-cycles, cycles, (2, modes, 2))
    phases = rng.uniform(0, 2 * np.pi, (2, modes))
    amps = rng.standard_normal((2, modes))
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    arg = 2 * np.pi * (freqs[..., 0, None, None] * yy + freqs[..., 1, None, None] * xx) + phases[..., None, None]
    field = np.sum(amps[..., None, None] * np.sin(arg), axis=1)  # (2, H, W)
    field *= max_pixels / np.max(np.sqrt(np.sum(field**2, axis=0)))
    return np.moveaxis(field, 0, -1).astype(np.float32)


@jax.jit
def warp(x: jax.Array, displacement: jax.Array) -> jax.Array:
    """Resample a batch (N, H, W, C) at positions p + displacement(p): bilinear interpolation,
    positions outside the image clamped to the edge."""
    h, w = x.shape[1:3]
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    py = jnp.clip(yy + displacement[..., 0], 0, h - 1)
    px = jnp.clip(xx + displacement[..., 1], 0, w - 1)
    y0 = jnp.clip(jnp.floor(py).astype(jnp.int32), 0, h - 2) if h > 1 else jnp.zeros_like(py, jnp.int32)
    x0 = jnp.clip(jnp.floor(px).astype(jnp.int32), 0, w - 2) if w > 1 else jnp.zeros_like(px, jnp.int32)
    y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
    wy, wx = (py - y0)[..., None], (px - x0)[..., None]
    top = x[:, y0, x0] * (1 - wx) + x[:, y0, x1] * wx
    bottom = x[:, y1, x0] * (1 - wx) + x[:, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def deformation_stability(f: Fn, x: jax.Array, x_deformed: jax.Array) -> dict[str, float]:
    """How much a deformation moves pixels and features, each relative to the typical distance
    between *different* images of the batch (so a ratio < 1 means the features barely see the
    deformation compared with a change of image):

        pixel_change   = mean_i ||x'_i - x_i|| / mean_{i != j} ||x_i - x_j||
        feature_change = the same with f(x) in place of x
        ratio          = feature_change / pixel_change"""

    def rel(a, b):
        a = np.asarray(a, np.float64).reshape(a.shape[0], -1)
        b = np.asarray(b, np.float64).reshape(b.shape[0], -1)
        change = np.mean(np.linalg.norm(a - b, axis=1))
        sq = np.sum(b * b, axis=1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * b @ b.T, 0.0))
        n = b.shape[0]
        between = np.sum(d) / (n * (n - 1))
        return float(change / between)

    if x.shape[0] < 2:
        raise ValueError("deformation_stability needs a batch of at least 2 images")
    pixel = rel(x_deformed, x)
    feature = rel(f(x_deformed), f(x))
    return {"pixel_change": pixel, "feature_change": feature, "ratio": feature / pixel}
