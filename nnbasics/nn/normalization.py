"""Normalization layers written from the formula, and Weight Standardization.

Every normalizer computes  y = (x - mean) / sqrt(var + eps) * scale + bias  (per channel scale
and bias); they differ only in the set of activations the mean and variance are taken over
(Wu & He 2018, Figure 2), for an NHWC tensor:

    batch     over (N, H, W)         per channel, across the batch (running averages at eval)
    layer     over (H, W, C)         per example
    instance  over (H, W)            per example and channel
    group     over (H, W, C/G)       per example and group of C/G channels

`NORMS` is the registry (`none|batch|layer|instance|group`) every model uses through
`make_norm(norm, train)`. `statistics_mask` recovers, from a layer's own gradient, which
activations share the statistics of one activation: the lecture's figure of the normalizers is
drawn from it. `WSConv` standardizes its kernel over the fan-in (Qiao et al. 2019) and, with
`scaled=True`, is the Scaled WS of NF-ResNets (Brock, De & Smith 2021).

This module never imports `nnbasics.models` (models import it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.nn import onednn as _onednn
from nnbasics.nn.conv import PaddingLike, conv_general
from nnbasics.registry import Registry

Initializer = Callable[..., Any]

# The axes of an NHWC activation each normalizer takes its statistics over ("C/G": a group of channels).
NORM_AXES: dict[str, tuple[str, ...]] = {
    "none": (),
    "batch": ("N", "H", "W"),
    "layer": ("H", "W", "C"),
    "instance": ("H", "W"),
    "group": ("H", "W", "C/G"),
}


def standardize(x: jax.Array, axes: Sequence[int], epsilon: float = 1e-5) -> jax.Array:
    """(x - mean) / sqrt(var + eps) with mean and (biased) variance over `axes`."""
    axes = tuple(axes)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + epsilon)


class _Affine(nn.Module):
    """Per-channel scale and bias after standardization (the learned gamma and beta)."""

    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    def affine(self, y: jax.Array) -> jax.Array:
        c = y.shape[-1]
        if self.use_scale:
            y = y * self.param("scale", self.scale_init, (c,))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (c,))
        return y


class Identity(nn.Module):
    """No normalization (the `none` entry of the registry)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def running_var_estimate(var: jax.Array, count: int, unbiased: bool = True) -> jax.Array:
    """The variance a BatchNorm's running average takes in: the biased batch variance `var` of
    `count` values times count / (count - 1) when `unbiased` (Ioffe & Szegedy; PyTorch), else `var`
    (flax). A single value per channel has no unbiased estimate; then `var` (0) is used as is."""
    if unbiased and count > 1:
        return var * (count / (count - 1))
    return var


