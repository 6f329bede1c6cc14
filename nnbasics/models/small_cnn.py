"""A small four-layer CNN (three 3x3 conv layers with 2x2 max pooling, one linear read-out)
whose nonlinearity is chosen by name: the network of AlexNet's Figure 1 comparison (a
four-layer CNN trained with ReLU against the same network with tanh), sized for a CPU.

Works on any NHWC input size; pooling stops once the feature map is 1x1 (so 8x8 digits and
32x32 photos both work).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from nnbasics.models import register
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv

SATURATING = ("sigmoid", "tanh", "identity", "step")


def default_init(activation: str) -> nn.initializers.Initializer:
    """He (Kaiming) normal init for ReLU-like units, LeCun normal for saturating ones (tanh, sigmoid),
    so each nonlinearity starts with unit-variance signals."""
    if activation in SATURATING:
        return nn.initializers.lecun_normal()
    return nn.initializers.he_normal()


class SmallCNN(nn.Module):
    """conv3x3-act-pool x len(features), then a linear layer to `num_classes` logits."""

    num_classes: int = 10
    features: Sequence[int] = (32, 32, 64)
    activation: str = "relu"
    init_scheme: str = "auto"  # auto | he | lecun
    impl: str = "auto"  # convolution implementation, see nnbasics.nn.conv
    init_std: float = 0.0  # > 0: every weight (convs and head) from N(0, init_std^2), AlexNet's 0.01; 0: init_scheme

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim == 3:  # (N, H, W) -> (N, H, W, 1)
            x = x[..., None]
        act = get_activation(self.activation)
        kinit = {
            "auto": default_init(self.activation) if isinstance(self.activation, str) else nn.initializers.he_normal(),
            "he": nn.initializers.he_normal(),
            "lecun": nn.initializers.lecun_normal(),
        }[self.init_scheme]
        head_init = nn.initializers.lecun_normal()
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0 (0: use init_scheme), got {self.init_std}")
        if self.init_std > 0:  # AlexNet (Krizhevsky et al. 2012, Sec. 5): zero-mean Gaussian, std 0.01, every layer
            kinit = head_init = nn.initializers.normal(stddev=self.init_std)
        for i, f in enumerate(self.features):
            x = Conv(f, (3, 3), padding="SAME", kernel_init=kinit, impl=self.impl, name=f"conv{i + 1}")(x)
            x = act(x)
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=head_init, name="head")(x)


@register("small_cnn", input_shape=(32, 32, 3))
def small_cnn(num_classes: int = 10, **kw) -> nn.Module:
    """Four weight layers: three 3x3 convs (32, 32, 64 channels) with max pooling, one linear;
    `activation` by name (relu, tanh, sigmoid, leaky_relu, prelu, ...)."""
    return SmallCNN(num_classes=num_classes, **kw)
