"""AlexNet (Krizhevsky et al. 2012) in the single-tower form of today's reference implementations.

torchvision's AlexNet (after Krizhevsky 2014, "One weird trick"): five convs (64, 192, 384, 256,
256 filters; 11x11/4, 5x5, then 3x3), three 3x3/2 max pools, an adaptive average pool to 6x6,
and three fully connected layers (4096, 4096, classes) with dropout. 61,100,840 parameters for
1000 classes (the paper's two-GPU net: "60 million"). No local response normalization (the
reference implementations drop it); `norm` adds a normalizer after every conv.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.models.resnet import he_init, resolve_norm
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv

REFERENCE_PARAMS = {"alexnet": 61_100_840}  # torchvision.models.alexnet, 1000 classes


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """PyTorch's AdaptiveAvgPool2d on NHWC: output cell i averages input rows
    floor(i * H / out) .. ceil((i + 1) * H / out) - 1 (and the same for columns)."""
    h, w = x.shape[1:3]
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        return x.reshape(x.shape[0], oh, h // oh, ow, w // ow, x.shape[-1]).mean(axis=(2, 4))

    def bins(n: int, out: int) -> list[tuple[int, int]]:
        return [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]

    rows = [x[:, a:b].mean(axis=1) for a, b in bins(h, oh)]
    x = jnp.stack(rows, axis=1)
    cols = [x[:, :, a:b].mean(axis=2) for a, b in bins(w, ow)]
    return jnp.stack(cols, axis=2)


def classifier_head(x: jax.Array, num_classes: int, hidden: int, dropout: float, act: Any, train: bool,
                    dropout_first: bool) -> jax.Array:
    """AlexNet's and VGG's classifier, called inside a compact module: two hidden fully connected
    layers (fc1, fc2) with dropout, then the output layer (head), weights from N(0, 0.01).
    torchvision's order: AlexNet drops out before each hidden layer, VGG after it."""
    init = nn.initializers.normal(0.01)
    for i in range(2):
        if dropout_first:
            x = nn.Dropout(dropout, deterministic=not train)(x)
        x = act(nn.Dense(hidden, kernel_init=init, name=f"fc{i + 1}")(x))
        if not dropout_first:
            x = nn.Dropout(dropout, deterministic=not train)(x)
    return nn.Dense(num_classes, kernel_init=init, name="head")(x)


class AlexNet(nn.Module):
    """Single-tower AlexNet; NHWC input (224x224 for ImageNet, any size >= 63 works)."""

    num_classes: int = 1000
    dropout: float = 0.5
    hidden: int = 4096
    norm: Any = "none"
    activation: Any = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm, act = resolve_norm(self.norm, train), get_activation(self.activation)
        specs = [(64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
                 (256, 3, 1, 1, True)]  # (filters, kernel, stride, padding, max pool after)
        for i, (f, k, s, p, pool) in enumerate(specs):
            x = Conv(f, (k, k), strides=s, padding=[(p, p), (p, p)], kernel_init=he_init, impl=self.conv_impl,
                     name=f"conv{i + 1}")(x)
            x = act(norm(name=f"norm{i + 1}")(x))
            if pool:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = adaptive_avg_pool(x, (6, 6)).reshape(x.shape[0], -1)
        return classifier_head(x, self.num_classes, self.hidden, self.dropout, act, train, dropout_first=True)


@register("alexnet", input_shape=(224, 224, 3), family="alexnet", reference_params=REFERENCE_PARAMS["alexnet"],
          description="AlexNet, single tower (torchvision; Krizhevsky et al. 2012)")
def alexnet(num_classes: int = 1000, **kw: Any) -> nn.Module:
    """AlexNet as in torchvision: 61,100,840 parameters for 1000 classes."""
    return AlexNet(num_classes=num_classes, **kw)
