"""The training loop: `fit` trains members (seeds x settings) side by side.

For data that fits on the device (every embedded set) a chunk of `eval_every` steps runs inside one
compiled program (`lax.scan` over `train_step`, `vmap` over members), with no host sync per step;
after each chunk the host checks the losses, evaluates, writes a metrics row, and checkpoints when
due. With more than one device the mesh (`parallel.training_mesh`) splits the batch over a `data`
axis (`jit` adds the all-reduce) and whole members over a `members` axis (no communication), each
where it divides; a member's numbers equal one device's up to float rounding.

    result = fit(model, dataset, TrainConfig(steps=1000, batch_size=100, seeds=(0, 1)))
    result.final("test_accuracy")  # one number per seed

Members may differ in more than the seed (`TrainConfig.members`): optimizer numbers (learning rate,
momentum, weight decay, clipping, AGC's lambda; injected into the optimizer state), gradient
accumulation (`accumulate`: a larger batch made of micro-batches) and model call arguments
(`model`: e.g. which normalizer a switchable net uses). Settings that change shapes or structure
(batch size, optimizer name, architecture) are separate `fit` calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from nnbasics.config import MAX_STEPS  # the command line's cap too
from nnbasics.data.streaming import StreamingData
from nnbasics.engine import optim, parallel
from nnbasics.engine.batches import batch_indices
from nnbasics.engine.compile import compile_side_by_side, light_jit, stack_members
from nnbasics.engine.interrupt import InterruptFlag, TrainingInterrupted, active, listening
from nnbasics.engine.run_directory import check_run_directory
from nnbasics.engine.state import TrainState, create_state, evaluate
from nnbasics.engine.state import train_step as default_train_step
from nnbasics.nn.losses import Loss, get_loss, loss_key
from nnbasics.nn.onednn import per_device_program
from nnbasics.progress import progress

# "rbg" keys: XLA's RngBitGenerator compiles in a fraction of the time of threefry on CPU (measured:
# experiments/benchmarks/README.md, "Round five"), and each seed still gives fixed numbers.
PRNG_IMPL = "rbg"  # the key implementation of training runs (initialization and dropout)


@dataclasses.dataclass
class TrainConfig:
    """What `fit` needs to know; experiments build it from their ConfigDict."""

    steps: int = 1000
    batch_size: int = 128
    eval_every: int = 250
    seeds: Sequence[int] = (0,)
    learning_rates: Sequence[float] | None = None  # a vmapped grid; None = the optimizer's own
    # per-member settings, each trained with every seed: {"learning_rate": 0.1, "momentum": 0.5, ...,
    # "accumulate": 4, "model": {"kind": 2}}; None = one setting (the optimizer's own)
    members: Sequence[Mapping[str, Any]] | None = None
    accumulate: int = 1  # micro-batches (of batch_size) averaged per update; steps count micro-batches
    eval_at_start: bool = False  # also evaluate the initial state (a row at step 0 without train metrics)
    # "chunk": the steps between evaluations run as one compiled loop (one dispatch per chunk; best for
    # small nets); "step": one compiled step per dispatch, for nets whose loop body XLA:CPU compiles
    # less well (measured: experiments/benchmarks/README.md, "fit's step mode")
    step_mode: str = "chunk"
    optimizer: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    loss: str | Mapping[str, Any] | Loss = "cross_entropy"  # a name, {"name": ..., params} or a Loss object
    eval_batch_size: int = 1000
    eval_train: bool = False  # also evaluate on the whole training set at every eval point
    stop_on_nan: bool = True
    data_parallel: bool = True  # use every device (members and batch split over a mesh); False: one device
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end) when checkpointing is on
    keep_checkpoints: int = 2

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TrainConfig":
        """Pick the TrainConfig fields out of an experiment config (other keys are ignored)."""
        cfg = dict(cfg)
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in cfg:
                v = cfg[f.name]
                kw[f.name] = v.to_dict() if hasattr(v, "to_dict") else v
        return cls(**kw)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step (and seed)."""



