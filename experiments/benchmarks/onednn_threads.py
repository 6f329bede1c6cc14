"""The oneDNN extra on several threads: members side by side (one thread and one single-threaded
primitive each) against one after another (each convolution split over every thread). Sets
`nnbasics.nn.onednn.SIDE_BY_SIDE_MAX_ROWS`.

Wall seconds (the point of a second thread is the wall clock), best of interleaved rounds, in one
process on XLA:CPU's thread count (run it on an idle machine with two cores or more):
- single convolutions: `members` seeds vmapped, forward and both gradients, 3x3 kernel, 20 calls in a
  compiled loop; "rows" is a member's batch times its output positions, what the rule looks at;
- whole training steps of the residual experiment's narrow nets (width 4, 8x8 inputs, batch 32),
  with the patch-matrix conv (no extra) beside them.

    python -m experiments.benchmarks.onednn_threads                # every core
    python -m experiments.benchmarks.onednn_threads --members 8 5 --depths 56 20
"""

from __future__ import annotations

import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks._member_loop import best_cpu_seconds, compiled_member_loop
from nnbasics.engine import optim
from nnbasics.models.resnet import cifar_resnet
from nnbasics.nn import conv, onednn
from nnbasics.threads import cpu_threads

CALLS = 20
# (batch, spatial, channels): rows per member from 512 to 131,072 (the quick ResNets' stages up to
# CIFAR ResNet-20's first stage at batch 128)
CONV_CASES = [(32, 4, 8), (32, 8, 4), (32, 16, 16), (128, 16, 16), (32, 32, 16), (128, 32, 16)]


@contextlib.contextmanager
def side_by_side(on: bool):
    """Trace (and compile) inside this: the calls carry the row limit as an attribute."""
    before = onednn.SIDE_BY_SIDE_MAX_ROWS
    onednn.SIDE_BY_SIDE_MAX_ROWS = before if on else 0
    try:
        yield
    finally:
        onednn.SIDE_BY_SIDE_MAX_ROWS = before


def _conv_program(batch: int, size: int, ch: int, members: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(members, batch, size, size, ch)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(members, 3, 3, ch, ch)) * 0.1, jnp.float32)
    grads = jax.vmap(jax.grad(lambda k, x: jnp.sum(conv.conv_general(x, k, 1, "SAME", impl="onednn") ** 2), (0, 1)))

    def loop(k, x):
        return jax.lax.fori_loop(0, CALLS, lambda _, c: jax.tree.map(lambda a, g: a + 1e-6 * g, c, grads(*c)), (k, x))

    return jax.jit(loop).lower(k, x).compile(), k, x, None


def _step_program(depth: int, impl: str, members: int, steps: int):
    model = cifar_resnet(depth, 10, width=4, scan_blocks=False, conv_impl=impl)
    tx = optim.make_optimizer({"name": "momentum", "learning_rate": 0.025, "momentum": 0.9, "weight_decay": 1e-4})
    return compiled_member_loop(model, tx, (8, 8, 3), members, steps, 32)


def main(members: list[int], depths: list[int], steps: int = 40, repeats: int = 5) -> list[dict]:
    conv.use_onednn(False)  # each setting is what it names
    if not onednn.load(warn=False):
        raise SystemExit(f"the oneDNN extra is not available: {onednn.error()}")
    threads = cpu_threads()
    print(f"jax {jax.__version__}, XLA:CPU and oneDNN on {threads} thread(s); wall seconds, best of {repeats} "
          f"interleaved rounds; side by side up to {onednn.SIDE_BY_SIDE_MAX_ROWS} rows per member")
    if threads < 2:
        print("(one thread: both settings run one member after another; nothing to compare)")
    out = []
    for m in members:
        print(f"\n{m} members: one 3x3 convolution, forward + both gradients, wall us per call\n"
              "| batch x positions x channels | rows / member | one after another | side by side | speed-up |\n"
              "|---|---|---|---|---|")
        for b, s, ch in CONV_CASES:
            programs = {}
            for on in (False, True):
                with side_by_side(on):
                    programs[on] = _conv_program(b, s, ch, m)
            best = best_cpu_seconds(programs, repeats, clock=time.perf_counter)
            a, t = (best[k] / CALLS * 1e6 for k in (False, True))
            out.append({"members": m, "rows": b * s * s, "one_after_another_us": a, "side_by_side_us": t})
            print(f"| {b} x {s}x{s} x {ch} | {b * s * s} | {a:.0f} | {t:.0f} | {a / t:.2f}x |", flush=True)
    for depth in depths:
        for m in members:
            programs = {"patches (no extra)": _step_program(depth, "patches", m, steps)}
            for on in (False, True):
                with side_by_side(on):
                    programs[f"oneDNN, {'side by side' if on else 'one after another'}"] = \
                        _step_program(depth, "onednn", m, steps)
            best = best_cpu_seconds(programs, repeats, clock=time.perf_counter)
            print(f"\nResNet-{depth} (width 4, 8x8, batch 32), {m} members: member-steps per wall second\n"
                  "| conv | member-steps / s |\n|---|---|")
            for key, sec in best.items():
                print(f"| {key} | {m * steps / sec:.0f} |", flush=True)
                out.append({"members": m, "depth": depth, "setting": key, "member_steps_per_s": m * steps / sec})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, nargs="+", default=[8, 5])
    ap.add_argument("--depths", type=int, nargs="+", default=[56, 20])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-threads", type=int, default=None, help="XLA:CPU's (and oneDNN's) threads; default every core")
    a = ap.parse_args()
    if a.cpu_threads:
        from nnbasics.threads import set_cpu_threads

        set_cpu_threads(a.cpu_threads)
    main(a.members, a.depths, a.steps, a.repeats)
