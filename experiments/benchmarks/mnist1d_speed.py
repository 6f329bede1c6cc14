"""MNIST-1D training speed: nnbasics (`nnbasics.engine.fit`) against the PyTorch reference recipe.

Trains the MNIST-1D MLP and CNN (Greydanus & Kobak 2020) for 6000 steps of Adam (learning rate
1e-2, batch 100, test evaluation every 250 steps) with nnbasics and with the same models and
recipe in PyTorch on the CPU, alternating the two `--repeats` times in one run, and prints both
times and the ratio (median and range). Needs torch (`pip install -e .[bench]`); without it the
benchmark says so and exits cleanly.

Every nnbasics run is a fresh Python process (nothing compiled earlier in the benchmark can help
it), timed from the call of `fit` to its return, compilation included:
- "cold": no persistent compilation cache (a first run on a new machine);
- "warm": the persistent compilation cache (`nnbasics.enable_compilation_cache`, on by default in
  the `nnbasics` command) filled by an earlier run of the same recipe (a re-run).
Besides wall time it prints the CPU seconds of each run (steadier on a busy machine), and for
nnbasics the seconds until the first chunk's losses are back (init, compilation and 250 steps).

    python -m experiments.benchmarks.mnist1d_speed
    python -m experiments.benchmarks.mnist1d_speed --models cnn --repeats 3 --one-core --xla
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

STEPS, BATCH, LR, EVAL_EVERY = 6000, 100, 1e-2, 250
NAMES = {"mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    t = os.times()
    return t.user + t.system


def nnbasics_seconds(model_name: str, data, steps: int = STEPS, impl: str | None = None) -> dict:
    """Wall and CPU seconds of one `fit` run of the recipe in this process, the seconds to the first
    chunk's losses (compilation included) and the final test accuracy."""
    from nnbasics.engine import TrainConfig, fit
    from nnbasics.models import get_model

    kw = {} if impl is None else {"impl": impl}
    model = get_model(model_name, num_classes=data.num_classes, **kw)
    train_config = TrainConfig(steps=steps, batch_size=BATCH, eval_every=EVAL_EVERY, seeds=(0,),
                               optimizer={"name": "adam", "learning_rate": LR})
    c0, t0 = cpu_seconds(), time.perf_counter()
    res = fit(model, data, train_config)
    return {"seconds": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "first_chunk": res.first_chunk_seconds,
            "acc": float(res.final("test_accuracy")[0])}


def nnbasics_fresh_process(model_name: str, steps: int = STEPS, impl: str | None = None,
                           cache_dir: str | None = None, root: str | None = None, cpu_threads: int = 0) -> dict:
    """`nnbasics_seconds` in a new Python process; `cache_dir` turns on the persistent compilation
    cache there (None: no cache, a cold run); `root`: another checkout to time (default: this one);
    `cpu_threads` > 0: `nnbasics.set_cpu_threads(cpu_threads)` first (0: XLA's default pools)."""
    cmd = [sys.executable, "-m", "experiments.benchmarks.mnist1d_speed", "--child", model_name,
           "--steps", str(steps)]
    if cpu_threads:
        cmd += ["--cpu-threads", str(cpu_threads)]
    if impl:
        cmd += ["--impl", impl]
    if cache_dir:
        cmd += ["--cache-dir", cache_dir]
    env = dict(os.environ)
    env.pop("NNBASICS_NO_COMPILE_CACHE", None)
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _child(args) -> int:
    """Entry point of the fresh process: one timed run, one JSON line on stdout."""
    if args.cpu_threads and args.cpu_threads[0]:
        from nnbasics.threads import set_cpu_threads

        set_cpu_threads(args.cpu_threads[0])
    if args.cache_dir:
        from nnbasics import enable_compilation_cache

        enable_compilation_cache(args.cache_dir)
    from nnbasics.data import load_dataset
    from nnbasics.progress import set_quiet

    set_quiet(True)  # no progress bar (the PyTorch loop has none)
    data = load_dataset("mnist1d")
    r = nnbasics_seconds(args.child, data, args.steps, args.impl)
    print(json.dumps(r))
    return 0


def torch_seconds(name: str, data, steps: int = STEPS) -> dict:
    """Wall and CPU seconds and final test accuracy of the PyTorch reference recipe."""
    from experiments.benchmarks import _torch_models as tm

    model = {"mlp": tm.MNIST1DMLP, "cnn": tm.MNIST1DCNN}[name]()
    c0 = cpu_seconds()
    seconds, acc = tm.train_mnist1d(model, data, steps=steps, batch_size=BATCH, lr=LR, eval_every=EVAL_EVERY)
    return {"seconds": seconds, "cpu": cpu_seconds() - c0, "acc": acc}