def validate_train_config(tc: TrainConfig, num_train: int | None = None, *, data: Any = None,
                          model: nn.Module | None = None) -> None:
    """Reject invalid values with a clear message before anything is compiled; with `data` (and `model`)
    also inputs and labels that cannot train (see `check_data`)."""
    arrays = data is not None and not isinstance(data, StreamingData)
    if arrays:
        check_data(data, tc)  # the arrays; the model's classes once the members' call arguments are checked (below)
        num_train = len(data.x_train)
    for name in ("steps", "batch_size", "eval_every"):
        v = getattr(tc, name)
        try:
            ok = not isinstance(v, bool) and float(v) == int(v) and 0 < int(v) <= MAX_STEPS
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"{name} must be an integer between 1 and {MAX_STEPS:,}, got {_short(v)}")
    seeds = list(tc.seeds) if tc.seeds is not None else []
    if not seeds:
        raise ValueError("seeds must be a non-empty list of integers, e.g. --config.seeds='(0, 1, 2)'")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be integers, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if num_train is not None and int(tc.batch_size) > num_train:
        raise ValueError(f"batch_size={tc.batch_size} is larger than the training set ({num_train} examples); "
                         f"use a batch size between 1 and {num_train}")
    loss = get_loss(tc.loss)  # an unknown name or parameter: the error names the valid ones
    if tc.step_mode not in ("chunk", "step"):
        raise ValueError(f"step_mode must be 'chunk' or 'step', got {tc.step_mode!r}")
    if tc.learning_rates is not None:
        lrs = list(tc.learning_rates)
        if not lrs or any(not 0 < float(lr) < math.inf for lr in lrs):
            raise ValueError(f"learning_rates must be a non-empty list of finite positive numbers, got {lrs}")
        if tc.members is not None:
            raise ValueError("give learning_rates or members (with a learning_rate each), not both")
    specs = member_specs(tc)
    optim.check_member_overrides(tc.optimizer, [_overrides(m) for m in specs])
    counts = {int(m.get("accumulate", tc.accumulate)) for m in specs}
    if any(k < 1 for k in counts):
        raise ValueError(f"accumulate must be a positive number of micro-batches, got {sorted(counts)}")
    if len(counts) > 1 and optim.resolve(tc.optimizer)["schedule"] != "constant":
        raise ValueError("a learning-rate schedule needs the same accumulate for every member (its length counts updates)")
    for m in specs:
        if not isinstance(m.get("model", {}), Mapping):
            raise ValueError(f"a member's 'model' must map call arguments to values, got {m['model']!r}")
    if arrays and model is not None and (loss.classifies or loss_key(tc.loss) == "mse"):
        _check_classes(model, data, tc)


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _host(a: Any) -> np.ndarray:
    """`a` as a NumPy array without a copy where it already is one (the checks must stay cheap)."""
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def check_data(data: Any, tc: TrainConfig, model: nn.Module | None = None) -> None:
    """Inputs and labels `fit` cannot train on, refused with a ValueError naming the array and what is
    valid, on the host before any compile: x and y of different lengths, an empty training set, NaN or
    infinite values, and for a classification loss labels that are not whole numbers or (with `model`,
    whose output on one example gives the number of classes) outside [0, num_classes)."""
    classify = get_loss(tc.loss).classifies
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
        if x is None or y is None:
            raise ValueError(f"data has no x_{split} / y_{split}: give arrays of inputs and of labels (or targets)")
        x, y = _host(x), _host(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"x_{split} and y_{split} must be arrays with one row per example, got shapes "
                             f"{x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}; they must have the same "
                             "length (one label or target per example)")
        if len(x) == 0 and split == "train":
            raise ValueError(f"the training set is empty (x_train has 0 examples); give at least batch_size="
                             f"{_short(tc.batch_size)} examples")
        if x.ndim < 2:
            raise ValueError(f"x_{split} has shape {x.shape}, one number per example; the model takes arrays of shape "
                             f"(examples, features...): for one feature give x_{split}[:, None], shape ({len(x)}, 1)")
        if split == "test":
            x_train, y_train = _host(data.x_train), _host(data.y_train)
            if x.shape[1:] != x_train.shape[1:]:
                raise ValueError(f"x_test has shape {x.shape}: examples of shape {x.shape[1:]}, but x_train's are "
                                 f"{x_train.shape[1:]}; the model takes one input shape: give x_test of shape "
                                 f"({len(x)}, {', '.join(map(str, x_train.shape[1:]))})")
            if y.shape[1:] != y_train.shape[1:]:
                want = f"({len(y)}{''.join(f', {d}' for d in y_train.shape[1:])}{',' if y_train.ndim == 1 else ''})"
                raise ValueError(f"y_test has shape {y.shape}, but y_train has {y_train.shape}: a label (or target) of "
                                 f"shape {y_train.shape[1:] or '()'} per example, as y_train's; give y_test of shape "
                                 f"{want}")
        for name, a in ((f"x_{split}", x), (f"y_{split}", y)):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
                raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
            if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
                bad = np.argwhere(~np.isfinite(a))[0]
                raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} NaN or infinite values (the first at "
                                 f"index {tuple(int(i) for i in bad)}: {a[tuple(bad)]!s}); every input and label must "
                                 "be a finite number (clean or drop those examples)")
        if classify:
            if np.issubdtype(y.dtype, np.inexact) and not (y == np.round(y)).all():
                i = tuple(int(k) for k in np.argwhere(y != np.round(y))[0])
                raise ValueError(f"y_{split} holds labels that are not whole numbers (the first: {y[i]!s} at index {i}); "
                                 f"the {loss_key(tc.loss)} loss needs integer class labels 0, 1, ..., num_classes - 1")
            if y.size and y.min() < 0:
                raise ValueError(f"y_{split} holds negative labels (the smallest: {_num(y.min())}); the {loss_key(tc.loss)} loss "
                                 "needs class labels 0, 1, ..., num_classes - 1")
    if classify and model is not None:
        _check_classes(model, data, tc)


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f == int(f) else str(f)


