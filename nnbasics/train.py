"""The training engine: TrainState, losses, pure train/eval steps and the compiled loop.

For data that fits on the device (every embedded set) the loop over steps runs inside one
compiled program per chunk of `eval_every` steps (`lax.scan`), with no host sync per step.
Several seeds (and, optionally, several learning rates) train side by side in one `vmap`-ed
program. With more than one device the batch is sharded over a `data` mesh axis and the state
is replicated; `jit` adds the all-reduce, so results equal one device's up to float rounding.

    result = fit(model, dataset, TrainConfig(steps=1000, batch_size=100, seeds=(0, 1)))
    result.final("test_accuracy")  # one number per seed
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from nnbasics import optim, parallel
from nnbasics.interrupt import InterruptFlag, TrainingInterrupted, graceful_interrupt
from nnbasics.progress import progress
from nnbasics.registry import Registry

# --------------------------------------------------------------------------------------- losses

LOSSES: Registry[Callable[[jax.Array, jax.Array], jax.Array]] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels (N,) against logits (N, C)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@LOSSES.register("mse")
def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element."""
    return jnp.mean((pred - target.reshape(pred.shape)) ** 2)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose arg-max equals the label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


# ---------------------------------------------------------------------------------- train state


class TrainState(struct.PyTreeNode):
    """Everything that changes during training, as one pytree."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # typed key; dropout keys are fold_in(rng, step), fresh every step
    lr_scale: jax.Array  # multiplies every update (a vmapped learning-rate grid); 1.0 normally
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def create_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, sample_x: jax.Array, lr_scale: float = 1.0
) -> TrainState:
    """Initialize parameters (and BatchNorm statistics) of `model` on `sample_x`."""
    k_params, k_dropout, k_rng = jax.random.split(key, 3)
    variables = model.init({"params": k_params, "dropout": k_dropout}, sample_x, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=k_rng,
        lr_scale=jnp.asarray(lr_scale, jnp.float32),
        apply_fn=model.apply,
        tx=tx,
    )


def forward(state: TrainState, params: Any, x: jax.Array, train: bool) -> tuple[jax.Array, Any]:
    """Apply the model; in training mode returns the new BatchNorm statistics too."""
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    if not train:
        return state.apply_fn(variables, x, train=False), state.batch_stats
    rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}
    if state.batch_stats:
        out, updates = state.apply_fn(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return out, updates["batch_stats"]
    return state.apply_fn(variables, x, train=True, rngs=rngs), state.batch_stats


def train_step(state: TrainState, x: jax.Array, y: jax.Array, loss: str = "cross_entropy") -> tuple[TrainState, dict]:
    """One gradient step on the batch (x, y); pure, so jit/vmap/scan compose with it."""
    loss_fn = LOSSES.get(loss)

    def objective(params):
        out, new_stats = forward(state, params, x, train=True)
        return loss_fn(out, y), (out, new_stats)

    (value, (out, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": value}
    if loss == "cross_entropy":
        metrics["accuracy"] = accuracy(out, y)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
    )
    return new_state, metrics


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, loss: str = "cross_entropy") -> dict:
    """Loss (and accuracy) of the model in evaluation mode on one batch."""
    out, _ = forward(state, state.params, x, train=False)
    metrics = {"loss": LOSSES.get(loss)(out, y)}
    if loss == "cross_entropy":
        metrics["accuracy"] = accuracy(out, y)
    return metrics


def evaluate(
    state: TrainState, x: jax.Array, y: jax.Array, loss: str = "cross_entropy", batch_size: int = 1000,
    mesh: Any = None,
) -> dict:
    """Metrics over a whole on-device set, in batches (padded and masked; jit-compatible)."""
    n = x.shape[0]
    bs = min(batch_size, n)
    if mesh is not None:
        d = mesh.devices.size
        bs = -(-bs // d) * d
    nb = -(-n // bs)
    pad = nb * bs - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    yp = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)]) if pad else y
    mask = (jnp.arange(nb * bs) < n).astype(jnp.float32)
    loss_fn = LOSSES.get(loss)

    def one(batch):
        xb, yb, mb = batch
        xb, yb, mb = parallel.shard_batch_constraint((xb, yb, mb), mesh)
        out, _ = forward(state, state.params, xb, train=False)
        if loss == "cross_entropy":  # per example; dense (per-pixel) labels are averaged per example
            per = optax.softmax_cross_entropy_with_integer_labels(out, yb).reshape(out.shape[0], -1).mean(1)
            acc = (jnp.argmax(out, -1) == yb).astype(jnp.float32).reshape(out.shape[0], -1).mean(1)
        else:
            per = jnp.mean(((out - yb.reshape(out.shape)) ** 2).reshape(out.shape[0], -1), axis=1)
            acc = jnp.zeros_like(per)
        return jnp.sum(per * mb), jnp.sum(acc * mb)

    batches = (xp.reshape(nb, bs, *x.shape[1:]), yp.reshape(nb, bs, *y.shape[1:]), mask.reshape(nb, bs))
    tot_loss, tot_acc = jax.lax.map(one, batches)
    out = {"loss": jnp.sum(tot_loss) / n}
    if loss == "cross_entropy":
        out["accuracy"] = jnp.sum(tot_acc) / n
    del loss_fn
    return out


# --------------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class TrainConfig:
    """What `fit` needs to know; experiments build it from their ConfigDict."""

    steps: int = 1000
    batch_size: int = 128
    eval_every: int = 250
    seeds: Sequence[int] = (0,)
    learning_rates: Sequence[float] | None = None  # a vmapped grid; None = the optimizer's own
    optimizer: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    loss: str = "cross_entropy"
    eval_batch_size: int = 1000
    eval_train: bool = False  # also evaluate on the whole training set at every eval point
    stop_on_nan: bool = True
    data_parallel: bool = True
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
                if hasattr(v, "to_dict"):
                    v = v.to_dict()
                kw[f.name] = v
        return cls(**kw)


PRNG_IMPL = "rbg"  # the key implementation of training runs (initialization and dropout)

# Programs that run rarely (the init, the evaluation) cost mostly their compile time. On CPU, XLA's
# classic loop emitters compile them in ~30% less CPU time than its newer MLIR fusion emitters
# (MNIST-1D CNN: init 1.15 -> 0.88 s, eval 0.38 -> 0.21 s; ResNet-20: init the same, eval 0.7 -> 0.9 s);
# the numbers were identical for every model tried. The training chunk keeps XLA's defaults (with
# them the CNN's trajectory changes after a few hundred steps).
LIGHT_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_light_compile_ok: bool | None = None


def light_jit(fun: Callable, **kw) -> Callable:
    """`jax.jit` for programs that run rarely: on CPU with LIGHT_COMPILE_OPTIONS when this XLA knows
    them (checked once per process; NNBASICS_DEFAULT_COMPILE=1 turns them off), else plain jit."""
    global _light_compile_ok
    if jax.default_backend() != "cpu" or os.environ.get("NNBASICS_DEFAULT_COMPILE"):
        return jax.jit(fun, **kw)
    if _light_compile_ok is None:
        try:
            jax.jit(lambda v: v + 1, compiler_options=LIGHT_COMPILE_OPTIONS).lower(np.float32(0)).compile()
            _light_compile_ok = True
        except Exception:  # an XLA without the option: plain jit
            _light_compile_ok = False
    return jax.jit(fun, compiler_options=LIGHT_COMPILE_OPTIONS, **kw) if _light_compile_ok else jax.jit(fun, **kw)


@jax.jit
def _concat_members(*states: Any) -> Any:
    """Members' states (each with a leading axis of 1) into one stacked state: one small program."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *states)


