"""`nnbasics reproduce --jobs N`: experiments side by side in N worker processes.

Each worker (`nnbasics.runs.experiment.worker` in a new process) runs one experiment on its own
share of the CPU's cores (its affinity is set before anything is imported, so XLA sizes its thread
pools to that share), taking the experiments longest first from the measured estimates, so that
both cores of a 2-core machine stay busy for the whole reproduction instead of XLA splitting small
programs over two threads. A worker writes the experiment's workdir exactly as `reproduce` would
(its lock keeps one writer per workdir); the calling process then reads those workdirs and writes
the combined report. With one core per worker the numbers are those of a run pinned to one core
(`taskset -c 0`). A worker that fails leaves its experiment to the calling process, which runs it
again and reports its error.

Ctrl-C (or SIGTERM) reaches the calling process only: it passes SIGTERM on to every worker once
(each finishes its chunk in flight and writes a checkpoint), waits for them, and stops.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Iterable

from nnbasics.progress import log
from nnbasics.threads import available_cores


def core_sets(jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """The cores of each of `jobs` workers: contiguous, as even as possible; with more workers than
    cores, one core each, shared round robin."""
    cores = available_cores() if cores is None else list(cores)
    if jobs >= len(cores):
        return [[cores[i % len(cores)]] for i in range(jobs)]
    size, extra = divmod(len(cores), jobs)
    sets, at = [], 0
    for i in range(jobs):
        n = size + (i < extra)
        sets.append(cores[at:at + n])
        at += n
    return sets


def longest_first(names: Iterable[str], preset: str) -> list[str]:
    """Experiments in the order workers take them: without an estimate first (unknown may be long),
    then by estimated seconds, longest first (the longest-processing-time rule)."""
    from nnbasics.runs import estimate

    est = {n: estimate.seconds(n, preset) for n in names}
    return sorted(est, key=lambda n: (est[n] is not None, -(est[n] or 0.0)))


def makespan(names: Iterable[str], preset: str, jobs: int) -> float:
    """The estimated wall seconds of `names` on `jobs` workers taking them longest first."""
    from nnbasics.runs import estimate

    loads = [0.0] * max(1, jobs)
    for n in longest_first(names, preset):
        loads[loads.index(min(loads))] += estimate.seconds(n, preset) or 0.0
    return max(loads)


def run_side_by_side(names: list[str], preset: str, root: str | os.PathLike, force: bool, overrides: Iterable[str],
                     seed_offset: int, jobs: int) -> set[str]:
    """Run `names` (the caller leaves out those it will reuse) in `jobs` workers, each calling
    `nnbasics.runs.experiment.worker` in a new process; returns the names whose worker finished."""
    root, overrides = pathlib.Path(root), list(overrides)
    todo = longest_first(names, preset)
    if len(todo) < 2:  # one experiment (or none) to run: in the calling process, on every core
        return set()
    slots = core_sets(min(jobs, len(todo)))
    logs = root / ".jobs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"{len(todo)} experiments on {len(slots)} workers (cores {', '.join(','.join(map(str, s)) for s in slots)}), "
        f"longest first; estimated {makespan(todo, preset, len(slots)) / 60:.1f} min")
    pool = _Pool(slots, logs, dict(preset=preset, root=str(root), force=force, overrides=overrides,
                                   seed_offset=seed_offset))
    with _forwarding_stop_signals(pool):
        return pool.run(todo)


class _Pool:
    def __init__(self, slots: list[list[int]], logs: pathlib.Path, spec: dict[str, Any]):
        self.slots, self.logs, self.spec = slots, logs, spec
        self.running: dict[int, tuple[str, subprocess.Popen, float]] = {}

    def start(self, slot: int, name: str) -> None:
        spec = json.dumps({**self.spec, "name": name, "cores": self.slots[slot]})
        # the affinity is set before any import, so XLA's thread pools see only these cores
        boot = (f"import os, sys; os.sched_setaffinity(0, {self.slots[slot]!r}) if hasattr(os, 'sched_setaffinity') "
                "else None; from nnbasics.runs.experiment import worker; sys.exit(worker(sys.argv[1]))")
        with open(self.logs / f"{name}.log", "w", encoding="utf-8") as err:
            proc = subprocess.Popen([sys.executable, "-c", boot, spec], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.running[slot] = (name, proc, time.perf_counter())

    def run(self, todo: list[str]) -> set[str]:
        todo, done = list(todo), set()
        while todo or self.running:
            for slot in range(len(self.slots)):
                if slot not in self.running and todo:
                    self.start(slot, todo.pop(0))
            time.sleep(0.2)
            for slot, (name, proc, t0) in list(self.running.items()):
                if proc.poll() is None:
                    continue
                del self.running[slot]
                if proc.returncode == 0:
                    done.add(name)
                    (self.logs / f"{name}.log").unlink(missing_ok=True)  # kept only when the worker failed
                    log(f"  finished {name} ({time.perf_counter() - t0:.0f} s)")
                else:
                    log(f"  {name} stopped with status {proc.returncode} (log: {self.logs / (name + '.log')}); "
                        "it runs again in this process, which reports its error")
        return done

    def signal_all(self, signum: int) -> None:
        for _, proc, _ in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def wait_all(self) -> None:
        for _, proc, _ in self.running.values():
            proc.wait()


class _forwarding_stop_signals:
    """Ctrl-C or SIGTERM while workers run: pass it on to each worker once (it checkpoints and
    stops), wait for them, then stop this process the same way (KeyboardInterrupt or, for
    SIGTERM, TrainingInterrupted with exit status 143)."""

    def __init__(self, pool: _Pool):
        self.pool, self.previous = pool, None

    def __enter__(self) -> None:
        import threading

        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self.previous = signal.SIG_DFL
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        from nnbasics.engine.interrupt import TrainingInterrupted

        raise TrainingInterrupted("SIGTERM: the workers wrote their checkpoints and stopped; run the same command "
                                  "again to continue", 0, None, signal.SIGTERM)

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if isinstance(error, KeyboardInterrupt):  # TrainingInterrupted (SIGTERM) included
            log(f"stopping the {len(self.pool.running)} running worker(s): each finishes its chunk in flight and "
                "writes a checkpoint")
            # SIGTERM whatever the signal: a worker started from a shell that ignores SIGINT ignores it too
            self.pool.signal_all(signal.SIGTERM)
            self.pool.wait_all()
