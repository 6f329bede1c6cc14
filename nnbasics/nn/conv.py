"""Convolution (NWC / NHWC) that picks a fast, correct implementation for the backend.

`conv_general` computes the same function as `lax.conv_general_dilated` with channels-last
layouts, and so do its gradients; only the way they are computed changes:

- "xla": `lax.conv_general_dilated` for the forward pass and both gradients. What GPUs and
  TPUs use (cuDNN / the TPU's own convolutions are fast).
- "patches": the patch-matrix ("im2col") formulation. Every receptive field is gathered with
  strided slices into one row, the convolution is one matrix product, and its gradients are
  matrix products plus a padded sum of slices (plain autodiff). Fastest on CPU for small convs
  such as MNIST-1D's 1-D convs, where XLA's CPU conv has a large fixed cost per call.
- "chunked": a `jax.custom_vjp` for larger 2-D convs on CPU. The forward pass and the input
  gradient stay XLA's own convolutions (fast on CPU), but the weight gradient, where XLA's CPU
  convolution is slow (it transposes the activations into a batch-minor layout and fuses their
  producers into that transpose), is a sum of patch-matrix products over small chunks of the
  batch in a `lax.scan`, so each chunk's patch matrix stays in cache. The patch matrix is built
  channel-major, (kernel offsets x channels, positions), so each product is a plain matrix
  product with the positions contiguous (2-3x the rate of the positions-major product on XLA:CPU).
- "onednn": oneDNN's convolution primitives (forward, input gradient, weight gradient) through
  `jax.ffi`, for float32 1-D and 2-D convs without groups or dilation and with non-negative padding
  (a 1-D conv runs as the 2-D conv of a one-row image); an optional extra
  (`pip install -e ".[onednn]"`, a C++ compiler, built on first use: see `nnbasics.nn.onednn`).
  OFF unless switched on with `use_onednn(True)` or NNBASICS_ONEDNN=1; whatever it does not
  support, or where it cannot be built, takes the path "auto" takes without it.
- "auto": "xla" on GPU/TPU; on CPU "patches" for 1-D convs, "chunked" for 2-D convs with a batch
  of at least two chunks, else "xla". See `choose_implementation`.

The switch: with oneDNN switched on, every CPU formulation ("auto", "patches", "chunked": the
choices a model or preset makes for speed on a CPU) becomes "onednn" for the convs it supports, so
a preset that names "patches" (fastest without the extra on its small maps) runs on oneDNN too
(in a one-device job or a members-only split over several: see `onednn_enabled`; and only
where a call has ONEDNN_MIN_ROWS output rows or more: below, oneDNN's fixed cost per call loses);
"xla" stays XLA's own convolution, and GPUs/TPUs are never affected. Switched off (the default),
every program is the one it was before the extra existed.

Measured on a 2-core AMD EPYC (see experiments/benchmarks/README.md): the MNIST-1D CNN trains
4.4x faster with "patches" than with "xla"; a ResNet-20 training step runs 1.3-1.5x faster with
"chunked" on 2 cores (1.0-1.1x on one core). With the channel-major patch matrix (round four, an
AVX-512 Xeon, one core): the step 1.2x faster than the earlier chunked version, 1.3x than "xla".
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from nnbasics.nn import onednn as _onednn

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
IMPLEMENTATIONS = ("auto", "xla", "patches", "chunked", "onednn")
# The CPU formulations a model or preset names for speed on a CPU without the extra; with the oneDNN
# switch on, each of them becomes "onednn" for the convs it supports ("xla" stays XLA's own).
CPU_FORMULATIONS = ("auto", "patches", "chunked")
# Images per weight-gradient chunk: 4 images of 32x32x16 make a 4096 x 144 patch matrix (2.4 MB, in
# cache). Larger chunks for the later (smaller) stages measured no faster on the 2-core EPYC.
WGRAD_CHUNK = 4


def _tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise ValueError(f"{what} must be an int or a sequence of {n} ints, got {v}")
    return v


def explicit_padding(
    padding: PaddingLike,
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """(low, high) padding per spatial dimension, resolving 'SAME'/'VALID'/ints like lax does."""
    n = len(in_shape)
    if isinstance(padding, str):
        p = padding.upper()
        if p == "VALID":
            return [(0, 0)] * n
        if p == "SAME":
            pads = []
            for size, k, s, d in zip(in_shape, kernel_shape, strides, dilation):
                eff = (k - 1) * d + 1
                out = -(-size // s)
                total = max((out - 1) * s + eff - size, 0)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"padding must be 'SAME', 'VALID', an int or (low, high) pairs, got {padding!r}")
    if isinstance(padding, int):
        return [(padding, padding)] * n
    padding = list(padding)
    if len(padding) != n:
        raise ValueError(f"padding needs one entry per spatial dimension ({n}), got {padding}")
    return [(p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding]


def output_shape(
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Spatial output size of a convolution (floor((in + pads - effective kernel) / stride) + 1)."""
    return tuple(
        (size + lo + hi - ((k - 1) * d + 1)) // s + 1
        for size, k, s, (lo, hi), d in zip(in_shape, kernel_shape, strides, pads, dilation)
    )


