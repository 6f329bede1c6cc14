"""MNIST-1D benchmark table (Greydanus & Kobak 2020): logistic ~32%, MLP ~68%, CNN ~94% test accuracy.

Logistic regression, the 40-100-100(residual)-10 MLP and the three-layer 1-D CNN, trained with
the reference recipe (Adam, learning rate 1e-2, batch 100, 6000 steps, PyTorch's default init)
on the regenerated data set (4000 train / 1000 test), several seeds in one vmapped program.

    nnbasics run mnist1d --quick
    nnbasics run mnist1d --config.seeds='(0,1,2,3,4,5,6,7)'
    python -m experiments.mnist1d --quick --config.models='("cnn",)'
"""

from __future__ import annotations

import ml_collections

from nnbasics import claims as C
from nnbasics.data import load_dataset
from nnbasics.models import get_model
from nnbasics.plotting import band, subplots
from nnbasics.train import TrainConfig, fit

TOPIC = "basics"
ORDER = 10
SOURCE = "Greydanus & Kobak 2020, MNIST-1D, Table 1"
PUBLISHED = {"logistic": 32.0, "mlp": 68.0, "cnn": 94.0}
MODELS = {"logistic": "mnist1d_logistic", "mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}
MINIMUM = {"cnn": 91.0}

SWEEPS = {
    "learning_rate": [{"optimizer.learning_rate": lr} for lr in (3e-3, 1e-2, 3e-2)],
    "batch_size": [{"batch_size": b} for b in (25, 100, 400)],
    "steps": [{"steps": s} for s in (1500, 3000, 6000, 12000)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "mnist1d"
    c.models = ("logistic", "mlp", "cnn")
    c.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-2, "weight_decay": 0.0})
    c.batch_size = 100
    c.steps = 6000
    c.eval_every = 250
    c.seeds = (0, 1, 2, 3, 4)
    c.tolerance = 3.0  # accuracy points around the published number
    if preset == "quick":
        c.seeds = (0, 1, 2)
    elif preset == "smoke":
        c.seeds = (0,)
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
    if config.tolerance < 0:
        raise ValueError(f"config.tolerance must be >= 0, got {config.tolerance}")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)
    tc = TrainConfig.from_config(config)
    results = {}
    for name in config.models:
        model = get_model(MODELS[name], num_classes=data.num_classes)
        results[name] = fit(model, data, tc, metrics_writer=workdir.metrics, tag=name)

    fig, (ax,) = subplots(size=(6, 4))
    for name, res in results.items():
        steps, acc = res.curve("test_accuracy")
        band(ax, steps, 100 * acc, label=f"{name} (published {PUBLISHED[name]:.0f}%)")
        ax.axhline(PUBLISHED[name], color=ax.lines[-1].get_color(), ls=":", lw=1)
    ax.set(xlabel="training step", ylabel="test accuracy (%)",
           title="MNIST-1D: test accuracy (mean, min-max over seeds)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "test_accuracy")

    out = []
    for name, res in results.items():
        accs = 100 * res.final("test_accuracy")
        mean, std = float(accs.mean()), float(accs.std())
        target, tol = PUBLISHED[name], float(config.tolerance)
        passed = C.within(mean, target, tol)
        expected = f"{target:.0f}% +- {tol:g}"
        if name in MINIMUM:
            passed = passed and C.at_least(mean, MINIMUM[name])
            expected += f" (at least {MINIMUM[name]:.0f}%)"
        out.append(
            C.claim(
                f"test_accuracy_{name}",
                f"{name} reaches the published MNIST-1D test accuracy",
                SOURCE,
                expected,
                {
                    f"test_accuracy_{name}": mean,
                    f"test_accuracy_{name}_std": std,
                    "seeds": len(accs),
                    "train_seconds": res.seconds,
                },
                passed,
            )
        )
    return out


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
