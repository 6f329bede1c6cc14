"""Adaptive gradient clipping (AGC; Brock, De, Smith & Simonyan 2021, NFNets, section 4.1).

For every unit i of a layer (a row of output unit i's weights: a kernel's slice W[..., i]),

    G_i <- G_i                                   if ||G_i|| / max(||W_i||, eps) <= lambda
    G_i <- lambda max(||W_i||, eps) G_i / ||G_i||   otherwise,

so no step changes a unit's weights by more than a fraction lambda of their norm (times the
learning rate). Norms are unit-wise: over every axis but the last (output) one for kernels, over
the whole array for biases, gains and scalars. The final classifier is not clipped in the paper;
`exclude=is_classifier` leaves it alone.

    tx = optax.chain(agc(0.01, exclude=is_classifier), optax.sgd(0.1, momentum=0.9))

It equals `optax.adaptive_grad_clip` on vectors, dense (in, out) and conv (h, w, in, out)
kernels; for rank-3 kernels (1-D convs) optax reduces axis 0 only, this one every axis but the last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

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
    """True for parameters of the final classifier (a module named head/classifier/logits/fc)."""
    return any(p in CLASSIFIER_NAMES for p in path)


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
    if not float(clip) > 0:
        raise ValueError(f"AGC clipping threshold must be > 0, got {clip}")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("agc needs the parameters: call tx.update(grads, state, params)")
        return clip_gradients(updates, params, clip, eps, exclude), state

    return optax.GradientTransformation(init_fn, update_fn)
