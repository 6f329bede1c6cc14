"""The training loop the step benchmarks time: `members` seeds vmapped over a compiled `lax.scan` of
training steps, as `fit` runs them, on random inputs of a given shape."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.engine.state import create_state, train_step


def compiled_member_loop(model: Any, tx: Any, example_shape: tuple[int, ...], members: int, steps: int, batch: int,
                         n_examples: int = 2000, num_classes: int = 10):
    """(compiled loop, its state, its batch indices, compile CPU seconds) for `steps` steps of `model`
    trained with `tx`, `members` seeds vmapped, batches of `batch` drawn from `n_examples` random inputs."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n_examples, *example_shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, num_classes, size=(n_examples,)), jnp.int32)
    state = jax.tree.map(lambda *a: jnp.stack(a), *[create_state(model, tx, jax.random.key(k), x[:1])
                                                    for k in range(members)])
    idx = jnp.asarray(rng.integers(0, n_examples, size=(members, steps, batch)), jnp.int32)

    def step(st, ix):
        return train_step(st, x[ix], y[ix])

    t = time.process_time()
    compiled = jax.jit(jax.vmap(lambda st, ixs: jax.lax.scan(step, st, ixs))).lower(state, idx).compile()
    return compiled, state, idx, time.process_time() - t


def best_cpu_seconds(programs: dict[Any, tuple], repeats: int, clock: Any = time.process_time) -> dict[Any, float]:
    """Each program's best CPU seconds over `repeats` interleaved rounds (one round: every program once),
    after one untimed call each (allocation, caches). `programs` maps a key to `compiled_member_loop`'s tuple.
    `clock=time.perf_counter` gives wall seconds (for comparisons of thread counts)."""
    best = dict.fromkeys(programs, float("inf"))
    for run, state, idx, _ in programs.values():
        jax.block_until_ready(run(state, idx))
    for _ in range(repeats):
        for key, (run, state, idx, _) in programs.items():
            t = clock()
            jax.block_until_ready(run(state, idx))
            best[key] = min(best[key], clock() - t)
    return best
