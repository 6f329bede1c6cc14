"""How long an experiment's preset takes, said before it starts: measured times on a reference CPU.

The numbers live in `nnbasics/runs/measured_times.py` (a committed table, so `nnbasics list` needs no
timing): the seconds of a finished run of the preset where one ran there, else the measured step
rate at the preset's shapes times its steps (experiments/benchmarks/full_preset_rates.py). The
reference machine is shared with other jobs, so a time is the smaller of wall and CPU seconds (what
the run would take with a core to itself); the wall seconds are kept beside it.
Regenerate the table from finished runs (and a rates file) with

    python -m nnbasics.runs.estimate --write --quick-root runs --full-root runs-full --rates rates.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import pprint
from collections.abc import Iterable, Mapping
from typing import Any

LONG_RUN_SECONDS = 30 * 60  # above this on a CPU, `run` and `reproduce` name the --quick alternative
TABLE_PATH = pathlib.Path(__file__).with_name("measured_times.py")


def table() -> Mapping[str, Any]:
    """The committed table: {machine, date, commit, experiments: {name: {preset: {seconds, ...}}}}."""
    from nnbasics.runs.measured_times import MEASURED

    return MEASURED


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


def machine() -> str:
    t = table()
    return f"{t['machine']}, measured {t['date']}"


def long_run_warning(name: str, preset: str, backend: str = "cpu") -> str | None:
    """The warning printed before a run estimated at more than 30 minutes on a CPU (None otherwise)."""
    s = seconds(name, preset)
    if backend != "cpu" or s is None or s <= LONG_RUN_SECONDS:
        return None
    msg = f"warning: the {preset} preset of {name} is estimated at {format_duration(s)} on a CPU ({machine()})."
    q = seconds(name, "quick")
    if preset != "quick" and q is not None:
        msg += f" `nnbasics run {name} --quick` takes {format_duration(q)}."
    return msg + " Starting anyway (Ctrl-C stops it; where it checkpoints, the same command resumes)."


def run_lines(name: str, preset: str, backend: str = "cpu", overrides: Iterable[str] = ()) -> list[str]:
    """What `nnbasics run` prints before it starts: the estimate, and the warning for a long run."""
    e = estimate(name, preset)
    if e is None:
        return [f"{name} ({preset}): no measured time estimate"]
    lines = [f"{name} ({preset}): estimated {format_duration(e['seconds'])} on a CPU ({machine()})"
             + ("; the --config overrides may change it" if list(overrides) else "")]
    if backend != "cpu" and e.get("accelerator_seconds"):
        lines.append(f"  on an accelerator, from its FLOPs: {format_duration(e['accelerator_seconds'])} "
                     f"(at an assumed {table().get('assumed_accelerator_flops', 0) / 1e12:g} TFLOP/s sustained)")
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


def announce(lines: Iterable[str]) -> None:
    """Print estimate lines on stderr: warnings always (on the main process), the rest unless quiet."""
    import sys

    import jax

    from nnbasics.progress import log

    if jax.process_index() != 0:
        return
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


# ------------------------------------------------------------------ regenerating the table


def _claims_seconds(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if "seconds" not in doc or doc.get("error"):
        return None
    ok = sum(c["verdict"] == "pass" for c in doc["claims"])
    wall, cpu = float(doc["seconds"]), float(doc.get("cpu_seconds") or doc["seconds"])
    # the machine is shared: wall time counts other jobs' time, and a run with a core to itself takes at
    # most its CPU seconds, so the estimate is the smaller of the two
    return {"seconds": round(min(wall, cpu), 1), "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "how": f"a finished run ({path.parent}: {ok}/{len(doc['claims'])} claims pass)"}


def build_table(quick_root: str, full_root: str, rates: Mapping[str, Any] | None, old: Mapping[str, Any],
                machine_name: str, date: str, commit: str) -> dict[str, Any]:
    """The table from finished runs' claims.json (quick in quick_root/NAME-quick, full in full_root/NAME),
    probe rates for the presets not run (rates["experiments"][name]: {preset: {seconds, how, ...}}),
    and the old table for anything not measured again. A full preset whose config equals the quick
    one gets the quick run's time."""
    from nnbasics.runs import experiment as exp

    out: dict[str, Any] = {}
    for name in exp.experiment_names():
        row = dict(old.get("experiments", {}).get(name, {}))
        q = next(filter(None, (_claims_seconds(pathlib.Path(r) / f"{name}-quick" / "claims.json")
                               for r in quick_root.split(","))), None)  # the first root that has it
        f = _claims_seconds(pathlib.Path(full_root) / name / "claims.json")
        if q:
            row["quick"] = q
        if f:
            row["full"] = f
        probed = (rates or {}).get("experiments", {}).get(name, {})
        for preset, r in ({"full": probed} if "seconds" in probed else probed).items():
            if row.get(preset, {}).get("how", "").startswith("a finished run") or (preset == "full" and f):
                continue  # a finished run beats a rate
            row[preset] = {"seconds": round(float(r["seconds"]), 1), "how": r["how"]}
            if "accelerator_seconds" in r:
                row[preset]["accelerator_seconds"] = round(float(r["accelerator_seconds"]), 1)
                row[preset]["flops"] = float(f"{r['flops']:.3g}")
        same = exp.get_config(name, "full").to_dict() == exp.get_config(name, "quick").to_dict()
        if same and "quick" in row:
            row["full"] = {**row["quick"], "how": row["quick"]["how"] + "; the full preset is the quick one"}
        out[name] = row
    doc = {"machine": machine_name, "date": date, "commit": commit, "experiments": out}
    if rates and "assumed_accelerator_flops" in rates:
        doc["assumed_accelerator_flops"] = rates["assumed_accelerator_flops"]
    return doc


