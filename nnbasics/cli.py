"""The `nnbasics` command.

    nnbasics list                 (with each experiment's estimated time, quick and full)
    nnbasics run EXPERIMENT [--quick] [--workdir DIR] [--force] [--quiet] [--config.KEY=VALUE ...]
    nnbasics reproduce [--quick] [--only a,b] [--root runs]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import warnings
from typing import Any, Mapping, Sequence

from nnbasics.progress import set_quiet


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    rest, overrides = [], []
    it = iter(argv)
    for a in it:
        if a.startswith("--config.") or a.startswith("config."):
            if "=" not in a:  # "--config.key value"
                try:
                    a = f"{a}={next(it)}"
                except StopIteration:
                    pass
            overrides.append(a)
        else:
            rest.append(a)
    return rest, overrides


def _join_shard_value(argv: list[str]) -> list[str]:
    """`--shard -1/2` as `--shard=-1/2`: argparse would take a value that starts with '-' for an option and
    say "expected one argument"; joined, parse_shard names what is wrong with it."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--shard" and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--":
            out.append(f"--shard={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _preset(args: argparse.Namespace) -> str:
    if getattr(args, "smoke", False):
        return "smoke"
    if getattr(args, "full", False):
        return "full"
    if getattr(args, "paper", False):
        return "paper"
    return "quick" if getattr(args, "quick", False) else getattr(args, "default_preset", "full")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnbasics",
        description="Neural network basics and CNNs in JAX/Flax: run the lecture's experiments.",
        epilog="Config values are overridden with --config.KEY=VALUE (e.g. --config.optimizer.learning_rate=0.05).",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.add_argument("--cpu-threads", type=_cpu_threads, default=None, metavar="N",
                   help="XLA:CPU runs each operation on N threads (default: one per core; 1 is faster for the "
                        "small MNIST-1D models and gives the numbers of a one-core machine); compiling still "
                        "uses every core. Workers of `reproduce --jobs N` (N > 1) run on one core each")
    p.add_argument("--cpu-devices", type=_cpu_devices, default=None, metavar="N",
                   help="the CPU shows N devices (XLA's --xla_force_host_platform_device_count) and each run's "
                        "members (seeds x settings) are split over them, every device training its own at "
                        "once; with --onednn on a multi-core CPU the way to keep every core busy on small "
                        "nets (see the README's speed section); 8 tries what an 8-device machine runs")
    p.add_argument("--onednn", action="store_true",
                   help="CPU convolutions on oneDNN (the optional extra: pip install -e \".[onednn]\" and a C++ "
                        "compiler; the same as NNBASICS_ONEDNN=1, also for `reproduce --jobs` workers); refused "
                        "before anything runs when the extra cannot be built or loaded")
    g = p.add_argument_group("multi-host (JAX's distributed runtime; automatic under SLURM / TPU pods)")
    g.add_argument("--multihost", action="store_true", help="call jax.distributed.initialize() first")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list experiments, models and data sets")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("models", help="table of every model: input shape, parameters, multiply-adds, receptive field")
    s.add_argument("--json", action="store_true", help="a list of {name, input_shape, params, macs, ...}")
    s.add_argument("names", nargs="*", help="only these models")

    s = sub.add_parser("run", help="run one experiment")
    s.add_argument("experiment")
    _presets(s)
    s.add_argument("--workdir", help="where results go (default runs/EXPERIMENT[-quick])")
    s.add_argument("--force", action="store_true", help="run again even if a finished run is in the workdir")
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint (automatic when one is found)")
    s.add_argument("--verbose", action="store_true", help="print every claim with its measurements")
    s.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="checkpoint training every N steps (0: at the end of each training run)")
    s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    _seed_offset(s)

    s = sub.add_parser("reproduce", help="run every experiment and write one report")
    _presets(s, default="quick")
    s.add_argument("--only", default=None, help="comma-separated experiment names (all when left out)")
    s.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                   help="run N experiments at once, each in its own process on its share of the cores (0, the "
                        "default on a CPU: one per core; 1: one at a time in this process on all cores)")
    s.add_argument("--verbose", action="store_true", help="print every claim with its measurements")
    s.add_argument("--root", default="runs", help="directory of the run workdirs and the report")
    s.add_argument("--force", action="store_true")
    _seed_offset(s)
    s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    s = sub.add_parser("sweep", help="run an experiment's named grid of config overrides")
    s.add_argument("experiment")
    s.add_argument("--verbose", action="store_true", help="print every claim with its measurements")
    s.add_argument("--sweep", required=True, help="the sweep's name (`nnbasics list` names each experiment's sweeps)")
    s.add_argument("--shard", default=None, help="I/N: run every N-th point from point I (one machine of N)")
    _presets(s)
    s.add_argument("--root", default="runs")
    s.add_argument("--force", action="store_true")
    s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    _add_result_commands(sub)
    return p


