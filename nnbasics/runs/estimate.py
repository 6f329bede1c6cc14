"""How long an experiment's preset takes, said before it starts: measured times on a reference CPU.

The numbers live in `nnbasics/runs/measured_times.py` (a committed table, so `nnbasics list` needs no
timing): the seconds of a finished run of the preset where one ran there, else the measured step
rate at the preset's shapes times its steps (experiments/benchmarks/full_preset_rates.py). The
reference machine is shared with other jobs, so a time is the smaller of wall and CPU seconds (what
the run would take with a core to itself); the wall seconds are kept beside it.
Regenerate the table from finished runs (and a rates file) with `nnbasics.runs.time_table`:

    python -m nnbasics.runs.time_table --write --quick-root runs --full-root runs-full --rates rates.json
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

LONG_RUN_SECONDS = 60 * 60  # above this on a CPU, `run` and `reproduce` name the --quick alternative
# (the hour a full preset may take on a 2-core CPU: a full preset within it runs without a warning)
TABLE_PATH = pathlib.Path(__file__).with_name("measured_times.py")


def table() -> Mapping[str, Any]:
    """The committed table: {machine, date, commit, experiments: {name: {preset: {seconds, ...}}}}."""
    from nnbasics.runs.measured_times import MEASURED

    return MEASURED


def assumed_tflops() -> float:
    """The accelerator rate (TFLOP/s, an assumption, not a measurement) the table's GPU seconds were computed with."""
    return table()["assumed_accelerator_flops"] / 1e12


def estimate(name: str, preset: str) -> dict[str, Any] | None:
    """{seconds, cpu_seconds, how, accelerator_seconds?} of `name`'s `preset` on the reference CPU,
    or None where nothing was measured (a smoke preset, a new experiment)."""
    entry = table()["experiments"].get(name, {}).get(preset)
    return dict(entry) if entry else None


def seconds(name: str, preset: str) -> float | None:
    e = estimate(name, preset)
    return float(e["seconds"]) if e else None


def format_duration(s: float | None) -> str:
    """~4 s, ~3 min, ~1.5 h, ~39 h; '?' when unknown."""
    if s is None:
        return "?"
    if s < 90:
        return f"~{max(1, round(s))} s"
    if s < 90 * 60:
        return f"~{round(s / 60)} min"
    h = s / 3600
    return f"~{h:.1f} h" if h < 10 else f"~{round(h)} h"


def machine(name: str | None = None, preset: str | None = None) -> str:
    """The machine the table was measured on, or where one entry names its own (a row measured
    later, elsewhere), that entry's."""
    e = estimate(name, preset) if name and preset else None
    if e and e.get("machine"):
        return str(e["machine"])
    t = table()
    return f"{t['machine']}, measured {t['date']}"


def long_run_warning(name: str, preset: str, backend: str = "cpu") -> str | None:
    """The warning printed before a run estimated at more than an hour on a CPU (None otherwise)."""
    s = seconds(name, preset)
    if backend != "cpu" or s is None or s <= LONG_RUN_SECONDS:
        return None
    msg = f"warning: the {preset} preset of {name} is estimated at {format_duration(s)} on a CPU ({machine(name, preset)})."
    q = seconds(name, "quick")
    if preset != "quick" and q is not None:
        msg += f" `nnbasics run {name} --quick` takes {format_duration(q)}."
    return msg + " Starting anyway (Ctrl-C stops it; where it checkpoints, the same command resumes)."


def run_lines(name: str, preset: str, backend: str = "cpu", overrides: Iterable[str] = ()) -> list[str]:
    """What `nnbasics run` prints before it starts: the estimate, and the warning for a long run."""
    e = estimate(name, preset)
    if e is None:
        return [f"{name} ({preset}): no measured time estimate"]
    lines = [f"{name} ({preset}): estimated {format_duration(e['seconds'])} on a CPU ({machine(name, preset)})"
             + ("; the --config overrides may change it" if list(overrides) else "")]
    if backend != "cpu" and e.get("accelerator_seconds"):
        lines.append(f"  on an accelerator, from its FLOPs: {format_duration(e['accelerator_seconds'])} "
                     f"(at an assumed {assumed_tflops():g} TFLOP/s sustained)")
    w = long_run_warning(name, preset, backend)
    return lines + ([w] if w else [])