def write_table(doc: Mapping[str, Any], path: pathlib.Path = TABLE_PATH) -> None:
    text = ('"""Measured wall seconds of every experiment\'s presets (see nnbasics/runs/estimate.py).\n\n'
            "Generated by `python -m nnbasics.runs.estimate --write`; do not edit by hand.\n\"\"\"\n\n"
            f"MEASURED = {pprint.pformat(dict(doc), width=120, sort_dicts=False)}\n")
    path.write_text(text, encoding="utf-8")


def full_preset_table(claims_path: str | pathlib.Path, reasons: Mapping[str, str] | None = None) -> str:
    """The README's full-preset table (Markdown): claims and times of the finished full runs in a
    reproduce root's claims.json, and for every other experiment "not run here" with its estimate."""
    from nnbasics.runs import experiment as exp

    path = pathlib.Path(claims_path)
    done = {r["experiment"]: r for r in json.loads(path.read_text(encoding="utf-8"))["experiments"]} \
        if path.exists() else {}
    rows = ["| experiment | full preset: claims pass | CPU time | wall time | machine |", "|---|---|---|---|---|"]
    for name in exp.experiment_names():
        r = done.get(name)
        if r and r.get("preset") == "full" and not r.get("error"):
            ok, n = sum(c["verdict"] == "pass" for c in r["claims"]), len(r["claims"])
            v = r.get("versions", {})
            where = f"{v.get('cpus', '?')}-core CPU ({v.get('cpu_flags', '?')}), jax {v.get('jax', '?')}"
            rows.append(f"| {name} | {ok} of {n} | {format_duration(r.get('cpu_seconds'))} | "
                        f"{format_duration(r['seconds'])} | {where} |")
        else:
            e = estimate(name, "full") or {}
            tflops = table().get("assumed_accelerator_flops", 0) / 1e12
            acc = (f"; on a GPU {format_duration(e['accelerator_seconds'])} from its FLOPs at an assumed {tflops:g} TFLOP/s"
                   if e.get("accelerator_seconds") else "")
            why = (reasons or {}).get(name, "")
            rows.append(f"| {name} | not run here{': ' + why if why else ''} | estimated "
                        f"{format_duration(e.get('seconds'))}{acc} | | {table()['machine']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import datetime
    import subprocess

    ap = argparse.ArgumentParser(description="Print (or rewrite) the measured time table.")
    ap.add_argument("--write", action="store_true", help=f"rewrite {TABLE_PATH.name} from finished runs")
    ap.add_argument("--quick-root", default="runs", help="comma-separated roots; the first with NAME-quick wins")
    ap.add_argument("--full-root", default="runs-full")
    ap.add_argument("--rates", default=None, help="JSON from python -m experiments.benchmarks.full_preset_rates")
    ap.add_argument("--machine", default=None, help="a description of this machine (default: the table's)")
    ap.add_argument("--full-table", default=None, metavar="CLAIMS_JSON",
                    help="print the README's full-preset table from a full reproduction's claims.json")
    args = ap.parse_args(argv)
    if args.full_table:
        print(full_preset_table(args.full_table))
        return 0
    if args.write:
        rates = json.loads(pathlib.Path(args.rates).read_text(encoding="utf-8")) if args.rates else None
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        old = table()
        doc = build_table(args.quick_root, args.full_root, rates, old, args.machine or old["machine"],
                          datetime.date.today().isoformat(), commit or old.get("commit", "?"))
        write_table(doc)
        import importlib

        from nnbasics.runs import measured_times

        importlib.reload(measured_times)
    from nnbasics.runs import experiment as exp

    for name in exp.experiment_names():
        print(f"{name:<20} quick {format_duration(seconds(name, 'quick')):>8}   full {format_duration(seconds(name, 'full')):>8}")
    print(f"({machine()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
