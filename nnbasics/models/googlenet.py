"""GoogLeNet (Inception v1; Szegedy et al. 2015) as in the paper's Table 1.

Every Inception block concatenates four branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5 (the
paper's 5x5, where torchvision uses 3x3); 3x3/1 max pool -> 1x1 projection. All four are used.
The stem is 7x7/2 conv, 3x3/2 max pool, LRN, 1x1 reduce -> 3x3 conv, LRN, 3x3/2 max pool; the head
is global average pooling (7x7 at 224x224), dropout 40% and a linear layer. Convs have biases and
no normalization by default (the paper); `norm="batch"` gives a BN-Inception-like variant
(bias-free convs + BatchNorm). The two auxiliary classifiers (`aux_logits=True`) are optional and
left out of the default model and its parameter count; their logits are sown into
"intermediates" as `aux1` and `aux2` in training mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.models.resnet import resolve_norm
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv
from nnbasics.nn.pooling import max_pool_ceil

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Table 1's "params" column (thousands of weights) and its sum: the paper's own count.
TABLE1_PARAMS_K = {
    "conv1": 2.7, "conv2": 112, "3a": 159, "3b": 380, "4a": 364, "4b": 437, "4c": 463, "4d": 580, "4e": 840,
    "5a": 1072, "5b": 1388, "linear": 1000,
}
TABLE1_TOTAL = sum(TABLE1_PARAMS_K.values()) * 1000


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
    """Local response normalization across channels (Krizhevsky et al. 2012; Caffe/PyTorch convention):
    x / (k + alpha / size * sum of x^2 over `size` neighbouring channels) ** beta."""
    sq = jnp.pad(jnp.square(x), [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    c = x.shape[-1]
    window = sum(sq[..., i:i + c] for i in range(size))
    return x / (k + alpha / size * window) ** beta


class ConvUnit(nn.Module):
    """Conv (+ norm) + activation; bias only when there is no normalization."""

    features: int
    kernel: int
    strides: int = 1
    norm: Any = "none"
    activation: Any = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        use_bias = isinstance(self.norm, str) and self.norm == "none"
        p = self.kernel // 2
        x = Conv(self.features, (self.kernel, self.kernel), strides=self.strides, padding=[(p, p), (p, p)],
                 use_bias=use_bias, kernel_init=nn.initializers.xavier_uniform(), impl=self.conv_impl, name="conv")(x)
        x = resolve_norm(self.norm, train)(name="norm")(x)
        return get_activation(self.activation)(x)


class Inception(nn.Module):
    """The Inception module (Fig. 2b): four branches concatenated along channels."""

    spec: Sequence[int]
    norm: Any = "none"
    activation: Any = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n1, r3, n3, r5, n5, pp = self.spec
        kw = {"norm": self.norm, "activation": self.activation, "conv_impl": self.conv_impl}
        b1 = ConvUnit(n1, 1, name="b1_1x1", **kw)(x, train)
        b2 = ConvUnit(n3, 3, name="b2_3x3", **kw)(ConvUnit(r3, 1, name="b2_reduce", **kw)(x, train), train)
        b3 = ConvUnit(n5, 5, name="b3_5x5", **kw)(ConvUnit(r5, 1, name="b3_reduce", **kw)(x, train), train)
        b4 = ConvUnit(pp, 1, name="b4_proj", **kw)(nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME"), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class AuxClassifier(nn.Module):
    """Auxiliary head: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 70%, linear."""

    num_classes: int
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.avg_pool(x, (5, 5), strides=(3, 3)) if min(x.shape[1:3]) >= 5 else x
        x = ConvUnit(128, 1, conv_impl=self.conv_impl, name="conv")(x, train)
        x = jax.nn.relu(nn.Dense(1024, name="fc")(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(0.7, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


class GoogLeNet(nn.Module):
    """Inception v1 per Table 1; NHWC input (224x224 for ImageNet; any size >= 31 works).

    The stride-2 max pools round up (Caffe's and PyTorch's `ceil_mode=True`): 224 -> 112 -> 56 -> 28
    -> 14 -> 7, and an odd 225 -> 113 -> 56 -> 28 -> 14 -> 7. Below 31 pixels the fourth pool would get
    a 1x1 input, smaller than a 3x3 window with stride 2 can pool in ceil mode."""

    num_classes: int = 1000
    dropout: float = 0.4
    lrn: bool = True
    aux_logits: bool = False
    norm: Any = "none"
    activation: Any = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kw = {"norm": self.norm, "activation": self.activation, "conv_impl": self.conv_impl}

        def pool(v):
            return max_pool_ceil(v, 3, 2)  # PyTorch's MaxPool2d(3, 2, ceil_mode=True), as torchvision and Caffe

        x = pool(ConvUnit(64, 7, strides=2, name="conv1", **kw)(x, train))
        if self.lrn:
            x = local_response_norm(x)
        x = ConvUnit(192, 3, name="conv2", **kw)(ConvUnit(64, 1, name="conv2_reduce", **kw)(x, train), train)
        if self.lrn:
            x = local_response_norm(x)
        x = pool(x)
        for name, spec in INCEPTION.items():
            if name in ("4a", "5a"):
                x = pool(x)
            x = Inception(spec, name=f"inception_{name}", **kw)(x, train)
            if self.aux_logits and name in ("4a", "4d"):
                aux = AuxClassifier(self.num_classes, self.conv_impl, name=f"aux{1 if name == '4a' else 2}")(x, train)
                if train:
                    self.sow("intermediates", f"aux{1 if name == '4a' else 2}", aux)
        x = jnp.mean(x, axis=(1, 2))  # the 7x7 average pool at 224x224
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


def googlenet_params_by_hand(num_classes: int = 1000, in_channels: int = 3) -> int:
    """Weights plus biases of Table 1's layers (5x5 branches, no auxiliary heads), counted by hand."""

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    total = conv(7, in_channels, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    cin = 192
    for n1, r3, n3, r5, n5, pp in INCEPTION.values():
        total += (conv(1, cin, n1) + conv(1, cin, r3) + conv(3, r3, n3) + conv(1, cin, r5) + conv(5, r5, n5)
                  + conv(1, cin, pp))
        cin = n1 + n3 + n5 + pp
    return total + cin * num_classes + num_classes


@register("googlenet", input_shape=(224, 224, 3), family="googlenet", reference_params=googlenet_params_by_hand(),
          description="GoogLeNet / Inception v1 (Szegedy et al. 2015, Table 1; 5x5 branches, no aux heads)")
def googlenet(num_classes: int = 1000, **kw: Any) -> nn.Module:
    """GoogLeNet as in the paper's Table 1."""
    return GoogLeNet(num_classes=num_classes, **kw)
