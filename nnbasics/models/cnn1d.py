"""The MNIST-1D convolutional net (Greydanus & Kobak 2020): three 1-D convs of 25 channels,
stride 2, ReLU, then a linear read-out; PyTorch default init as in the reference code."""

from __future__ import annotations

import flax.linen as nn
import jax

from nnbasics.models import register
from nnbasics.models.init import torch_bias_init, torch_kernel_init
from nnbasics.nn.conv import Conv


class MNIST1DCNN(nn.Module):
    num_classes: int = 10
    channels: int = 25
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim == 2:  # (N, 40) -> (N, 40, 1): NWC
            x = x[..., None]
        specs = [(5, 2, 1), (3, 2, 1), (3, 2, 1)]  # (kernel, stride, padding)
        for i, (k, s, p) in enumerate(specs):
            fan_in = k * x.shape[-1]
            x = Conv(
                self.channels, (k,), strides=s, padding=[(p, p)], impl=self.impl,
                kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), name=f"conv{i + 1}",
            )(x)
            x = jax.nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(
            self.num_classes, kernel_init=torch_kernel_init, bias_init=torch_bias_init(x.shape[-1]), name="linear"
        )(x)


@register("mnist1d_cnn", input_shape=(40,))
def mnist1d_cnn(num_classes: int = 10, **kw) -> nn.Module:
    """MNIST-1D CNN: conv(5,s2)-conv(3,s2)-conv(3,s2), 25 channels, linear 125 -> 10."""
    return MNIST1DCNN(num_classes=num_classes, **kw)
