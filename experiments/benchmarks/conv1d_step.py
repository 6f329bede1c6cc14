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

from experiments.benchmarks._member_loop import best_cpu_seconds, compiled_member_loop
from nnbasics.engine import optim
from nnbasics.models.cnn1d import MNIST1DCNN
from nnbasics.nn import conv


def _program(impl: str, members: int, steps: int, batch: int, length: int = 40):
    """A compiled vmapped loop of `steps` training steps of the CNN on `impl`, its inputs, its compile CPU s."""
    tx = optim.make_optimizer({"name": "adam", "learning_rate": 1e-2})
    return compiled_member_loop(MNIST1DCNN(impl=impl), tx, (length, 1), members, steps, batch, n_examples=4000)


def main(members: int, steps: int, batch: int, repeats: int) -> dict[str, float]:
    conv.use_onednn(False)  # "patches" is the patch-matrix conv, whatever NNBASICS_ONEDNN says
    impls = ["patches"] + (["onednn"] if conv._onednn.load() else [])
    programs = {impl: _program(impl, members, steps, batch) for impl in impls}
    best = best_cpu_seconds(programs, repeats)
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
