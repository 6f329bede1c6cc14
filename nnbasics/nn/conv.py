"""Convolution (NWC / NHWC) that picks a fast, correct implementation for the backend.

`conv_general` computes the same function as `lax.conv_general_dilated` with channels-last
layouts. On CPU, XLA's convolution (and above all its weight gradient) is slow for small
convolutions, so there a patch-matrix ("im2col") formulation is used: the kernel positions are
gathered with strided slices and the convolution becomes one matrix product whose gradients
are matrix products too. On GPU/TPU, `lax.conv_general_dilated` is used.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
IMPLEMENTATIONS = ("auto", "xla", "patches")


def _tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise ValueError(f"{what} must be an int or a sequence of {n} ints, got {v}")
    return v


def explicit_padding(
    padding: PaddingLike,
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """(low, high) padding per spatial dimension, resolving 'SAME'/'VALID'/ints like lax does."""
    n = len(in_shape)
    if isinstance(padding, str):
        p = padding.upper()
        if p == "VALID":
            return [(0, 0)] * n
        if p == "SAME":
            pads = []
            for size, k, s, d in zip(in_shape, kernel_shape, strides, dilation):
                eff = (k - 1) * d + 1
                out = -(-size // s)
                total = max((out - 1) * s + eff - size, 0)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"padding must be 'SAME', 'VALID', an int or (low, high) pairs, got {padding!r}")
    if isinstance(padding, int):
        return [(padding, padding)] * n
    padding = list(padding)
    if len(padding) != n:
        raise ValueError(f"padding needs one entry per spatial dimension ({n}), got {padding}")
    return [(p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding]


def _conv_xla(x, kernel, strides, pads, dilation, groups):
    nd = x.ndim - 2
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=spec,
        feature_group_count=groups,
    )


def extract_patches(
    x: jax.Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> jax.Array:
    """(N, *out_spatial, prod(kernel_shape) * C): every receptive-field window as one row."""
    nd = x.ndim - 2
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    in_sizes = x.shape[1:-1]
    outs = [
        (size - ((k - 1) * d + 1)) // s + 1
        for size, k, s, d in zip(in_sizes, kernel_shape, strides, dilation)
    ]
    if any(o <= 0 for o in outs):
        raise ValueError(f"convolution output would be empty: input {x.shape}, kernel {kernel_shape}")
    slices = []
    for offset in _ndindex(kernel_shape):
        start = [0] + [o * d for o, d in zip(offset, dilation)] + [0]
        limit = [x.shape[0]] + [
            st + s * (o - 1) + 1 for st, s, o in zip(start[1:-1], strides, outs)
        ] + [x.shape[-1]]
        slices.append(lax.slice(x, start, limit, [1, *strides, 1]))
    patches = jnp.stack(slices, axis=nd + 1)  # (N, *outs, K, C)
    return patches.reshape(*patches.shape[: nd + 1], -1)


def _ndindex(shape: Sequence[int]):
    if not shape:
        yield ()
        return
    for i in range(shape[0]):
        for rest in _ndindex(shape[1:]):
            yield (i, *rest)


def _conv_patches(x, kernel, strides, pads, dilation):
    nd = x.ndim - 2
    patches = extract_patches(x, kernel.shape[:nd], strides, pads, dilation)
    w = kernel.reshape(-1, kernel.shape[-1])
    return jnp.einsum("...k,kf->...f", patches, w)


def choose_implementation(nd: int, groups: int, backend: str | None = None) -> str:
    """The implementation 'auto' resolves to for this backend and convolution."""
    backend = backend or jax.default_backend()
    if backend != "cpu" or groups != 1:
        return "xla"
    return "patches" if nd == 1 else "xla"


def conv_general(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
    dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    impl: str = "auto",
) -> jax.Array:
    """N-D convolution, channels last: x (N, *spatial, Cin), kernel (*k, Cin/groups, Cout)."""
    nd = x.ndim - 2
    if nd < 1 or kernel.ndim != nd + 2:
        raise ValueError(f"conv needs x of rank >= 3 and kernel of rank x.ndim; got {x.shape}, {kernel.shape}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown conv impl {impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    strides = _tuple(strides, nd, "strides")
    dilation = _tuple(dilation, nd, "dilation")
    pads = explicit_padding(padding, x.shape[1:-1], kernel.shape[:nd], strides, dilation)
    if impl == "auto":
        impl = choose_implementation(nd, feature_group_count)
    if impl == "patches" and feature_group_count == 1:
        return _conv_patches(x, kernel, strides, pads, dilation)
    return _conv_xla(x, kernel, strides, pads, dilation, feature_group_count)


class Conv(nn.Module):
    """A linen convolution layer (same parameters as `flax.linen.Conv`) on `conv_general`."""

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = tuple(self.kernel_size)
        cin = x.shape[-1]
        if cin % self.feature_group_count:
            raise ValueError(f"input channels {cin} not divisible by feature_group_count {self.feature_group_count}")
        kernel = self.param("kernel", self.kernel_init, (*ks, cin // self.feature_group_count, self.features))
        if self.dtype is not None:
            x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = conv_general(
            x, kernel, self.strides, self.padding, self.kernel_dilation, self.feature_group_count, self.impl
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            y = y + bias.astype(y.dtype)
        return y
