"""The quick presets' narrow ResNets (residual, loss_landscape): training step by convolution and
block layout, CPU seconds side by side, interleaved, in one process.

Each setting trains the same net (width 4, 8x8 inputs, batch 32, `members` seeds vmapped, as fit
does: a compiled `lax.scan` over steps) and reports its compile CPU seconds and member-steps per
CPU second. Settings: the convolution of `nnbasics.nn.conv` ("auto", "xla", "patches") and whether
each stage's repeated blocks are one `nn.scan` ("scan") or unrolled ("unrolled").

    python -m experiments.benchmarks.small_resnet_step                 # depth 56 and 20, 5 members
    python -m experiments.benchmarks.small_resnet_step --depths 56 --members 3 --steps 40
    taskset -c 0 python -m experiments.benchmarks.small_resnet_step    # one core, as reproduce's workers
    python -m experiments.benchmarks.small_resnet_step --settings patches:unrolled onednn:unrolled  # the oneDNN extra
"""

from __future__ import annotations

import argparse

import jax

from experiments.benchmarks._member_loop import best_cpu_seconds, compiled_member_loop
from nnbasics.engine import optim
from nnbasics.models.resnet import cifar_resnet
from nnbasics.nn.conv import IMPLEMENTATIONS, use_onednn

SETTINGS = (("auto", True), ("xla", True), ("patches", True), ("auto", False), ("patches", False))
# The settings are compared in one process; "onednn" runs oneDNN's convolutions whatever the switch says.


def _program(depth: int, impl: str, scan: bool, members: int, steps: int, batch: int):
    """A compiled vmapped loop of `steps` training steps and its inputs."""
    model = cifar_resnet(depth, 10, width=4, scan_blocks=scan, conv_impl=impl)
    tx = optim.make_optimizer({"name": "momentum", "learning_rate": 0.025, "momentum": 0.9, "weight_decay": 1e-4})
    return compiled_member_loop(model, tx, (8, 8, 3), members, steps, batch)


def main(depths: list[int], members: int, steps: int, repeats: int, batch: int = 32,
         settings: tuple[tuple[str, bool], ...] = SETTINGS) -> None:
    use_onednn(False)  # each setting is the implementation it names (the switch would move "patches" to oneDNN)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {members} members x {steps} steps, batch {batch}, "
          f"CPU seconds, best of {repeats} interleaved rounds")
    for depth in depths:
        programs = {s: _program(depth, *s, members, steps, batch) for s in settings}
        best = best_cpu_seconds(programs, repeats)
        first = settings[0]
        base = members * steps / best[first]
        print(f"\nResNet-{depth} (width 4)\n| conv | blocks | compile CPU s | member-steps / CPU s | "
              f"vs {first[0]} + {'scan' if first[1] else 'unrolled'} |")
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
    p.add_argument("--settings", nargs="+", default=None, metavar="IMPL:BLOCKS",
                   help="e.g. patches:unrolled onednn:unrolled onednn:scan auto:scan (blocks: scan or unrolled; "
                        "'onednn' needs the extra); the first is the baseline of the last column")
    a = p.parse_args()
    settings = SETTINGS
    if a.settings:
        parsed = [tuple(s.split(":")) for s in a.settings]
        bad = [s for s, q in zip(a.settings, parsed)
               if len(q) != 2 or q[0] not in IMPLEMENTATIONS or q[1] not in ("scan", "unrolled")]
        if bad:
            p.error(f"--settings {' '.join(bad)}: each must be IMPL:BLOCKS with IMPL one of {', '.join(IMPLEMENTATIONS)} "
                    "and BLOCKS scan or unrolled")
        settings = tuple((impl, blocks == "scan") for impl, blocks in parsed)
    main(a.depths, a.members, a.steps, a.repeats, settings=settings)
