"""The MNIST-1D convolutional net (Greydanus & Kobak 2020): three 1-D convs of 25 channels,
stride 2, ReLU, then a linear read-out; PyTorch default init as in the reference code.

`activation` (any name `nnbasics.nn.activations.get_activation` knows) and `init_scheme` make it
the 4-layer CNN of the ReLU-vs-tanh comparison: "torch" (default) is PyTorch's init, unchanged;
"preferred" gives each nonlinearity its own variance-preserving init: He normal for ReLU-like
units, LeCun normal for saturating ones (tanh, sigmoid), zero biases, a LeCun-normal read-out.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from nnbasics.models import register
from nnbasics.models.init import torch_bias_init, torch_kernel_init
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv

INIT_SCHEMES = ("torch", "preferred")
SATURATING = ("sigmoid", "tanh", "identity", "step")


def preferred_kernel_init(activation: str) -> nn.initializers.Initializer:
    """He normal (variance 2 / fan_in) for ReLU-like units, LeCun normal (1 / fan_in) for saturating ones."""
    return nn.initializers.lecun_normal() if activation in SATURATING else nn.initializers.he_normal()


class MNIST1DCNN(nn.Module):
    num_classes: int = 10
    channels: int = 25
    impl: str = "auto"
    activation: str = "relu"
    init_scheme: str = "torch"  # torch (PyTorch's default, the reference code) | preferred (He / LeCun per activation)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"init_scheme must be one of {INIT_SCHEMES}, got {self.init_scheme!r}")
        if x.ndim == 2:  # (N, 40) -> (N, 40, 1): NWC
            x = x[..., None]
        act = get_activation(self.activation)
        torch = self.init_scheme == "torch"
        specs = [(5, 2, 1), (3, 2, 1), (3, 2, 1)]  # (kernel, stride, padding)
        for i, (k, s, p) in enumerate(specs):
            fan_in = k * x.shape[-1]
            inits = (
                {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(fan_in)}
                if torch else {"kernel_init": preferred_kernel_init(self.activation), "bias_init": nn.initializers.zeros}
            )
            x = Conv(self.channels, (k,), strides=s, padding=[(p, p)], impl=self.impl, name=f"conv{i + 1}", **inits)(x)
            x = act(x)
        x = x.reshape(x.shape[0], -1)
        head = (
            {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(x.shape[-1])}
            if torch else {"kernel_init": nn.initializers.lecun_normal(), "bias_init": nn.initializers.zeros}
        )
        return nn.Dense(self.num_classes, name="linear", **head)(x)


@register("mnist1d_cnn", input_shape=(40,))
def mnist1d_cnn(num_classes: int = 10, **kw) -> nn.Module:
    """MNIST-1D CNN: conv(5,s2)-conv(3,s2)-conv(3,s2), 25 channels, linear 125 -> 10;
    `activation` (default relu) and `init_scheme` (torch | preferred) options."""
    return MNIST1DCNN(num_classes=num_classes, **kw)
