"""MNIST-1D training speed: nnbasics (`nnbasics.train.fit`) against the PyTorch reference recipe.

Trains the MNIST-1D MLP and CNN (Greydanus & Kobak 2020) for 6000 steps of Adam (learning rate
1e-2, batch 100, test evaluation every 250 steps) with nnbasics and with the same models and
recipe in PyTorch on the CPU, alternating the two `--repeats` times in one process, and prints
both times and the ratio (median and range). Needs torch (`pip install -e .[bench]`); without
it the benchmark says so and exits cleanly.

    python -m experiments.benchmarks.mnist1d_speed
    python -m experiments.benchmarks.mnist1d_speed --models cnn --repeats 3 --xla
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

STEPS, BATCH, LR, EVAL_EVERY = 6000, 100, 1e-2, 250


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def nnbasics_seconds(model_name: str, data, steps: int = STEPS, impl: str | None = None) -> tuple[float, float, float]:
    """(total seconds, compile seconds, final test accuracy) of one `fit` run of the recipe."""
    from nnbasics.models import get_model
    from nnbasics.train import TrainConfig, fit

    kw = {} if impl is None else {"impl": impl}
    model = get_model(model_name, num_classes=data.num_classes, **kw)
    tc = TrainConfig(steps=steps, batch_size=BATCH, eval_every=EVAL_EVERY, seeds=(0,),
                     optimizer={"name": "adam", "learning_rate": LR})
    t0 = time.perf_counter()
    res = fit(model, data, tc)
    return time.perf_counter() - t0, res.compile_seconds, float(res.final("test_accuracy")[0])


def torch_seconds(name: str, data, steps: int = STEPS) -> tuple[float, float]:
    """(seconds, final test accuracy) of the PyTorch reference recipe."""
    from experiments.benchmarks import _torch_models as tm

    model = {"mlp": tm.MNIST1DMLP, "cnn": tm.MNIST1DCNN}[name]()
    return tm.train_mnist1d(model, data, steps=steps, batch_size=BATCH, lr=LR, eval_every=EVAL_EVERY)


def spread(values) -> str:
    v = np.asarray(values, float)
    return f"{np.median(v):.2f} (range {v.min():.2f}-{v.max():.2f})"


def compare(models=("mlp", "cnn"), repeats: int = 2, steps: int = STEPS, with_xla: bool = False,
            torch_threads: int = 1) -> dict:
    """Alternate nnbasics and PyTorch runs; returns {model: {"nnbasics": [...], "torch": [...], ...}}.

    PyTorch runs with `torch_threads` threads: 1 is its fastest setting for these tiny layers (with
    2 threads its per-op synchronization dominates), so the ratio is conservative."""
    import torch

    torch.set_num_threads(torch_threads)

    from nnbasics.data import load_dataset

    data = load_dataset("mnist1d")
    names = {"mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}
    print(f"MNIST-1D, {steps} steps, batch {BATCH}, Adam {LR}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads", flush=True)
    out = {}
    for name in models:
        r = {"nnbasics": [], "nnbasics_run": [], "compile": [], "torch": [], "xla": [], "acc": [], "torch_acc": []}
        for _ in range(repeats):
            total, comp, acc = nnbasics_seconds(names[name], data, steps)
            r["nnbasics"].append(total)
            r["compile"].append(comp)
            r["acc"].append(acc)
            ts, tacc = torch_seconds(name, data, steps)
            r["torch"].append(ts)
            r["torch_acc"].append(tacc)
            if with_xla and name == "cnn":
                r["xla"].append(nnbasics_seconds(names[name], data, steps, impl="xla")[0])
        ratio = np.array(r["torch"]) / np.array(r["nnbasics"])
        line = (f"{name}: nnbasics {spread(r['nnbasics'])} s (first chunk incl. compile {spread(r['compile'])} s, "
                f"test acc {np.mean(r['acc']):.3f}) | torch {spread(r['torch'])} s (test acc "
                f"{np.mean(r['torch_acc']):.3f}) | torch/nnbasics = {spread(ratio)}x")
        if r["xla"]:
            line += f" | nnbasics with impl='xla' {spread(r['xla'])} s"
        print(line, flush=True)
        r["ratio"] = ratio.tolist()
        out[name] = r
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--xla", action="store_true", help="also time the CNN with impl='xla' (lax.conv)")
    p.add_argument("--torch-threads", type=int, default=1)
    args = p.parse_args(argv)
    if not torch_available():
        print("torch is not installed: skipping the PyTorch comparison (pip install -e .[bench])")
        return 0
    compare(tuple(args.models), args.repeats, args.steps, args.xla, args.torch_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
