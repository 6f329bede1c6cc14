"""Trains two small models and prints final parameters and metrics as JSON (run in a subprocess
with a chosen device count by tests/test_parallel.py)."""

import json
import sys

import flax.linen as nn
import jax
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.nn.conv import Conv
from nnbasics.progress import set_quiet


class BNNet(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean((1, 2))
        return nn.Dense(self.num_classes)(x)


def main() -> None:
    set_quiet(True)
    out = {"devices": jax.device_count()}
    cfg = dict(steps=20, batch_size=32, eval_every=10, seeds=(0, 1), optimizer={"name": "sgd", "learning_rate": 0.1})
    d = load_dataset("digits")
    for name, model in [("mlp", get_model("mlp", num_classes=10, hidden=(32,))), ("bn", BNNet())]:
        r = fit(model, d, TrainConfig(**cfg))
        out[name] = {
            "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.params)],
            "stats": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.batch_stats)],
            "test_accuracy": r.history[-1]["test_accuracy"],
            "train_loss": r.history[-1]["train_loss"],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