def _check_classes(model: nn.Module, data: Any, tc: TrainConfig) -> None:
    """The model's output on one example (traced with jax.eval_shape: no compile, no numbers) must be
    (1, ..., num_classes), the labels' shape per example plus a class axis, and the labels < num_classes."""
    x, ys = _host(data.x_train), [_host(data.y_train), _host(data.y_test)]
    classify = get_loss(tc.loss).classifies
    k = getattr(model, "num_classes", None)  # checked before tracing: a model of 0 outputs fails inside its init
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k < 1 + classify:
        if classify:
            top = max((int(y.max()) for y in ys if y.size), default=None)
            need = f"at least 2, and more than the largest label ({top}): {max(2, top + 1)} or more" if top is not None \
                else "at least 2"
            raise ValueError(f"the model has num_classes={k}, but the {loss_key(tc.loss)} loss needs one output per class to "
                             f"tell apart: num_classes must be {need}")
        raise ValueError(f"the model has num_classes={k}: it gives no outputs to train; num_classes must be 1 or more "
                         "(the outputs per example the targets are compared with)")
    args = member_specs(tc)[0].get("model", {})
    sample = jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)

    def logits(xs, model_args):
        key = jax.random.key(0, impl=PRNG_IMPL)
        out, _ = model.init_with_output({"params": key, "dropout": key}, xs, train=False, **model_args)
        return out

    try:
        out = jax.eval_shape(logits, sample, {k: np.asarray(v) for k, v in dict(args).items()})
    except Exception as e:  # noqa: BLE001 - the model cannot take these inputs: say which
        raise ValueError(f"the model cannot take x_train's examples of shape {tuple(x.shape[1:])}: "
                         f"{type(e).__name__}: {_short(str(e), 300)}") from None
    shape = tuple(getattr(out, "shape", ()))
    if not classify:  # mse: the targets of an example are compared element by element with its outputs
        per = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) >= 1 else 0
        if per != int(np.prod(ys[0].shape[1:], dtype=np.int64)):
            raise ValueError(f"y_train has shape {ys[0].shape}, {int(np.prod(ys[0].shape[1:]))} target value(s) per "
                             f"example, but the model's output on one example has shape {shape}, {per} value(s); the "
                             f"{loss_key(tc.loss)} loss compares them one to one: give y_train of shape "
                             f"({len(ys[0])}{''.join(f', {d}' for d in shape[1:])}) or a model with "
                             f"{int(np.prod(ys[0].shape[1:]))} output(s)")
        return
    want = (1, *ys[0].shape[1:])
    if len(shape) < 2 or shape[:-1] != want or shape[-1] < 1:
        hint = ""
        if len(shape) >= 2 and shape[:-1] == (1,) and ys[0].ndim > 1:  # one label per example, given as a column
            hint = (f"; for one class label per example give y_train of shape ({len(ys[0])},) (y_train.reshape(-1)), "
                    f"and y_test of shape ({len(ys[1])},)")
        raise ValueError(f"the model's output on one example has shape {shape}, but the {loss_key(tc.loss)} loss needs "
                         f"{(*want, 'num_classes')} (one logit per class for each label of y_train, which has shape "
                         f"{ys[0].shape}: {tuple(ys[0].shape[1:]) or 'a scalar'} per example){hint}")
    classes = shape[-1]
    for split, y in zip(("train", "test"), ys):
        if y.size and y.max() >= classes:
            raise ValueError(f"y_{split} holds labels up to {_num(y.max())}, but the model gives {classes} classes "
                             f"(its output's last axis); labels must lie in [0, {classes})")


MEMBER_KEYS = (*optim.MEMBER_HPARAMS, "accumulate", "model")


def member_specs(tc: TrainConfig) -> list[dict[str, Any]]:
    """The settings each seed is trained with: TrainConfig.members, the learning_rates grid, or [{}]."""
    if tc.learning_rates is not None:
        return [{"learning_rate": float(v)} for v in tc.learning_rates]
    specs = [dict(m) for m in (tc.members or [{}])]
    for m in specs:
        for k in m:
            if k not in MEMBER_KEYS:
                from nnbasics.registry import unknown_name_message

                raise ValueError("TrainConfig.members: " + unknown_name_message("member setting", k, list(MEMBER_KEYS)))
    return specs


def _overrides(spec: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in spec.items() if k in optim.MEMBER_HPARAMS}


@dataclasses.dataclass
class TrainResult:
    """History (one row per eval point, values per member) and the final stacked state."""

    history: list[dict[str, Any]]
    state: TrainState  # leading axis = member (setting x seed)
    members: list[dict[str, Any]]  # [{"seed": s, "learning_rate": lr, ...the member's settings}, ...]
    seconds: float
    compile_seconds: float  # compiling (side by side before training; else the first chunk, which also runs)
    first_chunk_seconds: float = 0.0  # from the call until the first chunk's losses are back (init, compile, steps)
    steps_trained: int = 0  # steps this call ran (fewer than tc.steps when it resumed from a checkpoint)

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values[member, eval point]) of a metric."""
        rows = [r for r in self.history if key in r]  # a row at step 0 has no train metrics
        steps = np.array([r["step"] for r in rows])
        vals = np.array([r[key] for r in rows], dtype=np.float64).T
        return steps, vals

    def final(self, key: str) -> np.ndarray:
        """The last value of `key`, one per member."""
        return np.asarray(self.history[-1][key], dtype=np.float64)

    def member_state(self, i: int) -> TrainState:
        """The state of member i alone (no member axis)."""
        return jax.tree.map(lambda a: a[i], self.state)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, threshold: float, below: bool = True) -> float:
    """The first step at which `values` drops below (or rises above) `threshold`; inf if never."""
    hit = values <= threshold if below else values >= threshold
    idx = np.flatnonzero(hit)
    return float(steps[idx[0]]) if idx.size else math.inf


# ------------------------------------------------------------------ the pieces `fit` is made of


def _members(tc: TrainConfig) -> list[dict[str, Any]]:
    """One entry per (setting, seed), settings outermost: the seed, the effective learning rate and
    the setting's overrides, accumulation count and model arguments."""
    base, specs = optim.resolve(tc.optimizer), member_specs(tc)
    varying = [k for k in optim.MEMBER_HPARAMS if any(k in spec for spec in specs)]
    out = []
    for spec in specs:
        over = {k: float(spec.get(k, base[k])) for k in varying}  # every member names every varying number
        for s in tc.seeds:
            out.append({"seed": int(s), "learning_rate": over.get("learning_rate", float(base["learning_rate"])),
                        "overrides": over, "accumulate": int(spec.get("accumulate", tc.accumulate)),
                        "model": dict(spec.get("model", {}))})
    return out


