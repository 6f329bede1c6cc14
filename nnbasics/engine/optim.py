"""Optax optimizers built from a config: the lecture's SGD, momentum, Nesterov, RMSProp, Adam(W),
with weight decay, gradient clipping and learning-rate schedules.

    cfg = ConfigDict(dict(name="momentum", learning_rate=0.1, momentum=0.9,
                          weight_decay=5e-4, schedule="cosine", warmup_steps=0))
    tx = make_optimizer(cfg, total_steps=1000)

Weight decay is L2 regularization added to the gradient (coupled) for every optimizer but
`adamw`, where it is decoupled (Loshchilov & Hutter).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

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


def make_optimizer(cfg: Mapping[str, Any] | None, total_steps: int = 1, *, model: Any = None, sample_input: Any = None,
                   agc_exclude: Callable[[tuple[str, ...]], bool] | None = None) -> optax.GradientTransformation:
    """An optax chain: [AGC] -> [clip] -> [coupled weight decay] -> optimizer with its schedule.

    AGC (Brock et al. 2021) acts on the raw gradients, unit-wise, and leaves the layer that
    produces the logits unclipped as in the paper: given `model` and a `sample_input` (a batch, or
    its jax.ShapeDtypeStruct) it is found from the model's structure
    (`nnbasics.engine.agc.exclude_logits_layer`); `agc_exclude(path) -> bool` overrides that; with
    neither, the older name heuristic `nnbasics.engine.agc.is_classifier` is used."""
    c = validate(cfg)
    lr = learning_rate_schedule(c, total_steps)
    parts = []
    if float(c["agc_clip"]) > 0:
        from nnbasics.engine.agc import agc, exclude_logits_layer, is_classifier

        exclude = agc_exclude
        if exclude is None and model is not None and sample_input is not None:
            exclude = exclude_logits_layer(model, sample_input)
        parts.append(agc(float(c["agc_clip"]), float(c["agc_eps"]), exclude=exclude or is_classifier))
    if float(c["grad_clip_norm"]) > 0:
        parts.append(optax.clip_by_global_norm(float(c["grad_clip_norm"])))
    if float(c["weight_decay"]) > 0 and c["name"] != "adamw":
        parts.append(optax.add_decayed_weights(float(c["weight_decay"])))
    parts.append(OPTIMIZERS.get(c["name"])(lr, c))
    return optax.chain(*parts)
