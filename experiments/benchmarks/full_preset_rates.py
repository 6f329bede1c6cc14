"""Measured step rates at the shapes of the presets too long to run here (residual's and loss_landscape's
paper presets, cifar10_resnet's full and quick ones).

Times `nnbasics.fit` on the preset's model, batch size and image size, one seed, twice (k and
3k steps of one chunk length: the difference is 2k steps plus two tiny evaluations, the compilation
cancels), and a forward pass where the experiment evaluates a loss surface. The preset's time
is then the measured rate times its step count and members (vmapped seeds cost in proportion at
these compute-bound shapes), plus the evaluations (a forward pass costs about 1/3 of a training
step per example). Also a FLOP count for an accelerator.

    python -m experiments.benchmarks.full_preset_rates            # prints JSON
    python -m experiments.benchmarks.full_preset_rates --steps 2  # k (default 2)

`python -m nnbasics.runs.time_table --write --rates FILE` puts the result into the committed table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics import TrainConfig, fit, load_dataset
from nnbasics.models.resnet import cifar_resnet
from nnbasics.runs import experiment as exp

# Sustained accelerator throughput assumed for the FLOP-based figure (not measured here: no
# accelerator was lent). Small 3x3 convs at batch 128 reach a fraction of a GPU's peak.
ASSUMED_ACCELERATOR_FLOPS = 20e12


def _probe_fit(model, data, tc: TrainConfig, k: int) -> dict[str, float]:
    """Seconds per training step of one member (compilation excluded) at tc's batch size."""
    times, cpu = [], []
    for steps in (k, 3 * k):
        small = dataclasses.replace(tc, steps=steps, eval_every=k, seeds=(int(tc.seeds[0]),), eval_batch_size=16)
        t0, c0 = time.perf_counter(), time.process_time()
        fit(model, data, small)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    wall, cpu_step = max(times[1] - times[0], 1e-6) / (2 * k), max(cpu[1] - cpu[0], 1e-6) / (2 * k)
    # on a shared machine the wall time counts other jobs' time: a step takes at most its CPU seconds
    # on a machine with a core to itself, so the smaller of the two is the estimate
    return {"step_seconds": min(wall, cpu_step), "step_wall_seconds": wall, "step_cpu_seconds": cpu_step,
            "first_fit_seconds": min(times[0], cpu[0])}


def _probe_forward(model, variables, x, repeats: int = 3) -> float:
    """Seconds of one training-mode forward pass (BatchNorm on the batch's statistics) over x (the
    smaller of wall and CPU seconds, as for a step)."""
    f = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
    jax.block_until_ready(f(variables, x))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        jax.block_until_ready(f(variables, x))
    return min(time.perf_counter() - t0, time.process_time() - c0) / repeats


def _macs(depth: int, width: int, size: int) -> float:
    """Multiply-adds per example of the CIFAR ResNet (the plain net has the same, less the additions)."""
    from nnbasics.analysis.model_stats import model_stats

    return float(model_stats(f"resnet{depth}", input_shape=(size, size, 3), with_receptive_field=False,
                             width=width).macs)


def _small_photos(size: int):
    return load_dataset("photos", n_train=512, n_test=16, size=size, seed=0)


def residual(k: int) -> dict:
    cfg = exp.get_config("residual", "paper")
    size, width, depths = int(cfg.data_kwargs.size), int(cfg.width), [int(d) for d in cfg.depths]
    data = _small_photos(size)
    tc = TrainConfig.from_config(cfg)
    members, steps, evals = len(cfg.seeds), int(cfg.steps), int(cfg.steps) // int(cfg.eval_every)
    eval_examples = int(cfg.data_kwargs.n_test) + (int(cfg.data_kwargs.n_train) if getattr(tc, "eval_train", False) else 0)
    nets, total, flops = {}, 0.0, 0.0
    for d in depths:
        p = _probe_fit(cifar_resnet(d, data.num_classes, residual=True, width=width, scan_blocks=True), data, tc, k)
        train = members * steps * p["step_seconds"]
        ev = members * evals * eval_examples * p["step_seconds"] / (3 * int(tc.batch_size))
        nets[f"resnet{d}"] = {**p, "train_seconds": train, "eval_seconds": ev}
        total += 2 * (train + ev + p["first_fit_seconds"])  # plain and residual nets cost the same per step
        flops += 2 * 6 * _macs(d, width, size) * int(tc.batch_size) * steps * members
    return {"seconds": total, "flops": flops, "nets": nets,
            "how": f"measured step rate x {steps} steps x {members} seeds x 4 nets (plain/residual "
                   f"{'/'.join(map(str, depths))}, width {width}, {size}x{size}, batch {tc.batch_size})"}


