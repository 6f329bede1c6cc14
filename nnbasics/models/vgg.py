"""VGG nets (Simonyan & Zisserman 2015, Table 1 configurations A, B, D, E), with and without BatchNorm.

Stacks of 3x3 convs (stride 1, padding 1, with bias) and 2x2/2 max pools, an adaptive average
pool to 7x7, and three fully connected layers (4096, 4096, classes) with dropout, as in
torchvision. `vggN_bn` adds BatchNorm after every conv (torchvision keeps the conv bias there too).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from nnbasics.models import register
from nnbasics.models.alexnet import adaptive_avg_pool, classifier_head
from nnbasics.models.resnet import he_init, resolve_norm
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv

M = "M"  # a 2x2/2 max pool
CONFIGS: dict[int, tuple[Any, ...]] = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),  # A
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),  # B
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),  # D
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M),  # E
}
# torchvision's counts for 1000 classes (BatchNorm scale and bias counted, running statistics not).
REFERENCE_PARAMS = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}


class VGG(nn.Module):
    """A VGG net from a layer list (filters or "M"); NHWC input, 224x224 for ImageNet (>= 32 works)."""

    num_classes: int = 1000
    layers: Sequence[Any] = CONFIGS[16]
    dropout: float = 0.5
    hidden: int = 4096
    norm: Any = "none"
    activation: Any = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm, act = resolve_norm(self.norm, train), get_activation(self.activation)
        i = 0
        for v in self.layers:
            if v == M:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            i += 1
            x = Conv(int(v), (3, 3), padding=[(1, 1), (1, 1)], kernel_init=he_init, impl=self.conv_impl,
                     name=f"conv{i}")(x)
            x = act(norm(name=f"norm{i}")(x))
        x = adaptive_avg_pool(x, (7, 7)).reshape(x.shape[0], -1)
        return classifier_head(x, self.num_classes, self.hidden, self.dropout, act, train, dropout_first=False)


def vgg(depth: int, num_classes: int = 1000, batch_norm: bool = False, **kw: Any) -> VGG:
    """VGG-11/13/16/19; `batch_norm=True` (or any `norm`) adds a normalizer after every conv."""
    if depth not in CONFIGS:
        raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
    if batch_norm:
        kw.setdefault("norm", "batch")
    return VGG(num_classes=num_classes, layers=CONFIGS[depth], **kw)


for _d in CONFIGS:
    for _bn in (False, True):
        _name = f"vgg{_d}{'_bn' if _bn else ''}"
        register(
            _name, input_shape=(224, 224, 3), family="vgg", reference_params=REFERENCE_PARAMS[_name],
            description=f"VGG-{_d}{' with BatchNorm' if _bn else ''} (Simonyan & Zisserman 2015; torchvision)",
        )(functools.partial(vgg, _d, batch_norm=_bn))
