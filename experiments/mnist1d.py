"""MNIST-1D benchmark table (Greydanus & Kobak 2020): logistic regression, the MLP and the 1-D CNN.

Logistic regression, the 40-100-100(residual)-10 MLP and the three-layer 1-D CNN, trained with
the reference recipe (Adam, learning rate 1e-2, batch 100, 6000 steps, PyTorch's default init)
on the regenerated data set (4000 train / 1000 test), several seeds in one vmapped program. Each
model is tested against what the reference code gives with that recipe, the paper's number beside.

    nnbasics run mnist1d --quick
    nnbasics run mnist1d --quick --config.cnn_seeds='(0,1,2,3,4,5,6,7)'
    python -m experiments.mnist1d --quick --config.models='("cnn",)'
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import band, subplots

TOPIC = "basics"
ORDER = 10
SOURCE = ("Greydanus & Kobak 2020, MNIST-1D, Table 1; reference code: github.com/greydanus/mnist1d, "
          "notebooks/mnist1d-classification.ipynb (PyTorch, the same recipe)")
MODELS = {"logistic": "mnist1d_logistic", "mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}
PUBLISHED = {"logistic": 32.0, "mlp": 68.0, "cnn": 94.0}  # the paper's Table 1
# The reference notebook's test accuracy at step 6000 (LinearBase, MLPBase, ConvBase; one seed).
# The paper's MLP (68%) and CNN (94%) are above what its own code gives with the stated recipe.
REFERENCE = {"logistic": 31.5, "mlp": 65.1, "cnn": 92.3}
BAND = 3.0  # accuracy points either side of the reference
TAIL = 0.2  # the statistic: mean test accuracy over the evaluations in the last 20% of training


def _band_why(name: str, side: str) -> str:
    return (f"the reference code's {REFERENCE[name]:g}% {side} {BAND:g} points (the paper's table: {PUBLISHED[name]:g}%). "
            f"The reference is one PyTorch run, itself about a seed's spread (~1 point) from its recipe's mean, "
            f"and float rounding differs between frameworks; {BAND:g} points is the band the project set around "
            f"the paper's numbers before these runs")


THRESHOLDS = {
    **{f"{m}_accuracy_at_least": Threshold(">=", REFERENCE[m] - BAND, _band_why(m, "less")) for m in MODELS},
    **{f"{m}_accuracy_at_most": Threshold("<=", REFERENCE[m] + BAND, _band_why(m, "plus")) for m in MODELS},
}

SWEEPS = {
    "learning_rate": [{"optimizer.learning_rate": lr} for lr in (3e-3, 1e-2, 3e-2)],
    "batch_size": [{"batch_size": b} for b in (25, 100, 400)],
    "steps": [{"steps": s} for s in (1500, 3000, 6000, 12000)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "mnist1d"  # the published data set, regenerated with its own fixed seed
    c.models = ("logistic", "mlp", "cnn")
    c.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-2, "weight_decay": 0.0})
    c.batch_size = 100
    c.steps = 6000
    c.eval_every = 250
    # logistic regression and the MLP (cheap: vmapped side by side); 10 from the seed-count rule over offsets 0
    # and 700 (the MLP's accuracy against its upper bound asks for 9)
    c.seeds = tuple(range(10))
    c.cnn_seeds = tuple(range(8))  # the CNN, ~5x the cost per seed and about half the MLP's spread
    if preset == "quick":
        c.cnn_seeds = tuple(range(4))
    elif preset == "smoke":
        c.seeds = c.cnn_seeds = (0, 1)
        c.steps = 200
        c.eval_every = 100
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.models:
        raise ValueError(f"config.models must name at least one of {', '.join(MODELS)}")
    for m in config.models:
        if m not in MODELS:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.models: " + unknown_name_message("MNIST-1D model", m, list(MODELS)))
    if not config.cnn_seeds:
        raise ValueError("config.cnn_seeds must list at least one seed")


def tail_mean(steps: np.ndarray, values: np.ndarray, fraction: float = TAIL) -> np.ndarray:
    """Per member: the mean of `values[member, eval]` over the evaluations in the last `fraction` of
    training (at least the final one)."""
    last = steps >= steps[-1] * (1 - fraction)
    last[-1] = True
    return values[:, last].mean(1)


def plot(results: dict, workdir) -> None:
    fig, (ax,) = subplots(size=(6, 4))
    for name, res in results.items():
        steps, acc = res.curve("test_accuracy")
        band(ax, steps, 100 * acc, label=f"{name} (reference code {REFERENCE[name]:g}%, paper {PUBLISHED[name]:g}%)")
        color = ax.lines[-1].get_color()
        ax.axhline(REFERENCE[name], color=color, ls="--", lw=1)
        ax.axhline(PUBLISHED[name], color=color, ls=":", lw=1)
    ax.set(xlabel="training step", ylabel="test accuracy (%)",
           title="MNIST-1D: test accuracy (mean, min-max over seeds)\ndashed: reference code, dotted: the paper's table")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "test_accuracy")


def accuracy_claim(name: str, res, seeds: int) -> dict:
    steps, acc = res.curve("test_accuracy")
    accs = 100 * tail_mean(steps, acc)
    lo, hi = THRESHOLDS[f"{name}_accuracy_at_least"], THRESHOLDS[f"{name}_accuracy_at_most"]
    stat = f"test accuracy (%, mean of the last {TAIL:.0%} of training)"
    return claim(
        f"test_accuracy_{name}",
        f"{name} trained with the reference recipe reaches the reference code's MNIST-1D test accuracy, "
        f"{REFERENCE[name]:g}% (the paper's table: {PUBLISHED[name]:g}%)",
        SOURCE,
        f"{stat} within {REFERENCE[name]:g} +- {BAND:g} (95% interval over seeds)",
        {
            f"test_accuracy_{name}": accs,
            f"test_accuracy_{name}_final": 100 * res.final("test_accuracy"),
            "reference_code": REFERENCE[name],
            "published": PUBLISHED[name],
            "seeds": seeds,
            "train_seconds": res.seconds,
        },
        checks=[check(f"{name}_accuracy_at_least", accs, lo, statistic=f"test_accuracy_{name}"),
                check(f"{name}_accuracy_at_most", accs, hi, statistic=f"test_accuracy_{name}")],
    )


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)
    train_config = TrainConfig.from_config(config)
    results = {}
    for name in config.models:
        model = get_model(MODELS[name], num_classes=data.num_classes)
        seeds = tuple(config.cnn_seeds if name == "cnn" else config.seeds)
        results[name] = fit(model, data, dataclasses.replace(train_config, seeds=seeds), workdir=workdir, tag=name)
    plot(results, workdir)
    return [accuracy_claim(name, res, len(res.members)) for name, res in results.items()]


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