def loss_landscape(k: int) -> dict:
    cfg = exp.get_config("loss_landscape", "paper")
    size, width, depth = int(cfg.data_kwargs.size), int(cfg.width), int(cfg.depth)
    data = _small_photos(size)
    tc = TrainConfig.from_config(cfg)
    members, steps = len(cfg.seeds), int(cfg.steps)
    model = cifar_resnet(depth, data.num_classes, residual=True, width=width, scan_blocks=True)
    p = _probe_fit(model, data, tc, k)
    n = int(cfg.landscape_examples)
    x = jnp.asarray(np.resize(data.x_train, (n, *data.x_train.shape[1:])))
    variables = model.init(jax.random.key(0), x[:2], train=False)
    fwd = _probe_forward(model, variables, x)
    grid = int(cfg.grid_points) ** 2 * members * 2 * fwd
    train = 2 * (members * steps * p["step_seconds"] + p["first_fit_seconds"])
    flops = 2 * (6 * int(tc.batch_size) * steps * members + 2 * n * int(cfg.grid_points) ** 2 * members) * _macs(
        depth, width, size)
    return {"seconds": train + grid, "flops": flops, "nets": {f"resnet{depth}": {**p, "forward_seconds": fwd}},
            "train_seconds": train, "grid_seconds": grid,
            "how": f"measured step rate x {steps} steps x {members} seeds x 2 nets (width {width}, {size}x{size}, "
                   f"batch {tc.batch_size}) + measured forward pass x {cfg.grid_points}^2 grid points x "
                   f"{members} seeds x 2 nets on {n} examples"}


def cifar10_resnet(k: int, rates: dict, preset: str = "full") -> dict:
    """The same nets and shapes as residual's paper preset (width 16, 32x32, batch 128): its rates."""
    cfg = exp.get_config("cifar10_resnet", preset)
    members, steps = len(cfg.seeds), int(cfg.steps)
    evals = steps // int(cfg.eval_every)
    total, flops = 0.0, 0.0
    for name in cfg.models:
        p = rates["nets"][name]
        ev = members * evals * int(cfg.eval_limit) * p["step_seconds"] / (3 * int(cfg.batch_size))
        total += members * steps * p["step_seconds"] + ev + p["first_fit_seconds"]
        flops += 6 * _macs(int(name.removeprefix("resnet")), int(cfg.width), 32) * int(cfg.batch_size) * steps * members
    return {"seconds": total, "flops": flops,
            "how": f"residual's measured step rates (same nets and shapes) x {steps} steps x {members} seeds x "
                   f"{len(cfg.models)} nets; CIFAR-10's input pipeline not included"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="k: steps per chunk of the probe")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    res = residual(args.steps)
    out = {"residual": {"paper": res},
           "cifar10_resnet": {p: cifar10_resnet(args.steps, res, p) for p in ("full", "quick")},
           "loss_landscape": {"paper": loss_landscape(args.steps)}}
    for presets in out.values():
        for v in presets.values():
            v["accelerator_seconds"] = v["flops"] / ASSUMED_ACCELERATOR_FLOPS
    doc = {"experiments": out, "assumed_accelerator_flops": ASSUMED_ACCELERATOR_FLOPS,
           "probe_seconds": round(time.perf_counter() - t0, 1), "probe_cpu_seconds": round(time.process_time() - c0, 1),
           "load_average": os.getloadavg(), "machine": platform.processor() or platform.machine()}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