def plan_lines(names: list[str], preset: str, backend: str = "cpu") -> list[str]:
    """What `nnbasics reproduce` prints before it starts: each experiment's estimate and the total."""
    est = {n: seconds(n, preset) for n in names}
    total = sum(s for s in est.values() if s is not None)
    unknown = [n for n, s in est.items() if s is None]
    lines = [f"estimated time of the {preset} preset on a CPU ({machine()}):"]
    width = max((len(n) for n in names), default=0)
    lines += [f"  {n:<{width}}  {format_duration(s)}" for n, s in est.items()]
    lines.append(f"  {'total':<{width}}  {format_duration(total if len(unknown) < len(names) else None)}"
                 + (f" (and {len(unknown)} without an estimate: {', '.join(unknown)})" if unknown else ""))
    if backend == "cpu" and total > LONG_RUN_SECONDS:
        long = [n for n, s in est.items() if s is not None and s > LONG_RUN_SECONDS]
        msg = f"warning: this reproduction is estimated at {format_duration(total)} on a CPU"
        if long:
            msg += f" ({', '.join(f'{n} {format_duration(est[n])}' for n in long)})"
        if preset != "quick":
            q = sum(seconds(n, "quick") or 0.0 for n in names)
            msg += f"; `nnbasics reproduce --quick` takes {format_duration(q)}"
        lines.append(msg + ". Starting anyway.")
    return lines


def announce(lines: Iterable[str], detail: bool = False) -> None:
    """Print estimate lines on stderr: warnings always (on the main process), the rest unless quiet;
    a plan (`plan_lines`) as its heading and total on one line unless `detail` asks for every line."""
    import sys

    import jax

    from nnbasics.progress import log

    if jax.process_index() != 0:
        return
    lines = list(lines)
    if not detail and lines and lines[0].startswith("estimated time of"):  # 'estimated ...: total ~8 min'
        total = next((ln.strip()[len("total"):].strip() for ln in lines if ln.strip().startswith("total")), "?")
        lines = [f"{lines[0].rstrip(':')}: {total}"] + [ln for ln in lines[1:] if ln.startswith("warning")]
    for line in lines:
        if line.startswith("warning"):
            print(f"nnbasics: {line}", file=sys.stderr, flush=True)
        else:
            log(line)


def backend() -> str:
    import jax

    return jax.default_backend()


class Countdown:
    """The remaining time of a reproduction, refined by how fast the experiments run so far: the
    estimates of the rest are scaled by measured / estimated seconds of the ones that ran (runs
    reused from an earlier reproduction take no time and do not count)."""

    def __init__(self, names: list[str], preset: str):
        self.est = {n: seconds(n, preset) or 0.0 for n in names}
        self.total = sum(self.est.values())
        self.left = list(names)
        self.spent_real = self.spent_est = 0.0

    def done(self, name: str, elapsed: float, recorded: float) -> str:
        """After `name` finished in `elapsed` wall seconds (its claims record `recorded`): 'about 6 min
        left of ~12 min'."""
        if name in self.left:
            self.left.remove(name)
        fresh = elapsed >= 0.5 * recorded  # a reused run returns at once with its old seconds
        if fresh and self.est.get(name, 0.0) > 0:
            self.spent_real += elapsed
            self.spent_est += self.est[name]
        ratio = min(5.0, max(0.2, self.spent_real / self.spent_est)) if self.spent_est else 1.0
        if not self.total:
            return "no time estimate"
        if not self.left:
            return f"all done (estimated {format_duration(self.total)} in all)"
        rest = ratio * sum(self.est.get(n, 0.0) for n in self.left)
        return f"about {format_duration(rest).lstrip('~')} left of {format_duration(self.total)}"
