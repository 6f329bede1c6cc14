"""Trains small models and prints final parameters, metrics and the mesh each used as JSON (run in a
subprocess with a chosen device count by tests/test_parallel.py)."""

import json
import sys

import flax.linen as nn
import jax
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit, parallel
from nnbasics.engine.loop import _members
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


# name -> (model, batch size, seeds): on 8 devices the first two split the batch 8 ways, the next two
# split 4 members x 2 batch shards, the last trains 3 members on 3 devices (11 divides nothing else)
CASES = {
    "mlp": ("mlp", 32, (0, 1)),
    "bn": ("bn", 32, (0, 1)),
    "mlp_members": ("mlp", 30, (0, 1, 2, 3)),
    "bn_members": ("bn", 30, (0, 1, 2, 3)),
    "mlp_subset": ("mlp", 11, (0, 1, 2)),
}


def main(names) -> None:
    set_quiet(True)
    out = {"devices": jax.device_count()}
    d = load_dataset("digits")
    for name in names:
        kind, batch, seeds = CASES[name]
        model = get_model("mlp", num_classes=10, hidden=(32,)) if kind == "mlp" else BNNet()
        tc = TrainConfig(steps=20, batch_size=batch, eval_every=10, seeds=seeds,
                         optimizer={"name": "sgd", "learning_rate": 0.1})
        mesh = parallel.training_mesh(len(_members(tc)), batch)
        r = fit(model, d, tc)
        out[name] = {
            "mesh": [parallel.axis_size(mesh, parallel.MEMBERS_AXIS), parallel.axis_size(mesh, parallel.DATA_AXIS)],
            "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.params)],
            "stats": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.batch_stats)],
            "test_accuracy": r.history[-1]["test_accuracy"],
            "train_loss": r.history[-1]["train_loss"],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
