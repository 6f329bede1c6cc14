"""The MNIST-1D CNN's training step on the patch-matrix conv against the oneDNN extra (1-D convs run
as one-row 2-D convs), CPU seconds side by side, interleaved, in one process.

Both programs train the same net (`MNIST1DCNN`, Adam, `members` seeds vmapped, as fit does: a
compiled `lax.scan` over steps) on random inputs of MNIST-1D's shape; only the convolution differs.
Reports each program's compile CPU seconds and member-steps per CPU second (best of `--repeats`).

    taskset -c 0 python -m experiments.benchmarks.conv1d_step --cpu-threads 1             # 5 seeds, batch 32
    taskset -c 0 python -m experiments.benchmarks.conv1d_step --cpu-threads 1 --members 1 --batch 128
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.engine import optim
from nnbasics.engine.state import create_state, train_step
from nnbasics.models.cnn1d import MNIST1DCNN
from nnbasics.nn import conv


def _program(impl: str, members: int, steps: int, batch: int, length: int = 40):
    """A compiled vmapped loop of `steps` training steps of the CNN on `impl`, its inputs, its compile CPU s."""
    model = MNIST1DCNN(impl=impl)
    tx = optim.make_optimizer({"name": "adam", "learning_rate": 1e-2})
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4000, length, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(4000,)), jnp.int32)
    state = jax.tree.map(lambda *a: jnp.stack(a), *[create_state(model, tx, jax.random.key(k), x[:1])
                                                    for k in range(members)])
    idx = jnp.asarray(rng.integers(0, 4000, size=(members, steps, batch)), jnp.int32)

    def step(st, ix):
        return train_step(st, x[ix], y[ix])

    t = time.process_time()
    compiled = jax.jit(jax.vmap(lambda st, ixs: jax.lax.scan(step, st, ixs))).lower(state, idx).compile()
    return compiled, state, idx, time.process_time() - t


def main(members: int, steps: int, batch: int, repeats: int) -> dict[str, float]:
    conv.use_onednn(False)  # "patches" is the patch-matrix conv, whatever NNBASICS_ONEDNN says
    impls = ["patches"] + (["onednn"] if conv._onednn.load() else [])
    programs = {impl: _program(impl, members, steps, batch) for impl in impls}
    best = dict.fromkeys(impls, float("inf"))
    for run, state, idx, _ in programs.values():
        jax.block_until_ready(run(state, idx))  # first call: allocation, caches
    for _ in range(repeats):
        for impl, (run, state, idx, _) in programs.items():
            t = time.process_time()
            jax.block_until_ready(run(state, idx))
            best[impl] = min(best[impl], time.process_time() - t)
    rates = {impl: members * steps / best[impl] for impl in impls}
    print(f"MNIST-1D CNN, {members} members x {steps} steps, batch {batch}, CPU seconds, best of {repeats} interleaved rounds")
    print("| conv | compile CPU s | member-steps / CPU s | vs patches |\n| --- | --- | --- | --- |")
    for impl, (_, _, _, compile_s) in programs.items():
        print(f"| {impl} | {compile_s:.1f} | {rates[impl]:.0f} | {rates[impl] / rates['patches']:.2f}x |")
    return rates


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu-threads", type=int, default=None, help="XLA:CPU's threads per operation (default: every core)")
    a = p.parse_args()
    if a.cpu_threads:
        from nnbasics.threads import set_cpu_threads

        set_cpu_threads(a.cpu_threads)
    main(a.members, a.steps, a.batch, a.repeats)