def spread(values) -> str:
    v = np.asarray(values, float)
    return f"{np.median(v):.2f} (range {v.min():.2f}-{v.max():.2f})"


def compare(models=("mlp", "cnn"), repeats: int = 2, steps: int = STEPS, with_xla: bool = False,
            torch_threads: int = 1, modes=("cold", "warm"), cpu_threads=(0,)) -> dict:
    """Alternate nnbasics (fresh processes, cold and/or warm, with each of `cpu_threads`: 0 is XLA's
    default pools, n > 0 `set_cpu_threads(n)`) and PyTorch runs; returns {model: {"torch": [runs],
    "cold": [runs], "warm": [runs], "ratio_cold": [...], ...}} (keys "cold, 1 XLA thread" etc. for n > 0).

    PyTorch runs with `torch_threads` threads: 1 is its fastest setting for these tiny layers (with
    2 threads its per-op synchronization dominates), so the ratio is conservative."""
    import torch

    torch.set_num_threads(torch_threads)

    from nnbasics.data import load_dataset

    data = load_dataset("mnist1d")
    cores = len(os.sched_getaffinity(0))
    print(f"MNIST-1D, {steps} steps, batch {BATCH}, Adam {LR}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; {cores} core(s) allowed; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="nnbasics-bench-cache-") as cache:
        for name in models:
            variants = [(m, t, m if not t else f"{m}, {t} XLA thread{'s' if t > 1 else ''}")
                        for m in modes for t in cpu_threads]
            r = {"torch": [], "xla": [], **{label: [] for _, _, label in variants}}
            torch_seconds(name, data, 50)  # PyTorch's lazy initialization, not timed
            if "warm" in modes:  # fill the cache once (not timed)
                nnbasics_fresh_process(NAMES[name], steps, cache_dir=os.path.join(cache, name))
            for _ in range(repeats):
                for mode, threads, label in variants:
                    r[label].append(nnbasics_fresh_process(
                        NAMES[name], steps, cache_dir=os.path.join(cache, name) if mode == "warm" else None,
                        cpu_threads=threads))
                    r["torch"].append(torch_seconds(name, data, steps))
                if with_xla and name == "cnn":
                    r["xla"].append(nnbasics_fresh_process(NAMES[name], steps, impl="xla"))
            t_wall = [x["seconds"] for x in r["torch"]]
            print(f"{name}: torch {spread(t_wall)} s wall, {spread([x['cpu'] for x in r['torch']])} s CPU "
                  f"(test acc {np.mean([x['acc'] for x in r['torch']]):.3f})", flush=True)
            for _, _, mode in variants:
                runs = r[mode]
                wall = [x["seconds"] for x in runs]
                ratio = np.median(t_wall) / np.asarray(wall)
                cpu_ratio = np.median([x["cpu"] for x in r["torch"]]) / np.asarray([x["cpu"] for x in runs])
                r[f"ratio_{mode}"] = ratio.tolist()
                r[f"cpu_ratio_{mode}"] = cpu_ratio.tolist()
                print(f"  nnbasics {mode}: {spread(wall)} s wall, {spread([x['cpu'] for x in runs])} s CPU, "
                      f"first chunk (init + compile + 250 steps) {spread([x['first_chunk'] for x in runs])} s, "
                      f"the other steps {spread([x['seconds'] - x['first_chunk'] for x in runs])} s, "
                      f"test acc {np.mean([x['acc'] for x in runs]):.3f} | torch/nnbasics = {spread(ratio)}x wall, "
                      f"{spread(cpu_ratio)}x CPU", flush=True)
            if r["xla"]:
                print(f"  nnbasics cold with impl='xla' (lax.conv): {spread([x['seconds'] for x in r['xla']])} s wall",
                      flush=True)
            out[name] = r
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--modes", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    p.add_argument("--xla", action="store_true", help="also time the CNN with impl='xla' (lax.conv)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--one-core", action="store_true", help="pin every run to one core (steadier on a busy machine)")
    p.add_argument("--cpu-threads", type=int, nargs="+", default=[0], metavar="N",
                   help="time nnbasics with each of these XLA:CPU thread counts (0: XLA's default, one per core; "
                        "n: nnbasics.set_cpu_threads(n)), e.g. --cpu-threads 0 1")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    if args.one_core:  # inherited by the nnbasics processes
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if not torch_available():
        print("torch is not installed: skipping the PyTorch comparison (pip install -e .[bench])")
        return 0
    compare(tuple(args.models), args.repeats, args.steps, args.xla, args.torch_threads, tuple(args.modes),
            tuple(args.cpu_threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
