"""Parameter counts, multiply-adds and receptive fields of a model, computed from the model itself.

- Parameters: `jax.eval_shape` on `model.init`, so even VGG-19 costs no memory. Only the "params"
  collection counts (BatchNorm's scale and bias, not its running statistics), as PyTorch's
  `sum(p.numel() for p in model.parameters())` does.
- Multiply-adds: the model's forward pass is traced to a jaxpr (`jax.make_jaxpr` on abstract
  inputs, nothing is computed) and every `conv_general_dilated` and `dot_general` in it is
  counted: output size x (kernel window x input channels per group), resp. output size x
  contracted size. Sub-programs (jit, custom_jvp/vjp, remat) are entered, a `scan` body counts
  `length` times. This is the convention of torchvision's model table and of fvcore (convolutions
  and linear layers; element-wise ops, pooling and normalization are not multiply-adds), so
  ResNet-50 gives 4.09 G and VGG-16 15.47 G. XLA's own count of the compiled program
  (`compiled_flops`, from `cost_analysis()`) adds every element-wise flop on top.
- Receptive field: the same jaxpr is interpreted abstractly. Each spatial axis of each array
  carries (size, jump, start) of the input window that one of its pixels sees; convolutions,
  pooling windows, padding and strided slices update it, element-wise ops and concatenation take
  the union. The reported number is the largest receptive field of a spatial feature map that the
  model reduces (global pooling) or flattens (a classifier), i.e. the theoretical receptive field
  of the last feature map, in input pixels (it can exceed the input size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from nnbasics.nn import conv


def param_count(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
    return int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))


def abstract_variables(model: Any, input_shape: Sequence[int], batch: int = 1) -> Any:
    """The model's variables as ShapeDtypeStructs (no memory, no computation)."""
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False), x)


def count_params(model: Any, input_shape: Sequence[int]) -> int:
    """Trainable parameters of `model` for inputs of `input_shape` (without the batch axis)."""
    return param_count(abstract_variables(model, input_shape).get("params", {}))


def forward_jaxpr(model: Any, input_shape: Sequence[int], batch: int = 1) -> jcore.ClosedJaxpr:
    """The jaxpr of one evaluation-mode forward pass on abstract inputs."""
    variables = abstract_variables(model, input_shape, batch)
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    with conv.onednn_switch(False):  # the convolutions as `conv_general_dilated` equations, whatever the switch
        return jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)


# ------------------------------------------------------------------------------------ multiply-adds


def _subjaxprs(eqn: Any) -> list[jcore.Jaxpr]:
    out = []
    for v in eqn.params.values():
        for item in v if isinstance(v, (list, tuple)) else (v,):
            if isinstance(item, jcore.ClosedJaxpr):
                out.append(item.jaxpr)
            elif isinstance(item, jcore.Jaxpr):
                out.append(item)
    return out


def eqn_macs(eqn: Any) -> int:
    """Multiply-adds of one convolution or matrix-product equation (0 for anything else)."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        out = eqn.outvars[0].aval.shape
        rhs = eqn.invars[1].aval.shape
        dn = eqn.params["dimension_numbers"]
        out_feature_dim = dn.rhs_spec[0]
        return math.prod(out) * (math.prod(rhs) // rhs[out_feature_dim])
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lc)
    return 0


def jaxpr_macs(jaxpr: jcore.Jaxpr | jcore.ClosedJaxpr) -> int:
    """Multiply-adds of every conv and dot in a jaxpr, sub-programs included."""
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn_macs(eqn)
        subs = _subjaxprs(eqn)
        if not subs:
            continue
        name = eqn.primitive.name
        if name == "scan":
            total += int(eqn.params["length"]) * sum(jaxpr_macs(s) for s in subs)
        elif name == "cond":
            total += max(jaxpr_macs(s) for s in subs)
        else:  # jit, custom_jvp_call, custom_vjp_call, remat, while (body counted once)
            total += sum(jaxpr_macs(s) for s in subs)
    return total


def count_macs(model: Any, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one example (convolutions and linear layers)."""
    return jaxpr_macs(forward_jaxpr(model, input_shape))


