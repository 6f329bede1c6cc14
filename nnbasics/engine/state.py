"""The train state and the pure steps: initialize, apply, one gradient step, evaluate a data set.

Every function here is pure (state in, state out), so `jit`, `vmap` (members side by side) and
`lax.scan` (a chunk of steps) compose with them; the loop in `loop.py` does exactly that.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from nnbasics.engine import parallel
from nnbasics.nn.losses import Loss, accuracy, accuracy_per_example, get_loss


class TrainState(struct.PyTreeNode):
    """Everything that changes during training, as one pytree."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # typed key; dropout keys are fold_in(rng, step), fresh every step
    model_args: Any  # keyword arguments of every model call, e.g. {"kind": 2} (per member); {} normally
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables ({"params", "batch_stats"}), as `model.apply` takes them."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def create_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, sample_x: jax.Array, *,
    model_args: Mapping[str, Any] | None = None,
) -> TrainState:
    """Initialize parameters (and BatchNorm statistics) of `model` on `sample_x`; `model_args` are
    passed to every call of the model (init included), e.g. a traced normalizer choice."""
    k_params, k_dropout, k_rng = jax.random.split(key, 3)
    model_args = dict(model_args or {})
    variables = model.init({"params": k_params, "dropout": k_dropout}, sample_x, train=False, **model_args)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=k_rng,
        model_args=model_args,
        apply_fn=model.apply,
        tx=tx,
    )


def forward(state: TrainState, params: Any, x: jax.Array, train: bool) -> tuple[jax.Array, Any]:
    """Apply the model; in training mode returns the new BatchNorm statistics too."""
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    if not train:
        return state.apply_fn(variables, x, train=False, **state.model_args), state.batch_stats
    rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}
    if state.batch_stats:
        out, updates = state.apply_fn(variables, x, train=True, rngs=rngs, mutable=["batch_stats"], **state.model_args)
        return out, updates["batch_stats"]
    return state.apply_fn(variables, x, train=True, rngs=rngs, **state.model_args), state.batch_stats


def train_step(state: TrainState, x: jax.Array, y: jax.Array, loss: str | Loss = "cross_entropy"
               ) -> tuple[TrainState, dict]:
    """One gradient step on the batch (x, y) with `loss` (a name or a nnbasics.nn.losses.Loss); pure,
    so jit/vmap/scan compose with it. A custom step for `fit(..., train_step=...)` has this signature
    and returns metrics with at least "loss" (a scalar); "accuracy" is shown when present."""
    loss_fn = get_loss(loss)

    def objective(params):
        out, new_stats = forward(state, params, x, train=True)
        return loss_fn(out, y), (out, new_stats)

    (value, (out, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": value}
    if loss_fn.classifies:
        metrics["accuracy"] = accuracy(out, y)
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state), metrics


def evaluate(
    state: TrainState, x: jax.Array, y: jax.Array, loss: str | Loss = "cross_entropy", batch_size: int = 1000,
    mesh: Any = None,
) -> dict:
    """The loss (and accuracy, for classification) of the model in evaluation mode over a whole
    on-device set, in batches (padded and masked; jit-compatible). Uses the loss's per-example form,
    so it equals the training loss's mean over the set."""
    n = x.shape[0]
    bs = min(batch_size, n)
    if mesh is not None:
        d = parallel.axis_size(mesh, parallel.DATA_AXIS)
        bs = -(-bs // d) * d
    nb = -(-n // bs)
    pad = nb * bs - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    yp = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)]) if pad else y
    mask = (jnp.arange(nb * bs) < n).astype(jnp.float32)
    loss_obj = get_loss(loss)
    loss_fn, classify = loss_obj.per_example, loss_obj.classifies

    def one(batch):
        xb, yb, mb = parallel.shard_batch_constraint(batch, mesh)
        out, _ = forward(state, state.params, xb, train=False)
        acc = accuracy_per_example(out, yb) if classify else jnp.zeros((out.shape[0],), jnp.float32)
        return jnp.sum(loss_fn(out, yb) * mb), jnp.sum(acc * mb)

    batches = (xp.reshape(nb, bs, *x.shape[1:]), yp.reshape(nb, bs, *y.shape[1:]), mask.reshape(nb, bs))
    tot_loss, tot_acc = jax.lax.map(one, batches)
    out = {"loss": jnp.sum(tot_loss) / n}
    if classify:
        out["accuracy"] = jnp.sum(tot_acc) / n
    return out