def compile_side_by_side(lowered: Sequence[Any]) -> None:
    """Compile lowered programs in parallel threads (XLA releases the GIL), filling jit's caches, so
    a run's init, first chunk and evaluation compile side by side on a multi-core CPU instead of
    one after the other. A failure is ignored here: the real call compiles again and raises it."""
    from concurrent.futures import ThreadPoolExecutor

    def one(low):
        try:
            low.compile()
        except Exception:
            pass

    with ThreadPoolExecutor(max(1, min(len(lowered), os.cpu_count() or 1))) as ex:
        list(ex.map(one, lowered))


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step (and seed)."""


def validate_train_config(tc: TrainConfig, num_train: int | None = None) -> None:
    """Reject invalid values with a clear message before anything is compiled."""
    seeds = list(tc.seeds) if tc.seeds is not None else []
    if not seeds:
        raise ValueError("seeds must be a non-empty list of integers, e.g. --config.seeds='(0, 1, 2)'")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be integers, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if int(tc.steps) <= 0:
        raise ValueError(f"steps must be a positive integer, got {tc.steps}")
    if int(tc.batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {tc.batch_size}")
    if num_train is not None and int(tc.batch_size) > num_train:
        raise ValueError(
            f"batch_size={tc.batch_size} is larger than the training set ({num_train} examples); "
            f"use a batch size between 1 and {num_train}"
        )
    if int(tc.eval_every) <= 0:
        raise ValueError(f"eval_every must be a positive integer, got {tc.eval_every}")
    LOSSES.check(tc.loss)
    optim.validate(tc.optimizer)
    if tc.learning_rates is not None:
        lrs = list(tc.learning_rates)
        if not lrs or any(not float(lr) > 0 for lr in lrs):
            raise ValueError(f"learning_rates must be a non-empty list of positive numbers, got {lrs}")


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training set in `epoch` for `seed` (host-side: XLA's CPU sort is slow)."""
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n).astype(np.int32)


