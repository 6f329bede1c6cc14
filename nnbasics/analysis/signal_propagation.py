"""Signal propagation plots (Brock, De & Smith 2021, section 3): statistics of the activations at
the output of every residual block of a network at initialization, on unit Gaussian input.

Per block: the average channel squared mean  mean_c (mean_{N,H,W} x)^2,  the average channel
variance  mean_c var_{N,H,W} x,  and the average channel variance of the residual branch's output
(before it is added to the skip path). A residual model takes part by calling `record(self,
block_output, branch_output)` in each block; the statistics go to the `spp` collection, which is
only written when `signal_propagation` asks for it (a no-op in training, removed by jit).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

COLLECTION = "spp"
METRICS = ("avg_sq_mean", "avg_var", "residual_var")


def channel_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(average channel squared mean, average channel variance) of a (N, ..., C) activation."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.var(x, axis=axes)
    return jnp.mean(jnp.square(mean)), jnp.mean(var)


def record(module: nn.Module, block_output: jax.Array, branch_output: jax.Array) -> None:
    """Called by a residual block: store its SPP statistics when the `spp` collection is mutable."""
    if module.is_initializing() or not module.is_mutable_collection(COLLECTION):
        return
    sq_mean, var = channel_stats(block_output)
    _, res_var = channel_stats(branch_output)
    module.sow(COLLECTION, "stats", jnp.stack([sq_mean, var, res_var]))


def collect(state: dict[str, Any]) -> dict[str, Any]:
    """{"blocks": [names], metric: np.ndarray per block} from the mutable state of an apply that
    recorded the `spp` collection; a scanned stage contributes one row per block."""
    flat = traverse_util.flatten_dict(dict(state.get(COLLECTION, {})), sep="/")
    if not flat:
        raise ValueError("no signal propagation statistics were recorded; the model's residual blocks must call "
                         "nnbasics.analysis.signal_propagation.record")
    names, rows = [], []
    for key, value in flat.items():  # call order: flax keeps the order the blocks ran in
        name = key.rsplit("/stats", 1)[0]
        for v in value:
            v = np.asarray(v, np.float64).reshape(-1, len(METRICS))  # a scanned stage stacks its blocks
            names.extend([name] if len(v) == 1 else [f"{name}[{k}]" for k in range(len(v))])
            rows.extend(v)
    table = np.stack(rows)
    out: dict[str, Any] = {"blocks": names}
    for i, m in enumerate(METRICS):
        out[m] = table[:, i]
    return out


def signal_propagation(
    model: nn.Module, variables: dict[str, Any], x: jax.Array, train: bool = True
) -> dict[str, Any]:
    """Run `model` on `x` and return {"blocks": [names], metric: np.ndarray per block}.

    `train=True` (the paper's choice) makes BatchNorm use the statistics of this batch."""
    variables = {k: v for k, v in variables.items() if k != COLLECTION}
    mutable = [COLLECTION] + (["batch_stats"] if "batch_stats" in variables else [])
    state = jax.jit(lambda v, xx: model.apply(v, xx, train=train, mutable=mutable)[1])(variables, x)
    return collect(state)


def unit_gaussian(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    """The SPP input: i.i.d. N(0, 1) images of `shape` (N, H, W, C) (drawn with NumPy: no XLA compile)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def nf_predicted_variance(stage_sizes: tuple[int, ...] | list[int], alpha: float) -> np.ndarray:
    """The NF-ResNet's analytic variance after each block: 1 + k alpha^2 for the k-th block of a
    stage (each stage starts from a unit-variance shortcut), in block order."""
    return np.concatenate([1.0 + alpha**2 * np.arange(1, n + 1) for n in stage_sizes])
