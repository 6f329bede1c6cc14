"""Residual networks (He et al. 2016) and the same networks without shortcuts ("plain" nets).

- CIFAR ResNets (section 4.2): a 3x3 conv with 16 filters, three stages of n basic blocks with
  16/32/64 filters (6n + 2 layers: resnet20/32/44/56/110), global average pooling, a linear
  read-out. Shortcuts are option A by default (identity; zero-padded channels and strided
  subsampling where the shape changes), as in the paper; `shortcut="B"` uses 1x1 projections there.
- ImageNet ResNets (Table 1): resnet18/34 (basic blocks) and resnet50/101/152 (bottleneck blocks),
  projection shortcuts where the shape changes (option B), as in torchvision (the stride of a
  bottleneck sits on its 3x3 conv, "ResNet v1.5", which changes FLOPs but not parameters).
- `plainN`: the same layers with `residual=False` (Fig. 3 middle; no shortcut, no projection).

Every model takes `norm` and `activation`, so the normalization experiments can swap them:
`norm` is a name of `nnbasics.nn.normalization` (none, batch, layer, instance, group) or a norm
factory `f(train: bool) -> make_layer`, where `make_layer(name=...)` builds a layer `x -> x`.
`activation` is a name from `nnbasics.nn.activations` (or a callable). Every 3x3 layer's response
(after its norm, before the addition and ReLU; the paper's Fig. 7) is sown into the
"intermediates" collection as `response`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.nn.activations import get_activation
from nnbasics.nn.conv import Conv

NormFactory = Callable[[bool], Callable[..., Any]]
he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # He et al. 2015, as the paper


def resolve_norm(norm: str | NormFactory, train: bool) -> Callable[..., Any]:
    """A layer constructor `make(name=...)` for `norm`: a name of `nnbasics.nn.normalization`
    (none | batch | layer | instance | group) or a factory `f(train)` returning such a constructor."""
    if callable(norm):
        return norm(train)
    from nnbasics.nn.normalization import get_norm

    return get_norm(str(norm), train)


def norm_act(module: nn.Module, norm: Any, activation: Any, train: bool, name: str, y: jax.Array,
             sow: bool = False) -> jax.Array:
    """activation(norm(y)) for the layer `name`. A BatchNorm followed by ReLU is one layer,
    `BatchNorm(relu=True)`: the same parameters and values, and with the oneDNN switch one fused pass
    (`nnbasics.nn.normalization.onednn_batch_norm`). `sow`: the norm's output, before the activation, is
    sown as a "response" intermediate; then, when the intermediates are collected, the two stay apart."""
    make = resolve_norm(norm, train)
    collecting = sow and module.is_mutable_collection("intermediates")
    if norm == "batch" and activation == "relu" and not collecting:
        return make(name=name, relu=True)(y)
    y = make(name=name)(y)
    if sow:
        module.sow("intermediates", "response", y)
    return get_activation(activation)(y)


def _conv(features: int, kernel: int, strides: int, impl: str, name: str) -> Conv:
    """A bias-free conv with PyTorch-style symmetric padding (k // 2), He-initialized."""
    p = kernel // 2
    return Conv(
        features, (kernel, kernel), strides=strides, padding=[(p, p), (p, p)], use_bias=False,
        kernel_init=he_init, impl=impl, name=name,
    )


def pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
    """Option A: identity shortcut; subsample by `strides`, zero-pad the new channels (no parameters)."""
    if strides > 1:
        x = x[:, ::strides, ::strides, :]
    extra = features - x.shape[-1]
    if extra > 0:
        x = jnp.pad(x, [(0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)])
    return x


class _Block(nn.Module):
    """Common fields and the shortcut of the basic and bottleneck blocks."""

    features: int
    strides: int = 1
    residual: bool = True
    shortcut: str = "B"  # A: zero-pad identity | B: projection where the shape changes | C: projection always
    norm: Any = "batch"
    activation: Any = "relu"
    conv_impl: str = "auto"
    # Goyal et al. 2017 (sec. 5.1): the last norm of each residual branch starts with scale 0, so every
    # block starts as the identity (residual blocks only; a plain net keeps scale 1). Not He et al.'s init.
    zero_init_residual: bool = False

    def out_features(self) -> int:
        return self.features

    def last_norm_kw(self) -> dict:
        return {"scale_init": nn.initializers.zeros} if self.zero_init_residual and self.residual else {}

    def add_shortcut(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
        if not self.residual:
            return y
        out = self.out_features()
        changes = self.strides != 1 or x.shape[-1] != out
        if self.shortcut == "C" or (changes and self.shortcut == "B"):
            s = _conv(out, 1, self.strides, self.conv_impl, "proj_conv")(x)
            s = resolve_norm(self.norm, train)(name="proj_norm")(s)
        elif changes:
            s = pad_shortcut(x, out, self.strides)
        else:
            s = x
        return y + s


class BasicBlock(_Block):
    """Two 3x3 convs (He et al. 2016, Fig. 2 / Fig. 5 left)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm, act = resolve_norm(self.norm, train), get_activation(self.activation)
        y = _conv(self.features, 3, self.strides, self.conv_impl, "conv1")(x)
        y = norm_act(self, self.norm, self.activation, train, "norm1", y, sow=True)
        y = _conv(self.features, 3, 1, self.conv_impl, "conv2")(y)
        y = norm(name="norm2", **self.last_norm_kw())(y)
        self.sow("intermediates", "response", y)
        return act(self.add_shortcut(x, y, train))


class BottleneckBlock(_Block):
    """1x1 (reduce) - 3x3 (stride here, as torchvision) - 1x1 (expand x4) (Fig. 5 right)."""

    expansion: int = 4

    def out_features(self) -> int:
        return self.features * self.expansion

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm, act = resolve_norm(self.norm, train), get_activation(self.activation)
        y = norm_act(self, self.norm, self.activation, train, "norm1", _conv(self.features, 1, 1, self.conv_impl, "conv1")(x))
        y = _conv(self.features, 3, self.strides, self.conv_impl, "conv2")(y)
        y = norm_act(self, self.norm, self.activation, train, "norm2", y, sow=True)
        y = norm(name="norm3", **self.last_norm_kw())(_conv(self.out_features(), 1, 1, self.conv_impl, "conv3")(y))
        return act(self.add_shortcut(x, y, train))


class _BlockCell(nn.Module):
    """One block as a scan cell: (x, None) -> (block(x), None)."""

    block_cls: Any
    features: int
    train: bool
    kw: Any

    @nn.compact
    def __call__(self, x: jax.Array, _: Any = None) -> tuple[jax.Array, None]:
        return self.block_cls(self.features, name="block", **self.kw)(x, self.train), None


def _scanned_blocks(length: int) -> Any:
    """`length` identical blocks, parameters stacked on a leading axis (one compiled body)."""
    return nn.scan(
        _BlockCell, variable_axes={"params": 0, "batch_stats": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True}, length=length,
    )


class ResNet(nn.Module):
    """A ResNet (or plain net with `residual=False`): stem, stages of blocks, global pool, linear.

    stem "cifar": 3x3 conv (stride 1); stem "imagenet": 7x7/2 conv and 3x3/2 max pool.
    `widths[i]` is stage i's (bottleneck) width; stage i > 0 starts with stride 2."""

    num_classes: int
    stage_sizes: Sequence[int]
    widths: Sequence[int]
    block: str = "basic"  # basic | bottleneck
    stem: str = "cifar"  # cifar | imagenet
    residual: bool = True
    shortcut: str = "A"
    norm: Any = "batch"
    activation: Any = "relu"
    conv_impl: str = "auto"
    scan_blocks: bool = False  # the blocks after each stage's first as one nn.scan: compiles once per stage
    zero_init_residual: bool = False  # each residual branch's last norm starts at scale 0 (Goyal et al. 2017)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {self.shortcut!r}")
        if self.stem == "cifar":
            x = _conv(self.widths[0], 3, 1, self.conv_impl, "stem_conv")(x)
            x = norm_act(self, self.norm, self.activation, train, "stem_norm", x)
        elif self.stem == "imagenet":
            x = _conv(64, 7, 2, self.conv_impl, "stem_conv")(x)
            x = norm_act(self, self.norm, self.activation, train, "stem_norm", x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
        block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
        kw = {"residual": self.residual, "shortcut": self.shortcut, "norm": self.norm, "activation": self.activation,
              "conv_impl": self.conv_impl}
        if self.zero_init_residual:
            kw["zero_init_residual"] = True
        for i, (n, width) in enumerate(zip(self.stage_sizes, self.widths)):
            x = block_cls(width, strides=2 if i > 0 else 1, name=f"stage{i + 1}_block1", **kw)(x, train)
            if n > 1 and self.scan_blocks:
                x, _ = _scanned_blocks(n - 1)(block_cls, width, train, kw, name=f"stage{i + 1}_blocks")(x)
            else:
                for j in range(1, n):
                    x = block_cls(width, name=f"stage{i + 1}_block{j + 1}", **kw)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


# ------------------------------------------------------------------------------------ factories

CIFAR_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_SPECS = {  # depth: (block, stage sizes), He et al. 2016 Table 1
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# Parameter counts of the reference implementations (BatchNorm scale and bias included,
# running statistics not): torchvision for ImageNet (1000 classes), and the paper's CIFAR nets
# (10 classes, option A shortcuts) as counted here layer by layer (0.27M, 0.46M, 0.66M, 0.85M, 1.7M).
REFERENCE_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
}
PAPER_PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6}


def cifar_resnet(
    depth: int, num_classes: int = 10, residual: bool = True, width: int = 16, shortcut: str = "A", **kw: Any
) -> ResNet:
    """The CIFAR ResNet (or plain net) with 6n + 2 layers; `width` filters in the first stage."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, ...), got depth {depth}")
    n = (depth - 2) // 6
    return ResNet(
        num_classes=num_classes, stage_sizes=(n, n, n), widths=(width, 2 * width, 4 * width), block="basic",
        stem="cifar", residual=residual, shortcut=shortcut, **kw,
    )


def imagenet_resnet(depth: int, num_classes: int = 1000, residual: bool = True, shortcut: str = "B",
                    **kw: Any) -> ResNet:
    """The ImageNet ResNet (or plain net) of He et al. Table 1, torchvision-compatible."""
    if depth not in IMAGENET_SPECS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_SPECS)}, got {depth}")
    block, sizes = IMAGENET_SPECS[depth]
    return ResNet(
        num_classes=num_classes, stage_sizes=sizes, widths=(64, 128, 256, 512), block=block, stem="imagenet",
        residual=residual, shortcut=shortcut, **kw,
    )


def _register_all() -> None:
    kinds = (  # (depths, input shape, family, factory, description with {net} and {depth})
        (CIFAR_DEPTHS, (32, 32, 3), "resnet-cifar", cifar_resnet,
         "CIFAR {net}, {depth} layers (He et al. 2016, sec. 4.2)"),
        (tuple(IMAGENET_SPECS), (224, 224, 3), "resnet-imagenet", imagenet_resnet,
         "ImageNet {net}-{depth} (He et al. 2016, Table 1)"),
    )
    for depths, shape, family, factory, text in kinds:
        for depth in depths:
            for residual, prefix in ((True, "resnet"), (False, "plain")):
                register(
                    f"{prefix}{depth}", input_shape=shape, family=family,
                    reference_params=REFERENCE_PARAMS[f"resnet{depth}"] if residual else None,
                    description=text.format(net="ResNet" if residual else "plain net", depth=depth),
                )(functools.partial(factory, depth, residual=residual))


_register_all()
