"""CIFAR-10 ResNet-20/56 with the paper's recipe (He et al. 2016, sec. 4.2): 8.75% / 6.97% test error on a GPU/TPU.

SGD with momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and
48k iterations, 64k iterations, 4-pixel pad + random crop + horizontal flip (the pipeline pads
by reflection, the paper with zeros). CIFAR-10 streams from a prepared tfds `data_dir` through
grain (nothing is downloaded at run time; a missing set raises DatasetNotPrepared saying how to
prepare it); batches are sharded over every device (and process) by the training engine. This is
an accelerator run (hours on one GPU), so `nnbasics reproduce` skips it (REPRODUCE = False).

    nnbasics run cifar10_resnet --config.data_dir=~/tensorflow_datasets
    nnbasics run cifar10_resnet --config.data_dir=DIR --config.models='("resnet110",)'
"""

from __future__ import annotations

import os

import ml_collections

from nnbasics import claims as C
from nnbasics.models import get_model
from nnbasics.plotting import band, subplots
from nnbasics.train import TrainConfig, fit

TOPIC = "architectures"
ORDER = 59
REPRODUCE = False  # needs the real CIFAR-10 and an accelerator
SOURCE = "He, Zhang, Ren & Sun 2016, Deep Residual Learning, Table 6 (CIFAR-10 test error)"
PAPER_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data_dir = ""  # a prepared tfds directory (empty: $TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.models = ("resnet20", "resnet56")
    c.width = 16  # filters of the first stage (the paper: 16/32/64)
    c.optimizer = ml_collections.ConfigDict({
        "name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
        "schedule": "step", "decay_steps": (32000, 48000), "decay_factor": 0.1,
    })
    c.batch_size = 128
    c.steps = 64000
    c.eval_every = 2000
    c.eval_limit = 10000  # test images evaluated at every eval point
    c.seeds = (0,)
    c.augment = True
    c.tolerance = 1.0  # error points around the paper's number
    if preset == "quick":
        c.steps = 2000
        c.eval_every = 500
        c.optimizer.decay_steps = (1000, 1500)
        c.models = ("resnet20",)
        c.tolerance = 100.0  # a short run only checks that the pipeline trains
    elif preset == "smoke":
        c.models = ("resnet20",)
        c.width = 2
        c.batch_size = 8
        c.steps = 4
        c.eval_every = 2
        c.eval_limit = 16
        c.optimizer.decay_steps = (2, 3)
        c.tolerance = 100.0
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    for m in config.models:
        if m not in PAPER_ERROR:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.models: " + unknown_name_message("CIFAR ResNet", m, list(PAPER_ERROR)))
    if int(config.width) < 1:
        raise ValueError(f"config.width must be a positive integer, got {config.width}")
    if int(config.eval_limit) <= 0:
        raise ValueError(f"config.eval_limit must be positive, got {config.eval_limit}")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    from nnbasics.data.tfds import streaming

    data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
    data = streaming("cifar10", int(config.batch_size), data_dir=data_dir, seed=int(config.seeds[0]),
                     augment=bool(config.augment), eval_limit=int(config.eval_limit))
    tc = TrainConfig.from_config(config)
    out, results = [], {}
    for name in config.models:
        model = get_model(name, num_classes=10, width=int(config.width), scan_blocks=True)
        res = fit(model, data, tc, metrics_writer=workdir.metrics, tag=name)
        results[name] = res
        err = 100.0 * (1.0 - float(res.final("test_accuracy").mean()))
        target, tol = PAPER_ERROR[name], float(config.tolerance)
        out.append(C.claim(
            f"test_error_{name}", f"{name} reaches the paper's CIFAR-10 test error", SOURCE,
            f"{target}% +- {tol:g}", {f"test_error_{name}": err, "steps": int(config.steps), "train_seconds": res.seconds},
            passed=C.within(err, target, tol),
        ))
    fig, (ax,) = subplots(size=(6, 4))
    for name, res in results.items():
        steps, acc = res.curve("test_accuracy")
        band(ax, steps, 100 * (1 - acc), label=f"{name} (paper {PAPER_ERROR[name]}%)")
    ax.set(xlabel="iteration", ylabel="test error (%)", title="CIFAR-10 ResNets (He et al. 2016 recipe)")
    ax.grid(alpha=0.3)
    ax.legend()
    workdir.save_figure(fig, "test_error")
    return out


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
