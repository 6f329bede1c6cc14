"""Per-layer gradient norms and dead-unit counts: how the nonlinearity shapes training.

- `layer_gradient_norms`: ||dL/dW|| of every layer's weights, in forward order. With sigmoid the
  first layers' gradients are orders of magnitude smaller than the last's (each sigmoid layer
  multiplies the backward signal by sigma' <= 1/4): vanishing gradients.
- `dead_units`: a ReLU unit whose pre-activation is <= 0 for every training input outputs 0 and
  passes no gradient to its weights, so no update can revive it ("dead forever").

Layers are the model's linen submodules (Dense and Conv by default), found with
`capture_intermediates`; names are their module paths ("hidden_0", "conv1", "block/conv").
All functions are jit-compatible (they return arrays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from nnbasics.nn.conv import Conv
from nnbasics.nn.losses import LOSSES

LAYER_TYPES: tuple[type, ...] = (nn.Dense, nn.Conv, Conv)


def kernel_gradient_norms(grads: Any, order: Any = None) -> dict[str, jax.Array]:
    """The L2 norm of each layer's `kernel` gradient, keyed by module path. Keys follow the order
    of `order` (a params tree; eager `model.init` keeps creation = forward order), else `grads`'s own
    (jax transformations return dicts with sorted keys)."""
    flat = traverse_util.flatten_dict(grads)
    keys = list(traverse_util.flatten_dict(order)) if order is not None else list(flat)
    return {"/".join(k[:-1]): jnp.sqrt(jnp.sum(jnp.square(flat[k]))) for k in keys if k[-1] == "kernel"}


def layer_gradient_norms(
    apply_fn: Callable[..., Any], variables: dict[str, Any], x: jax.Array, y: jax.Array, loss: str = "cross_entropy"
) -> dict[str, jax.Array]:
    """||dL/dW|| per layer for the loss of the model in evaluation mode on the batch (x, y), in the
    order of `variables["params"]` (forward order for an eager init; under jit keys come sorted)."""
    loss_fn = LOSSES.get(loss)
    rest = {k: v for k, v in variables.items() if k != "params"}

    def objective(params):
        return loss_fn(apply_fn({"params": params, **rest}, x, train=False), y)

    return kernel_gradient_norms(jax.grad(objective)(variables["params"]), order=variables["params"])


def preactivations(
    apply_fn: Callable[..., Any], variables: dict[str, Any], x: jax.Array, layer_types: Sequence[type] = LAYER_TYPES
) -> dict[str, jax.Array]:
    """The outputs of every Dense/Conv layer (the inputs of the nonlinearity) on x, by module path."""
    types = tuple(layer_types)
    _, state = apply_fn(
        variables, x, train=False, capture_intermediates=lambda mdl, _: isinstance(mdl, types), mutable=["intermediates"]
    )
    flat = traverse_util.flatten_dict(state["intermediates"])
    return {"/".join(k[:-1]): v[0] for k, v in flat.items() if k[-1] == "__call__"}


def dead_units(
    apply_fn: Callable[..., Any],
    variables: dict[str, Any],
    x: jax.Array,
    exclude: Sequence[str] = ("head",),
    layer_types: Sequence[type] = LAYER_TYPES,
) -> dict[str, tuple[jax.Array, int]]:
    """(number of dead units, number of units) per layer: a unit (a Dense feature or a Conv
    channel) is dead if its pre-activation is <= 0 for every example in x (and every position).
    Layers named in `exclude` (the read-out, which has no ReLU after it) are skipped."""
    out = {}
    for name, z in preactivations(apply_fn, variables, x, layer_types).items():
        if name in exclude:
            continue
        peak = jnp.max(z.reshape(-1, z.shape[-1]), axis=0)
        out[name] = (jnp.sum(peak <= 0), int(z.shape[-1]))
    return out


def dead_fraction(
    apply_fn: Callable[..., Any], variables: dict[str, Any], x: jax.Array, exclude: Sequence[str] = ("head",)
) -> jax.Array:
    """The fraction of all hidden units (over every layer but `exclude`) that are dead on x."""
    counts = dead_units(apply_fn, variables, x, exclude)
    dead = sum(d for d, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return jnp.asarray(dead, jnp.float32) / max(total, 1)