def _batch_statistics(x: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    rstd = jax.lax.rsqrt(var + epsilon)
    return (x - mean) * rstd, mean, var, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def batch_standardize(x: jax.Array, epsilon: float = 1e-5) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x - mean) / sqrt(var + eps) over every axis but the last, with the mean and (biased) variance:
    BatchNorm's training-mode standardization, with a hand-written backward pass.

    Plain autodiff of the formula differentiates through the mean and the variance separately (more
    passes over the activation, and reductions XLA:CPU runs slowly for few channels); the backward
    pass here is the textbook one, dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps), two
    reductions and one elementwise pass (3.4x faster for a 128x32x32x16 activation on one core, the
    same values to float32 rounding; tests/test_normalization.py). Reverse mode only (it is a
    `jax.custom_vjp`): for forward mode (`jax.jvp`, `jax.jacfwd`) use
    `BatchNorm(fused_backward=False)`. The cotangents of the returned mean and variance are included
    (the running averages do not need them; a loss that uses the batch statistics does)."""
    xhat, mean, var, _ = _batch_statistics(x, epsilon)
    return xhat, mean, var


def _batch_standardize_fwd(x, epsilon):
    xhat, mean, var, rstd = _batch_statistics(x, epsilon)
    return (xhat, mean, var), (x, mean, rstd)


def _batch_standardize_bwd(epsilon, res, cts):
    x, mean, rstd = res
    g, g_mean, g_var = cts
    axes = tuple(range(x.ndim - 1))
    count = math.prod(x.shape[:-1])
    xc = x - mean
    xhat = xc * rstd
    dx = rstd * (g - jnp.mean(g, axis=axes) - xhat * jnp.mean(g * xhat, axis=axes))
    return (dx + g_mean / count + (2.0 / count) * g_var * xc,)


batch_standardize.defvjp(_batch_standardize_fwd, _batch_standardize_bwd)


def _as_nhwc(x: jax.Array) -> jax.Array:
    """x (N, ..., C) as the (N, positions, 1, C) activation oneDNN's batch normalization reads (same memory)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:-1]), 1, x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def onednn_batch_norm(x: jax.Array, scale: jax.Array, shift: jax.Array, epsilon: float = 1e-5, relu: bool = False
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BatchNorm in training on oneDNN's primitives (the optional extra, CPU, float32): (y, mean, var) with
    y = scale * (x - mean) / sqrt(var + eps) + shift, mean and (biased) variance over every axis but the
    last, x of rank >= 2. The same values as `batch_standardize` followed by the affine map, to float32
    rounding, and the same gradients (the textbook backward pass, in oneDNN; the cotangents of the
    returned mean and variance added when a loss uses them). `relu`: y = max(0, ...) computed in the same
    pass (oneDNN's fused ReLU, whose mask the backward pass reads). Reverse mode only; works under jit and
    vmap (each member its own statistics). `BatchNorm` takes this path when the oneDNN switch is on
    (`onednn_norm_worthwhile`)."""
    y, mean, var, *_ = _onednn.batch_norm_forward(_as_nhwc(x), scale, shift, epsilon, relu)
    return y.reshape(x.shape), mean, var


def _onednn_batch_norm_fwd(x, scale, shift, epsilon, relu):
    x, scale, shift = x.value, scale.value, shift.value  # symbolic_zeros: CustomVJPPrimal
    y, mean, var, *mask = _onednn.batch_norm_forward(_as_nhwc(x), scale, shift, epsilon, relu)
    return (y.reshape(x.shape), mean, var), (x, mean, var, scale, mask[0] if mask else None)


def _onednn_batch_norm_bwd(epsilon, relu, res, cts):
    x, mean, var, scale, mask = res
    g, g_mean, g_var = cts
    zero = jax.custom_derivatives.SymbolicZero
    if isinstance(g, zero):
        g = jnp.zeros(x.shape, x.dtype)
    dx, dscale, dshift = _onednn.batch_norm_backward(_as_nhwc(x), _as_nhwc(g), mean, var, scale, epsilon, mask)
    dx = dx.reshape(x.shape)
    count = math.prod(x.shape[:-1])
    if not isinstance(g_mean, zero):  # a loss that uses the batch mean
        dx = dx + g_mean / count
    if not isinstance(g_var, zero):  # ... or the batch variance
        dx = dx + (2.0 / count) * g_var * (x - mean)
    return dx, dscale, dshift


onednn_batch_norm.defvjp(_onednn_batch_norm_fwd, _onednn_batch_norm_bwd, symbolic_zeros=True)

# The oneDNN switch moves a training-mode BatchNorm onto `onednn_batch_norm` from this many rows (a member's
# batch x positions) per call; below, its fixed cost per call loses. Measured on one core, forward + backward,
# 6 vmapped members (experiments/benchmarks/README.md, round eleven): 16 channels, oneDNN / XLA 2.33x at 16
# rows, 0.85x at 64, 0.61x at 128, 0.34-0.36x at 1k-4k; 64 channels 0.87x at 16, 0.52x at 64.
ONEDNN_NORM_MIN_ROWS = 64


def onednn_norm_worthwhile(x: jax.Array) -> bool:
    """Whether the oneDNN switch moves this training-mode BatchNorm onto oneDNN: on a CPU, float32, rank
    >= 2, at least ONEDNN_NORM_MIN_ROWS rows (batch x positions, as traced: under vmap, a member's), and
    the switch on and usable here (`nnbasics.nn.conv.onednn_enabled`: one device, or a per-device
    program)."""
    from nnbasics.nn.conv import onednn_enabled

    return (x.ndim >= 2 and x.dtype == jnp.float32 and x.shape[-1] > 0
            and math.prod(x.shape[:-1]) >= ONEDNN_NORM_MIN_ROWS
            and jax.default_backend() == "cpu" and onednn_enabled())


class BatchNorm(_Affine):
    """Batch Normalization (Ioffe & Szegedy 2015): statistics over every axis but the channel.

    In training (`train=True`) the batch's own mean and (biased) variance normalize, and running
    averages `batch_stats/mean`, `batch_stats/var` are updated (r <- momentum r + (1 - momentum) batch);
    in evaluation the running averages are used, so the output no longer depends on the batch.

    The running variance averages the unbiased estimate m / (m - 1) * var of the m = N*H*W values
    per channel, as in Ioffe & Szegedy (Algorithm 2, step 10) and PyTorch's BatchNorm2d;
    `unbiased_running_var=False` averages the biased variance instead, as flax.linen.BatchNorm does
    (the normalization in training is the same either way).

    In training the standardization's backward pass is hand-written (`batch_standardize`: fewer
    passes over the activation than autodiff of the formula, the same values to float32 rounding);
    it supports reverse mode only, so `fused_backward=False` differentiates the formula instead
    (forward mode, `jax.jvp`/`jax.jacfwd`, through a training-mode BatchNorm). With the oneDNN switch
    on (the optional extra, CPU) a training-mode BatchNorm of at least ONEDNN_NORM_MIN_ROWS rows runs
    on oneDNN's batch normalization (`onednn_batch_norm`); `relu=True` (max(0, .) after the affine
    map, as the ResNets' `norm_act` builds it) is then the same oneDNN pass."""

    train: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = True
    fused_backward: bool = True
    relu: bool = False  # max(0, .) after the affine map (fused into oneDNN's pass when the switch is on)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.train and self.fused_backward and onednn_norm_worthwhile(x):  # the oneDNN switch
            scale = self.param("scale", self.scale_init, (c,)) if self.use_scale else jnp.ones((c,), x.dtype)
            bias = self.param("bias", self.bias_init, (c,)) if self.use_bias else jnp.zeros((c,), x.dtype)
            y, mean, var = onednn_batch_norm(x, scale, bias, self.epsilon, self.relu)
            self._update_running(ra_mean, ra_var, mean, var, x)
            return y
        if self.train:
            if self.fused_backward:
                y, mean, var = batch_standardize(x, self.epsilon)
            else:  # the formula, differentiated by JAX (forward mode works)
                y, mean, var, _ = _batch_statistics(x, self.epsilon)
            self._update_running(ra_mean, ra_var, mean, var, x)
        else:
            y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
        y = self.affine(y)
        return jax.nn.relu(y) if self.relu else y

    def _update_running(self, ra_mean, ra_var, mean, var, x) -> None:
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * running_var_estimate(
                var, math.prod(x.shape[:-1]), self.unbiased_running_var)


class LayerNorm(_Affine):
    """Layer Normalization (Ba et al. 2016) as in Wu & He: per example over (H, W, C)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.affine(standardize(x, range(1, x.ndim), self.epsilon))


class InstanceNorm(_Affine):
    """Instance Normalization (Ulyanov et al. 2016): per example and channel over (H, W)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 3:
            raise ValueError(f"InstanceNorm needs spatial axes (N, ..., C); got shape {x.shape}")
        return self.affine(standardize(x, range(1, x.ndim - 1), self.epsilon))


def auto_groups(channels: int, max_groups: int = 32) -> int:
    """Wu & He's G = 32 where the layer is wide enough, else the largest divisor of C that leaves
    at least two channels per group (so narrow layers, e.g. CIFAR ResNets' 16, still get a GroupNorm)."""
    return max(g for g in range(1, min(max_groups, channels // 2 or 1) + 1) if channels % g == 0)


def resolve_groups(channels: int, num_groups: int | None, group_size: int | None) -> int:
    """The number of groups for `channels` channels from a group count, a group size, or neither
    (then `auto_groups`)."""
    if num_groups is None and group_size is None:
        return auto_groups(channels)
    if num_groups is not None and group_size is not None:
        raise ValueError("give at most one of num_groups and group_size")
    if group_size is not None:
        if group_size <= 0 or channels % group_size:
            raise ValueError(f"group_size={group_size} does not divide the {channels} channels")
        return channels // group_size
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(
            f"num_groups={num_groups} does not divide the {channels} channels; choose a divisor of {channels}"
        )
    return num_groups


class GroupNorm(_Affine):
    """Group Normalization (Wu & He 2018): per example over (H, W) and a group of C/G channels.

    G = 1 is LayerNorm, G = C is InstanceNorm."""

    num_groups: int | None = 32
    group_size: int | None = None
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        g = resolve_groups(c, self.num_groups, self.group_size)
        xg = x.reshape(*x.shape[:-1], g, c // g)
        axes = (*range(1, x.ndim - 1), x.ndim)  # spatial axes and the within-group channel axis
        y = standardize(xg, axes, self.epsilon).reshape(x.shape)
        return self.affine(y)


# --------------------------------------------------------------------------------- the registry

NORMS: Registry[Callable[..., nn.Module]] = Registry("normalizer")


@NORMS.register("none")
def _none(train: bool, name: str | None = None, **kw: Any) -> nn.Module:
    return Identity(name=name)


@NORMS.register("batch")
def _batch(train: bool, name: str | None = None, **kw: Any) -> nn.Module:
    return BatchNorm(train=train, name=name, **kw)


@NORMS.register("layer")
def _layer(train: bool, name: str | None = None, **kw: Any) -> nn.Module:
    return LayerNorm(name=name, **kw)


@NORMS.register("instance")
def _instance(train: bool, name: str | None = None, **kw: Any) -> nn.Module:
    return InstanceNorm(name=name, **kw)


@NORMS.register("group")
def _group(train: bool, name: str | None = None, **kw: Any) -> nn.Module:
    if "num_groups" not in kw and "group_size" not in kw:
        kw["num_groups"] = None  # auto_groups: 32 where the layer is wide enough
    return GroupNorm(name=name, **kw)


def make_norm(norm: str, train: bool, name: str | None = None, **kwargs: Any) -> nn.Module:
    """The normalizer `norm` (none|batch|layer|instance|group) as a module taking only x.

    `train` matters for BatchNorm only (batch statistics vs running averages); extra keyword
    arguments go to the layer (e.g. num_groups=8, momentum=0.9, scale_init=zeros)."""
    return NORMS.get(norm)(train, name=name, **kwargs)


def norm_names() -> list[str]:
    return NORMS.names()


def statistics_mask(norm: str, shape: Sequence[int] = (4, 3, 2, 6), index: Sequence[int] | None = None,
                    seed: int = 0, **kwargs: Any) -> np.ndarray:
    """Which activations of an NHWC tensor of `shape` share their mean and variance with the
    activation at `index`, found from the layer itself (training mode): entry j is True when
    output[index] depends on input[j]. This is the set each normalizer normalizes over."""
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(shape)), jnp.float32)
    index = tuple(index) if index is not None else (0,) * len(shape)
    layer = make_norm(norm, train=True, **kwargs)
    variables = layer.init(jax.random.key(1), x)

    def out(xx):
        y = layer.apply(variables, xx, mutable=["batch_stats"])[0] if "batch_stats" in variables else (
            layer.apply(variables, xx))
        return y[index]

    g = np.asarray(jax.jit(jax.grad(out))(x))
    mask = np.abs(g) > 1e-7
    mask[index] = True
    return mask


# ----------------------------------------------------------- every normalizer as two averagings

KINDS = ("none", "batch", "layer", "instance", "group")  # the index of each in SelectedNorm's `kind`


def averaging_matrices(kind: int | jax.Array, n: int, c: int, num_groups: int) -> tuple[jax.Array, jax.Array]:
    """(Q, P): the (n, n) average over examples and the (c, c) average over channels that turn the
    per-(example, channel) spatial means m (n, c) into a normalizer's mean Q m P.

    batch: Q = 11^T / n, P = I.  layer: Q = I, P = 11^T / c.  instance: Q = I, P = I.
    group: Q = I, P = block-diagonal averages over C/G channels. `kind` may be traced."""
    g = resolve_groups(c, num_groups, None)
    same_group = (np.arange(c)[:, None] // (c // g)) == (np.arange(c)[None, :] // (c // g))
    group_avg = jnp.asarray(same_group / (c // g), jnp.float32)
    eye_c, eye_n = jnp.eye(c), jnp.eye(n)
    q = jnp.where(kind == KINDS.index("batch"), jnp.full((n, n), 1.0 / n), eye_n)
    p = jnp.where(kind == KINDS.index("layer"), jnp.full((c, c), 1.0 / c),
                  jnp.where(kind == KINDS.index("group"), group_avg, eye_c))
    return q, p


class SelectedNorm(_Affine):
    """All five normalizers in one layer, the one used picked by a (possibly traced) index `kind`
    into KINDS, so networks that differ only in their normalizer can be vmapped into one program.

    Every normalizer standardizes with mean Q m P and variance Q s P - mean^2, where m and s are
    the spatial means of x and x^2 per (example, channel) and (Q, P) = `averaging_matrices`; it
    equals BatchNorm / LayerNorm / InstanceNorm / GroupNorm (tested). BatchNorm's running
    averages are kept for every kind and used at evaluation for `batch` only; like BatchNorm's, the
    running variance averages the unbiased estimate unless `unbiased_running_var=False`."""

    num_groups: int = 8
    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, kind: int | jax.Array, train: bool) -> jax.Array:
        n, c = x.shape[0], x.shape[-1]
        spatial = tuple(range(1, x.ndim - 1))
        m = jnp.mean(x, axis=spatial)  # (n, c)
        s = jnp.mean(jnp.square(x), axis=spatial)
        q, p = averaging_matrices(kind, n, c, self.num_groups)
        mean = q @ m @ p
        var = jnp.maximum(q @ s @ p - jnp.square(mean), 0.0)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train and not self.is_initializing():
            bm = jnp.mean(m, axis=0)
            bv = jnp.maximum(jnp.mean(s, axis=0) - jnp.square(bm), 0.0)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * bm
            bv = running_var_estimate(bv, math.prod(x.shape[:-1]), self.unbiased_running_var)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * bv
        if not train:
            is_batch = kind == KINDS.index("batch")
            mean = jnp.where(is_batch, ra_mean.value[None], mean)
            var = jnp.where(is_batch, ra_var.value[None], var)
        shape = (n,) + (1,) * len(spatial) + (c,)
        y = self.affine((x - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + self.epsilon))
        return jnp.where(kind == KINDS.index("none"), x, y)


# ------------------------------------------------------------------------- weight standardization


def standardize_kernel(kernel: jax.Array, scaled: bool = False, epsilon: float | None = None) -> jax.Array:
    """A conv or dense kernel (..., fan_in axes, out) standardized per output unit over its fan-in.

    WS (Qiao et al.): (W - mean) / sqrt(var + eps), eps = 1e-5.  Scaled WS (Brock, De & Smith):
    (W - mean) / sqrt(max(N var, eps)), eps = 1e-4, N = fan-in, so sum_i W_i^2 = 1 and a
    unit-variance input gives a unit-variance output."""
    axes = tuple(range(kernel.ndim - 1))
    fan_in = int(np.prod(kernel.shape[:-1]))
    mean = jnp.mean(kernel, axis=axes, keepdims=True)
    var = jnp.var(kernel, axis=axes, keepdims=True)
    if scaled:
        return (kernel - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, 1e-4 if epsilon is None else epsilon))
    return (kernel - mean) * jax.lax.rsqrt(var + (1e-5 if epsilon is None else epsilon))


class WSConv(nn.Module):
    """A convolution whose kernel is standardized over its fan-in at every call.

    `scaled=True` is Scaled WS: W_hat = gain * gamma * (W - mean) / (std sqrt(fan_in)) with a
    learnable per-channel `gain` (init 1) and the activation's gain `gamma` folded in (for ReLU,
    gamma = sqrt(2 / (1 - 1/pi)), so relu-then-conv preserves unit variance)."""

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    scaled: bool = False
    gamma: float = 1.0
    use_gain: bool | None = None  # default: True when scaled
    epsilon: float | None = None  # None: standardize_kernel's default (1e-4 scaled, 1e-5 plain)
    kernel_init: Initializer = nn.initializers.normal(1.0)  # any scale: the kernel is standardized
    bias_init: Initializer = nn.initializers.zeros
    impl: str = "auto"

    def standardized_kernel(self, kernel: jax.Array) -> jax.Array:
        w = standardize_kernel(kernel, self.scaled, self.epsilon)
        use_gain = self.scaled if self.use_gain is None else self.use_gain
        if use_gain:
            w = w * self.param("gain", nn.initializers.ones, (self.features,))
        return w * self.gamma

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = tuple(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (*ks, x.shape[-1], self.features))
        y = conv_general(x, self.standardized_kernel(kernel), self.strides, self.padding, impl=self.impl)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y


def get_norm(norm: str, train: bool) -> Callable[..., nn.Module]:
    """A layer constructor `make(name=..., **kwargs)` for the normalizer `norm` (used by resnet.py)."""
    NORMS.check(norm)

    def make(name: str | None = None, **kwargs: Any) -> nn.Module:
        return make_norm(norm, train, name=name, **kwargs)

    return make
