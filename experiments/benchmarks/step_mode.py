"""A compiled loop of train steps (fit's step_mode='chunk') against one compiled step per dispatch
('step'), CPU seconds side by side, interleaved, in one process.

    python -m experiments.benchmarks.step_mode resnet20 5 80      # net, members (vmapped), steps
    python -m experiments.benchmarks.step_mode fcn 3 50
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.engine import optim
from nnbasics.engine.state import create_state, train_step
from nnbasics.models import get_model
from nnbasics.models.resnet import cifar_resnet

NETS = {  # name -> (model, example shape, batch size, classes per example shape)
    "resnet20": (lambda: cifar_resnet(20, 10, width=4, scan_blocks=True), (8, 8, 3), 32),
    "resnet20full": (lambda: cifar_resnet(20, 10, width=16, scan_blocks=True), (32, 32, 3), 32),
    "mnist1d_cnn": (lambda: get_model("mnist1d_cnn", num_classes=10), (40,), 100),
    "fcn": (lambda: get_model("fcn", num_classes=3), (32, 32, 3), 8),
}


def main(which: str, members: int, steps: int, repeats: int = 3) -> None:
    make, shape, batch = NETS[which]
    model, tx = make(), optim.make_optimizer({"name": "momentum", "learning_rate": 0.01})
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2000, *shape)), jnp.float32)
    labels = (2000, *shape[:2]) if which == "fcn" else (2000,)  # the FCN labels every pixel
    y = jnp.asarray(rng.integers(0, 3 if which == "fcn" else 10, size=labels), jnp.int32)
    state = jax.tree.map(lambda *a: jnp.stack(a), *[create_state(model, tx, jax.random.key(k), x[:1])
                                                    for k in range(members)])
    idx = jnp.asarray(rng.integers(0, 2000, size=(members, steps, batch)), jnp.int32)

    def step(st, ix):
        return train_step(st, x[ix], y[ix])

    one = jax.jit(jax.vmap(step))
    chunk = jax.jit(jax.vmap(lambda st, ixs: jax.lax.scan(step, st, ixs)))

    def per_step(st):
        for i in range(steps):
            st, _ = one(st, idx[:, i])
        return jax.block_until_ready(st)

    def loop(st):
        return jax.block_until_ready(chunk(st, idx)[0])

    per_step(state), loop(state)  # compile both
    for _ in range(repeats):
        t = time.process_time()
        per_step(state)
        a = time.process_time() - t
        t = time.process_time()
        loop(state)
        b = time.process_time() - t
        print(f"{which} members={members} steps={steps}: one step per dispatch {a:.2f} CPU s, "
              f"compiled loop {b:.2f} CPU s, loop / step {b / a:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