def compiled_flops(model: Any, input_shape: Sequence[int]) -> float:
    """XLA's flop count of the compiled forward pass of one example (all ops, not only multiply-adds)."""
    variables = abstract_variables(model, input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    with conv.onednn_switch(False):  # XLA counts no flops in a foreign call: its own convolutions
        compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


# ------------------------------------------------------------------------------- receptive field


@dataclasses.dataclass(frozen=True)
class Window:
    """The input window seen by pixel i of one spatial axis: [start + i * jump, start + i * jump + size)."""

    size: float
    jump: float
    start: float

    def union(self, other: Window) -> Window:
        if self.jump != other.jump:  # misaligned grids: the envelope on the coarser one
            jump = max(self.jump, other.jump)
        else:
            jump = self.jump
        lo = min(self.start, other.start)
        hi = max(self.start + self.size, other.start + other.size)
        return Window(hi - lo, jump, lo)

    def window_op(self, k: int, stride: int, dilation: int, pad_lo: int) -> Window:
        return Window(self.size + (k - 1) * dilation * self.jump, self.jump * stride, self.start - pad_lo * self.jump)


Info = dict[int, Window]  # axis -> window, for the spatial axes of one array


def _merge(infos: Sequence[Info | None], rank: int) -> Info | None:
    out: Info = {}
    for info in infos:
        for ax, w in (info or {}).items():
            if ax < rank:
                out[ax] = out[ax].union(w) if ax in out else w
    return out or None


def _out_rank(eqn: Any) -> int:
    aval = eqn.outvars[0].aval
    return len(aval.shape) if hasattr(aval, "shape") else 0


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "reduce_and", "reduce_or")
_CUMULATIVE = ("cumsum", "cumlogsumexp", "cummax")
_OPAQUE = ("gather", "scatter", "scatter-add", "dynamic_slice", "dynamic_update_slice", "sort")


