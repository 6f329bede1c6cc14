"""Optax optimizers built from a config: the lecture's SGD, momentum, Nesterov, RMSProp, Adam(W),
with weight decay, gradient clipping and learning-rate schedules.

    cfg = ConfigDict(dict(name="momentum", learning_rate=0.1, momentum=0.9,
                          weight_decay=5e-4, schedule="cosine", warmup_steps=0))
    tx = make_optimizer(cfg, total_steps=1000)

Weight decay is L2 regularization added to the gradient (coupled) for every optimizer but
`adamw`, where it is decoupled (Loshchilov & Hutter).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from nnbasics.registry import Registry

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry("schedule")

# Every key an optimizer config may hold, with its default.
DEFAULTS: dict[str, Any] = dict(
    name="adam",
    learning_rate=1e-3,
    momentum=0.9,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    decay=0.9,  # RMSProp's averaging constant
    weight_decay=0.0,
    schedule="constant",
    warmup_steps=0,
    decay_steps=(),  # for schedule="step": steps at which the rate is multiplied by decay_factor
    decay_factor=0.1,
    grad_clip_norm=0.0,  # 0 disables global-norm clipping
    agc_clip=0.0,  # adaptive gradient clipping (NFNets) threshold lambda; 0 disables it
    agc_eps=1e-3,
)


def _opt(name):
    return OPTIMIZERS.register(name)


@_opt("sgd")
def _sgd(lr, c):
    return optax.sgd(lr)


@_opt("momentum")
def _momentum(lr, c):
    return optax.sgd(lr, momentum=c["momentum"])


@_opt("nesterov")
def _nesterov(lr, c):
    return optax.sgd(lr, momentum=c["momentum"], nesterov=True)


@_opt("rmsprop")
def _rmsprop(lr, c):
    return optax.rmsprop(lr, decay=c["decay"], eps=c["eps"])


@_opt("adam")
def _adam(lr, c):
    return optax.adam(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"])


@_opt("adamw")
def _adamw(lr, c):
    return optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"], weight_decay=c["weight_decay"])


@SCHEDULES.register("constant")
def _constant(lr, total, c):
    return optax.constant_schedule(lr)


@SCHEDULES.register("cosine")
def _cosine(lr, total, c):
    w = int(c["warmup_steps"])
    if w:
        return optax.warmup_cosine_decay_schedule(0.0, lr, w, max(total, w + 1))
    return optax.cosine_decay_schedule(lr, max(total, 1))


@SCHEDULES.register("linear")
def _linear(lr, total, c):
    return optax.linear_schedule(lr, 0.0, max(total, 1))


@SCHEDULES.register("step")
def _step(lr, total, c):
    return optax.piecewise_constant_schedule(lr, {int(s): float(c["decay_factor"]) for s in c["decay_steps"]})


@SCHEDULES.register("exponential")
def _exponential(lr, total, c):
    return optax.exponential_decay(lr, transition_steps=max(total, 1), decay_rate=float(c["decay_factor"]))


def resolve(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The optimizer config with defaults filled in; unknown keys are an error."""
    c = dict(DEFAULTS)
    for k, v in dict(cfg or {}).items():
        if k not in DEFAULTS:
            from nnbasics.registry import unknown_name_message

            raise ValueError(unknown_name_message("optimizer option", k, list(DEFAULTS)))
        c[k] = v
    return c


