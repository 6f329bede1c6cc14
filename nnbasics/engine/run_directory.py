"""What the training loop needs from run management, as a typed interface: `fit(..., workdir=wd)`
takes any object with these members (`nnbasics.runs.workdir.Workdir` is the one the experiments
use), so the engine never imports the run layer nor guesses attributes."""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class MetricsSink(Protocol):
    """Where the metric rows go (metrics.jsonl): one row per evaluation, and on resume the rows of
    a tag replaced by the checkpoint's."""

    def write(self, row: dict[str, Any]) -> None: ...

    def restore(self, tag: str | None, rows: Sequence[dict[str, Any]]) -> None: ...


@runtime_checkable
class RunDirectory(Protocol):
    """A run's directory as `fit` sees it: the metrics sink, the checkpoint directory and period (None
    and 0 while checkpoints are off), where a stop signal writes its checkpoint, and a record of each
    fit's steps and seconds (the run's timing table)."""

    metrics: MetricsSink
    checkpoint_dir: str | os.PathLike | None
    checkpoint_every: int
    interrupt_dir: str | os.PathLike | None
    # training runs that finished without a checkpoint (checkpoints off), which a later stop signal
    # checkpoints so that the next run restores them (`nnbasics.engine.loop.checkpoint_finished_runs`);
    # start with an empty list
    finished_fits: list[Any]

    def record_fit(self, tag: str | None, *, steps: int, members: int, seconds: float,
                   compile_seconds: float) -> None: ...


def check_run_directory(workdir: Any) -> RunDirectory | None:
    """`workdir` if it provides what `fit` needs, else a TypeError naming the missing members."""
    if workdir is None or isinstance(workdir, RunDirectory):
        return workdir
    need = ("metrics", "checkpoint_dir", "checkpoint_every", "interrupt_dir", "finished_fits", "record_fit")
    missing = [m for m in need if m not in dir(workdir)]
    raise TypeError(f"fit's workdir must be a nnbasics.runs.workdir.Workdir or provide {', '.join(need)} "
                    f"(nnbasics.engine.run_directory.RunDirectory); a {type(workdir).__name__} lacks "
                    f"{', '.join(missing)}")