_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _conv_xla(x, kernel, strides, pads, dilation, groups):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=_SPECS[x.ndim - 2],
        feature_group_count=groups,
    )


# ------------------------------------------------------------------------------ patch matrices


def _windows(x, spatial_axes, kernel_shape, strides, pads, dilation) -> list[jax.Array]:
    """x zero-padded on its spatial axes, then one strided slice per kernel offset (row-major order):
    slice k holds, at every output position, the input value that kernel offset k multiplies."""
    axes = list(spatial_axes)
    outs = output_shape([x.shape[a] for a in axes], kernel_shape, strides, pads, dilation)
    if any(o <= 0 for o in outs):
        raise ValueError(f"convolution output would be empty: input {x.shape}, kernel {tuple(kernel_shape)}")
    config = [(0, 0, 0)] * x.ndim
    for a, (lo, hi) in zip(axes, pads):
        config[a] = (lo, hi, 0)
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
    slices = []
    for offset in itertools.product(*[range(k) for k in kernel_shape]):
        start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
        for a, o, d, s, n in zip(axes, offset, dilation, strides, outs):
            start[a], limit[a], step[a] = o * d, o * d + s * (n - 1) + 1, s
        slices.append(lax.slice(x, start, limit, step))
    return slices


def extract_patches(
    x: jax.Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> jax.Array:
    """(N, *out_spatial, prod(kernel_shape) * C): every receptive-field window as one row.

    The column order is (kernel offsets in row-major order, then channels), the order of
    `kernel.reshape(-1, Cout)` for a (*k, C, Cout) kernel."""
    nd = x.ndim - 2
    slices = _windows(x, range(1, nd + 1), kernel_shape, strides, pads, dilation)
    patches = jnp.stack(slices, axis=nd + 1)  # (N, *outs, K, C)
    return patches.reshape(*patches.shape[: nd + 1], -1)


def _conv_patches(x, kernel, strides, pads, dilation, groups):
    nd = x.ndim - 2
    ks = kernel.shape[:nd]
    patches = extract_patches(x, ks, strides, pads, dilation)
    if groups == 1:
        return jnp.einsum("...k,kf->...f", patches, kernel.reshape(-1, kernel.shape[-1]))
    cin_g, cout = kernel.shape[-2], kernel.shape[-1]
    patches = patches.reshape(*patches.shape[:-1], math.prod(ks), groups, cin_g)
    w = kernel.reshape(math.prod(ks), cin_g, groups, cout // groups)
    y = jnp.einsum("...kgc,kcgf->...gf", patches, w)
    return y.reshape(*y.shape[:-2], cout)


# -------------------------------------------------------------- chunked weight gradient (custom VJP)


def chunk_size(batch: int, target: int = WGRAD_CHUNK) -> int:
    """The largest divisor of `batch` not above `target` (chunks must tile the batch)."""
    return max(c for c in range(1, min(target, batch) + 1) if batch % c == 0)


def patches_channel_major(
    x: jax.Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> jax.Array:
    """The transposed patch matrix of channel-major images: x (C, B, *spatial) -> (K * C, B * prod(out)).

    Row (kernel offset k, channel c) holds that input value for every output position of every
    image, so the positions (the long axis a weight gradient contracts over) are contiguous: the
    product with (B * prod(out), F) output gradients is then a plain matrix product, which XLA:CPU
    runs 2-3x faster than the same product over the (positions, K * C) patch matrix of
    `extract_patches` (experiments/benchmarks/README.md, round four)."""
    slices = _windows(x, range(2, x.ndim), kernel_shape, strides, pads, dilation)
    patches = jnp.concatenate(slices, axis=0)  # (K * C, B, *outs)
    return patches.reshape(patches.shape[0], -1)


def weight_grad_chunked(
    x: jax.Array,
    g: jax.Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    chunk: int | None = None,
) -> jax.Array:
    """d(loss)/d(kernel) of an ungrouped convolution: sum over chunks of patches(x_chunk)^T g_chunk.

    x (N, *spatial, C), g = d(loss)/d(output) (N, *out, F) -> (*kernel_shape, C, F). Chunk j holds
    images j, j + N/c, j + 2N/c, ... (a strided set), so that a batch sharded over devices in
    contiguous blocks stays sharded inside every chunk. `chunk` defaults to `WGRAD_CHUNK`.

    The activations are transposed once to (chunk, C, images, *spatial) and each chunk's patch
    matrix is built channel-major (`patches_channel_major`), so every product is a plain
    (K * C, positions) @ (positions, F) matrix product."""
    nd = x.ndim - 2
    n, cin, cout = x.shape[0], x.shape[-1], g.shape[-1]
    c = chunk_size(n, WGRAD_CHUNK if chunk is None else chunk)
    steps = n // c
    # (c, steps, *sp, C) -> (steps, C, c, *sp): image i * steps + j is member i of chunk j.
    xs = jnp.moveaxis(x.reshape(c, steps, *x.shape[1:]), (1, nd + 2), (0, 1))
    gs = jnp.swapaxes(g.reshape(c, steps, *g.shape[1:]), 0, 1).reshape(steps, -1, cout)
    k = math.prod(kernel_shape)

    def body(acc, xg):
        xc, gc = xg
        return acc + patches_channel_major(xc, kernel_shape, strides, pads, dilation) @ gc, None

    acc = jnp.zeros((k * cin, cout), jnp.result_type(x, g))
    if steps == 1:
        acc, _ = body(acc, (xs[0], gs[0]))
    else:
        acc, _ = lax.scan(body, acc, (xs, gs))
    return acc.reshape(*kernel_shape, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_chunked(x, kernel, strides, pads, dilation):
    return _conv_xla(x, kernel, strides, pads, dilation, 1)


def _conv_chunked_fwd(x, kernel, strides, pads, dilation):
    return _conv_xla(x, kernel, strides, pads, dilation, 1), (x, kernel)


def _conv_chunked_bwd(strides, pads, dilation, res, g):
    x, kernel = res
    _, input_vjp = jax.vjp(lambda x_: _conv_xla(x_, kernel, strides, pads, dilation, 1), x)
    (dx,) = input_vjp(g)
    dw = weight_grad_chunked(x, g, kernel.shape[:-2], strides, pads, dilation).astype(kernel.dtype)
    return dx, dw


_conv_chunked.defvjp(_conv_chunked_fwd, _conv_chunked_bwd)


# ------------------------------------------------------------------ oneDNN through jax.ffi (custom VJP)


def _onednn_forward(x, kernel, strides, pads):
    out_hw = output_shape(x.shape[1:3], kernel.shape[:2], strides, pads, (1, 1))
    return _onednn.conv_forward(x, kernel, out_hw, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_onednn(x, kernel, strides, pads):
    return _onednn_forward(x, kernel, strides, pads)


def _conv_onednn_fwd(x, kernel, strides, pads):
    return _onednn_forward(x, kernel, strides, pads), (x, kernel)


def _conv_onednn_bwd(strides, pads, res, g):
    x, kernel = res
    g = g.astype(x.dtype)
    # XLA drops the input gradient where nothing uses it (the first layer's).
    return (_onednn.conv_input_grad(g, kernel, x.shape, strides, pads),
            _onednn.conv_weight_grad(x, g, kernel.shape, strides, pads))


_conv_onednn.defvjp(_conv_onednn_fwd, _conv_onednn_bwd)

_onednn_switch: dict[str, bool | None] = {"on": None}


def use_onednn(on: bool | None = True) -> None:
    """Switch the oneDNN convolutions on (True) or off (False) for convolutions traced from now on;
    None goes back to the environment (NNBASICS_ONEDNN=1 turns them on). Default: off."""
    _onednn_switch["on"] = on


@contextlib.contextmanager
def onednn_switch(on: bool | None):
    """The switch set to `on` for what is traced inside the block, then back to what it was. The
    analyses that read a traced program's convolutions (`nnbasics.analysis.model_stats`: multiply-adds,
    receptive fields, XLA's flop count) trace with it off: they describe the function, which is the
    same whichever implementation computes it, and they read `conv_general_dilated` equations."""
    before = _onednn_switch["on"]
    _onednn_switch["on"] = on
    try:
        yield
    finally:
        _onednn_switch["on"] = before


_multi_device_warned: list[bool] = []


def onednn_switched_on() -> bool:
    """Whether the switch asks for oneDNN (`use_onednn`, else NNBASICS_ONEDNN), whether or not it can
    be used here (that is `onednn_enabled`)."""
    on = _onednn_switch["on"]
    if on is None:
        on = os.environ.get("NNBASICS_ONEDNN", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(on)


def onednn_enabled() -> bool:
    """Whether the CPU formulations use oneDNN for the convs it supports: switched on, one device in the
    job or a per-device program (below), and the extension builds and loads (the first call builds it;
    a failure warns once and answers False from then on).

    With several devices (`--xla_force_host_platform_device_count`, several hosts) the switch stands
    down with one warning in any program that XLA's partitioner may split (e.g. the batch over a
    `data` axis; any program traced outside a per-device one, as tracing cannot see the shardings):
    it knows no sharding rule for the FFI calls, so it gathers the whole batch onto every device and
    each computes all of it (measured: 8 devices, every conv 8 times), where XLA's own convolutions are
    split by the batch. Inside a per-device program (`nnbasics.nn.onednn.per_device_program`: the
    members-only split of `fit`, a `shard_map` in which each device trains its own members whole) there
    is nothing to partition and the switch stays on. The explicit `impl="onednn"` computes the right
    numbers everywhere, at that cost where it is partitioned."""
    on = onednn_switched_on()
    if on and jax.device_count() > 1 and _onednn.per_device_devices() is None:
        if not _multi_device_warned:
            _multi_device_warned.append(True)
            warnings.warn(f"oneDNN convolutions stand down with {jax.device_count()} devices outside a training run "
                          "split by members alone (XLA's partitioner has no sharding rule for their FFI calls: "
                          "split by the batch, every device would compute all of it); using XLA's there",
                          stacklevel=3)
        return False
    return bool(on) and _onednn.load()


# The switch leaves a convolution on its CPU formulation when a member's batch times its output positions is
# below this: there oneDNN's fixed cost per call (~15-20 us a member for the forward and both gradients, one
# core) outweighs its faster kernels. Measured on one core (experiments/benchmarks/README.md, round eight):
# single convs (small_conv_calls.py, 6 members) 1.8-3.5x slower on oneDNN at 8-80 rows, 0.2-0.9x at 512 and
# more, mixed at 128-320; whole training steps, interleaved: the normalizers' 1-D net at batch 2 trains 1.55x
# slower on oneDNN without the rule and as fast as without the extra with it (threshold 128 or 256), at batch
# 32 1.67x faster with 128 (1.44x with 256); the quick ResNet-20 loses 5% with 256 (its 2x2 stage) and
# nothing with 128. The explicit impl="onednn" ignores it.
ONEDNN_MIN_ROWS = 128


def onednn_worthwhile(x, kernel, strides, pads, dilation) -> bool:
    """Whether the switch moves this convolution to oneDNN: at least ONEDNN_MIN_ROWS output rows (batch
    times output positions) per call, as traced (under vmap, a member's)."""
    nd = x.ndim - 2
    out = output_shape(x.shape[1:-1], kernel.shape[:nd], strides, pads, dilation)
    return x.shape[0] * math.prod(out) >= ONEDNN_MIN_ROWS


def onednn_supports(x, kernel, groups: int, dilation: Sequence[int], pads: Sequence[tuple[int, int]]) -> bool:
    """Whether the oneDNN path computes this convolution: float32, 2-D, no groups, no dilation,
    non-negative padding, a non-empty output."""
    return (
        x.ndim == 4 and groups == 1 and tuple(dilation) == (1, 1)
        and x.dtype == jnp.float32 and kernel.dtype == jnp.float32
        and all(lo >= 0 and hi >= 0 for lo, hi in pads)
        and x.shape[0] > 0
        and all(o > 0 for o in output_shape(x.shape[1:3], kernel.shape[:2], (1, 1), pads, dilation))
    )


# ----------------------------------------------------------------------------------- dispatch


def choose_implementation(
    nd: int, groups: int, batch: int | None = None, backend: str | None = None, onednn: bool | None = None
) -> str:
    """The implementation 'auto' resolves to for this backend and convolution.

    GPU/TPU: "xla". CPU: "onednn" for ungrouped 1-D and 2-D convs when `onednn` (default: `onednn_enabled()`;
    the caller checks dtype, dilation and padding with `onednn_supports`); else "patches" for 1-D convs
    (measured fastest for MNIST-1D), "chunked" for ungrouped 2-D convs with a batch of at least two
    weight-gradient chunks, "xla" otherwise."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    if nd in (1, 2) and groups == 1 and (onednn if onednn is not None else onednn_enabled()):
        return "onednn"
    if nd == 1:
        return "patches"
    if nd == 2 and groups == 1 and (batch is None or batch >= 2 * WGRAD_CHUNK):
        return "chunked"
    return "xla"


def conv_general(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
    dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    impl: str = "auto",
) -> jax.Array:
    """N-D convolution, channels last: x (N, *spatial, Cin), kernel (*k, Cin/groups, Cout).

    Same result and gradients as `lax.conv_general_dilated` with `rhs_dilation=dilation`;
    `impl` picks how it is computed (see the module docstring)."""
    nd = x.ndim - 2
    if nd < 1 or kernel.ndim != nd + 2:
        raise ValueError(f"conv needs x of rank >= 3 and kernel of rank x.ndim; got {x.shape}, {kernel.shape}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown conv impl {impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    groups = int(feature_group_count)
    if groups < 1 or x.shape[-1] % groups or kernel.shape[-1] % groups or x.shape[-1] // groups != kernel.shape[-2]:
        raise ValueError(
            f"feature_group_count={groups} does not fit input channels {x.shape[-1]} and kernel {kernel.shape} "
            "(need Cin % groups == 0, Cout % groups == 0 and kernel.shape[-2] == Cin / groups)"
        )
    strides = _tuple(strides, nd, "strides")
    dilation = _tuple(dilation, nd, "dilation")
    pads = tuple(explicit_padding(padding, x.shape[1:-1], kernel.shape[:nd], strides, dilation))
    on_cpu = impl in CPU_FORMULATIONS and jax.default_backend() == "cpu"
    if on_cpu and onednn_worthwhile(x, kernel, strides, pads, dilation) and onednn_enabled():
        impl = "onednn"  # the switch: oneDNN for what it supports, whichever CPU formulation was named
    elif impl == "auto":
        impl = choose_implementation(nd, groups, x.shape[0], onednn=False)
    if impl == "onednn":
        if onednn_supports(x, kernel, groups, dilation, pads) and _onednn.load():
            return _conv_onednn(x, kernel, strides, pads)
        if nd == 1 and onednn_supports(x[:, None], kernel[None], groups, (1, dilation[0]), ((0, 0), pads[0])) and _onednn.load():
            # a 1-D conv is the 2-D conv of a one-row image with a one-row kernel
            return _conv_onednn(x[:, None], kernel[None], (1, strides[0]), ((0, 0), pads[0]))[:, 0]
        impl = choose_implementation(nd, groups, x.shape[0], onednn=False)
    if impl == "patches":
        return _conv_patches(x, kernel, strides, pads, dilation, groups)
    if impl == "chunked" and groups == 1:
        return _conv_chunked(x, kernel, strides, pads, dilation)
    return _conv_xla(x, kernel, strides, pads, dilation, groups)


class Conv(nn.Module):
    """A linen convolution layer (same parameters as `flax.linen.Conv`) on `conv_general`."""

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ks = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        cin = x.shape[-1]
        if cin % self.feature_group_count:
            raise ValueError(f"input channels {cin} not divisible by feature_group_count {self.feature_group_count}")
        kernel = self.param("kernel", self.kernel_init, (*ks, cin // self.feature_group_count, self.features))
        if self.dtype is not None:
            x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = conv_general(
            x, kernel, self.strides, self.padding, self.kernel_dilation, self.feature_group_count, self.impl
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            y = y + bias.astype(y.dtype)
        return y
