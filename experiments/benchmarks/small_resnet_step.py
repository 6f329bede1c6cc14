"""The quick presets' narrow ResNets (residual, loss_landscape): training step by convolution and
block layout, CPU seconds side by side, interleaved, in one process.

Each setting trains the same net (width 4, 8x8 inputs, batch 32, `members` seeds vmapped, as fit
does: a compiled `lax.scan` over steps) and reports its compile CPU seconds and member-steps per
CPU second. Settings: the convolution of `nnbasics.nn.conv` ("auto", "xla", "patches") and whether
each stage's repeated blocks are one `nn.scan` ("scan") or unrolled ("unrolled").

    python -m experiments.benchmarks.small_resnet_step                 # depth 56 and 20, 5 members
    python -m experiments.benchmarks.small_resnet_step --depths 56 --members 3 --steps 40
    taskset -c 0 python -m experiments.benchmarks.small_resnet_step    # one core, as reproduce's workers
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.engine import optim
from nnbasics.engine.state import create_state, train_step
from nnbasics.models.resnet import cifar_resnet

SETTINGS = (("auto", True), ("xla", True), ("patches", True), ("auto", False), ("patches", False))


def _program(depth: int, impl: str, scan: bool, members: int, steps: int, batch: int):
    """A compiled vmapped loop of `steps` training steps and its inputs."""
    model = cifar_resnet(depth, 10, width=4, scan_blocks=scan, conv_impl=impl)
    tx = optim.make_optimizer({"name": "momentum", "learning_rate": 0.025, "momentum": 0.9, "weight_decay": 1e-4})
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2000, 8, 8, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(2000,)), jnp.int32)
    state = jax.tree.map(lambda *a: jnp.stack(a), *[create_state(model, tx, jax.random.key(k), x[:1])
                                                    for k in range(members)])
    idx = jnp.asarray(rng.integers(0, 2000, size=(members, steps, batch)), jnp.int32)

    def step(st, ix):
        return train_step(st, x[ix], y[ix])

    t = time.process_time()
    compiled = jax.jit(jax.vmap(lambda st, ixs: jax.lax.scan(step, st, ixs))).lower(state, idx).compile()
    return compiled, state, idx, time.process_time() - t


def main(depths: list[int], members: int, steps: int, repeats: int, batch: int = 32,
         settings: tuple[tuple[str, bool], ...] = SETTINGS) -> None:
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {members} members x {steps} steps, batch {batch}, "
          f"CPU seconds, best of {repeats} interleaved rounds")
    for depth in depths:
        programs = {s: _program(depth, *s, members, steps, batch) for s in settings}
        best = dict.fromkeys(settings, float("inf"))
        for s, (run, state, idx, _) in programs.items():
            jax.block_until_ready(run(state, idx))  # first call: allocation, caches
        for _ in range(repeats):
            for s, (run, state, idx, _) in programs.items():
                t = time.process_time()
                jax.block_until_ready(run(state, idx))
                best[s] = min(best[s], time.process_time() - t)
        base = members * steps / best[("auto", True)]
        print(f"\nResNet-{depth} (width 4)\n| conv | blocks | compile CPU s | member-steps / CPU s | vs auto + scan |")
        print("| --- | --- | --- | --- | --- |")
        for (impl, scan), (_, _, _, compile_s) in programs.items():
            rate = members * steps / best[(impl, scan)]
            print(f"| {impl} | {'scan' if scan else 'unrolled'} | {compile_s:.1f} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[56, 20])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    main(a.depths, a.members, a.steps, a.repeats)
