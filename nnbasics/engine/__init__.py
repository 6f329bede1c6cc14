"""The training engine. One file per part, read in this order:

    state.py       TrainState and the pure steps (init, forward, train_step, evaluate)
    batches.py     which examples each step sees (a permutation per epoch and seed)
    compile.py     compile tuning for the CPU (light options, compiling side by side)
    loop.py        `fit`: chunks of steps compiled with scan, members vmapped, metrics rows
    checkpoint.py  Orbax checkpoints with file lists and digests; exact resume
    parallel.py    the device mesh, sharded batches, multi-host start-up
    interrupt.py   Ctrl-C as a request the loop honours after a chunk (the command line installs it)
    run_directory.py  what `fit` needs of a run's directory (a typed interface; runs.workdir.Workdir has it)

Losses live in `nnbasics.nn.losses`, optimizers in `nnbasics.engine.optim`, streaming data in
`nnbasics.data.streaming`.
"""

from nnbasics.engine.batches import batch_indices, epoch_permutation
from nnbasics.engine.compile import compile_side_by_side, light_jit
from nnbasics.engine.loop import (
    PRNG_IMPL,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    fit,
    steps_to_reach,
    validate_train_config,
)
from nnbasics.engine.state import TrainState, create_state, evaluate, forward, train_step

__all__ = [
    "PRNG_IMPL", "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "batch_indices",
    "compile_side_by_side", "create_state", "epoch_permutation", "evaluate", "fit", "forward", "light_jit",
    "steps_to_reach", "train_step", "validate_train_config",
]