class _RF:
    """An abstract interpreter of a jaxpr: each equation maps its inputs' windows to its outputs'
    (one small rule per primitive, `_RULES`); a feature map an equation consumes (reduces over its
    spatial axes, flattens, feeds to a dense layer) is recorded in `final`."""

    def __init__(self) -> None:
        self.final: list[Window] = []

    def record(self, info: Info | None) -> None:
        if info:
            self.final.extend(info.values())

    def run(self, jaxpr: jcore.Jaxpr, ins: list[Info | None]) -> list[Info | None]:
        env: dict[Any, Info | None] = {}

        def read(v):
            return None if isinstance(v, jcore.Literal) else env.get(v)

        for var, info in zip(jaxpr.invars, ins):
            env[var] = info
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(v) for v in eqn.invars])
            for var, info in zip(eqn.outvars, outs):
                env[var] = info
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        """The windows of one equation's outputs from those of its inputs (None: not a spatial map)."""
        if not any(ins):
            return [None] * len(eqn.outvars)
        name = eqn.primitive.name
        rule = self._RULES.get(name)
        if rule is None and name.startswith("reduce_window"):
            rule = _RF._reduce_window
        return (rule or _RF._other)(self, eqn, ins)

    # -- windows: convolution and pooling grow them
    def _conv(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        p, x = eqn.params, ins[0]
        dn = p["dimension_numbers"]
        if any(d != 1 for d in p["lhs_dilation"]):
            self.record(x)
            return [None]
        k = eqn.invars[1].aval.shape
        out: Info = {}
        for i, (lax_ax, rax, oax) in enumerate(zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:])):
            if x and lax_ax in x:
                out[oax] = x[lax_ax].window_op(k[rax], p["window_strides"][i], p["rhs_dilation"][i], p["padding"][i][0])
        if x and dn.lhs_spec[1] in x:  # a window over channels: treat as consumed
            self.record(x)
        return [out or None]

    def _reduce_window(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        p = eqn.params
        dims, strides = p["window_dimensions"], p["window_strides"]
        pads, wdil = p["padding"], p.get("window_dilation", (1,) * len(dims))
        ops = [i for i in ins if i]
        base = _merge(ops, _out_rank(eqn)) or {}
        return [{ax: w.window_op(dims[ax], strides[ax], wdil[ax], pads[ax][0]) for ax, w in base.items()} or None] * len(
            eqn.outvars)

    # -- moving the grid: padding, slicing, transposes, reshapes
    def _pad(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        cfg, x = eqn.params["padding_config"], ins[0]
        if any(c[2] for ax, c in enumerate(cfg) if x and ax in x):
            self.record(x)
            return [None]
        return [{ax: dataclasses.replace(w, start=w.start - cfg[ax][0] * w.jump) for ax, w in (x or {}).items()} or None]

    def _slice(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        p = eqn.params
        st, strides = p["start_indices"], p["strides"] or (1,) * _out_rank(eqn)
        return [{ax: Window(w.size, w.jump * strides[ax], w.start + st[ax] * w.jump) for ax, w in (ins[0] or {}).items()}
                or None]

    def _transpose(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        perm = eqn.params["permutation"]
        return [{perm.index(ax): w for ax, w in (ins[0] or {}).items()} or None]

    def _broadcast_in_dim(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        bd, in_shape, out_shape = eqn.params["broadcast_dimensions"], eqn.invars[0].aval.shape, eqn.params["shape"]
        out = {}
        for ax, w in (ins[0] or {}).items():
            if in_shape[ax] == out_shape[bd[ax]]:
                out[bd[ax]] = w
        return [out or None]

    def _squeeze(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        dims = sorted(eqn.params["dimensions"])
        return [{ax - sum(d < ax for d in dims): w for ax, w in (ins[0] or {}).items() if ax not in dims} or None]

    def _reshape(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        x = ins[0]
        in_shape, out_shape = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
        out = {}
        for ax, w in (x or {}).items():
            # an axis survives where everything up to it is unchanged (leading axes kept)
            if ax < len(out_shape) and tuple(in_shape[: ax + 1]) == tuple(out_shape[: ax + 1]):
                out[ax] = w
            else:  # flattened into other axes (or squeezed away): the feature map is consumed
                self.record(x)
                return [None]
        return [out or None]

    # -- consuming the map: reductions over spatial axes, dense layers over positions
    def _reduce(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        p, x = eqn.params, ins[0]
        axes = tuple(p.get("axes", ())) + ((p["axis"],) if "axis" in p else ())
        if x and any(a in x for a in axes):
            self.record(x)
        return [{ax - sum(a < ax for a in axes): w for ax, w in (x or {}).items() if ax not in axes} or None]

    def _cumulative(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        x = ins[0]
        if x and eqn.params["axis"] in x:
            self.record(x)
            return [None]
        return [x]

    def _dot_general(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = ins[0] or {}, ins[1] or {}
        if any(a in lhs for a in lc) or any(a in rhs for a in rc):
            # a dense layer over spatial positions: each output unit sees the whole extent
            for info, var, axes in ((lhs, eqn.invars[0], lc), (rhs, eqn.invars[1], rc)):
                for ax, w in info.items():
                    n = var.aval.shape[ax]
                    self.final.append(Window(w.size + (n - 1) * w.jump, w.jump, w.start) if ax in axes else w)
            return [None]
        lrank, rrank = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
        lfree = [a for a in range(lrank) if a not in lc and a not in lb]
        rfree = [a for a in range(rrank) if a not in rc and a not in rb]
        out: Info = {}
        for ax, w in lhs.items():
            out[lb.index(ax) if ax in lb else len(lb) + lfree.index(ax)] = w
        for ax, w in rhs.items():
            if ax not in rb:
                out[len(lb) + len(lfree) + rfree.index(ax)] = w
        return [out or None]

    # -- joining maps
    def _concatenate(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        return [_merge(ins, _out_rank(eqn))]  # along channels, or along a spatial axis as edge/reflect padding does

    def _rev(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        return [ins[0]]

    def _stack(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        a = eqn.params["axis"]  # a new axis at `axis`; the operands' axes from there on shift by one
        return [_merge([{ax + (ax >= a): w for ax, w in (i or {}).items()} for i in ins], _out_rank(eqn))]

    # -- everything else: sub-programs are entered, opaque ops consume, element-wise ops take the union
    def _other(self, eqn: Any, ins: list[Info | None]) -> list[Info | None]:
        name, n_out, out_rank = eqn.primitive.name, len(eqn.outvars), _out_rank(eqn)
        subs = _subjaxprs(eqn)
        if subs and name not in ("scan", "while", "cond"):
            sub = subs[0]
            if len(sub.invars) == len(ins):
                return self.run(sub, ins)
        if subs or name in _OPAQUE:
            for i in ins:
                self.record(i)
            return [None] * n_out
        # element-wise (unary, binary, select, clamp, casts, ...): union over operands of the output's rank
        shape_ok = [i if (i and len(v.aval.shape) == out_rank) else None for i, v in zip(ins, eqn.invars)
                    if hasattr(v.aval, "shape")]
        return [_merge(shape_ok, out_rank)] * n_out

    _RULES = {
        "conv_general_dilated": _conv,
        "reduce_window": _reduce_window,
        "pad": _pad,
        "slice": _slice,
        "transpose": _transpose,
        "broadcast_in_dim": _broadcast_in_dim,
        "squeeze": _squeeze,
        "reshape": _reshape,
        "expand_dims": _reshape,
        **dict.fromkeys(_REDUCTIONS, _reduce),
        **dict.fromkeys(_CUMULATIVE, _cumulative),
        "dot_general": _dot_general,
        "concatenate": _concatenate,
        "rev": _rev,
        "stack": _stack,
    }


def jaxpr_receptive_field(jaxpr: jcore.ClosedJaxpr, spatial_axes: Sequence[int] = (1, 2)) -> tuple[float, ...] | None:
    """Receptive field (per spatial axis of the first input) of the largest feature map the program
    reduces or flattens, or of its outputs if they are still spatial; None if nothing is spatial."""
    interp = _RF()
    ins: list[Info | None] = [None] * len(jaxpr.jaxpr.invars)
    ins[-1] = {ax: Window(1.0, 1.0, 0.0) for ax in spatial_axes}  # the image is the last argument
    outs = interp.run(jaxpr.jaxpr, ins)
    for o in outs:
        interp.record(o)
    if not interp.final:
        return None
    per_axis: dict[int, float] = {}
    best = max(w.size for w in interp.final)
    for ax in spatial_axes:
        per_axis[ax] = best
    return tuple(per_axis[ax] for ax in spatial_axes)


def receptive_field(model: Any, input_shape: Sequence[int]) -> int | None:
    """The theoretical receptive field (pixels) of the model's last spatial feature map (a dense
    layer over positions sees them all); input_shape (H, W, C) for images, (L,) or (L, C) for
    signals."""
    spatial = (1,) if len(input_shape) == 1 else tuple(range(1, len(input_shape)))
    rf = jaxpr_receptive_field(forward_jaxpr(model, input_shape), spatial)
    return None if rf is None else int(max(rf))


@dataclasses.dataclass
class ModelStats:
    """One row of the model table."""

    name: str
    input_shape: tuple[int, ...] | None
    params: int | None
    macs: int | None
    receptive_field: int | None
    reference_params: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_stats(name: str, num_classes: int | None = None, input_shape: Sequence[int] | None = None,
                with_receptive_field: bool = True, **kwargs: Any) -> ModelStats:
    """Parameters, multiply-adds (per example) and receptive field of a registered model.

    Defaults: the registered input shape, 1000 classes for 224x224 models and 10 otherwise."""
    from nnbasics.models import model_info

    info = model_info(name)
    shape = tuple(input_shape) if input_shape is not None else info.get("input_shape")
    if shape is None:
        return ModelStats(name, None, None, None, None, info.get("reference_params"))
    shape = tuple(int(s) for s in shape)
    if num_classes is None:
        num_classes = 1000 if shape[:2] == (224, 224) else 10
    key = repr((name, num_classes, shape, bool(with_receptive_field), sorted(kwargs.items())))
    cached = _stats_cache().get(key)
    if cached is not None:
        return ModelStats(**{**cached, "input_shape": tuple(cached["input_shape"])})
    stats = _trace_stats(name, shape, num_classes, with_receptive_field, info.get("reference_params"), **kwargs)
    _stats_cache(key, stats.as_dict())
    return stats


def _source_digest() -> str:
    """A digest of everything a model's statistics depend on: the models, layers, this file, the versions."""
    import hashlib
    import pathlib

    import flax

    root = pathlib.Path(__file__).resolve().parent.parent
    h = hashlib.sha256(f"{jax.__version__} {flax.__version__}".encode())
    for path in sorted([*(root / "models").glob("*.py"), *(root / "nn").glob("*.py"), pathlib.Path(__file__)]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


_STATS: dict[str, Any] | None = None


def _stats_cache(key: str | None = None, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """The on-disk cache of traced model statistics (`nnbasics models` and `model_zoo` share it),
    keyed by the source digest, so a change to any model or layer traces again. Read once per
    process; `value` adds an entry and writes the file atomically. NNBASICS_NO_STATS_CACHE=1 skips it."""
    import os

    global _STATS
    if os.environ.get("NNBASICS_NO_STATS_CACHE"):
        return {}
    from nnbasics.data import cache_dir
    from nnbasics.files import atomic_write_json, read_json

    path = cache_dir() / f"model_stats-{_source_digest()}.json"
    if _STATS is None:
        try:
            _STATS = read_json(path) if path.exists() else {}
        except (OSError, ValueError):
            _STATS = {}  # a damaged cache is rebuilt
    if key is not None and value is not None:
        _STATS[key] = value
        try:
            atomic_write_json(path, _STATS)
        except OSError:
            pass  # a read-only cache only costs time
    return _STATS


def _trace_stats(name: str, shape: tuple[int, ...], num_classes: int, with_receptive_field: bool,
                 reference_params: int | None, **kwargs: Any) -> ModelStats:
    from nnbasics.models import get_model

    model = get_model(name, num_classes=num_classes, **kwargs)
    closed = forward_jaxpr(model, shape)
    params = count_params(model, shape)
    macs = jaxpr_macs(closed)
    rf = None
    if with_receptive_field:
        r = jaxpr_receptive_field(closed, (1,) if len(shape) == 1 else tuple(range(1, len(shape))))
        rf = None if r is None else int(max(r))
    return ModelStats(name, shape, params, macs, rf, reference_params)


__all__ = [
    "ModelStats",
    "Window",
    "abstract_variables",
    "compiled_flops",
    "count_macs",
    "count_params",
    "forward_jaxpr",
    "jaxpr_macs",
    "jaxpr_receptive_field",
    "model_stats",
    "param_count",
    "receptive_field",
]


def random_variables(model: Any, input_shape: Sequence[int], seed: int = 0, max_random: int = 1 << 20) -> Any:
    """Variables of the right shapes filled on the host with NumPy (He-scaled Gaussian kernels,
    unit scales and variances, zero biases and means): no XLA random-number program to compile,
    so a smoke forward pass of even a large model starts at once. Tensors larger than
    `max_random` repeat a random block. For tests and benchmarks, not for training."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        if name in ("bias", "mean") or len(s.shape) < 2:
            return np.zeros(s.shape, s.dtype)
        fan_in = max(1, math.prod(s.shape[:-1]))
        n = math.prod(s.shape)
        block = rng.standard_normal(min(n, max_random), dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        return np.resize(block, s.shape).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract_variables(model, input_shape))
