"""Receptive fields: analytic (from kernel, stride, dilation, padding) and measured by gradients.

Analytic, for a chain of conv/pool layers (Araujo, Norris & Sim 2019, "Computing receptive
fields of convolutional neural networks", Distill), per spatial axis, with effective kernel
k' = d (k - 1) + 1:

    size_l  = size_{l-1} + (k'_l - 1) * jump_{l-1}      (size_0 = 1)
    jump_l  = jump_{l-1} * s_l                          (jump_0 = 1)
    start_l = start_{l-1} - pad_low_l * jump_{l-1}      (start_0 = 0)

Output unit u of layer l sees input pixels start_l + u * jump_l ... start_l + u * jump_l + size_l - 1.
Elementwise layers (ReLU, BatchNorm) are 1x1 layers and change nothing; for residual nets the
receptive field is the one of the longest path.

Measured: the receptive field of one output unit is the support of d(unit)/d(input), computed
with `jax.grad`; `empirical_receptive_field` works for any function from images to feature maps,
`last_conv_fn` turns any registered model into one (the output of its last convolution).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.nn.conv import explicit_padding

IntOrTuple = int | Sequence[int]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv or pooling layer as the receptive field sees it (weights do not matter).

    padding: an int (both sides), per-axis ints or (low, high) pairs, or 'SAME' / 'VALID'."""

    kernel: IntOrTuple
    stride: IntOrTuple = 1
    dilation: IntOrTuple = 1
    padding: Any = 0
    name: str = ""

    def per_axis(self, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return _tuple(self.kernel, nd), _tuple(self.stride, nd), _tuple(self.dilation, nd)


def _tuple(v: IntOrTuple, nd: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"expected an int or {nd} ints, got {v}")
    return v


def as_layer(spec: Any) -> Layer:
    """A Layer from a Layer, a dict of its fields, or a tuple (kernel, stride, dilation, padding)."""
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, Mapping):
        return Layer(**spec)
    if isinstance(spec, (tuple, list)):
        return Layer(*spec)
    if isinstance(spec, (int, np.integer)):
        return Layer(int(spec))
    raise TypeError(f"cannot read a layer spec from {spec!r}; use Layer(kernel, stride, dilation, padding)")


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Per spatial axis: size, jump (distance in input pixels between neighbouring output units)
    and start (first input pixel seen by output unit 0; negative = inside the padding)."""

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]
    out_size: tuple[int, ...] | None = None

    def span(self, unit: Sequence[int]) -> list[tuple[int, int]]:
        """Inclusive (first, last) input pixel seen by output unit `unit`, per axis."""
        return [(st + u * j, st + u * j + r - 1) for st, u, j, r in zip(self.start, unit, self.jump, self.size)]

    def center(self, unit: Sequence[int]) -> tuple[float, ...]:
        return tuple((a + b) / 2 for a, b in self.span(unit))


def _low_padding(layer: Layer, nd: int, size: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(low, high) padding per axis; 'SAME' needs the input size when the stride is > 1."""
    k, s, d = layer.per_axis(nd)
    p = layer.padding
    if isinstance(p, str) and p.upper() == "SAME" and size is None:
        if any(si > 1 for si in s):
            raise ValueError(f"layer {layer.name or layer}: 'SAME' padding with stride > 1 needs input_size")
        totals = [di * (ki - 1) for ki, di in zip(k, d)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        shape = size if size is not None else (1 << 20,) * nd
        pads = explicit_padding(p, shape, k, s, d)
    return tuple(a for a, _ in pads), tuple(b for _, b in pads)


def receptive_field(layers: Sequence[Any], input_size: IntOrTuple | None = None, ndim: int = 2) -> ReceptiveField:
    """The receptive field of the last layer of a chain of conv/pool `layers`.

    `input_size` (needed for 'SAME' padding with stride > 1) also gives the output size."""
    return receptive_field_table(layers, input_size, ndim)[-1][1]


def receptive_field_table(
    layers: Sequence[Any], input_size: IntOrTuple | None = None, ndim: int = 2
) -> list[tuple[str, ReceptiveField]]:
    """(name, receptive field) after every layer, in order (the input itself first)."""
    nd = ndim
    size, jump, start = (1,) * nd, (1,) * nd, (0,) * nd
    cur = _tuple(input_size, nd) if input_size is not None else None
    rows = [("input", ReceptiveField(size, jump, start, cur))]
    for i, spec in enumerate(layers):
        layer = as_layer(spec)
        k, s, d = layer.per_axis(nd)
        lo, hi = _low_padding(layer, nd, cur)
        eff = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
        size = tuple(r + (e - 1) * j for r, e, j in zip(size, eff, jump))
        start = tuple(st - p * j for st, p, j in zip(start, lo, jump))
        jump = tuple(j * si for j, si in zip(jump, s))
        if cur is not None:
            cur = tuple((n + a + b - e) // si + 1 for n, a, b, e, si in zip(cur, lo, hi, eff, s))
            if any(n <= 0 for n in cur):
                raise ValueError(f"layer {i} ({layer.name or layer}) makes the feature map empty")
        rows.append((layer.name or f"layer{i + 1}", ReceptiveField(size, jump, start, cur)))
    return rows


def num_layers_for(target: int, kernel: int = 3) -> int:
    """How many stacked stride-1 k x k convs reach a `target` x `target` receptive field."""
    return int(np.ceil((target - 1) / (kernel - 1)))


# --------------------------------------------------------------------------- paper architectures


def alexnet_layers() -> list[Layer]:
    """AlexNet (Krizhevsky et al. 2012; torchvision padding) up to conv5."""
    return [
        Layer(11, 4, 1, 2, "conv1"), Layer(3, 2, 1, 0, "pool1"),
        Layer(5, 1, 1, 2, "conv2"), Layer(3, 2, 1, 0, "pool2"),
        Layer(3, 1, 1, 1, "conv3"), Layer(3, 1, 1, 1, "conv4"), Layer(3, 1, 1, 1, "conv5"),
    ]


VGG_STAGES = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


def vgg_layers(name: str = "vgg16") -> list[Layer]:
    """VGG (Simonyan & Zisserman 2015): 3x3 convs (pad 1) and 2x2 max pools, up to the last conv."""
    out: list[Layer] = []
    for stage, n in enumerate(VGG_STAGES[name], start=1):
        if stage > 1:
            out.append(Layer(2, 2, 1, 0, f"pool{stage - 1}"))
        out += [Layer(3, 1, 1, 1, f"conv{stage}_{i + 1}") for i in range(n)]
    return out


RESNET_STAGES = {
    "resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False), "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True), "resnet152": ((3, 8, 36, 3), True),
}


def resnet_layers(name: str = "resnet50") -> list[Layer]:
    """ImageNet ResNet (He et al. 2016; stride on the 3x3 conv as in torchvision and flax's
    example): the longest path, up to the last convolution."""
    stages, bottleneck = RESNET_STAGES[name]
    out = [Layer(7, 2, 1, 3, "conv1"), Layer(3, 2, 1, 1, "maxpool")]
    for si, n in enumerate(stages):
        for b in range(n):
            s = 2 if (si > 0 and b == 0) else 1
            tag = f"stage{si + 1}_block{b + 1}"
            if bottleneck:
                out += [Layer(1, 1, 1, 0, f"{tag}_conv1"), Layer(3, s, 1, 1, f"{tag}_conv2"),
                        Layer(1, 1, 1, 0, f"{tag}_conv3")]
            else:
                out += [Layer(3, s, 1, 1, f"{tag}_conv1"), Layer(3, 1, 1, 1, f"{tag}_conv2")]
    return out


def cifar_resnet_layers(depth: int) -> list[Layer]:
    """CIFAR ResNet-(6n+2) (He et al. 2016, Sec. 4.2): 3x3 conv, three stages of n basic blocks."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    out = [Layer(3, 1, 1, 1, "conv1")]
    for si in range(3):
        for b in range(n):
            s = 2 if (si > 0 and b == 0) else 1
            out += [Layer(3, s, 1, 1, f"stage{si + 1}_block{b + 1}_conv1"),
                    Layer(3, 1, 1, 1, f"stage{si + 1}_block{b + 1}_conv2")]
    return out


def architecture_layers(name: str) -> list[Layer] | None:
    """The layer chain of a known architecture by registry name (None if unknown)."""
    if name == "alexnet":
        return alexnet_layers()
    if name in VGG_STAGES:
        return vgg_layers(name)
    if name in RESNET_STAGES:
        return resnet_layers(name)
    for prefix in ("cifar_resnet", "resnet"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            depth = int(name[len(prefix):])
            if (depth - 2) % 6 == 0 and depth not in (50, 101, 152):
                return cifar_resnet_layers(depth)
    return None


# --------------------------------------------------------------------------- measured by gradients


@dataclasses.dataclass
class MeasuredField:
    """The support of d(unit)/d(input): bounding box, how much of the box is filled, and the map."""

    size: tuple[int, ...]
    start: tuple[int, ...]  # first input pixel of the support, per axis
    unit: tuple[int, ...]
    fill: float  # nonzero fraction of the bounding box (1.0 = a solid rectangle)
    grad_map: np.ndarray  # |gradient| summed over channels and inputs, (*spatial)


def gradient_map(f: Callable[[jax.Array], jax.Array], x: jax.Array, unit: Sequence[int]) -> np.ndarray:
    """|d sum_c f(x)[:, *unit, c] / dx| summed over the batch and the input channels.

    If `f` is a `jax.tree_util.Partial` (as `last_conv_fn` returns) its bound arrays (the model's
    weights) enter the compiled gradient as arguments, not as constants XLA would fold."""
    unit = tuple(int(u) for u in unit)

    def out(fn, xx):
        return jnp.sum(fn(xx)[(slice(None), *unit)])

    if isinstance(f, jax.tree_util.Partial):
        g = jax.jit(jax.grad(out, argnums=1))(f, x)
    else:
        g = jax.jit(jax.grad(lambda xx: out(f, xx)))(x)
    return np.asarray(jnp.sum(jnp.abs(g), axis=(0, -1)), np.float64)


def empirical_receptive_field(
    f: Callable[[jax.Array], jax.Array],
    input_shape: Sequence[int],
    unit: Sequence[int] | None = None,
    num_inputs: int = 2,
    seed: int = 0,
) -> MeasuredField:
    """Measure the receptive field of output unit `unit` (default: the centre) of `f`, which maps
    a batch (N, *input_shape) to feature maps (N, *out_spatial, C), from the support of its
    input gradient on `num_inputs` random inputs (several, so max pooling and dead ReLUs that
    block a path for one input do not hide a pixel)."""
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((num_inputs, *input_shape)), jnp.float32)
    out_shape = jax.eval_shape(f, x).shape
    spatial = out_shape[1:-1]
    if unit is None:
        unit = tuple(n // 2 for n in spatial)
    g = gradient_map(f, x, unit)
    nz = np.argwhere(g > 0)
    if nz.size == 0:
        raise ValueError(f"the gradient of unit {tuple(unit)} is zero everywhere: nothing to measure")
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    box = g[tuple(slice(a, b + 1) for a, b in zip(lo, hi))]
    return MeasuredField(
        size=tuple(int(b - a + 1) for a, b in zip(lo, hi)), start=tuple(int(a) for a in lo),
        unit=tuple(int(u) for u in unit), fill=float(np.mean(box > 0)), grad_map=g,
    )


def _is_conv(module: nn.Module) -> bool:
    from nnbasics.nn.conv import Conv

    return isinstance(module, (Conv, nn.Conv, nn.ConvLocal))


class _Tracker:
    """Catches the outputs of selected submodules and skips Dense layers after the first
    selected one (a classifier head: it cannot change the field of an earlier layer, and
    skipping it means its weights are never created, e.g. VGG's 100M-parameter head)."""

    def __init__(self, select: Callable[[nn.Module], bool], skip_heads: bool):
        self.select, self.skip_heads = select, skip_heads
        self.caught: list[jax.Array] = []
        self.skipped = False

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if self.skip_heads and self.caught and isinstance(context.module, nn.Dense):
            self.skipped = True
            x = args[0]
            return jnp.zeros((*x.shape[:-1], context.module.features), x.dtype)
        y = next_fun(*args, **kwargs)
        if self.select(context.module):
            if self.skipped:
                raise ValueError("a selected layer follows a Dense layer: cannot skip the head")
            self.caught.append(y)
        return y


def _apply_caught(model: nn.Module, select, which: int, variables: Any, x: jax.Array) -> jax.Array:
    tracker = _Tracker(select, skip_heads=True)
    with nn.intercept_methods(tracker):
        model.apply(variables, x, train=False)
    if not tracker.caught:
        raise ValueError(f"{type(model).__name__} calls no module that matches the selection")
    return tracker.caught[which]


def module_output_fn(
    model: nn.Module, variables: Any, select: Callable[[nn.Module], bool] = _is_conv, which: int = -1
) -> Callable[[jax.Array], jax.Array]:
    """x -> the output of the `which`-th (default: last) submodule call for which `select` is true,
    in execution order, of `model.apply(variables, x, train=False)`; caught with
    `nn.intercept_methods`, so the model needs no change. Returned as a `jax.tree_util.Partial`
    holding the weights (see `gradient_map`)."""
    return jax.tree_util.Partial(functools.partial(_apply_caught, model, select, which), variables)


def random_variables(shapes: Any, seed: int = 0) -> Any:
    """Weights for a tree of shapes (from `jax.eval_shape(model.init, ...)`) drawn with NumPy:
    kernels N(0, 2 / fan_in); BatchNorm-style 'scale' and 'var' ones; other vectors zeros. Only
    which pixels the gradient reaches matters here, and NumPy avoids compiling one XLA initializer
    per parameter shape (seconds for a ResNet)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1])) if path else ""
        shape = tuple(leaf.shape)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            return jnp.asarray(rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1)), leaf.dtype)
        if name in ("scale", "var"):
            return jnp.ones(shape, leaf.dtype)
        return jnp.zeros(shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def last_conv_fn(model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> Callable[[jax.Array], jax.Array]:
    """Random weights for `model` (NHWC, `train` argument) on `input_shape`, and x -> the output
    of its last convolution, for `empirical_receptive_field`. Dense layers after the first
    convolution (the head) are skipped, so their weights are never created."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    tracker = _Tracker(_is_conv, skip_heads=True)
    rngs = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
    with nn.intercept_methods(tracker):
        shapes = jax.eval_shape(lambda xx: model.init(rngs, xx, train=False), x)
    return module_output_fn(model, random_variables(shapes, seed))