def batch_indices(seeds: Sequence[int], start: int, length: int, n: int, batch_size: int) -> np.ndarray:
    """Indices (members, length, batch) of the batches of steps start..start+length-1: a fresh
    permutation per epoch, batches without replacement, the last partial batch dropped."""
    per_epoch = n // batch_size
    out = np.empty((len(seeds), length, batch_size), np.int32)
    for m, seed in enumerate(seeds):
        cache: dict[int, np.ndarray] = {}
        for i in range(length):
            epoch, pos = divmod(start + i, per_epoch)
            if epoch not in cache:
                cache = {epoch: epoch_permutation(seed, epoch, n)}
            out[m, i] = cache[epoch][pos * batch_size:(pos + 1) * batch_size]
    return out


@dataclasses.dataclass
class StreamingData:
    """A data set too large for the device: host batches from a pipeline (e.g. grain over tfds).

    `batches(start_step)` yields this process's part of each global batch as
    {"image": (B_local, ...), "label": (B_local,)} from step `start_step` on (so a resumed run
    continues with the batches an uninterrupted run would have seen); `x_test`, `y_test` are a
    (small) evaluation set kept on the device. Every member (seed) sees the same batches."""

    name: str
    batches: Callable[[int], Any]
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    steps_per_transfer: int = 8  # host batches stacked into one device transfer

    @property
    def x_train(self) -> np.ndarray:  # for shape checks only: one example
        return np.zeros((1, *self.input_shape), np.float32)


