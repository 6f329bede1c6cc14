"""Convolution as a matrix: the (doubly block) Toeplitz matrix of a convolution layer.

A convolution is a linear map, so it is a matrix `M` with `M @ x.ravel() == conv(x).ravel()`.
In 1-D with one channel and stride 1, `M` is Toeplitz (constant along every diagonal); in 2-D
it is block Toeplitz with Toeplitz blocks. Weight sharing is what makes the diagonals constant;
locality is what makes the matrix banded. Layouts follow `nnbasics.nn.conv`: x is
(*spatial, Cin) (one example, channels last), the kernel is (*k, Cin, Cout), and the convolution
is `lax.conv_general_dilated`'s cross-correlation (no kernel flip).

    M = conv_matrix(kernel, in_spatial=(8, 8), strides=2, padding="SAME")
    y = (M @ x.reshape(-1)).reshape(4, 4, cout)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from nnbasics.nn.conv import PaddingLike, explicit_padding


def _tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise ValueError(f"{what} must be an int or a sequence of {n} ints, got {v}")
    return v


def output_spatial(
    in_spatial: Sequence[int], kernel_spatial: Sequence[int], strides: Sequence[int],
    pads: Sequence[tuple[int, int]], dilation: Sequence[int],
) -> tuple[int, ...]:
    """Spatial output size of a convolution: floor((n + lo + hi - d(k-1) - 1) / s) + 1 per axis."""
    out = tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(in_spatial, kernel_spatial, strides, pads, dilation)
    )
    if any(o <= 0 for o in out):
        raise ValueError(f"convolution output would be empty: input {tuple(in_spatial)}, kernel {tuple(kernel_spatial)}")
    return out


def conv_matrix(
    kernel: np.ndarray,
    in_spatial: Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """The matrix (prod(out) * Cout, prod(in) * Cin) of a convolution with `kernel` (*k, Cin, Cout).

    Row index = C-order flattening of (*out_spatial, Cout); column index = of (*in_spatial, Cin).
    Zero padding shows up as kernel taps that fall outside the input and are dropped."""
    kernel = np.asarray(kernel, np.float64)
    nd = kernel.ndim - 2
    if nd < 1 or len(in_spatial) != nd:
        raise ValueError(f"kernel {kernel.shape} needs {kernel.ndim - 2} spatial input sizes, got {tuple(in_spatial)}")
    in_spatial = tuple(int(n) for n in in_spatial)
    ksize = kernel.shape[:nd]
    cin, cout = kernel.shape[-2:]
    strides = _tuple(strides, nd, "strides")
    dilation = _tuple(dilation, nd, "dilation")
    pads = explicit_padding(padding, in_spatial, ksize, strides, dilation)
    out_sp = output_spatial(in_spatial, ksize, strides, pads, dilation)
    m = np.zeros((*out_sp, cout, *in_spatial, cin))
    for o in itertools.product(*(range(n) for n in out_sp)):
        for k in itertools.product(*(range(n) for n in ksize)):
            i = tuple(oi * s - lo + ki * d for oi, s, (lo, _), ki, d in zip(o, strides, pads, k, dilation))
            if all(0 <= ii < n for ii, n in zip(i, in_spatial)):
                m[(*o, slice(None), *i, slice(None))] += kernel[k].T  # (Cout, Cin) block
    return m.reshape(int(np.prod(out_sp)) * cout, int(np.prod(in_spatial)) * cin)


def conv_by_matrix(
    x: np.ndarray,
    kernel: np.ndarray,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """The convolution of a batch x (N, *spatial, Cin) computed as one matrix product per example."""
    x = np.asarray(x, np.float64)
    nd = x.ndim - 2
    m = conv_matrix(kernel, x.shape[1:-1], strides, padding, dilation)
    strides_t = _tuple(strides, nd, "strides")
    dil_t = _tuple(dilation, nd, "dilation")
    pads = explicit_padding(padding, x.shape[1:-1], kernel.shape[:nd], strides_t, dil_t)
    out_sp = output_spatial(x.shape[1:-1], kernel.shape[:nd], strides_t, pads, dil_t)
    y = x.reshape(x.shape[0], -1) @ m.T
    return y.reshape(x.shape[0], *out_sp, kernel.shape[-1])


def toeplitz_matrix(kernel_1d: Sequence[float], n: int, padding: PaddingLike = "VALID") -> np.ndarray:
    """The Toeplitz matrix of a single-channel 1-D convolution of a length-`n` signal."""
    k = np.asarray(kernel_1d, np.float64).reshape(-1, 1, 1)
    return conv_matrix(k, (n,), 1, padding, 1)


def is_toeplitz(m: np.ndarray, atol: float = 0.0) -> bool:
    """True if every diagonal of `m` is constant (m[i, j] depends on j - i only)."""
    m = np.asarray(m)
    rows, cols = m.shape
    for off in range(-rows + 1, cols):
        d = np.diagonal(m, offset=off)
        if d.size and np.max(np.abs(d - d[0])) > atol:
            return False
    return True


def is_doubly_block_toeplitz(m: np.ndarray, block_shape: tuple[int, int], atol: float = 0.0) -> bool:
    """True if `m` is block Toeplitz with blocks of `block_shape` that are Toeplitz themselves
    (the matrix of a single-channel, stride-1 2-D convolution)."""
    m = np.asarray(m)
    br, bc = block_shape
    if m.shape[0] % br or m.shape[1] % bc:
        return False
    nr, nc = m.shape[0] // br, m.shape[1] // bc
    blocks = m.reshape(nr, br, nc, bc).transpose(0, 2, 1, 3)
    for off in range(-nr + 1, nc):
        diag = [blocks[i, i + off] for i in range(nr) if 0 <= i + off < nc]
        if any(np.max(np.abs(b - diag[0])) > atol for b in diag):
            return False
    return all(is_toeplitz(blocks[i, j], atol) for i in range(nr) for j in range(nc))


def band_fraction(m: np.ndarray) -> float:
    """Fraction of nonzero entries: how sparse locality makes the matrix (1.0 = dense layer)."""
    m = np.asarray(m)
    return float(np.count_nonzero(m) / m.size)


def compose_kernels(*kernels: np.ndarray) -> np.ndarray:
    """The single kernel of a stack of stride-1, undilated, bias-free convolutions (no nonlinearity).

    Kernels are (*k, Cin, Cout) (lax's cross-correlation); the result has spatial size
    sum(k) - (len - 1) per axis: two 3x3 layers are one 5x5 layer, three are one 7x7 layer.
    composite[c, i, o] = sum_{a + b = c, m} k1[a, i, m] k2[b, m, o]: a full convolution of the
    kernels, computed with one `lax.conv` per pair (traceable, so `jax.jacobian` can count the
    composite's degrees of freedom)."""
    import jax.numpy as jnp
    from jax import lax

    out = jnp.asarray(kernels[0])
    for k in kernels[1:]:
        k = jnp.asarray(k)
        nd = k.ndim - 2
        spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
        x = jnp.moveaxis(out, -2, 0)  # (Cin, *ka, M): the first kernel as a batch of Cin images
        flipped = jnp.flip(k, axis=tuple(range(nd)))  # cross-correlation with the flip = convolution
        pads = [(n - 1, n - 1) for n in k.shape[:nd]]
        y = lax.conv_general_dilated(x, flipped, (1,) * nd, pads, dimension_numbers=spec,
                                     precision=lax.Precision.HIGHEST)
        out = jnp.moveaxis(y, 0, -2)  # (*size, Cin, Cout)
    return out