def member_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """A member as the result and the checkpoint fingerprint name it: seed, learning rate, settings."""
    out = {"seed": m["seed"], "learning_rate": m["learning_rate"], **m["overrides"]}
    if m["accumulate"] != 1:
        out["accumulate"] = m["accumulate"]
    if m["model"]:
        out["model"] = {k: v.item() if hasattr(v, "item") else v for k, v in m["model"].items()}
    return out


@dataclasses.dataclass
class _Run:
    """One `fit` call's fixed parts: members, data on the device, and its compiled programs."""

    tc: TrainConfig
    members: list[dict[str, Any]]
    mesh: Any
    data: Any
    arrays: tuple[jax.Array, ...]  # x_train, y_train, x_test, y_test (placed on the mesh)
    init_one: Callable  # (seed as int32, member values) -> one member's state with a member axis of 1
    run_chunk: Callable  # (state, indices, x_train, y_train, length) -> (state, per-step metrics)
    run_step: Callable  # (state, indices of one step, x_train, y_train) -> (state, metrics)
    run_stream_chunk: Callable  # (state, xs, ys) -> (state, per-step metrics)
    run_eval: Callable  # (state, x_test, y_test, x_train, y_train) -> metrics per member
    stream: Any = None  # the streaming iterator, opened at the first chunk
    padding: int = 0  # copies of the last member trained so that the devices divide the members (dropped after)

    @property
    def real(self) -> list[dict[str, Any]]:
        """The members asked for (without the padding copies)."""
        return self.members[:len(self.members) - self.padding]

    @property
    def streaming(self) -> bool:
        return isinstance(self.data, StreamingData)


def _place(data: Any, tc: TrainConfig, mesh: Any) -> tuple[jax.Array, ...]:
    ydtype = np.int32 if get_loss(tc.loss).classifies else np.float32
    if isinstance(data, StreamingData):
        x_train = y_train = jnp.zeros((0,), jnp.float32)  # batches come from the stream
    else:
        x_train = parallel.replicate(np.asarray(data.x_train, np.float32), mesh)
        y_train = parallel.replicate(np.asarray(data.y_train, ydtype), mesh)
    x_test = parallel.replicate(np.asarray(data.x_test, np.float32), mesh)
    y_test = parallel.replicate(np.asarray(data.y_test, ydtype), mesh)
    return x_train, y_train, x_test, y_test


def _programs(model: nn.Module, example_shape: tuple[int, ...], tc: TrainConfig, mesh: Any, members: list[dict],
              eval_fns: Mapping[str, Callable[[TrainState], Any]], train_step: Callable = default_train_step,
              ) -> dict[str, Callable]:
    """The compiled programs: a member's init, a chunk of steps of every member (`train_step`), the evaluation."""
    loss = get_loss(tc.loss)
    sample = np.zeros((1, *example_shape), np.float32)  # numpy: no eager program to compile
    counts = {m["accumulate"] for m in members}
    # AGC (when on) leaves the layer that produces the logits unclipped, found by tracing the model
    tx = optim.make_optimizer(tc.optimizer, total_steps=int(tc.steps) // min(counts), model=model, sample_input=sample,
                              member_overrides=[m["overrides"] for m in members],
                              accumulate=None if counts == {1} else min(counts))

    inner = None if parallel.members_only(mesh) else mesh  # a members-only split: each device's own program

    def init_member(seed, values):
        key = jax.random.key(seed, impl=PRNG_IMPL)  # inside the program: no eager key programs to compile
        with per_device_program(1):  # one member on one device, whatever the mesh
            state = create_state(model, tx, jax.random.fold_in(key, 0), sample, model_args=values["model"])
        state = state.replace(opt_state=optim.set_member(state.opt_state, values["overrides"], values["accumulate"]))
        return jax.tree.map(lambda a: a[None], state)  # a member axis of 1: no stacking for one member

    def step(st, batch):
        return train_step(st, *parallel.shard_batch_constraint(batch, inner), loss)

    def member_chunk(state, idx, xs, ys, length):
        """The first `length` steps of idx (steps, batch): the batches are gathered from the on-device
        set. A run-time trip count, so a shorter last chunk reuses this program (no second compile)."""
        # the step is traced once: its jaxpr gives the metrics' shapes for the buffers and is replayed in
        # the loop body (the same operations as tracing it there again; a deep net's trace is not free)
        traced, shapes = jax.make_jaxpr(step, return_shape=True)(state, (xs[idx[0]], ys[idx[0]]))
        replay, tree = jax_core.jaxpr_as_fun(traced), jax.tree.structure(shapes)

        def body(i, carry):
            st, out = carry
            st, metrics = jax.tree.unflatten(tree, replay(*jax.tree.leaves((st, (xs[idx[i]], ys[idx[i]])))))
            return st, jax.tree.map(lambda buf, v: buf.at[i].set(v), out, metrics)

        out = jax.tree.map(lambda a: jnp.zeros((idx.shape[0], *a.shape), a.dtype), shapes[1])
        return jax.lax.fori_loop(0, length, body, (state, out))

    def member_step(state, ix, xs, ys):
        return step(state, (xs[ix], ys[ix]))

    def member_stream(state, xs, ys):
        return jax.lax.scan(step, state, (xs, ys))

    def member_eval(st, xte, yte, xtr, ytr):
        out = {f"test_{k}": v for k, v in evaluate(st, xte, yte, loss, tc.eval_batch_size, inner).items()}
        if tc.eval_train:
            out.update({f"train_full_{k}": v for k, v in evaluate(st, xtr, ytr, loss, tc.eval_batch_size,
                                                                   inner).items()})
        return {**out, **{name: f(st) for name, f in eval_fns.items()}}

    donate, vmap = functools.partial(jax.jit, donate_argnums=(0,)), parallel.map_members
    return {
        "init_one": light_jit(init_member),  # compiled once, called per member: cheaper than a vmapped init
        "run_chunk": donate(vmap(member_chunk, (0, 0, None, None, None), mesh)),
        "run_step": donate(vmap(member_step, (0, 0, None, None), mesh)),
        "run_stream_chunk": donate(vmap(member_stream, (0, None, None), mesh)),
        "run_eval": light_jit(vmap(member_eval, (0, None, None, None, None), mesh)),
    }


