"""Adaptive gradient clipping (AGC; Brock, De, Smith & Simonyan 2021, NFNets, section 4.1).

For every unit i of a layer (a row of output unit i's weights: a kernel's slice W[..., i]),

    G_i <- G_i                                   if ||G_i|| / max(||W_i||, eps) <= lambda
    G_i <- lambda max(||W_i||, eps) G_i / ||G_i||   otherwise,

so no step changes a unit's weights by more than a fraction lambda of their norm (times the
learning rate). Norms are unit-wise: over every axis but the last (output) one for kernels, over
the whole array for biases, gains and scalars. The final classifier is not clipped in the paper;
`exclude=exclude_logits_layer(model, x)` leaves it alone. The layer is found from the model itself,
not from its name: it is the first layer (in execution order) owning parameters whose output is
the model's output, the logits (`logits_layer`). A read-out named `linear` or `linear3` is found,
and a hidden layer named `fc` (GoogLeNet's auxiliary heads) is not taken for the classifier.

    tx = optax.chain(agc(0.01, exclude=exclude_logits_layer(model, x)), optax.sgd(0.1, momentum=0.9))

`is_classifier` (by layer name: head/classifier/logits/fc) is the older heuristic, kept for
callers that have no model at hand.

It equals `optax.adaptive_grad_clip` on vectors, dense (in, out) and conv (h, w, in, out)
kernels; for rank-3 kernels (1-D convs) optax reduces axis 0 only, this one every axis but the last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.core import tracers as flax_tracers

ExcludeFn = Callable[[tuple[str, ...]], bool]
CLASSIFIER_NAMES = ("head", "classifier", "logits", "fc")


def unitwise_norm(x: jax.Array) -> jax.Array:
    """The L2 norm of each output unit, broadcast to x's shape: the whole array for ndim <= 1,
    else over every axis but the last."""
    if jnp.ndim(x) <= 1:
        sq = jnp.sum(jnp.square(x), keepdims=True)
    else:
        sq = jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True)
    return jnp.broadcast_to(jnp.sqrt(sq), jnp.shape(x))


def clip_unitwise(grad: jax.Array, param: jax.Array, clip: float | jax.Array, eps: float = 1e-3) -> jax.Array:
    """One array's AGC: rescale every unit whose ||G_i|| exceeds clip * max(||W_i||, eps)."""
    max_norm = clip * jnp.maximum(unitwise_norm(param), eps)
    g_norm = unitwise_norm(grad)
    scaled = grad * (max_norm / jnp.maximum(g_norm, 1e-6))
    return jnp.where(g_norm > max_norm, scaled, grad)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """A tree path (DictKey, GetAttrKey, ...) as plain strings, e.g. ('head', 'kernel')."""
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return tuple(out)


def is_classifier(path: tuple[str, ...]) -> bool:
    """True for parameters of a module named head/classifier/logits/fc: a naming heuristic that
    misses read-outs named otherwise (`linear`, `linear3`) and catches hidden layers named `fc`.
    Prefer `exclude_logits_layer(model, x)`, which finds the layer from the model's structure."""
    return any(p in CLASSIFIER_NAMES for p in path)


def _own_params(module: nn.Module) -> list[str]:
    """Names of the parameters a bound module owns itself (not those of its submodules)."""
    return [k for k, v in module.variables.get("params", {}).items() if not isinstance(v, Mapping)]


# Primitives that move values without computing on them: the logits may be a reshaped layer output.
_SHAPE_ONLY = frozenset({"reshape", "squeeze", "expand_dims", "convert_element_type", "copy", "copy_p"})


def _source(jaxpr: Any, var: Any) -> Any:
    """The variable whose values `var` carries through shape-only operations (itself if none)."""
    producers = {o: e for e in jaxpr.eqns for o in e.outvars}
    while var in producers:
        eqn = producers[var]
        if eqn.primitive.name in _SHAPE_ONLY:
            var = eqn.invars[0]
        elif eqn.primitive.name in ("pjit", "jit") and len(eqn.outvars) == 1:
            inner = eqn.params["jaxpr"].jaxpr
            src = _source(inner, inner.outvars[0])
            if src not in inner.invars:
                break
            var = eqn.invars[inner.invars.index(src)]
        else:
            break
    return var


