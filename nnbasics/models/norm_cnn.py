"""The small CNN of the normalizers experiment (Wu & He 2018 at laptop scale): the normalizer is
chosen by name, so one architecture is trained with none / batch / layer / instance / group norm,
and optionally with Weight Standardization (Qiao et al. 2019) in every conv.

    stage s (widths[s] channels): [conv3x3 - norm - relu] x convs_per_stage, then 2x2 max pool
    (but after the last stage), global average pooling, linear classifier. On (N, W) or (N, W, C)
    signals (MNIST-1D) the same network with 1-D convolutions (3) and pooling (2).

`norm="selected"` builds the same network with `SelectedNorm` layers and convs whose weight
standardization is switched by a flag: the normalizer (an index into `KINDS`) and the flag are
then call arguments, `model.apply(v, x, train, kind=1, ws=False)`, and may be traced, so the
experiment trains every normalizer side by side in one vmapped program. The parameters are
the same in both forms (the selected form always has conv biases, which a normalizer cancels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.nn.conv import Conv, conv_general
from nnbasics.nn.normalization import KINDS, SelectedNorm, WSConv, make_norm, standardize_kernel

he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class SwitchableWSConv(nn.Module):
    """A 3x3 conv whose kernel is weight-standardized when the (possibly traced) flag `ws` is set."""

    features: int
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, ws: bool | jax.Array) -> jax.Array:
        kernel = self.param("kernel", he_init, (*(3,) * (x.ndim - 2), x.shape[-1], self.features))
        kernel = jnp.where(ws, standardize_kernel(kernel), kernel)
        return conv_general(x, kernel, 1, "SAME", impl=self.impl) + self.param(
            "bias", nn.initializers.zeros, (self.features,))


class NormCNN(nn.Module):
    num_classes: int
    widths: Sequence[int] = (32, 64)
    convs_per_stage: int = 2
    norm: str = "batch"  # none | batch | layer | instance | group | selected
    num_groups: int = 8  # GroupNorm's G (Wu & He use 32 with wider layers)
    weight_standardization: bool = False
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, kind: int | jax.Array | None = None,
                 ws: bool | jax.Array | None = None) -> jax.Array:
        if x.ndim == 2:  # (N, W) signals such as MNIST-1D -> (N, W, 1)
            x = x[..., None]
        nd = x.ndim - 2  # 1-D or 2-D convolutions, the same network
        selected = self.norm == "selected"
        if selected and kind is None:
            raise ValueError(f"norm='selected' needs kind= (an index into {KINDS}) in the call")
        ws = self.weight_standardization if ws is None else ws
        for s, width in enumerate(self.widths):
            for j in range(self.convs_per_stage):
                tag = f"{s + 1}_{j + 1}"
                if selected:
                    x = SwitchableWSConv(width, self.conv_impl, name=f"conv{tag}")(x, ws)
                    x = SelectedNorm(num_groups=self.num_groups, name=f"norm{tag}")(x, kind, train)
                else:
                    x = self._conv(width, nd, f"conv{tag}")(x)
                    kw = {"num_groups": self.num_groups} if self.norm == "group" else {}
                    x = make_norm(self.norm, train, name=f"norm{tag}", **kw)(x)
                x = jax.nn.relu(x)
            if s < len(self.widths) - 1:
                x = nn.max_pool(x, (2,) * nd, strides=(2,) * nd)
        x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
        return nn.Dense(self.num_classes, name="head")(x)

    def _conv(self, width: int, nd: int, name: str) -> nn.Module:
        use_bias = self.norm == "none"  # a normalizer's own bias replaces the conv's
        ks = (3,) * nd
        if self.weight_standardization:
            return WSConv(width, ks, use_bias=use_bias, kernel_init=he_init, impl=self.conv_impl, name=name)
        return Conv(width, ks, use_bias=use_bias, kernel_init=he_init, impl=self.conv_impl, name=name)


@register("norm_cnn", input_shape=(32, 32, 3))
def norm_cnn(num_classes: int = 10, **kw: Any) -> NormCNN:
    """Small CNN with a normalizer by name: norm='none|batch|layer|instance|group', weight_standardization."""
    return NormCNN(num_classes=num_classes, **kw)