def _jobs(text: str) -> int:
    """--jobs N: an integer >= 0 (0: one worker per core this process may use)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0 or n > 1024:
        raise argparse.ArgumentTypeError(f"--jobs wants a whole number of workers from 0 (one per core) to 1024, got {text!r}")
    if n == 0:
        from nnbasics.runs.jobs import available_cores

        n = len(available_cores())
    return n


def _cpu_threads(text: str) -> int:
    """--cpu-threads N: 1 to the number of cores this process may use."""
    from nnbasics.runs.jobs import available_cores

    cores = len(available_cores())
    return _whole_number("--cpu-threads", text, cores, f"{cores} (the cores this process may use)")


def _cpu_devices(text: str) -> int:
    """--cpu-devices N: a whole number from 1 to 1024."""
    return _whole_number("--cpu-devices", text, 1024, "1024")


def _whole_number(option: str, text: str, most: int, most_text: str) -> int:
    """An option's value as a whole number from 1 to `most`, else argparse's error naming what is valid."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise argparse.ArgumentTypeError(f"{option} wants a whole number from 1 to {most_text}, got {text!r}")
    return n


def _presets(sp: argparse.ArgumentParser, default: str = "full") -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the small preset (minutes on a 2-core CPU)")
    g.add_argument("--full", action="store_true", help="the full preset")
    g.add_argument("--smoke", action="store_true", help="a seconds-long preset (for tests)")
    g.add_argument("--paper", action="store_true",
                   help="the paper's own scale, for an accelerator (the full preset where an experiment has none)")
    sp.set_defaults(default_preset=default)


def _seed_offset(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--seed-offset", type=int, default=0, metavar="K",
                    help="held-out seeds: add K to every seed of every config (workdirs NAME-quick-seedK)")