def logits_layer(model: nn.Module, x: Any, variables: Any = None, **kwargs: Any
                 ) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(module path, parameter paths) of the layer that produces `model`'s logits.

    Found from the traced computation, with no numbers computed: `model.apply(variables, x,
    **kwargs)` (inference mode by default) is traced to a jaxpr with every module call intercepted,
    and the logits layer is the first module (in execution order) owning parameters whose output
    *is* the model's output, or is it after reshapes only (a flattened 1x1 conv). Calls inside
    `nn.scan` (or other lifted) bodies are not candidates: a read-out is never there. `x` and
    `variables` may be arrays or `jax.ShapeDtypeStruct`s; `variables` defaults to the abstract
    `model.init`. Raises ValueError if no layer's output is the logits (e.g. when the output is
    pooled, scaled or summed with another branch after the last layer)."""
    x = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    if variables is None:
        variables = jax.eval_shape(lambda xx: model.init(jax.random.key(0), xx, **kwargs), x)
    variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), variables)
    found: list[tuple[tuple[str, ...], list[str]]] = []

    def run(v, xx):
        outer = flax_tracers.current_trace()
        outs = []

        def record(next_fun, args, kw, context):
            out = next_fun(*args, **kw)
            if (context.method_name == "__call__" and isinstance(out, jax.Array)
                    and flax_tracers.current_trace() == outer):
                own = _own_params(context.module)
                if own:
                    found.append((tuple(context.module.path), own))
                    outs.append(out)
            return out

        with nn.intercept_methods(record):
            logits = model.apply(v, xx, **kwargs)
        return logits, outs

    closed = jax.make_jaxpr(run)(variables, x)
    jaxpr = closed.jaxpr
    logits_var = _source(jaxpr, jaxpr.outvars[0])
    for (path, own), var in zip(found, jaxpr.outvars[1:]):
        if var is logits_var:
            return path, tuple((*path, name) for name in sorted(own))
    raise ValueError(f"no layer of {type(model).__name__} outputs its logits directly; pass an explicit exclude")


def exclude_logits_layer(model: nn.Module, x: Any, variables: Any = None, **kwargs: Any) -> ExcludeFn:
    """An `exclude` for `agc`/`clip_gradients` that leaves exactly the logits layer's parameters
    (its kernel and bias, found by `logits_layer`) unclipped; paths may carry a leading 'params'."""
    return exclude_paths(logits_layer(model, x, variables, **kwargs)[1])


def exclude_paths(paths: Sequence[tuple[str, ...]]) -> ExcludeFn:
    """An `exclude` that accepts exactly the parameter paths `paths` (with or without a leading 'params')."""
    excluded = frozenset(tuple(p) for p in paths)

    def exclude(path: tuple[str, ...]) -> bool:
        path = tuple(path)
        return path in excluded or (path[:1] == ("params",) and path[1:] in excluded)

    exclude.excluded = excluded  # type: ignore[attr-defined]
    return exclude


def clip_gradients(
    grads: Any, params: Any, clip: float | jax.Array, eps: float = 1e-3, exclude: ExcludeFn | None = None
) -> Any:
    """AGC on a whole gradient pytree; leaves whose path `exclude(path)` accepts are not clipped.

    `clip` may be a traced value (a vmapped grid of clipping thresholds); clip = inf disables AGC."""

    def one(path, g, p):
        if exclude is not None and exclude(path_names(path)):
            return g
        return clip_unitwise(g, p, clip, eps)

    return jax.tree_util.tree_map_with_path(one, grads, params)


def agc(clip: float, eps: float = 1e-3, exclude: ExcludeFn | None = None) -> optax.GradientTransformation:
    """AGC as an optax transformation (put it first in the chain, on the raw gradients).

    `exclude(path) -> bool` names parameters left unclipped, e.g. `is_classifier` (the paper's choice)."""
    if isinstance(clip, (int, float)) and not clip > 0:  # a traced clip (one per member) is checked by its config
        raise ValueError(f"AGC clipping threshold must be > 0, got {clip}")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("agc needs the parameters: call tx.update(grads, state, params)")
        return clip_gradients(updates, params, clip, eps, exclude), state

    return optax.GradientTransformation(init_fn, update_fn)
