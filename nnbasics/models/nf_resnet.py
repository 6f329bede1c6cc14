"""Normalizer-free ResNets (Brock, De & Smith 2021) and the pre-activation ResNets they replace.

NF-ResNet block (pre-activation, basic 3x3-3x3 branch, CIFAR layout):

    h = gamma * relu(x / beta)                    beta = sqrt(expected Var(x)), known analytically
    y = shortcut + alpha * conv(gamma * relu(conv(h)))      shortcut = x, or a 1x1 conv of h
                                                            where the shape changes (a transition)

Every conv uses Scaled Weight Standardization (`nnbasics.nn.normalization.WSConv(scaled=True)`):
with unit-variance input the branch output has unit variance, so Var(y) = Var(x) + alpha^2 within
a stage and a transition resets it to 1 + alpha^2. gamma = sqrt(2 / (1 - 1/pi)) makes relu of a
unit Gaussian unit-variance; Scaled WS also removes the mean shift that ReLU causes (the kernel
has zero mean over its fan-in). No normalization layers; the classifier is zero-initialized.

For comparison (section 3 of the paper) the same skeleton with `PreActResNet`:
`bn_relu_resnet` (BN-ReLU-conv pre-activation blocks, He et al. 2016b) and `unnorm_resnet`
(the same without BatchNorm: x + f(x) with He init, whose variance doubles every block).
`nf_resnet(..., scaled_ws=False)` is the NF skeleton with plain He-initialized convs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.analysis.signal_propagation import COLLECTION, record
from nnbasics.models import register
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv
from nnbasics.nn.normalization import WSConv, make_norm

RELU_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))  # 1 / std(relu(z)), z ~ N(0, 1)
he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
lecun_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def activation_gamma(activation: str) -> float:
    """gamma = 1 / std(g(z)) for z ~ N(0, 1): closed form for relu and identity, else quadrature."""
    if activation == "relu":
        return RELU_GAMMA
    if activation == "identity":
        return 1.0
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    g = np.asarray(get_activation(activation)(jnp.asarray(z)), np.float64)
    return float(1.0 / np.sqrt(np.sum(w * g * g) - np.sum(w * g) ** 2))


def depth_to_stages(depth: int) -> tuple[int, int, int]:
    """6n + 2 layers -> n basic blocks in each of three stages (He et al.'s CIFAR layout)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 56, 110, 206, ...), got depth {depth}")
    n = (depth - 2) // 6
    return (n, n, n)


class NFBlock(nn.Module):
    """x -> shortcut + alpha * f(x / beta), with scaled activations and Scaled WS convs."""

    features: int
    strides: int = 1
    alpha: float = 0.2
    beta: float = 1.0
    activation: str = "relu"
    scaled_ws: bool = True
    skipinit: bool = False
    conv_impl: str = "auto"

    def conv(self, features: int, k: int, strides: int, name: str) -> nn.Module:
        if self.scaled_ws:
            return WSConv(features, (k, k), strides=strides, scaled=True, impl=self.conv_impl, name=name)
        return Conv(features, (k, k), strides=strides, kernel_init=he_init, impl=self.conv_impl, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, beta: jax.Array | float | None = None) -> jax.Array:
        """`beta` (if given) overrides the field, so a scanned stage can feed each block its own."""
        gamma = activation_gamma(self.activation) if self.scaled_ws else 1.0
        act = get_activation(self.activation)
        h = gamma * act(x / (self.beta if beta is None else beta))
        transition = self.strides != 1 or x.shape[-1] != self.features
        shortcut = self.conv(self.features, 1, self.strides, "shortcut_conv")(h) if transition else x
        f = self.conv(self.features, 3, self.strides, "conv1")(h)
        f = self.conv(self.features, 3, 1, "conv2")(gamma * act(f))
        if self.skipinit:
            f = f * self.param("skip_gain", nn.initializers.zeros, ())
        y = shortcut + self.alpha * f
        record(self, y, f)
        return y


class _NFScanBody(NFBlock):
    """An NF block as an `nn.scan` body: (x, beta) -> (y, None)."""

    @nn.compact
    def __call__(self, x: jax.Array, beta: jax.Array) -> tuple[jax.Array, None]:  # type: ignore[override]
        return NFBlock(self.features, 1, self.alpha, 1.0, self.activation, self.scaled_ws, self.skipinit,
                       self.conv_impl, name="block")(x, beta), None


class NFResNet(nn.Module):
    """A normalizer-free ResNet: WS stem, stages of NF blocks tracking the expected variance, pool, linear.

    `scan=True` runs the identical blocks of a stage (all but the first) as one `nn.scan` (stacked
    parameters, compile time independent of depth: for very deep nets such as the 100+-block SPPs)."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)
    alpha: float = 0.2
    activation: str = "relu"
    scaled_ws: bool = True
    skipinit: bool = False
    conv_impl: str = "auto"
    scan: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch-dependent layers
        if self.scaled_ws:
            x = WSConv(self.widths[0], (3, 3), scaled=True, impl=self.conv_impl, name="stem_conv")(x)
        else:  # the stem sees the raw (not rectified) input: LeCun init keeps unit variance
            x = Conv(self.widths[0], (3, 3), kernel_init=lecun_init, impl=self.conv_impl, name="stem_conv")(x)
        expected_var = 1.0
        for i, (n, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(n):
                strides = 2 if (i > 0 and j == 0) else 1
                if self.scan and j == 1:  # blocks 2..n of the stage in one scan
                    betas = jnp.sqrt(expected_var + self.alpha**2 * jnp.arange(n - 1, dtype=jnp.float32))
                    body = nn.scan(_NFScanBody, variable_axes={"params": 0, COLLECTION: 0},
                                   split_rngs={"params": True}, length=n - 1)
                    x, _ = body(width, 1, self.alpha, 1.0, self.activation, self.scaled_ws, self.skipinit,
                                self.conv_impl, name=f"stage{i + 1}_blocks2to{n}")(x, betas)
                    expected_var += (n - 1) * self.alpha**2
                    break
                x_in_features = x.shape[-1]
                x = NFBlock(
                    width, strides, self.alpha, math.sqrt(expected_var), self.activation, self.scaled_ws,
                    self.skipinit, self.conv_impl, name=f"stage{i + 1}_block{j + 1}",
                )(x)
                if strides != 1 or x_in_features != width:
                    expected_var = 1.0  # the shortcut is a (unit-variance) conv of the normalized input
                expected_var += self.alpha**2
        gamma = activation_gamma(self.activation) if self.scaled_ws else 1.0
        x = gamma * get_activation(self.activation)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


class PreActBlock(nn.Module):
    """Pre-activation block x + conv(act(norm(conv(act(norm(x)))))) (He et al. 2016b);
    with norm='none' the unnormalized block x + f(x)."""

    features: int
    strides: int = 1
    norm: str = "batch"
    activation: str = "relu"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation)

        def conv(features: int, k: int, strides: int, name: str) -> Conv:
            return Conv(features, (k, k), strides=strides, use_bias=self.norm == "none", kernel_init=he_init,
                        impl=self.conv_impl, name=name)

        h = act(make_norm(self.norm, train, name="norm1")(x))
        transition = self.strides != 1 or x.shape[-1] != self.features
        shortcut = conv(self.features, 1, self.strides, "shortcut_conv")(h) if transition else x
        f = conv(self.features, 3, self.strides, "conv1")(h)
        f = conv(self.features, 3, 1, "conv2")(act(make_norm(self.norm, train, name="norm2")(f)))
        y = shortcut + f
        record(self, y, f)
        return y


class _PreActScanBody(nn.Module):
    """A pre-activation block as an `nn.scan` body (train is a field: scan bodies take carry, input)."""

    features: int
    norm: str = "batch"
    activation: str = "relu"
    conv_impl: str = "auto"
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        return PreActBlock(self.features, 1, self.norm, self.activation, self.conv_impl, name="block")(
            x, self.train), None


class PreActResNet(nn.Module):
    """Pre-activation ResNet (CIFAR layout) with any normalizer; the baseline NF-ResNets replace.

    `scan=True`: the blocks after the first of each stage run as one `nn.scan` (see NFResNet)."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)
    norm: str = "batch"
    activation: str = "relu"
    conv_impl: str = "auto"
    scan: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Conv(self.widths[0], (3, 3), use_bias=self.norm == "none", kernel_init=lecun_init, impl=self.conv_impl,
                 name="stem_conv")(x)
        for i, (n, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(n):
                if self.scan and j == 1:
                    body = nn.scan(_PreActScanBody, variable_axes={"params": 0, "batch_stats": 0, COLLECTION: 0},
                                   split_rngs={"params": True}, length=n - 1)
                    x, _ = body(width, self.norm, self.activation, self.conv_impl, train,
                                name=f"stage{i + 1}_blocks2to{n}")(x, None)
                    break
                x = PreActBlock(width, 2 if (i > 0 and j == 0) else 1, self.norm, self.activation, self.conv_impl,
                                name=f"stage{i + 1}_block{j + 1}")(x, train)
        x = get_activation(self.activation)(make_norm(self.norm, train, name="final_norm")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def _stages(depth: int | None, stage_sizes: Sequence[int] | None) -> tuple[int, ...]:
    if stage_sizes is not None:
        return tuple(int(s) for s in stage_sizes)
    return depth_to_stages(20 if depth is None else int(depth))


def _widths(width: int, n: int) -> tuple[int, ...]:
    return tuple(width * 2**i for i in range(n))


@register("nf_resnet", input_shape=(32, 32, 3), family="nf-resnet")
def nf_resnet(num_classes: int = 10, depth: int | None = 20, stage_sizes: Sequence[int] | None = None,
              width: int = 16, **kw: Any) -> NFResNet:
    """NF-ResNet with 6n + 2 layers (or explicit `stage_sizes`); alpha, scaled_ws, skipinit configurable."""
    stages = _stages(depth, stage_sizes)
    return NFResNet(num_classes=num_classes, stage_sizes=stages, widths=_widths(width, len(stages)), **kw)


@register("bn_relu_resnet", input_shape=(32, 32, 3), family="nf-resnet")
def bn_relu_resnet(num_classes: int = 10, depth: int | None = 20, stage_sizes: Sequence[int] | None = None,
                   width: int = 16, **kw: Any) -> PreActResNet:
    """Pre-activation BN-ReLU ResNet with 6n + 2 layers (the NF-ResNet's normalized counterpart)."""
    stages = _stages(depth, stage_sizes)
    kw.setdefault("norm", "batch")
    return PreActResNet(num_classes=num_classes, stage_sizes=stages, widths=_widths(width, len(stages)), **kw)


@register("unnorm_resnet", input_shape=(32, 32, 3), family="nf-resnet")
def unnorm_resnet(num_classes: int = 10, depth: int | None = 20, stage_sizes: Sequence[int] | None = None,
                  width: int = 16, **kw: Any) -> PreActResNet:
    """The pre-activation ResNet without normalization: x + f(x), He init."""
    stages = _stages(depth, stage_sizes)
    return PreActResNet(num_classes=num_classes, stage_sizes=stages, widths=_widths(width, len(stages)),
                        norm="none", **kw)
