"""A fully convolutional net for dense prediction (semantic segmentation as per-pixel classification).

`depth` 3x3 convolutions (VALID, ReLU, optionally dilated) and a 1x1 classifier: the class scores
of a pixel depend on the (2 r + 1) x (2 r + 1) patch around it, r = sum(dilations). The same
weights are a patch classifier ("what is the class of the centre pixel?") when applied to one
patch of that size (`patch_output=True`: (N, P, P, C) -> (N, classes)), and label every pixel of
an image of any size at once when applied to the whole image padded by r (`pad_input=True`:
(N, H, W, C) -> (N, H, W, classes)). The lecture: "W is a convolutional kernel applied to the
full image".
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.models.init import he_normal
from nnbasics.nn.conv import Conv


def fcn_radius(depth: int, dilations: Sequence[int] | None = None) -> int:
    """r = sum of the dilations of the 3x3 layers: the receptive field is 2 r + 1 pixels wide."""
    dil = tuple(dilations) if dilations else (1,) * depth
    if len(dil) != depth:
        raise ValueError(f"need one dilation per layer ({depth}), got {dil}")
    return int(sum(dil))


class FCN(nn.Module):
    """Fully convolutional per-pixel classifier (see the module docstring)."""

    num_classes: int
    channels: int = 32
    depth: int = 4
    dilations: Sequence[int] | None = None
    pad_input: bool = True
    pad_mode: str = "edge"
    patch_output: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        r = fcn_radius(self.depth, self.dilations)
        dil = tuple(self.dilations) if self.dilations else (1,) * self.depth
        if self.patch_output:
            if x.shape[1] != 2 * r + 1 or x.shape[2] != 2 * r + 1:
                raise ValueError(f"the patch classifier takes {2 * r + 1}x{2 * r + 1} patches, got {x.shape[1:3]}")
        elif self.pad_input:
            x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode=self.pad_mode)
        for i, d in enumerate(dil):
            x = Conv(self.channels, (3, 3), padding="VALID", kernel_dilation=d, kernel_init=he_normal,
                     name=f"conv{i + 1}")(x)
            x = jax.nn.relu(x)
        x = Conv(self.num_classes, (1, 1), name="classifier")(x)
        if self.patch_output:
            return x.reshape(x.shape[0], self.num_classes)
        return x


@register("fcn", input_shape=(32, 32, 3))
def fcn(num_classes: int = 4, **kw) -> nn.Module:
    """Per-pixel classifier: (N, H, W, C) -> (N, H, W, classes) for any H, W."""
    return FCN(num_classes=num_classes, **kw)


@register("patch_classifier", input_shape=(9, 9, 3))
def patch_classifier(num_classes: int = 4, **kw) -> nn.Module:
    """The FCN's weights as a classifier of the centre pixel of one (2r+1)^2 patch: (N, classes)."""
    return FCN(num_classes=num_classes, patch_output=True, **kw)


def init_params(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> dict:
    """Parameters for `model` on inputs of `input_shape` (no batch axis), He-normal kernels and zero
    biases drawn with NumPy: the same distribution as the module's initializers (untruncated),
    without compiling an XLA random kernel per weight shape (about a second each on a CPU)."""
    import numpy as np

    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(seed), x),
                            jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if len(leaf.shape) < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

    return jax.tree.map(draw, shapes["params"])
