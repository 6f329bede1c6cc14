"""A locally connected layer: a convolution without weight sharing.

Every output position has its own filter over its own input window, so the layer is local like
a convolution but has (number of output positions) times its parameters; a fully connected
layer drops locality too. With all positions' filters equal it *is* the convolution; the
lecture's comparison of the three (parameter counts) is `param_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.nn.conv import PaddingLike, explicit_padding, extract_patches


def _tuple(v: int | Sequence[int], nd: int) -> tuple[int, ...]:
    return (int(v),) * nd if isinstance(v, int) else tuple(int(a) for a in v)


class LocallyConnected(nn.Module):
    """N-D locally connected layer, channels last: x (N, *spatial, Cin) -> (N, *out, features).

    Parameters: kernel (*out, prod(kernel_size) * Cin, features) and bias (*out, features), one
    filter per output position. Same arguments as `Conv` (no dilation groups)."""

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "VALID"
    kernel_dilation: int | Sequence[int] = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = tuple(self.kernel_size)
        nd = len(ks)
        if x.ndim != nd + 2:
            raise ValueError(f"kernel_size {ks} needs inputs of rank {nd + 2}, got {x.shape}")
        strides, dil = _tuple(self.strides, nd), _tuple(self.kernel_dilation, nd)
        pads = explicit_padding(self.padding, x.shape[1:-1], ks, strides, dil)
        patches = extract_patches(x, ks, strides, pads, dil)  # (N, *out, K * Cin)
        out_sp = patches.shape[1:-1]
        # fan_in = K * Cin for the initializer: put it on the second-to-last axis.
        kernel = self.param("kernel", self.kernel_init, (*out_sp, patches.shape[-1], self.features))
        y = jnp.einsum("n...k,...kf->n...f", patches, kernel)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (*out_sp, self.features))
        return y


def param_counts(
    in_spatial: Sequence[int], cin: int, features: int, kernel_size: Sequence[int], out_spatial: Sequence[int] | None = None,
    bias: bool = True,
) -> dict[str, int]:
    """Parameters of a fully connected, a locally connected and a convolutional layer mapping
    (*in_spatial, cin) to (*out_spatial, features) (out defaults to in: 'SAME', stride 1)."""
    out_spatial = tuple(in_spatial) if out_spatial is None else tuple(out_spatial)
    n_in = math.prod(in_spatial) * cin
    n_out_pos = math.prod(out_spatial)
    k = math.prod(kernel_size) * cin
    b = 1 if bias else 0
    return {
        "fully_connected": n_in * n_out_pos * features + b * n_out_pos * features,
        "locally_connected": n_out_pos * (k * features + b * features),
        "convolutional": k * features + b * features,
    }