def _add_result_commands(sub: Any) -> None:
    """The commands that read finished runs: collect, readme, report, config."""
    s = sub.add_parser("collect", help="merge the finished runs of a sweep directory into one table and figure")
    s.add_argument("directory")

    s = sub.add_parser("readme", help="rewrite the README's results table and figures, docs/results.md and the "
                                      "robustness table from a reproduce run")
    s.add_argument("--root", default="runs", help="the reproduce directory (holding claims.json)")
    s.add_argument("--readme", default="README.md")
    s.add_argument("--force", action="store_true", help="write even if the run covers fewer experiments than reproduce runs")
    s.add_argument("--also", nargs="*", default=[], metavar="DIR",
                   help="more reproduce roots (e.g. one run pinned to one core) for the robustness table")

    s = sub.add_parser("report", help="recompute every verdict and report under a directory from the stored "
                                      "measurements with today's thresholds (no training)")
    s.add_argument("--root", default="runs", help="a reproduce directory or one run's workdir")

    s = sub.add_parser("config", help="print an experiment's config (after overrides) as JSON")
    s.add_argument("experiment")
    _presets(s)
    _seed_offset(s)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    rest = _join_shard_value(rest)
    parser = build_parser()
    args = parser.parse_args(rest)
    try:
        _start(args)
    except ValueError as e:  # --cpu-devices against XLA_FLAGS
        parser.error(str(e))
    except RuntimeError as e:  # JAX_PLATFORMS naming a backend this machine lacks, a coordinator not reached, ...
        print(f"nnbasics: error: JAX could not start: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    if args.onednn:
        from nnbasics.nn import onednn

        if not onednn.load(warn=False):
            parser.error(f"--onednn: the oneDNN extra cannot be used here ({shorten(onednn.error() or '')}); "
                         "install it with pip install -e \".[onednn]\" (needs g++), or leave --onednn out")
        os.environ["NNBASICS_ONEDNN"] = "1"  # read by nnbasics.nn.conv, inherited by `reproduce --jobs` workers
    from nnbasics.config import ConfigError
    from nnbasics.engine.checkpoint import CheckpointMismatch
    from nnbasics.engine.interrupt import TrainingInterrupted
    from nnbasics.registry import UnknownNameError
    from nnbasics.runs import experiment as exp
    from nnbasics.runs.workdir import WorkdirBusy, WorkdirUnusable

    if overrides and args.command not in ("run", "reproduce", "config", "sweep"):
        parser.error(f"--config overrides are only valid with run, reproduce, sweep and config, got {overrides}")
    try:
        return COMMANDS[args.command](args, overrides)
    except (UnknownNameError, ConfigError, exp.WorkdirConflict, CheckpointMismatch, FileNotFoundError,
            WorkdirUnusable, WorkdirBusy) as e:
        print(f"nnbasics: error: {shorten(str(e))}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        _abort_on_next_interrupt()
        print(f"\nnnbasics: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (loading, compiling, analysis): nothing to checkpoint
        _abort_on_next_interrupt()
        print("\nnnbasics: interrupted; finished results are kept, run the same command again to continue",
              file=sys.stderr)
        return 130
    except FloatingPointError as e:  # TrainingDiverged
        print(f"nnbasics: training diverged: {e}", file=sys.stderr)
        return 3
    except RuntimeError as e:
        if "Unable to initialize backend" not in str(e):  # a bug: its traceback is worth seeing
            raise
        print(f"nnbasics: error: JAX could not start: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


def shorten(message: str, limit: int = 300) -> str:
    """`message` with every run of more than `limit` characters without a space (a pasted 100,000-character
    value) cut to its start, an ellipsis and its length, so an error stays one readable line."""
    import re

    return re.sub(r"\S{%d,}" % (limit + 1), lambda m: f"{m.group(0)[:limit // 3]}... ({len(m.group(0)):,} characters)",
                  message)


_python_formatwarning = warnings.formatwarning


_OWN_MODULES = r"(nnbasics|experiments|__main__)(\..*)?$"  # the command's own code (__main__: `python -m nnbasics.cli`)
_OWN_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d) + os.sep
                  for d in ("nnbasics", "experiments"))


def _own_warning(category: type, filename: str) -> bool:
    """A warning of the project: its category is defined in nnbasics (a damaged cache or checkpoint set aside),
    or it is a UserWarning issued from the project's code (metrics rows rebuilt, a damaged combined report
    rebuilt, figures missing, oneDNN or thread pinning unavailable)."""
    return (getattr(category, "__module__", "").startswith("nnbasics")
            or (issubclass(category, UserWarning) and os.path.abspath(filename).startswith(_OWN_DIRS)))


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """nnbasics's own warnings (a damaged cache or checkpoint set aside, ...) as one line a user reads,
    without the source line Python shows; every other warning as Python formats it."""
    if _own_warning(category, filename):
        return f"nnbasics: warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def _own_warnings_always_show() -> None:
    """The project's own warnings say what was damaged and repaired (or set aside) on the user's behalf: they
    show, once each, whatever PYTHONWARNINGS or -W say (`ignore`, a common setting, hid them; `error` would
    turn a repaired cache into a traceback). Other libraries' warnings keep the user's filters. (By where they
    are issued from: importing the warnings' classes here would load the engine for every command.)"""
    warnings.filterwarnings("default", category=UserWarning, module=_OWN_MODULES)


def _start(args: argparse.Namespace) -> None:
    """Quiet mode, (with --cpu-devices) the CPU's device count, the compilation cache, (with
    --multihost/--coordinator) JAX's distributed runtime and (with --cpu-threads) the size of XLA's CPU
    thread pools."""
    set_quiet(args.quiet)
    warnings.formatwarning = _format_warning
    _own_warnings_always_show()
    from nnbasics.threads import patient_collectives, set_cpu_devices

    if args.cpu_devices is not None:
        set_cpu_devices(args.cpu_devices)  # before JAX starts; a contradicting XLA_FLAGS: ValueError

    patient_collectives()  # several simulated CPU devices: collectives wait for a slow device, not abort
    from nnbasics import enable_compilation_cache

    enable_compilation_cache()
    if args.multihost or args.coordinator:
        from nnbasics.engine.parallel import initialize_distributed

        initialize_distributed(True, args.coordinator, args.num_processes, args.process_id)
        if args.process_id not in (None, 0):
            set_quiet(True)
    if args.cpu_threads is not None:
        from nnbasics.threads import set_cpu_threads

        set_cpu_threads(args.cpu_threads)


def _all_pass(results: Sequence[Mapping[str, Any]]) -> int:
    """The exit status of a command that judged claims: 0 when every claim passes, else 1."""
    return 0 if all(c["verdict"] == "pass" for r in results for c in r["claims"]) else 1


def _cmd_list(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    return _list(args.json)


def _cmd_models(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.models import MODELS, model_names
    from nnbasics.runs.models_table import models_table

    for n in args.names:
        if n not in model_names():
            MODELS.get(n)  # raises with the closest names
    print(models_table(as_json=args.json, names=args.names or None))
    return 0


def _cmd_config(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.runs import experiment as exp

    cfg = exp.get_config(args.experiment, _preset(args), overrides, args.seed_offset)
    print(json.dumps(cfg.to_dict(), indent=2, default=str))
    return 0


def graceful_interrupt():
    """The stop-signal handler of a training command (`nnbasics.engine.interrupt`): installed here, by
    the command line, never by the library's `fit`."""
    from nnbasics.engine.interrupt import graceful_interrupt as handler

    return handler("training")


def _cmd_run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.config import ConfigError
    from nnbasics.runs import experiment as exp

    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    _announce_run(args, overrides)
    with graceful_interrupt():  # Ctrl-C / SIGTERM: the training loop checkpoints after its chunk, then stops
        res = exp.run_experiment(args.experiment, _preset(args), overrides, workdir=args.workdir, force=args.force,
                                 resume=args.resume, checkpoint_every=args.checkpoint_every, seed_offset=args.seed_offset)
    wd = args.workdir or exp.default_workdir(args.experiment, _preset(args), seed_offset=args.seed_offset)
    _print_claims([res], args.verbose)
    print("\n" + exp.terminal_summary([res], os.path.join(wd, "report.md")))
    return _all_pass([res])


def _cmd_sweep(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.runs import experiment as exp
    from nnbasics.runs import sweep as sweep_lib

    with graceful_interrupt():
        out, results = sweep_lib.run_sweep(args.experiment, args.sweep, _preset(args), args.shard, overrides,
                                           args.root, args.force)
    _print_claims(results, args.verbose)
    print("\n" + exp.terminal_summary(results))
    print(f"sweep directory: {out} (merge with: nnbasics collect {out})")
    return _all_pass(results)


def _reproduction_results(root: str, force: bool) -> tuple[str, list[dict[str, Any]]]:
    """The claims of a whole reproduction under `root`, refusing a partial one (the README's results
    would lose experiments) unless forced."""
    from nnbasics.runs import experiment as exp

    path = os.path.join(root, "claims.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `nnbasics reproduce --quick --root {root}` first")
    results = exp.read_claims_doc(pathlib.Path(path)).get("experiments")
    if results is None:
        raise exp.WorkdirConflict(f"{path} holds one run, not a reproduction: give --root the reproduce directory")
    expected = [n for n in exp.experiment_names() if exp.experiment(n).reproduce]
    missing = [n for n in expected if n not in {r["experiment"] for r in results}]
    if missing and not force:
        raise exp.WorkdirConflict(
            f"{path} covers {len(results)} of the {len(expected)} experiments (missing: {', '.join(missing)}); "
            f"the README's results would lose them. Run `nnbasics reproduce --quick --root {root}` first, "
            "or pass --force")
    return path, results


def _cmd_readme(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.config import ConfigError
    from nnbasics.runs import report as rep
    from nnbasics.runs.report import (
        ROBUST_BEGIN,
        copy_featured_figures,
        results_page,
        robustness_table,
        update_readme,
        update_robustness,
    )
    from nnbasics.runs.workdir import atomic_write_text, read_json

    path, results = _reproduction_results(args.root, args.force)
    try:
        with open(args.readme, encoding="utf-8") as f:
            text = f.read()
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise ConfigError(f"cannot read the README {args.readme}: {getattr(e, 'strerror', None) or e}; "
                          "give --readme the README.md to update") from None
    problems = [p for p in (rep.markers_problem(text, rep.README_BEGIN, rep.README_END),
                            rep.markers_problem(text, ROBUST_BEGIN, rep.ROBUST_END)
                            if ROBUST_BEGIN in text or rep.ROBUST_END in text else None) if p]
    if problems:  # checked before any figure is copied: nothing is written
        raise ConfigError(f"the README {args.readme} {'; it '.join(problems)}, so there is nowhere to write the results: "
                          f"add a line {rep.README_BEGIN} and a line {rep.README_END} below it where the table goes "
                          "(README.md of the repository has them), or give --readme that file")
    here = os.path.dirname(os.path.abspath(args.readme))
    figures = copy_featured_figures(results, args.root, here)
    text = update_readme(text, results, figures=figures)
    runs = [(f"`{os.path.join(d, p.name)}`", read_json(p)) for d in [args.root, *args.also]
            for p in sorted(pathlib.Path(d).glob("claims*.json"), key=lambda q: (len(q.name), q.name))]
    # the robustness table: in the README, or in docs/robustness.md beside it
    robust = os.path.join(here, "docs", "robustness.md")
    robust_text = None
    if ROBUST_BEGIN in text:
        text = update_robustness(text, robustness_table(runs))
    elif os.path.exists(robust):
        with open(robust, encoding="utf-8") as f:
            robust_text = f.read()
        if ROBUST_BEGIN in robust_text:
            robust_text = update_robustness(robust_text, robustness_table(runs))
    atomic_write_text(args.readme, text)
    page = os.path.join(here, "docs", "results.md")
    os.makedirs(os.path.dirname(page), exist_ok=True)
    atomic_write_text(page, results_page(results))
    if robust_text is not None:
        atomic_write_text(robust, robust_text)
    print(f"updated the results table, {len(figures)} figures and {len(runs)} robustness rows in {args.readme}, and "
          f"{page}, from {path}")
    return 0


def _cmd_collect(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.runs import sweep as sweep_lib

    path, rows = sweep_lib.collect(args.directory)
    print(path.read_text())
    return 0


def _cmd_reproduce(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.config import ConfigError
    from nnbasics.runs import experiment as exp

    only = [o.strip() for o in args.only.split(",")] if args.only is not None else None  # `--only ''`: refused
    distributed = bool(args.multihost or args.coordinator)
    if args.jobs is not None and args.jobs > 1 and distributed:
        raise ConfigError("--jobs runs experiments in local worker processes; it cannot be combined with --multihost")
    jobs = args.jobs
    if jobs is None:  # one worker per core on a CPU; on a GPU/TPU (or across hosts) one experiment at a time
        from nnbasics.runs import estimate
        from nnbasics.runs.jobs import available_cores

        jobs = len(available_cores()) if estimate.backend() == "cpu" and not distributed else 1
    results, path = exp.reproduce(_preset(args), only, args.root, args.force, overrides, args.seed_offset, jobs)
    _print_claims(results, args.verbose)
    print("\n" + exp.terminal_summary(results, path))
    return _all_pass(results)


def _cmd_report(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from nnbasics.runs import experiment as exp

    done = exp.rejudge_root(args.root)
    if not done:
        raise FileNotFoundError(f"no claims.json under {args.root}: nothing to recompute")
    top = pathlib.Path(args.root) / "claims.json"  # the reproduction's combined document, if any
    combined = [res for path, res in done if path == top]
    results = combined[0] if combined else [r for _, res in done for r in res]
    print(f"recomputed the verdicts of {len(done)} claims files under {args.root}")
    print(exp.terminal_summary(results))
    return _all_pass(results)


COMMANDS = {"list": _cmd_list, "models": _cmd_models, "config": _cmd_config, "run": _cmd_run, "sweep": _cmd_sweep,
            "readme": _cmd_readme, "collect": _cmd_collect, "reproduce": _cmd_reproduce, "report": _cmd_report}


def _announce_run(args: argparse.Namespace, overrides: Sequence[str]) -> None:
    """The estimated duration before a run starts (and a warning naming --quick for a long one);
    nothing when a finished run in the workdir will be reused."""
    from nnbasics.runs import estimate
    from nnbasics.runs import experiment as exp

    preset = _preset(args)
    exp.get_config(args.experiment, preset, overrides, args.seed_offset)  # an unknown name or bad value fails first
    wd = args.workdir or exp.default_workdir(args.experiment, preset, seed_offset=args.seed_offset)
    if os.path.exists(os.path.join(wd, "claims.json")) and not args.force:
        return
    estimate.announce(estimate.run_lines(args.experiment, preset, estimate.backend(), overrides))


def _abort_on_next_interrupt() -> None:
    """The run is stopping: another Ctrl-C (say during JAX's teardown at exit) ends it at once with one
    line, not a KeyboardInterrupt traceback."""
    import signal
    import threading

    from nnbasics.engine.interrupt import abort_now

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, lambda signum, frame: abort_now("the run"))


def _print_claims(results, verbose: bool = False) -> None:
    """One line per experiment (claims passed, seconds); with `verbose` every claim and its measurements."""
    from nnbasics.runs.report import measured_text

    if not verbose:
        width = max((len(r["experiment"]) for r in results), default=0)
        for r in results:
            ok = sum(c["verdict"] == "pass" for c in r["claims"])
            print(f"{r['experiment']:<{width}}  {ok:>2}/{len(r['claims'])} claims pass  {float(r.get('seconds', 0)):6.0f} s")
        return
    for r in results:
        for c in r["claims"]:
            print(f"[{c['verdict'].upper()}] {r['experiment']}/{c['id']}: {c['claim']} | expected {c['expected']} "
                  f"| {measured_text(c['measured'])}")


def _list(as_json: bool) -> int:
    from nnbasics.data import dataset_names
    from nnbasics.models import model_names
    from nnbasics.runs import estimate
    from nnbasics.runs import experiment as exp
    from nnbasics.runs.sweep import sweep_names

    names = exp.experiment_names()
    info = {
        "experiments": {n: exp.describe(n) for n in names},
        "sweeps": {n: sweep_names(n) for n in names},
        # paper: None where the experiment has no scale of its own beyond full (its paper preset is full)
        "estimated_seconds": {n: {p: estimate.seconds(n, p) for p in ("quick", "full", "paper")} for n in names},
        "estimates_measured_on": estimate.machine(),
        "models": model_names(),
        "datasets": dataset_names(),
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"experiments (estimated time of the quick, full and paper presets on a CPU: {estimate.machine()}; "
          "paper '= full': no scale beyond full):")
    width = max((len(n) for n in names), default=0)
    print(f"  {'':<{width}}  {'quick':>7}  {'full':>7}  {'paper':>7}")
    for n, d in info["experiments"].items():
        sec = info["estimated_seconds"][n]
        q, f = (estimate.format_duration(sec[p]) for p in ("quick", "full"))
        pp = estimate.format_duration(sec["paper"]) if sec["paper"] is not None else "= full"
        print(f"  {n:<{width}}  {q:>7}  {f:>7}  {pp:>7}  {d}")
    print("sweeps (nnbasics sweep NAME --sweep SWEEP; points in parentheses):")
    for n, sw in info["sweeps"].items():
        if sw:
            print(f"  {n:<{width}}  " + ", ".join(f"{k} ({v})" for k, v in sw.items()))
    print("models:\n  " + ", ".join(info["models"]))
    print("data sets:\n  " + ", ".join(info["datasets"]))
    return 0


def experiment_main(module_file: str) -> None:
    """`python -m experiments.NAME [--quick] ...` is `nnbasics run NAME ...`."""
    name = os.path.splitext(os.path.basename(module_file))[0]
    sys.exit(main(["run", name, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