@dataclasses.dataclass
class TrainResult:
    """History (one row per eval point, values per member) and the final stacked state."""

    history: list[dict[str, Any]]
    state: TrainState  # leading axis = member (seed x learning rate)
    members: list[dict[str, Any]]  # [{"seed": s, "learning_rate": lr}, ...]
    seconds: float
    compile_seconds: float

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values[member, eval point]) of a metric."""
        steps = np.array([r["step"] for r in self.history])
        vals = np.array([r[key] for r in self.history], dtype=np.float64).T
        return steps, vals

    def final(self, key: str) -> np.ndarray:
        """The last value of `key`, one per member."""
        return np.asarray(self.history[-1][key], dtype=np.float64)

    def member_state(self, i: int) -> TrainState:
        return jax.tree.map(lambda a: a[i], self.state)


def _member_list(tc: TrainConfig) -> list[dict[str, Any]]:
    base_lr = float(optim.resolve(tc.optimizer)["learning_rate"])
    lrs = [base_lr] if tc.learning_rates is None else [float(v) for v in tc.learning_rates]
    return [{"seed": int(s), "learning_rate": lr} for lr in lrs for s in tc.seeds]


def _interrupt_dir(checkpoint_dir: Any, metrics_writer: Any) -> Any:
    """Where a Ctrl-C writes its checkpoint: the run's checkpoint directory, else the writer's place for one."""
    if checkpoint_dir is not None:
        return checkpoint_dir
    return getattr(metrics_writer, "checkpoint_dir", None) or getattr(metrics_writer, "interrupt_dir", None)


def _stops_on_ctrl_c(train: Callable[..., "TrainResult"]) -> Callable[..., "TrainResult"]:
    """Run `train` with Ctrl-C turned into a request it checks after each chunk (see `fit`), for
    the whole call, compiling included; `train` receives the request flag as `interrupt`."""

    @functools.wraps(train)
    def run(model: nn.Module, data: Any, tc: TrainConfig, **kw: Any) -> "TrainResult":
        graceful = _interrupt_dir(kw.get("checkpoint_dir"), kw.get("metrics_writer")) is not None \
            and jax.process_count() == 1
        with graceful_interrupt(kw.get("tag") or "training") if graceful else contextlib.nullcontext(
                InterruptFlag()) as interrupt:
            return train(model, data, tc, interrupt=interrupt, **kw)

    return run


@_stops_on_ctrl_c
def fit(
    model: nn.Module,
    data: Any,
    tc: TrainConfig,
    *,
    metrics_writer: Any = None,
    tag: str | None = None,
    mesh: Any = "auto",
    eval_fns: Mapping[str, Callable[[TrainState], Any]] | None = None,
    checkpoint_dir: str | None = None,
    interrupt: InterruptFlag | None = None,
) -> TrainResult:
    """Train `model` on an on-device data set (an ArrayDataset or anything with x_train,
    y_train, x_test, y_test) for `tc.steps` steps, one vmapped member per (seed, lr).

    `eval_fns` adds metrics computed at each eval point: name -> f(state) -> scalar (per member).
    Raises TrainingDiverged (after writing the metrics so far) if a loss becomes NaN or inf.

    Checkpointing is on when `checkpoint_dir` is given or the metrics writer carries one (a
    workdir's does when its run is checkpointed): Orbax saves every `tc.checkpoint_every` steps
    and at the end, under checkpoint_dir/tag, and a later call resumes from the latest checkpoint
    with exactly the batches, dropout keys and metric rows an uninterrupted run would have.

    Ctrl-C (SIGINT) while this runs, compiling included, stops after the chunk of steps in flight
    and writes a checkpoint first (also when checkpoints are otherwise off, if the writer names a
    place for one: a workdir's does), raising TrainingInterrupted. Single process only: a SIGINT
    reaching one process of several cannot stop the others' collectives in step. (`interrupt` is
    supplied by the wrapper; tests call `fit.__wrapped__` with their own flag.)"""
    streaming = isinstance(data, StreamingData)
    validate_train_config(tc, num_train=None if streaming else len(data.x_train))
    if streaming and tc.eval_train:
        raise ValueError("eval_train needs the whole training set on the device; not available for streaming data")
    if mesh == "auto":
        mesh = parallel.default_mesh() if tc.data_parallel else None
    parallel.check_divisible(int(tc.batch_size), mesh)
    members = _member_list(tc)
    base_lr = float(optim.resolve(tc.optimizer)["learning_rate"])
    tx = optim.make_optimizer(tc.optimizer, total_steps=int(tc.steps))
    loss = tc.loss
    ydtype = np.int32 if loss == "cross_entropy" else np.float32
    if streaming:
        x_train = y_train = jnp.zeros((0,), jnp.float32)  # unused
    else:
        x_train = parallel.replicate(np.asarray(data.x_train, np.float32), mesh)
        y_train = parallel.replicate(np.asarray(data.y_train, ydtype), mesh)
    x_test = parallel.replicate(np.asarray(data.x_test, np.float32), mesh)
    y_test = parallel.replicate(np.asarray(data.y_test, ydtype), mesh)
    n, bs = x_train.shape[0], int(tc.batch_size)

    # "rbg" keys: XLA's RngBitGenerator compiles in a fraction of the time of threefry on CPU
    # (ResNet-20's init: ~3 s instead of ~20 s of CPU), and each seed still gives fixed numbers.
    keys = np.stack([np.asarray(jax.random.key_data(jax.random.key(m["seed"], impl=PRNG_IMPL))) for m in members])
    scales = np.asarray([m["learning_rate"] / base_lr for m in members], np.float32)

    def init_member(key_data, scale):
        key = jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)
        state = create_state(model, tx, jax.random.fold_in(key, 0), sample, lr_scale=scale)
        return jax.tree.map(lambda a: a[None], state)  # a member axis of 1: no stacking for one member

    sample = jnp.zeros((1, *data.x_train.shape[1:]), jnp.float32)
    t0 = time.perf_counter()
    init_one = light_jit(init_member)  # compiled once, called per member: cheaper than vmapping the init
    member_seeds = [m["seed"] for m in members]

    def member_chunk(state, idx, xs, ys):
        def body(st, ix):
            xb, yb = parallel.shard_batch_constraint((xs[ix], ys[ix]), mesh)
            return train_step(st, xb, yb, loss)

        return jax.lax.scan(body, state, idx)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def run_chunk(state, idx, xs, ys):
        return jax.vmap(member_chunk, in_axes=(0, 0, None, None))(state, idx, xs, ys)

    def member_stream(state, xs, ys):
        def body(st, batch):
            xb, yb = parallel.shard_batch_constraint(batch, mesh)
            return train_step(st, xb, yb, loss)

        return jax.lax.scan(body, state, (xs, ys))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def run_stream_chunk(state, xs, ys):
        return jax.vmap(member_stream, in_axes=(0, None, None))(state, xs, ys)

    stream_iter = None

    def next_stream_chunk(start: int, length: int):
        nonlocal stream_iter
        if stream_iter is None:
            stream_iter = iter(data.batches(start))
        got = [next(stream_iter) for _ in range(length)]
        xs = np.stack([np.asarray(b["image"], np.float32) for b in got])
        ys = np.stack([np.asarray(b["label"], ydtype) for b in got])
        if mesh is None:
            return jnp.asarray(xs), jnp.asarray(ys)
        sharding = parallel.batch_sharding(mesh, batch_axis=1)
        return (jax.make_array_from_process_local_data(sharding, xs),
                jax.make_array_from_process_local_data(sharding, ys))

    extra = dict(eval_fns or {})

    @light_jit
    def run_eval(state, xte, yte, xtr, ytr):
        def one(st):
            out = {f"test_{k}": v for k, v in evaluate(st, xte, yte, loss, tc.eval_batch_size, mesh).items()}
            if tc.eval_train:
                full = evaluate(st, xtr, ytr, loss, tc.eval_batch_size, mesh)
                out.update({f"train_full_{k}": v for k, v in full.items()})
            for name, f in extra.items():
                out[name] = f(st)
            return out

        return jax.vmap(one)(state)

    precompile_seconds = 0.0
    if mesh is None and not streaming and not os.environ.get("NNBASICS_SERIAL_COMPILE"):  # side by side
        tp0 = time.perf_counter()
        one_state = jax.eval_shape(init_one, keys[0], scales[0])
        state_shape = jax.tree.map(lambda a: jax.ShapeDtypeStruct((len(members), *a.shape[1:]), a.dtype), one_state)
        idx_shape = jax.ShapeDtypeStruct((len(members), min(int(tc.eval_every), int(tc.steps)), bs), np.int32)
        compile_side_by_side([
            init_one.lower(keys[0], scales[0]),
            run_chunk.lower(state_shape, idx_shape, x_train, y_train),
            run_eval.lower(state_shape, x_test, y_test, x_train, y_train),
        ])
        precompile_seconds = time.perf_counter() - tp0
    parts = [init_one(k, s) for k, s in zip(keys, scales)]
    state = parts[0] if len(parts) == 1 else _concat_members(*parts)
    del parts
    if mesh is not None:  # replicate over the mesh (host values, so it also works across processes)
        raw = jax.device_get(state.replace(rng=jax.random.key_data(state.rng)))
        raw = parallel.replicate(raw, mesh)
        state = raw.replace(rng=jax.random.wrap_key_data(raw.rng, impl=PRNG_IMPL))

    history: list[dict[str, Any]] = []
    total, every = int(tc.steps), int(tc.eval_every)
    compile_seconds = 0.0
    step = 0
    is_main = jax.process_index() == 0
    ckpt = None
    if checkpoint_dir is None and metrics_writer is not None:
        checkpoint_dir = getattr(metrics_writer, "checkpoint_dir", None)
        if checkpoint_dir is not None:
            tc = dataclasses.replace(tc, checkpoint_every=getattr(metrics_writer, "checkpoint_every", 0))
    def make_checkpointer(directory: Any) -> Any:
        from nnbasics.checkpoint import Checkpointer
        from nnbasics.workdir import ensure_writable

        fp = {
            "tag": tag, "model": " ".join(repr(model).replace("# attributes", "").split()), "members": members,
            "optimizer": optim.resolve(tc.optimizer),
            "steps": total, "eval_every": every, "batch_size": bs, "loss": loss,
            "data": [getattr(data, "name", "?"), list(np.shape(data.x_train)), list(np.shape(data.x_test))],
            "param_shapes": jax.tree.map(lambda a: list(a.shape), state.params),
        }
        state_bytes = sum(int(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(state)
                          if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key))
        path = os.path.join(str(directory), tag or "run")
        ensure_writable(path, need_bytes=(int(tc.keep_checkpoints) + 1) * state_bytes, what="the checkpoints")
        return Checkpointer(path, fp, tc.keep_checkpoints)

    if checkpoint_dir is not None:
        ckpt = make_checkpointer(checkpoint_dir)
        restored = ckpt.restore(state)
        if restored is not None:
            state, history = restored
            step = int(history[-1]["step"]) if history else 0
        # the run's rows become the checkpoint's: later ones are recomputed, lost ones rebuilt
        if metrics_writer is not None and is_main and hasattr(metrics_writer, "restore"):
            metrics_writer.restore(tag, history)
    interrupt = interrupt or InterruptFlag()
    interrupt_dir = _interrupt_dir(checkpoint_dir, metrics_writer)
    last_saved = step
    bar = progress(total, desc=tag or "train")
    bar.update(step)
    try:
        while step < total:
            length = min(every, total - step)
            tc0 = time.perf_counter()
            if streaming:  # several transfers of a few batches each, then one eval
                parts, done = [], 0
                while done < length:
                    k = min(int(data.steps_per_transfer), length - done)
                    xs, ys = next_stream_chunk(step + done, k)
                    state, m = run_stream_chunk(state, xs, ys)
                    parts.append(m)
                    done += k
                metrics = {key: np.concatenate([np.asarray(m[key]) for m in parts], axis=1) for key in parts[0]}
            else:
                idx = parallel.replicate(batch_indices(member_seeds, step, length, n, bs), mesh)
                state, metrics = run_chunk(state, idx, x_train, y_train)
            losses = np.asarray(metrics["loss"])  # (members, length): the one host sync per chunk
            if step == 0:
                compile_seconds = time.perf_counter() - tc0
            bad = ~np.isfinite(losses)
            if bad.any() and tc.stop_on_nan:
                m_idx, s_idx = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
                who = members[int(m_idx)]
                raise TrainingDiverged(
                    f"{tag + ': ' if tag else ''}loss became {losses[m_idx, s_idx]} at step {step + int(s_idx) + 1} "
                    f"(seed {who['seed']}, learning rate {who['learning_rate']:g}); metrics up to step {step} are "
                    "saved. Lower the learning rate or add gradient clipping (optimizer.grad_clip_norm)."
                )
            step += length
            ev = jax.device_get(run_eval(state, x_test, y_test, x_train, y_train))
            row: dict[str, Any] = {"step": step}
            if tag:
                row["run"] = tag
            row["seed"] = [m["seed"] for m in members]
            if tc.learning_rates is not None:
                row["learning_rate"] = [m["learning_rate"] for m in members]
            row["train_loss"] = np.mean(losses, axis=1).tolist()
            if "accuracy" in metrics:
                row["train_accuracy"] = np.mean(np.asarray(metrics["accuracy"]), axis=1).tolist()
            for k, v in ev.items():
                v = np.asarray(v, np.float64)
                row[k] = v.tolist() if v.ndim <= 1 else v.reshape(len(members), -1).tolist()
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
            if metrics_writer is not None and is_main:
                metrics_writer.write(row)
            due = step == total or (tc.checkpoint_every and step - last_saved >= tc.checkpoint_every)
            if ckpt is not None and due:
                ckpt.save(state, history)
                last_saved = step
            bar.update(length)
            if interrupt.requested and step < total:
                ckpt = ckpt or make_checkpointer(interrupt_dir)
                ckpt.save(state, history)
                raise TrainingInterrupted(
                    f"{tag + ': ' if tag else ''}interrupted at step {step} of {total}; checkpoint written to "
                    f"{ckpt.directory}. Run the same command again to continue from there.", step, str(ckpt.directory))
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    jax.block_until_ready(state)
    return TrainResult(history, state, members, time.perf_counter() - t0, precompile_seconds + compile_seconds)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation, as floats."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std())


def steps_to_reach(steps: np.ndarray, values: np.ndarray, threshold: float, below: bool = True) -> float:
    """The first step at which `values` drops below (or rises above) `threshold`; inf if never."""
    hit = values <= threshold if below else values >= threshold
    idx = np.flatnonzero(hit)
    return float(steps[idx[0]]) if idx.size else math.inf