def _seeds(members: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Each member's seed as int32 (modulo 2**32, as `jax.random.key` takes a Python int) and the
    values its init writes into the state (as arrays, so one compiled init serves every member)."""
    seeds = np.array([m["seed"] % 2**32 for m in members], np.uint32).view(np.int32)
    values = [{"overrides": {k: np.float32(v) for k, v in m["overrides"].items()}, "accumulate": np.int32(m["accumulate"]),
               "model": {k: np.asarray(v) for k, v in m["model"].items()}} for m in members]
    return seeds, values


def _initial_state(run: _Run) -> tuple[TrainState, float]:
    """Every member's initial state, stacked (and split over the mesh); on one CPU device, or a mesh
    that splits the members alone in one process, the init, the first chunk and the evaluation are
    compiled side by side first. Returns (state, the seconds spent compiling side by side)."""
    seeds, values = _seeds(run.members)
    seconds = 0.0
    split = run.mesh is not None and parallel.members_only(run.mesh) and jax.process_count() == 1
    if (run.mesh is None or split) and not run.streaming and not os.environ.get("NNBASICS_SERIAL_COMPILE"):
        t0 = time.perf_counter()
        # on a members-only mesh the shapes carry the members' sharding, as the real arguments will
        where = {"sharding": parallel.members_sharding(run.mesh)} if split else {}
        one = jax.eval_shape(run.init_one, seeds[0], values[0])
        shape = jax.tree.map(lambda a: jax.ShapeDtypeStruct((len(run.members), *a.shape[1:]), a.dtype, **where), one)
        chunk = min(int(run.tc.eval_every), int(run.tc.steps))
        idx = jax.ShapeDtypeStruct((len(run.members), chunk, int(run.tc.batch_size)), np.int32, **where)
        x_train, y_train, x_test, y_test = run.arrays
        train = ((lambda: run.run_chunk.lower(shape, idx, x_train, y_train, np.int32(chunk))) if run.tc.step_mode == "chunk"
                 else (lambda: run.run_step.lower(shape, jax.ShapeDtypeStruct((idx.shape[0], idx.shape[2]), np.int32,
                                                                              **where), x_train, y_train)))
        # the training program first (the longest compile); each compile starts as soon as it is lowered
        compile_side_by_side(lower() for lower in (train, lambda: run.init_one.lower(seeds[0], values[0]),
                                                   lambda: run.run_eval.lower(shape, x_test, y_test, x_train, y_train)))
        seconds = time.perf_counter() - t0
    parts = [run.init_one(s, v) for s, v in zip(seeds, values)]
    state = stack_members(parts)
    if run.mesh is not None:  # members split over the mesh (host values, so it also works across processes)
        state = _placed(_host_state(state), run.mesh)
    return state, seconds


def _host_state(state: TrainState) -> TrainState:
    """The state as host (numpy) arrays, the PRNG keys as their raw data."""
    return jax.device_get(state.replace(rng=jax.random.key_data(state.rng)))


def _placed(host: TrainState, mesh: Any) -> TrainState:
    """A host state (`_host_state`) on the devices: its members split over `mesh`, or on the default device."""
    raw = jax.device_put(host) if mesh is None else parallel.shard_members(host, mesh)
    return raw.replace(rng=jax.random.wrap_key_data(raw.rng, impl=PRNG_IMPL))


def _real_state(run: _Run, state: TrainState) -> TrainState:
    """The state of the members asked for: without the padding copies (on one device), else `state` itself.
    Results and checkpoints hold this, so a checkpoint resumes on any device count."""
    if not run.padding:
        return state
    n = len(run.real)
    return _placed(jax.tree.map(lambda a: np.asarray(a)[:n], _host_state(state)), None)


def _padded_state(run: _Run, state: TrainState) -> TrainState:
    """The inverse of `_real_state`: the padding copies (of the last member) appended again, split over the mesh."""
    if not run.padding:
        return state
    host = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], run.padding, axis=0)]), _host_state(state))
    return _placed(host, run.mesh)


def _stream_chunk(run: _Run, start: int, length: int) -> tuple[jax.Array, jax.Array]:
    """`length` host batches of the stream from step `start`, stacked into one transfer."""
    if run.stream is None:
        run.stream = iter(run.data.batches(start))
    got = [next(run.stream) for _ in range(length)]
    ydtype = np.int32 if get_loss(run.tc.loss).classifies else np.float32
    xs = np.stack([np.asarray(b["image"], np.float32) for b in got])
    ys = np.stack([np.asarray(b["label"], ydtype) for b in got])
    if run.mesh is None:
        return jnp.asarray(xs), jnp.asarray(ys)
    sharding = parallel.batch_sharding(run.mesh, batch_axis=1)
    return (jax.make_array_from_process_local_data(sharding, xs), jax.make_array_from_process_local_data(sharding, ys))


def _train_chunk(run: _Run, state: TrainState, step: int, length: int) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Steps step+1..step+length of every member; per-step metrics (members, length) on the host."""
    if not run.streaming:
        seeds, counts = [m["seed"] for m in run.members], [m["accumulate"] for m in run.members]
        idx = batch_indices(seeds, step, length, run.arrays[0].shape[0], int(run.tc.batch_size), counts)
        if run.tc.step_mode == "step":  # dispatched one by one (asynchronously: no host sync per step)
            got = []
            for i in range(length):
                state, m = run.run_step(state, parallel.shard_members(idx[:, i], run.mesh), run.arrays[0], run.arrays[1])
                got.append(m)
            got = jax.device_get(got)  # one transfer for the chunk's metrics, not one per step
            return state, {k: np.stack([m[k] for m in got], axis=1) for k in got[0]}
        capacity = min(int(run.tc.eval_every), int(run.tc.steps))  # every chunk has this shape (unused steps: 0s)
        idx = np.pad(idx, ((0, 0), (0, capacity - length), (0, 0)))
        state, metrics = run.run_chunk(state, parallel.shard_members(idx, run.mesh), run.arrays[0], run.arrays[1],
                                       np.int32(length))
        return state, {k: np.asarray(v)[:, :length] for k, v in metrics.items()}
    parts, done = [], 0  # several transfers of a few batches each
    while done < length:
        k = min(int(run.data.steps_per_transfer), length - done)
        state, m = run.run_stream_chunk(state, *_stream_chunk(run, step + done, k))
        parts.append(m)
        done += k
    return state, {key: np.concatenate([np.asarray(m[key]) for m in parts], axis=1) for key in parts[0]}


def _check_finite(losses: np.ndarray, step: int, members: list[dict[str, Any]], tag: str | None) -> None:
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        m_idx, s_idx = bad[np.argmin(bad[:, 1])]
        who = members[int(m_idx)]
        raise TrainingDiverged(
            f"{tag + ': ' if tag else ''}loss became {losses[m_idx, s_idx]} at step {step + int(s_idx) + 1} "
            f"(seed {who['seed']}, learning rate {who['learning_rate']:g}); metrics up to step {step} are "
            "saved. Lower the learning rate or add gradient clipping (optimizer.grad_clip_norm).")


def _row(run: _Run, step: int, tag: str | None, metrics: dict[str, np.ndarray], ev: Mapping[str, Any],
         seconds: float) -> dict[str, Any]:
    """One metrics row: the step, the members, the chunk's mean train loss (and accuracy), the evaluation."""
    n = len(run.real)  # (padding copies dropped)
    metrics, ev = {k: np.asarray(v)[:n] for k, v in metrics.items()}, {k: np.asarray(v)[:n] for k, v in ev.items()}
    row: dict[str, Any] = {"step": step, **({"run": tag} if tag else {}), "seed": [m["seed"] for m in run.real]}
    summaries = [member_summary(m) for m in run.real]
    for key in dict.fromkeys(k for s in summaries for k in s if k != "seed"):
        values = [s.get(key, {"accumulate": 1, "model": {}}.get(key)) for s in summaries]
        if key != "learning_rate" or len(set(values)) > 1 or run.tc.learning_rates is not None:
            row[key] = values
    if metrics:  # (none at step 0)
        row["train_loss"] = np.mean(metrics["loss"], axis=1).tolist()
    if "accuracy" in metrics:
        row["train_accuracy"] = np.mean(metrics["accuracy"], axis=1).tolist()
    for k, v in ev.items():
        v = np.asarray(v, np.float64)
        row[k] = v.tolist() if v.ndim <= 1 else v.reshape(n, -1).tolist()
    row["seconds"] = round(seconds, 3)
    return row


def _evaluation_row(run: _Run, step: int, tag: str | None, metrics: dict[str, np.ndarray], seconds: float,
                    writer: Any, state: TrainState) -> dict[str, Any]:
    """Evaluate every member, make the metrics row and write it (on the main process)."""
    ev = jax.device_get(run.run_eval(state, run.arrays[2], run.arrays[3], run.arrays[0], run.arrays[1]))
    row = _row(run, step, tag, metrics, ev, seconds)
    if writer is not None and jax.process_index() == 0:
        writer.write(row)
    return row


def _checkpointer(run: _Run, model: nn.Module, state: TrainState, directory: Any, tag: str | None) -> Any:
    """An Orbax checkpointer under directory/tag whose fingerprint refuses another run's checkpoints."""
    state = _real_state(run, state)  # what the checkpoints hold
    return _checkpointer_for(_fingerprint(run, model, state, tag), state, directory, tag, run.tc.keep_checkpoints)


def _fingerprint(run: _Run, model: nn.Module, state: TrainState, tag: str | None) -> dict[str, Any]:
    tc = run.tc
    x_shape = [1, *run.data.example_shape] if run.streaming else list(np.shape(run.data.x_train))
    return {
        "tag": tag, "model": " ".join(repr(model).replace("# attributes", "").split()),
        "members": [member_summary(m) for m in run.real],
        "optimizer": optim.resolve(tc.optimizer), "steps": int(tc.steps), "eval_every": int(tc.eval_every),
        "batch_size": int(tc.batch_size), "loss": loss_key(tc.loss),
        "data": [getattr(run.data, "name", "?"), x_shape, list(np.shape(run.data.x_test))],
        "param_shapes": jax.tree.map(lambda a: list(a.shape), state.params),
    }


def _checkpointer_for(fp: dict[str, Any], state: TrainState, directory: Any, tag: str | None, keep: int) -> Any:
    from nnbasics.engine.checkpoint import Checkpointer
    from nnbasics.files import ensure_writable

    state_bytes = sum(int(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(state)
                      if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key))
    path = os.path.join(str(directory), tag or "run")
    ensure_writable(path, need_bytes=(int(keep) + 1) * state_bytes, what="the checkpoints")
    return Checkpointer(path, fp, keep)


def _keep_for_a_stop(workdir: Any, run: _Run, model: nn.Module, result: TrainResult, tag: str | None) -> None:
    """Remember a training run that finished without a checkpoint (checkpoints off), so that a stop signal
    later in the experiment checkpoints it too (`checkpoint_finished_runs`) and the next run restores it instead
    of training it again. The result is held by a weak reference: no memory the experiment let go of."""
    import weakref

    if workdir is not None and workdir.interrupt_dir:
        workdir.finished_fits.append((weakref.ref(result), _fingerprint(run, model, result.state, tag), tag,
                                      int(run.tc.keep_checkpoints)))


def checkpoint_finished_runs(workdir: Any) -> None:
    """On a stop signal (or a Ctrl-C between training runs): a checkpoint at its end for each finished run
    `_keep_for_a_stop` remembered in `workdir`, so the next run restores them instead of training them again."""
    kept = workdir.finished_fits if workdir is not None else []
    for ref, fp, tag, keep in kept:
        result = ref()
        if result is not None:
            ckpt = _checkpointer_for(fp, result.state, workdir.interrupt_dir, tag, keep)
            try:
                ckpt.save(result.state, result.history)
            finally:
                ckpt.close()
    kept.clear()


def _setup(model: nn.Module, data: Any, tc: TrainConfig, mesh: Any, eval_fns: Any, tag: str | None = None,
           train_step: Callable = default_train_step) -> _Run:
    """Check the config, choose the mesh, place the data and build the compiled programs."""
    from nnbasics.config import ConfigError

    streaming = isinstance(data, StreamingData)
    try:  # a bad value or a device count that cannot take the work: one line for the user, before any compile
        validate_train_config(tc, data=data, model=model)
        if streaming and tc.eval_train:
            raise ValueError("eval_train needs the whole training set on the device; not available for streaming data")
        members, padding = _members(tc), 0
        if mesh == "auto" and tc.data_parallel:  # the devices split the batch where it divides, else whole members
            # (parallel.py); where whole members are preferred, copies of the last fill the devices
            padding = parallel.padded_members(jax.device_count(), len(members), int(tc.batch_size),
                                              processes=jax.process_count()) - len(members)
            if padding:
                copies = "1 copy" if padding == 1 else f"{padding} copies"
                parallel.say_once(f"{len(members)} members (seeds x settings) on {jax.device_count()} devices: {copies} "
                                  f"of the last one train alongside, left out of every result, so that each device "
                                  f"trains {(len(members) + padding) // jax.device_count()} whole members")
                members = members + [dict(members[-1]) for _ in range(padding)]
            mesh = parallel.training_mesh(len(members), int(tc.batch_size))
        elif mesh == "auto":
            mesh = None
        parallel.check_mesh(mesh, len(members), int(tc.batch_size))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{tag + ': ' if tag else ''}{e}") from None
    example_shape = data.example_shape if streaming else tuple(np.shape(data.x_train)[1:])
    return _Run(tc, members, mesh, data, _place(data, tc, mesh),
                **_programs(model, example_shape, tc, mesh, members, dict(eval_fns or {}), train_step), padding=padding)


# --------------------------------------------------------------------------------------- fit


def fit(model: nn.Module, data: Any, tc: TrainConfig, *, workdir: Any = None, tag: str | None = None,
        metrics_writer: Any = None, checkpoint_dir: str | None = None, mesh: Any = "auto",
        eval_fns: Mapping[str, Callable[[TrainState], Any]] | None = None,
        loss: str | Mapping[str, Any] | Loss | None = None, train_step: Callable | None = None,
        interrupt: InterruptFlag | None = None) -> TrainResult:
    """Train `model` on `data` (an on-device ArrayDataset, anything with x_train, y_train, x_test,
    y_test, or StreamingData) for `tc.steps` steps, one vmapped member per (seed, learning rate).

    `workdir` (a `nnbasics.runs.workdir.Workdir`, or anything with the members of
    `nnbasics.engine.run_directory.RunDirectory`) gives the metrics writer (`workdir.metrics`, rows tagged
    `tag`) and, once its checkpoints are enabled, `workdir.checkpoint_dir` and `checkpoint_every`;
    `metrics_writer` and `checkpoint_dir` (every `tc.checkpoint_every` steps) set them one by one.
    With a checkpoint directory Orbax saves there (under `tag`) and at the end, and a later call
    resumes from the latest checkpoint with exactly the batches, dropout keys and metric rows of an
    uninterrupted run. Where the command line installed a stop-signal handler
    (`nnbasics.engine.interrupt.graceful_interrupt`; single process), Ctrl-C stops after the chunk in
    flight, writes a checkpoint (to `workdir.interrupt_dir` when checkpoints are off) and raises
    TrainingInterrupted; `interrupt` gives a flag of your own instead. `eval_fns` adds
    metrics at each eval point: name -> f(state) -> scalar (per member). A NaN or infinite loss
    raises TrainingDiverged after the metrics so far are written.

    `loss` (a registered name, {"name": ..., params} or a `nnbasics.nn.losses.Loss`, e.g.
    `LabelSmoothing(epsilon=0.1)`) replaces `tc.loss`; its `classifies` decides integer labels and
    accuracy. `train_step(state, x, y, loss) -> (state, metrics with "loss")` replaces the default
    step (`nnbasics.engine.state.train_step`) for a variant such as mixup or a custom regularizer."""
    if loss is not None:
        tc = dataclasses.replace(tc, loss=loss)
    workdir = check_run_directory(workdir)
    if workdir is not None:
        metrics_writer = metrics_writer or workdir.metrics
        if checkpoint_dir is None and workdir.checkpoint_dir is not None:
            checkpoint_dir, tc = workdir.checkpoint_dir, dataclasses.replace(tc, checkpoint_every=workdir.checkpoint_every)
    interrupt_dir = checkpoint_dir or (workdir.interrupt_dir if workdir is not None else None)
    if interrupt is None and interrupt_dir is not None and jax.process_count() == 1:
        interrupt = active()  # the command line's stop-signal handler, where one is installed
    interrupt = interrupt or InterruptFlag()
    with listening(interrupt):
        result = _train(model, data, tc, tag, workdir, metrics_writer, checkpoint_dir, interrupt_dir, mesh, eval_fns,
                        train_step or default_train_step, interrupt)
        if interrupt.requested:  # came after training's last check (closing its checkpoints): still a stop
            checkpoint_finished_runs(workdir)  # this run too, when checkpoints are off
            raise TrainingInterrupted(
                f"{tag + ': ' if tag else ''}stopped as its training finished (step {int(tc.steps)}); what "
                "finished is kept. Run the same command again to continue from there.", int(tc.steps), None,
                interrupt.signum)
    if workdir is not None:  # the experiment's timing table: where its time went
        workdir.record_fit(tag, steps=result.steps_trained, members=len(result.members), seconds=result.seconds,
                           compile_seconds=result.compile_seconds)
    return result


def _train(model: nn.Module, data: Any, tc: TrainConfig, tag: str | None, workdir: Any, metrics_writer: Any,
           checkpoint_dir: Any, interrupt_dir: Any, mesh: Any, eval_fns: Any, train_step: Callable,
           interrupt: InterruptFlag) -> TrainResult:
    """The loop of `fit`: initialise (or resume), then per chunk of `eval_every` steps: the compiled,
    vmapped steps, a check for NaN, the evaluation and its metrics row, a checkpoint when due, and a
    stop when a stop signal asked for one. How a chunk runs fast on a CPU (a compiled loop of
    replayed steps, or one dispatch per step; compiles side by side) stays in `_setup`,
    `_initial_state` and `_train_chunk`."""
    t0 = time.perf_counter()
    run = _setup(model, data, tc, mesh, eval_fns, tag, train_step)
    state, compile_seconds = _initial_state(run)
    ckpt, history, step, total = None, [], 0, int(tc.steps)
    if checkpoint_dir is not None:
        ckpt = _checkpointer(run, model, state, checkpoint_dir, tag)
        restored = ckpt.restore(_real_state(run, state))
        if restored is not None:
            state, history = _padded_state(run, restored[0]), restored[1]
        step = int(history[-1]["step"]) if history else 0
        if metrics_writer is not None and jax.process_index() == 0:  # the run's rows become the checkpoint's
            metrics_writer.restore(tag, history)
    last_saved, first, bar = step, step, progress(total, desc=tag or "train")
    bar.update(step)
    if tc.eval_at_start and not history:
        history.append(_evaluation_row(run, 0, tag, {}, time.perf_counter() - t0, metrics_writer, state))
    try:
        while step < total:
            length, tc0 = min(int(tc.eval_every), total - step), time.perf_counter()
            state, metrics = _train_chunk(run, state, step, length)  # the one host sync per chunk
            if step == first:
                first_chunk = time.perf_counter() - t0
                if not compile_seconds:  # not compiled side by side: the first chunk compiles (and runs)
                    compile_seconds = time.perf_counter() - tc0
            if tc.stop_on_nan:
                _check_finite(metrics["loss"], step, run.members, tag)
            step += length
            history.append(_evaluation_row(run, step, tag, metrics, time.perf_counter() - t0, metrics_writer, state))
            if ckpt is not None and (step == total or (tc.checkpoint_every and step - last_saved >= tc.checkpoint_every)):
                ckpt.save(_real_state(run, state), history)
                last_saved = step
            bar.update(length)
            if interrupt.requested:  # also after the last chunk: the request is kept, never dropped
                break
        if interrupt.requested:  # (a run restored at its end with a request pending stops here too)
            if checkpoint_dir is None:  # the runs that finished before this one, not trained again next time
                checkpoint_finished_runs(workdir)
            if ckpt is None or last_saved != step:
                ckpt = ckpt or _checkpointer(run, model, state, interrupt_dir, tag)
                ckpt.save(_real_state(run, state), history)
            raise TrainingInterrupted(
                f"{tag + ': ' if tag else ''}interrupted at step {step} of {total}"
                f"{' (its training had just finished)' if step == total else ''}; checkpoint written to "
                f"{ckpt.directory}. Run the same command again to continue from there.", step, str(ckpt.directory),
                interrupt.signum)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    jax.block_until_ready(state)
    result = TrainResult(history, _real_state(run, state), [member_summary(m) for m in run.real], time.perf_counter() - t0,
                         compile_seconds, first_chunk if total > first else 0.0, steps_trained=total - first)
    if checkpoint_dir is None and interrupt.installed:  # checkpoints off: kept for a stop signal later on
        _keep_for_a_stop(workdir, run, model, result, tag)
    return result