def validate(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check an optimizer config before anything is compiled; returns the resolved config."""
    c = resolve(cfg)
    OPTIMIZERS.check(c["name"])
    SCHEDULES.check(c["schedule"])
    if not float(c["learning_rate"]) > 0:
        raise ValueError(f"optimizer.learning_rate must be > 0, got {c['learning_rate']}")
    if float(c["weight_decay"]) < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {c['weight_decay']}")
    if not 0 <= float(c["momentum"]) < 1:
        raise ValueError(f"optimizer.momentum must be in [0, 1), got {c['momentum']}")
    if float(c["grad_clip_norm"]) < 0:
        raise ValueError(f"optimizer.grad_clip_norm must be >= 0, got {c['grad_clip_norm']}")
    if float(c["agc_clip"]) < 0 or float(c["agc_eps"]) <= 0:
        raise ValueError(f"optimizer.agc_clip must be >= 0 and agc_eps > 0, got {c['agc_clip']}, {c['agc_eps']}")
    return c


def learning_rate_schedule(cfg: Mapping[str, Any] | None, total_steps: int) -> optax.Schedule:
    c = validate(cfg)
    return SCHEDULES.get(c["schedule"])(float(c["learning_rate"]), int(total_steps), c)


# The numbers that may differ between members trained side by side (`fit`'s TrainConfig.members):
# they live in the optimizer state (optax.inject_hyperparams), so one compiled program serves every
# member. The rest (the optimizer's name, the schedule) is structure and is shared.
MEMBER_HPARAMS = ("learning_rate", "momentum", "b1", "b2", "eps", "decay", "weight_decay", "grad_clip_norm", "agc_clip")


def check_member_overrides(cfg: Mapping[str, Any] | None, overrides: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Validate per-member optimizer overrides against the base config; returns the resolved base."""
    c = validate(cfg)
    for m in overrides:
        for k in m:
            if k not in MEMBER_HPARAMS:
                raise ValueError(f"a member may override the optimizer's numbers {list(MEMBER_HPARAMS)}, not {k!r} "
                                 "(it changes the optimizer's structure: train those in separate fit calls)")
        validate({**c, **m})
    return c


def _limit(value: Any) -> Any:
    """A clipping threshold where 0 means off: as is for a number (the chain omits it when 0),
    inf for a traced 0 (a member without clipping beside members with it)."""
    return value if isinstance(value, (int, float)) else jnp.where(value > 0, value, jnp.inf)


def make_optimizer(cfg: Mapping[str, Any] | None, total_steps: int = 1, *, model: Any = None, sample_input: Any = None,
                   agc_exclude: Callable[[tuple[str, ...]], bool] | None = None,
                   member_overrides: Sequence[Mapping[str, Any]] = (), accumulate: int | None = None,
                   ) -> optax.GradientTransformation:
    """An optax chain: [AGC] -> [clip] -> [coupled weight decay] -> optimizer with its schedule.

    AGC (Brock et al. 2021) acts on the raw gradients, unit-wise, and leaves the layer that
    produces the logits unclipped as in the paper: given `model` and a `sample_input` (a batch, or
    its jax.ShapeDtypeStruct) it is found from the model's structure
    (`nnbasics.engine.agc.exclude_logits_layer`); `agc_exclude(path) -> bool` overrides that; with
    neither, the older name heuristic `nnbasics.engine.agc.is_classifier` is used.

    `member_overrides` (one {hyperparameter: value} per member, keys from MEMBER_HPARAMS) makes the
    overridden numbers injected hyperparameters (`optax.inject_hyperparams`): the chain includes
    every part any member switches on, and `set_member(opt_state, overrides, ...)` gives a member
    its values. `accumulate` wraps the chain in `accumulate_gradients` (one update per that many
    micro-batches; also settable per member)."""
    c = check_member_overrides(cfg, member_overrides)
    configs = [c] + [{**c, **m} for m in member_overrides]
    on = {k: any(float(x[k]) > 0 for x in configs) for k in ("agc_clip", "grad_clip_norm", "weight_decay")}
    exclude = None
    if on["agc_clip"]:
        from nnbasics.engine.agc import exclude_logits_layer, is_classifier

        exclude = agc_exclude
        if exclude is None and model is not None and sample_input is not None:
            exclude = exclude_logits_layer(model, sample_input)
        exclude = exclude or is_classifier

    def chain(**numbers: Any) -> optax.GradientTransformation:
        h = {**c, **numbers}
        parts = []
        if on["agc_clip"]:
            from nnbasics.engine.agc import agc

            parts.append(agc(_limit(h["agc_clip"]), float(h["agc_eps"]), exclude=exclude))
        if on["grad_clip_norm"]:
            parts.append(optax.clip_by_global_norm(_limit(h["grad_clip_norm"])))
        if on["weight_decay"] and h["name"] != "adamw":
            parts.append(optax.add_decayed_weights(h["weight_decay"]))
        lr = SCHEDULES.get(h["schedule"])(h["learning_rate"], int(total_steps), h)
        parts.append(OPTIMIZERS.get(h["name"])(lr, h))
        return optax.chain(*parts)

    varying = sorted({k for m in member_overrides for k in m})
    if not varying:
        tx = chain()
    else:  # inject_hyperparams finds the hyperparameters in the factory's signature
        chain.__signature__ = inspect.Signature([inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in varying])
        tx = optax.inject_hyperparams(chain)(**{k: float(c[k]) for k in varying})
    return tx if accumulate is None else accumulate_gradients(tx, accumulate)


class AccumulationState(NamedTuple):
    count: jax.Array  # micro-batches averaged since the last update
    every: jax.Array  # micro-batches per update (may differ per member)
    grads: Any  # their running mean
    inner: Any  # the wrapped optimizer's state


def accumulate_gradients(inner: optax.GradientTransformation, every: int = 1) -> optax.GradientTransformation:
    """Gradient accumulation: average the gradients of `every` micro-batches, then one update of
    `inner` (zero updates in between), which is large-batch training for a model without
    batch-dependent layers. Like `optax.MultiSteps`, except that `every` is kept in the state, so
    members trained side by side (vmapped) can each have their own count."""
    if int(every) < 1:
        raise ValueError(f"accumulate must be a positive number of micro-batches, got {every}")

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AccumulationState(jnp.zeros((), jnp.int32), jnp.asarray(every, jnp.int32), zeros, inner.init(params))

    def update(grads, state, params=None):
        acc = jax.tree.map(lambda a, g: a + g / state.every.astype(g.dtype), state.grads, grads)

        def step(_):
            updates, new_inner = inner.update(acc, state.inner, params)
            return updates, new_inner, jax.tree.map(jnp.zeros_like, acc), jnp.zeros((), jnp.int32)

        def wait(_):
            return jax.tree.map(jnp.zeros_like, acc), state.inner, acc, state.count + 1

        updates, new_inner, acc, count = jax.lax.cond(state.count + 1 >= state.every, step, wait, None)
        return updates, AccumulationState(count, state.every, acc, new_inner)

    return optax.GradientTransformation(init, update)


def set_member(opt_state: Any, overrides: Mapping[str, Any], accumulate: Any = None) -> Any:
    """The optimizer state of one member: its hyperparameter values (from `make_optimizer`'s
    `member_overrides`) and its accumulation count written into a freshly initialized state."""
    if isinstance(opt_state, AccumulationState):
        every = opt_state.every if accumulate is None else jnp.asarray(accumulate, jnp.int32)
        return opt_state._replace(every=every, inner=set_member(opt_state.inner, overrides))
    if overrides:
        hp = dict(opt_state.hyperparams)
        for k, v in overrides.items():
            hp[k] = jnp.asarray(v, jnp.asarray(hp[k]).dtype)
        opt_state = opt_state._replace(hyperparams=hp)
    return opt_state
