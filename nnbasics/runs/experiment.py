"""Finding and running experiments: the work-directory contract and run reuse.

An experiment is a module `experiments/NAME.py` that keeps the contract of
`nnbasics.runs.contract` (get_config, run, THRESHOLDS; optionally TOPIC, ORDER, REPRODUCE, SWEEPS,
validate), checked by `contract.check_experiment` when it is loaded. Presets: "smoke" (seconds, the
tests), "quick" (minutes), "full" (the default of `run`) and "paper" (the paper's own scale, for an
accelerator; an experiment without one returns its full config). This module imports
`experiments` by name at run time only; the library itself never depends
on any experiment.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import os
import pathlib
import pkgutil
import re
import shutil
import sys
import time
from types import ModuleType
from typing import Any, Iterable, Iterator, Mapping

import ml_collections

from nnbasics import config as config_lib
from nnbasics.progress import log, quieted
from nnbasics.registry import UnknownNameError, unknown_name_message
from nnbasics.runs import contract, report
from nnbasics.runs import workdir as workdir_lib
from nnbasics.runs.workdir import default_workdir
from nnbasics.threads import cpu_threads

PRESETS = ("full", "quick", "smoke", "paper")
MAX_SEED = 2**31 - 1  # numpy and JAX seeds both take it
MAX_STEPS = config_lib.MAX_STEPS
EXPERIMENTS_PACKAGE = "experiments"


def experiment_names() -> list[str]:
    """Every experiment module in the `experiments` package, in lecture order."""
    pkg = importlib.import_module(EXPERIMENTS_PACKAGE)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg and not m.name.startswith("_")]
    mods = {n: importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{n}") for n in names}
    specs = [contract.check_experiment(m, n) for n, m in mods.items() if contract.is_experiment_module(m)]
    return [e.name for e in sorted(specs, key=lambda e: (e.order, e.name))]


def load_experiment(name: str) -> ModuleType:
    return experiment(name).module


def experiment(name: str) -> contract.Experiment:
    """The experiment `name` as its checked contract (get_config, run, thresholds, topic, ...)."""
    names = experiment_names()
    if name not in names:
        raise UnknownNameError(unknown_name_message("experiment", name, names))
    return contract.check_experiment(importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}"), name)


def describe(name: str) -> str:
    return experiment(name).description


def get_config(name: str, preset: str = "full", overrides: Iterable[str] = (), seed_offset: int = 0
               ) -> ml_collections.ConfigDict:
    """The experiment's config for `preset` with command-line overrides applied, every seed shifted
    by `seed_offset` (held-out seeds), and checked."""
    if preset not in PRESETS:
        raise config_lib.ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    mod = load_experiment(name)
    cfg = mod.get_config(preset)
    cfg = config_lib.apply_overrides(cfg, overrides)
    if seed_offset:
        shift_seeds(cfg, seed_offset)
    validate(name, cfg)
    return cfg


def is_seed_key(key: str) -> bool:
    """`seed`, `seeds`, `data_seed`, `init_seeds`, ...: the keys `--seed-offset` shifts."""
    return key in ("seed", "seeds") or key.endswith("_seed") or key.endswith("_seeds")


def shift_seeds(cfg: ml_collections.ConfigDict, offset: int) -> list[str]:
    """Add `offset` to every seed key of `cfg` (in place); returns the dotted keys shifted. An offset
    that would move a seed past MAX_SEED is refused naming the key and the valid offsets."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise config_lib.ConfigError(f"--seed-offset must be a non-negative integer, got {offset!r}")
    leaves = [(node, k, path, v) for node, k, path, v in config_leaves(cfg) if is_seed_key(k) and v is not None]
    largest = {path: max([v] if isinstance(v, int) else [x for x in v if isinstance(x, int)], default=0)
               for _, _, path, v in leaves}
    if offset and largest and max(largest.values()) + offset > MAX_SEED:
        path = max(largest, key=largest.get)
        raise config_lib.ConfigError(
            f"--seed-offset {offset} moves config.{path} (largest seed {largest[path]}) past the largest seed, "
            f"{MAX_SEED}; valid offsets here: 0 to {MAX_SEED - largest[path]}")
    for node, k, path, v in leaves:
        with node.unlocked():
            node[k] = int(v) + offset if isinstance(v, int) else tuple(int(s) + offset for s in v)
    return [path for _, _, path, _ in leaves]


def config_leaves(cfg: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[Any, str, str, Any]]:
    """(parent node, key, dotted path, value) of every value of `cfg` that is not itself a ConfigDict."""
    for k in list(cfg.keys()):
        v = cfg[k]
        if isinstance(v, ml_collections.ConfigDict):
            yield from config_leaves(v, f"{prefix}{k}.")
        else:
            yield cfg, k, prefix + k, v


def thresholds_of(name: str) -> Mapping[str, Any]:
    """The experiment's THRESHOLDS (code, not config): {check name: claims.Threshold}."""
    return experiment(name).thresholds


def judge(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The claims.json document with every verdict recomputed from its stored measurements and
    today's thresholds (no training)."""
    from nnbasics.runs.claims import rejudge

    try:
        th = thresholds_of(name)
    except UnknownNameError:
        th = {}
    return {**result, "claims": [rejudge(c, th) for c in result["claims"]]}


def _check_thresholds(name: str, claims: Iterable[Mapping[str, Any]]) -> None:
    """Every check must use a threshold of the experiment's THRESHOLDS, unchanged."""
    th = thresholds_of(name)
    for c in claims:
        for k in c.get("checks", []):
            t = th.get(k["name"])
            if t is None or t.op != k["op"] or float(t.value) != k["threshold"]:
                raise TypeError(f"experiments.{name}: claim {c['id']!r} checks {k['name']!r} against {k['op']} "
                                f"{k['threshold']}, which is not THRESHOLDS[{k['name']!r}] ({t}); thresholds live in "
                                "the experiment's THRESHOLDS")


def validate(name: str, cfg: ml_collections.ConfigDict) -> None:
    """Common checks (names in registries, positive rates and sizes, seeds) and the experiment's own."""
    from nnbasics.data import check_dataset
    from nnbasics.engine import optim
    from nnbasics.models import model_names

    def walk(node: Any, path: str = "") -> None:
        for k in node.keys():
            v = node[k]
            p = f"{path}{k}"
            if isinstance(v, ml_collections.ConfigDict):
                if k == "optimizer" or k.endswith("optimizer"):
                    try:
                        optim.validate(v.to_dict())
                    except (ValueError, KeyError) as e:
                        raise config_lib.ConfigError(f"config.{p}: {e}") from e
                walk(v, p + ".")
            elif k in ("learning_rate", "learning_rates") and v is not None:
                rates = list(v) if isinstance(v, (tuple, list)) else [v]
                if not rates or not all(isinstance(r, (int, float)) and 0 < float(r) < math.inf for r in rates):
                    raise config_lib.ConfigError(f"config.{p} must be finite and > 0, got {v}")
            elif k in ("batch_size", "steps", "eval_every") and v is not None and not 0 < int(v) <= MAX_STEPS:
                raise config_lib.ConfigError(f"config.{p} must be an integer between 1 and {MAX_STEPS:,}, got {v}")
            elif is_seed_key(k) and v is not None:
                seeds = list(v) if isinstance(v, (tuple, list)) else [v]
                if not seeds:
                    raise config_lib.ConfigError(f"config.{p} must be a non-empty list of integers, e.g. '(0, 1)'")
                if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds):
                    raise config_lib.ConfigError(f"config.{p} must hold integers between 0 and {MAX_SEED}, got {v}")
                if len(set(seeds)) != len(seeds):
                    raise config_lib.ConfigError(f"config.{p} must hold distinct seeds (a repeated seed repeats a run), got {v}")
            elif (k == "models" or k.endswith("_models")) and isinstance(v, (tuple, list)) and len(set(map(str, v))) != len(v):
                raise config_lib.ConfigError(f"config.{p} names a model twice (its runs would share one name), got {v}")
            elif k in ("data", "dataset") and isinstance(v, str):
                try:
                    check_dataset(v)
                except UnknownNameError as e:
                    raise config_lib.ConfigError(f"config.{p}: {e}") from e
            elif k == "model" and isinstance(v, str):
                if v not in model_names():
                    raise config_lib.ConfigError(f"config.{p}: {unknown_name_message('model', v, model_names())}")

    walk(cfg)
    _check_batch_fits_data(cfg)
    own = experiment(name).validate
    if own is not None:
        try:
            own(cfg)
        except (ValueError, KeyError) as e:
            if isinstance(e, config_lib.ConfigError):
                raise
            raise config_lib.ConfigError(str(e)) from e


def _check_batch_fits_data(cfg: ml_collections.ConfigDict) -> None:
    """A batch larger than the training set is an error (checked on the loaded data set)."""
    if not isinstance(cfg.get("data"), str) or cfg.get("batch_size") is None:
        return
    from nnbasics.data import load_dataset

    kwargs = cfg.get("data_kwargs")
    data = load_dataset(cfg.data, **(kwargs.to_dict() if kwargs is not None else {}))
    n = data.num_train
    if cfg.get("num_train") is not None:
        n = min(n, int(cfg.num_train))
    sizes = cfg.batch_size if isinstance(cfg.batch_size, (tuple, list)) else (cfg.batch_size,)
    for b in sizes:
        if int(b) > n:
            raise config_lib.ConfigError(
                f"config.batch_size={b} is larger than the training set of {cfg.data!r} ({n} examples); "
                f"use a batch size between 1 and {n}"
            )


class WorkdirConflict(RuntimeError):
    """The work directory holds a finished run of a different config."""


def config_json(cfg: ml_collections.ConfigDict) -> Any:
    """The config as config.json stores it (tuples as lists)."""
    return json.loads(workdir_lib.to_json(cfg.to_dict()))


def run_experiment(
    name: str,
    preset: str = "full",
    overrides: Iterable[str] = (),
    workdir: str | os.PathLike | None = None,
    force: bool = False,
    config: ml_collections.ConfigDict | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    replace_changed: bool = False,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Run (or reuse) one experiment; returns the claims.json document.

    A finished run with the same config in `workdir` is reused unless `force`. A finished run
    of a different config is never overwritten silently: that needs `force`. With
    `checkpoint_every` (steps; 0 = at the end of each training run) or a `checkpoint_every` key in
    the config, training is checkpointed under workdir/checkpoints; an interrupted run found
    there is resumed automatically (or with `resume`), continuing with exactly the batches and
    metric rows an uninterrupted run would have."""
    mod = load_experiment(name)
    cfg = config if config is not None else get_config(name, preset, overrides, seed_offset)
    if config is not None:
        validate(name, cfg)
    if workdir is not None and not str(workdir).strip():  # Path("") is the current directory: never meant
        raise config_lib.ConfigError("--workdir is empty; give a directory (or leave it out for runs/NAME)")
    wd_path = pathlib.Path(workdir) if workdir is not None else default_workdir(name, preset, seed_offset=seed_offset)
    cfg_json = config_json(cfg)
    if workdir_lib.is_main_process():  # a read-only or full disk fails here, before anything is moved or compiled
        workdir_lib.ensure_writable(wd_path, what=f"the {name} experiment")
        lock = workdir_lib.exclusive(wd_path, what=f"the {name} experiment")
    else:
        lock = contextlib.nullcontext()
    with lock:  # one writer per workdir
        return _run_locked(name, mod, cfg, cfg_json, wd_path, preset, force, resume, checkpoint_every,
                           replace_changed, seed_offset)


def _run_locked(name: str, mod: ModuleType, cfg: ml_collections.ConfigDict, cfg_json: Any, wd_path: pathlib.Path,
                preset: str, force: bool, resume: bool, checkpoint_every: int | None, replace_changed: bool,
                seed_offset: int) -> dict[str, Any]:
    reused, force, resume = _reuse_finished(name, mod, cfg_json, wd_path, force, resume, replace_changed)
    if reused is not None:
        return reused
    resuming = _prepare_workdir(name, cfg_json, wd_path, force, resume)
    wd = workdir_lib.Workdir(wd_path)
    every = checkpoint_every if checkpoint_every is not None else cfg.get("checkpoint_every")
    if every is not None or resuming:
        wd.enable_checkpoints(int(every or 0))
    workdir_lib.atomic_write_json(wd_path / "config.json", cfg_json)
    t0, c0, started = time.perf_counter(), time.process_time(), time.time()  # process time: every thread's CPU s
    try:
        claims = mod.run(cfg, wd)
    except KeyboardInterrupt:  # Ctrl-C between training runs: those that finished without a checkpoint get one
        from nnbasics.engine.loop import checkpoint_finished_runs

        checkpoint_finished_runs(wd)
        raise
    except FileNotFoundError as e:  # a tfds set not prepared: name the config key where this experiment has one
        if "data_dir" in cfg and type(e).__name__ in ("DatasetNotPrepared", "DatasetDamaged"):
            raise type(e)(f"{e} With this experiment: --config.data_dir=DIR.") from None
        raise
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if not isinstance(claims, list) or not all(isinstance(c, Mapping) and "verdict" in c for c in claims):
        raise TypeError(f"experiments.{name}.run must return a list of claims made with nnbasics.runs.claims.claim")
    _check_thresholds(name, claims)
    result = {
        "experiment": name,
        "topic": experiment(name).topic,
        "doc": " ".join((inspect.getdoc(mod) or "").split("\n\n")[0].split()),
        "preset": preset,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "seeds": _seed_count(cfg),
        "started": round(started, 1), "finished": round(time.time(), 1),  # the reproduction's span
        "cores": cpu_threads(),  # XLA:CPU's threads per operation (what the numbers depend on)
        "training": wd.training_summary(),
        "claims": list(claims),
        "figures": list(wd.list_figures()),
        "versions": _versions(),
        "metrics_file": workdir_lib.metrics_digest(wd_path / "metrics.jsonl"),  # to tell a damaged file on reuse
    }
    if seed_offset:
        result["seed_offset"] = seed_offset
    _write_result(wd_path, mod, result)
    return result


def _reuse_finished(name: str, mod: ModuleType, cfg_json: Any, wd_path: pathlib.Path, force: bool, resume: bool,
                    replace_changed: bool) -> tuple[dict[str, Any] | None, bool, bool]:
    """A finished run of the same config in the workdir: its result, re-judged with today's thresholds
    (or resume=True when its metrics are damaged: rebuilt from the checkpoints). A finished run of
    another config: refused, or replaced (force=True) when `replace_changed`. -> (result, force, resume)"""
    claims_path, config_path = wd_path / "claims.json", wd_path / "config.json"
    if not claims_path.exists() or force:
        return None, force, resume
    old_cfg = _read_run_file(config_path, name) if config_path.exists() else None
    if old_cfg == cfg_json:
        old = _read_run_file(claims_path, name)
        if _finished_metrics_damage(name, wd_path, old) is not None:
            return None, force, True  # rebuild the damaged metrics from the checkpoints (no training)
        log(f"{name}: reusing the finished run in {wd_path} (--force to run again)")
        new = judge(name, old)  # today's thresholds on the stored measurements
        if workdir_lib.is_main_process():
            _repair_report(name, mod, wd_path, new, rejudged=new != old)
        return new, force, resume
    if replace_changed:  # reproduce: the experiment's config changed, so its results are stale
        log(f"{name}: the config changed since the finished run in {wd_path}; running again "
            "(the old claims.json is kept as claims.json.<time>.old)")
        return None, True, resume
    raise WorkdirConflict(f"{wd_path} holds a finished run of {name} with a different config; "
                          "choose another --workdir or pass --force to replace it")


def _prepare_workdir(name: str, cfg_json: Any, wd_path: pathlib.Path, force: bool, resume: bool) -> bool:
    """Make the workdir ready: resume an interrupted run of the same config (-> True), or start clean,
    keeping an earlier run's metrics, claims and report as *.old (-> False). Old figures are removed."""
    config_path, ckpt_dir = wd_path / "config.json", wd_path / "checkpoints"
    wd_path.mkdir(parents=True, exist_ok=True)
    interrupted = ckpt_dir.exists() and not (wd_path / "claims.json").exists() and any(ckpt_dir.iterdir())
    resuming = (interrupted or resume) and not force and ckpt_dir.exists()
    if resuming:
        old_cfg = _read_run_file(config_path, name) if config_path.exists() else None
        if old_cfg is not None and old_cfg != cfg_json:
            raise WorkdirConflict(f"{wd_path} holds an interrupted run of {name} with a different config; "
                                  "choose another --workdir or pass --force to start over")
        log(f"{name}: resuming the interrupted run in {wd_path}")
    elif workdir_lib.is_main_process():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for stale in ("metrics.jsonl", "claims.json", "report.md"):
            p = wd_path / stale
            if p.exists():
                os.replace(p, wd_path / f"{stale}.{stamp}.old")
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    if (wd_path / "figures").exists() and workdir_lib.is_main_process():
        shutil.rmtree(wd_path / "figures")
    return resuming


def _read_run_file(path: pathlib.Path, name: str) -> Any:
    """config.json or claims.json of an earlier run; a damaged one is a WorkdirConflict naming it."""
    try:
        doc = workdir_lib.read_json(path)
        if path.name == "claims.json" and not (isinstance(doc, dict) and isinstance(doc.get("claims"), list)):
            raise ValueError("no list of claims in it")
    except (OSError, ValueError, RecursionError) as e:
        raise WorkdirConflict(f"{path} of the earlier {name} run in {path.parent} is damaged ({type(e).__name__}: "
                              f"{str(e)[:120]}); pass --force to run again (the old files are kept as .old), or choose "
                              "another --workdir") from None
    return doc


def _finished_metrics_damage(name: str, wd_path: pathlib.Path, result: Mapping[str, Any]) -> str | None:
    """None if the finished run's metrics.jsonl is intact. Else, with checkpoints to rebuild it from, the
    damaged file is set aside (a log line says where) and the reason returned; without, WorkdirConflict."""
    metrics = wd_path / "metrics.jsonl"
    why = workdir_lib.metrics_damage(metrics, result.get("metrics_file"))
    if why is None:
        return None
    ckpt_dir = wd_path / "checkpoints"
    if not (ckpt_dir.is_dir() and any(ckpt_dir.iterdir())):
        raise WorkdirConflict(f"{metrics} {why}, so the finished run of {name} in {wd_path} cannot be reused as is "
                              "(it has no checkpoints to rebuild the rows from). Pass --force to run it again (the "
                              "damaged file is kept as metrics.jsonl.<time>.old), or put back an intact copy")
    if metrics.exists() and workdir_lib.is_main_process():
        aside = wd_path / f"metrics.jsonl.{time.strftime('%Y%m%d-%H%M%S')}.damaged"
        os.replace(metrics, aside)
        log(f"{name}: {metrics} {why}; kept it as {aside.name} and rebuilding the rows from the checkpoints")
    return why


def _write_result(wd_path: pathlib.Path, mod: ModuleType, result: Mapping[str, Any]) -> None:
    workdir_lib.atomic_write_text(wd_path / "report.md", _report_text(wd_path, mod, result))
    workdir_lib.atomic_write_json(wd_path / "claims.json", result)  # last: its presence marks the run finished


_PNG_HEAD, _PNG_TAIL = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def _figure_intact(path: pathlib.Path) -> bool:
    """A whole PNG file (its signature first, its IEND chunk last): not missing, cut short or garbage."""
    try:
        if not path.is_file() or path.stat().st_size < len(_PNG_HEAD) + 12:
            return False
        with open(path, "rb") as f:
            head = f.read(len(_PNG_HEAD))
            f.seek(-len(_PNG_TAIL), os.SEEK_END)
            return head == _PNG_HEAD and f.read() == _PNG_TAIL
    except OSError:
        return False


def _report_text(wd_path: pathlib.Path, mod: ModuleType, result: Mapping[str, Any]) -> str:
    doc = (inspect.getdoc(mod) or "").split("\n\n")[0]
    figures = list(result.get("figures") or [])
    missing = [f for f in figures if not _figure_intact(wd_path / f)]
    return report.experiment_report(result, figures, doc, missing=missing)


def _repair_report(name: str, mod: ModuleType, wd_path: pathlib.Path, result: Mapping[str, Any], rejudged: bool) -> None:
    """A reused finished run's report.md, written again from its claims.json when it is missing, damaged or
    stale (a re-judged verdict), so the report path printed points at the run's report; figures that are
    missing or damaged are named (a warning and report.md) with how to draw them again."""
    import warnings

    text = _report_text(wd_path, mod, result)
    bad = [f for f in result.get("figures") or [] if not _figure_intact(wd_path / f)]
    if bad:
        warnings.warn(f"{name}: {len(bad)} figure(s) of the finished run in {wd_path} are missing or damaged "
                      f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); the claims are intact and reused. "
                      "Run it again with --force to draw them again", stacklevel=3)
    if rejudged:
        _write_result(wd_path, mod, result)
        return
    path = wd_path / "report.md"
    try:
        current = path.read_text(encoding="utf-8") if path.is_file() and not path.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        if path.is_dir() and not path.is_symlink():
            raise WorkdirConflict(f"{path} is a directory, not the run's report; move it out of the way and run again")
        if path.is_symlink():
            path.unlink()  # never write through a link; the report is written in its place
        log(f"{name}: {path} was {'missing' if current is None and not path.exists() else 'damaged or out of date'}; "
            "wrote it again from claims.json")
        workdir_lib.atomic_write_text(path, text)


def _seed_count(cfg: ml_collections.ConfigDict) -> int:
    """The largest number of seeds any `seeds` key of the config asks for (1 if none)."""
    return max([1, *(len(v) for _, k, _, v in config_leaves(cfg) if is_seed_key(k) and isinstance(v, (tuple, list)))])


def _cpu_flags() -> str:
    """The vector extensions of this CPU that change float rounding in XLA's kernels (avx2, avx512f)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "?"
    return " ".join(x for x in ("avx2", "avx512f") if x in flags) or "no avx2"


def _versions() -> dict[str, str]:
    import platform

    import flax
    import jax
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": str(jax.device_count()),
        "cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu_flags": _cpu_flags(),
        **_onednn_version(),
    }


def _onednn_version() -> dict[str, str]:
    """{"onednn": version} where the run's CPU convolutions ran on the oneDNN extra (switched on and
    loaded: `nnbasics.nn.conv`), else {} (the numbers are XLA's own, as before the extra)."""
    import jax

    from nnbasics.nn import conv

    if jax.default_backend() != "cpu" or not conv.onednn_enabled():
        return {}
    try:
        return {"onednn": conv._onednn.onednn_paths()[2]}
    except conv._onednn.BuildError:  # loaded from the cache, wheels gone since: still oneDNN's numbers
        return {"onednn": "unknown version"}


def reproduce(
    preset: str = "quick",
    only: Iterable[str] | None = None,
    root: str | os.PathLike = "runs",
    force: bool = False,
    overrides: Iterable[str] = (),
    seed_offset: int = 0,
    jobs: int = 1,
) -> tuple[list[dict[str, Any]], pathlib.Path]:
    """Run every experiment (or `only` these) and write the combined report.md in `root`; with
    `seed_offset` every seed of every experiment is shifted (workdirs NAME-quick-seedK); with `jobs`
    > 1 the experiments run side by side in that many worker processes, each on its share of the
    cores (`nnbasics.runs.jobs`), and this process collects their workdirs."""
    all_names = experiment_names()
    names = _selected(only, all_names)
    for n in names:  # every config (overrides, seeds) is checked before anything runs
        get_config(n, preset, overrides, seed_offset)
    root = pathlib.Path(root)
    results, dirs = [], []
    from nnbasics.runs import estimate

    estimate.announce(estimate.plan_lines(names, preset, estimate.backend()))
    ran = set()
    from nnbasics.engine.interrupt import TrainingInterrupted

    if int(jobs) > 1:
        from nnbasics.runs import jobs as jobs_lib

        todo = [n for n in names if force or not _finished_same_config(n, preset, overrides, seed_offset, root)]
        ran = jobs_lib.run_side_by_side(todo, preset, root, force, overrides, seed_offset, int(jobs))
    countdown = estimate.Countdown(names, preset)
    for i, name in enumerate(names):
        collected = name in ran  # a worker ran it: collected here, no progress to report
        wd = default_workdir(name, preset, root, seed_offset)
        t_start = time.perf_counter()
        try:
            from nnbasics.engine.interrupt import graceful_interrupt

            # a worker's finished run: collected without a "reusing" line; one run here: Ctrl-C checkpoints it
            with quieted(collected), (contextlib.nullcontext() if collected else graceful_interrupt("training")):
                res = run_experiment(name, preset, overrides, workdir=wd, force=force and name not in ran,
                                     replace_changed=True, seed_offset=seed_offset)
        except TrainingInterrupted as e:  # a stop signal: this experiment checkpointed, the others do not start
            done = [r["experiment"] for r in results]
            kept = (f"the {len(done)} experiment(s) that finished ({', '.join(done)}) are kept in their work "
                    f"directories under {root}" if done else "no experiment had finished yet")
            said = str(e).replace(" Run the same command again to continue from there.", "")
            raise TrainingInterrupted(f"{name}: {said} reproduce stopped at experiment {i + 1} of {len(names)}; {kept}. "
                                      "Run the same command again to continue (finished experiments are reused)",
                                      e.step, e.directory, e.signum) from None
        except (KeyboardInterrupt, UnknownNameError, config_lib.ConfigError, WorkdirConflict,
                workdir_lib.WorkdirUnusable, workdir_lib.WorkdirBusy):
            raise
        except Exception as e:  # noqa: BLE001 - one broken experiment must not hide the others
            import traceback

            from nnbasics.runs.claims import claim

            log(traceback.format_exc())
            res = {"experiment": name, "topic": experiment(name).topic, "preset": preset,
                   "seconds": 0.0, "figures": [], "error": f"{type(e).__name__}: {e}",
                   "claims": [claim("runs", "the experiment runs to completion", "nnbasics", "no error",
                                    {}, False, error=f"{type(e).__name__}: {e}")]}
        ok = sum(c["verdict"] == "pass" for c in res["claims"])
        left = countdown.done(name, time.perf_counter() - t_start, float(res["seconds"]))
        if not collected:
            log(f"[{i + 1}/{len(names)}] {name}: {ok}/{len(res['claims'])} claims pass ({res['seconds']:.0f} s); {left}")
        results.append(res)
        dirs.append(os.path.relpath(wd, root))
    results, dirs = _merge_earlier(root, results, dirs, seed_offset, all_names, preset)
    path = write_reports(root, results, dirs, seed_offset)
    return results, path


def _selected(only: Iterable[str] | None, all_names: list[str]) -> list[str]:
    """The experiments `reproduce` runs: `only` these (checked), else every one it reproduces."""
    if only is None:
        return [n for n in all_names if experiment(n).reproduce]
    only = [o for o in only if o]
    if not only:  # `--only ,` or `--only ""`: not "everything" (hours of work) by accident
        raise config_lib.ConfigError("--only names no experiment; give comma-separated names (see `nnbasics list`)")
    for o in only:
        if o not in all_names:
            raise UnknownNameError(unknown_name_message("experiment", o, all_names))
    return [n for n in all_names if n in only]


def _finished_same_config(name: str, preset: str, overrides: Iterable[str], seed_offset: int,
                          root: pathlib.Path) -> bool:
    """A finished run of this config is in the workdir (reproduce reuses it; no worker needed)."""
    wd = default_workdir(name, preset, root, seed_offset)
    try:
        stored = workdir_lib.read_json(wd / "config.json")
    except (OSError, ValueError):
        return False
    return (wd / "claims.json").exists() and stored == config_json(get_config(name, preset, overrides, seed_offset))


def worker(spec_json: str) -> int:
    """One experiment in a `reproduce --jobs` worker process (`nnbasics.runs.jobs`): it writes the
    workdir as `reproduce` would; its exit status is 0 when the run finished, 128 + the signal when
    Ctrl-C or SIGTERM stopped it (after a checkpoint), 1 on an error (the traceback on stderr)."""
    import signal

    spec = json.loads(spec_json)
    from nnbasics import enable_compilation_cache
    from nnbasics.progress import set_quiet

    set_quiet(True)
    enable_compilation_cache()
    wd = default_workdir(spec["name"], spec["preset"], spec["root"], spec["seed_offset"])
    from nnbasics.engine.interrupt import graceful_interrupt

    try:
        with graceful_interrupt("training"):  # the worker is a command of its own: it installs the handler
            run_experiment(spec["name"], spec["preset"], spec["overrides"], workdir=wd, force=spec["force"],
                           replace_changed=True, seed_offset=spec["seed_offset"])
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM passed on: the checkpoint is written
        print(f"nnbasics: {e}", file=sys.stderr)
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    return 0


def _merge_earlier(root: pathlib.Path, results: list[dict[str, Any]], dirs: list[str], seed_offset: int,
                   order: list[str], preset: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep the experiments of an earlier combined report that this run did not touch (`--only`),
    so a partial reproduction updates the report instead of replacing a fuller one. A damaged combined
    claims file is set aside (a warning names it) and its experiments are taken from their intact workdirs."""
    path = root / _report_names(seed_offset)[2]
    if not path.exists():
        return results, dirs
    try:
        doc = workdir_lib.read_json(path)
        old = {r["experiment"]: (r, d) for r, d in zip(doc["experiments"], doc["workdirs"])}
        if not all(isinstance(n, str) and isinstance(r.get("claims"), list) and isinstance(d, str)
                   for n, (r, d) in old.items()):
            raise TypeError("an entry is not one experiment's result")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # damaged: rebuilt from the workdirs
        old = _rebuild_combined(root, path, seed_offset, preset, f"{type(e).__name__}: {str(e)[:120]}")
    new = {r["experiment"]: (r, d) for r, d in zip(results, dirs)}
    kept = [n for n in old if n not in new]
    if kept:
        log(f"the report in {root} keeps {len(kept)} experiments of its earlier run: {', '.join(kept)}")
    both = {**old, **new}
    names = sorted(both, key=lambda n: order.index(n) if n in order else len(order))
    return [both[n][0] for n in names], [both[n][1] for n in names]


def workdir_results(root: pathlib.Path, seed_offset: int = 0, preset: str | None = None
                    ) -> dict[str, tuple[dict[str, Any], str]]:
    """{experiment: (its claims.json, its workdir relative to root)} of the intact finished runs in root's
    default workdirs (NAME-PRESET[-seedK]) of one preset (None: the preset most of them have); damaged or
    foreign claims files are skipped."""
    found: dict[str, dict[str, tuple[dict[str, Any], str]]] = {}
    names = experiment_names()
    for path in sorted(root.glob("*/claims.json")):
        try:
            res = read_claims_doc(path)
        except WorkdirConflict:
            continue
        name, p = res.get("experiment"), res.get("preset")
        try:
            offset = int(res.get("seed_offset", 0) or 0)
        except (TypeError, ValueError):
            continue
        if (name not in names or not isinstance(p, str) or p not in PRESETS or (preset and p != preset)
                or offset != seed_offset
                or path.parent.name != default_workdir(name, p, root, seed_offset).name):
            continue
        found.setdefault(p, {})[name] = (res, path.parent.name)
    if not found:
        return {}
    best = preset if preset else max(found, key=lambda q: (len(found[q]), q == "quick"))
    chosen = found.get(best, {})
    return {n: chosen[n] for n in names if n in chosen}


def _rebuild_combined(root: pathlib.Path, path: pathlib.Path, seed_offset: int, preset: str | None, why: str
                      ) -> dict[str, tuple[dict[str, Any], str]]:
    """The experiments of a damaged combined claims file, from the intact workdirs under root; the damaged
    file is kept beside it as <name>.<time>.damaged, and a warning names it."""
    import warnings

    old = workdir_results(root, seed_offset, preset)
    aside = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.damaged")
    if workdir_lib.is_main_process():
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
    warnings.warn(f"{path} is damaged ({why}); kept it as {aside.name} and rebuilt the combined report from the "
                  f"{len(old)} intact work directories under {root}"
                  + (f" ({', '.join(old)})" if old else ""), stacklevel=3)
    return old


def _report_names(seed_offset: int) -> tuple[str, str, str]:
    suffix = f"-seed{seed_offset}" if seed_offset else ""
    return f"report{suffix}.md", f"report{suffix}.html", f"claims{suffix}.json"


def write_reports(root: pathlib.Path, results: list[dict[str, Any]], dirs: list[str], seed_offset: int = 0
                  ) -> pathlib.Path:
    """root/report.md, report.html and claims.json (report-seedK.* for shifted seeds)."""
    md, html, js = _report_names(seed_offset)
    workdir_lib.atomic_write_text(root / md, report.combined_report(results, dirs))
    workdir_lib.atomic_write_text(root / html, report.combined_html(results, dirs, str(root)))
    workdir_lib.atomic_write_json(root / js, {"experiments": results, "workdirs": dirs, "seed_offset": seed_offset})
    return root / md


def rejudge_root(root: str | os.PathLike) -> list[tuple[pathlib.Path, list[dict[str, Any]]]]:
    """Recompute every verdict under `root` from the stored measurements with today's thresholds:
    each workdir's claims.json and report.md, and each combined report (claims*.json). No training."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory of runs (run `nnbasics reproduce --quick` first)")
    docs = {p: read_claims_doc(p) for p in sorted(root.glob("*/claims.json"))}
    for p in sorted(root.glob("claims*.json")):
        try:
            docs[p] = read_claims_doc(p)
        except WorkdirConflict as e:  # a damaged combined report: rebuilt from the intact workdirs, if it is one
            m = re.fullmatch(r"claims(?:-seed(\d+))?\.json", p.name)
            offset = int(m.group(1) or 0) if m else 0
            if not (m and workdir_results(root, offset)):
                raise
            old = _rebuild_combined(root, p, offset, None, str(e).split(" is damaged (", 1)[-1].rsplit("); run", 1)[0])
            docs[p] = {"experiments": [r for r, _ in old.values()], "workdirs": [d for _, d in old.values()],
                       "seed_offset": offset}
    done = []
    for path, res in docs.items():  # every file was read (and a damaged one refused) before any is rewritten
        if "experiment" not in res:
            continue
        with _damaged_if_malformed(path):
            try:
                mod = load_experiment(res["experiment"])
                new = judge(res["experiment"], res)
            except UnknownNameError as e:  # the file names an experiment this version does not have: say which file
                raise WorkdirConflict(f"{path} is damaged or foreign: {e}; move it out of the way, or run its "
                                      "experiment again") from None
            _write_result(path.parent, mod, new)
        done.append((path, [new]))
    for path, doc in docs.items():
        if "experiments" not in doc or path.parent != root:
            continue
        with _damaged_if_malformed(path):
            results = [judge(r["experiment"], r) if "error" not in r else r for r in doc["experiments"]]
            dirs = doc.get("workdirs") or [os.path.relpath(default_workdir(r["experiment"], r.get("preset", "quick"),
                                                                           root, doc.get("seed_offset", 0)), root)
                                           for r in results]
            write_reports(root, results, dirs, int(doc.get("seed_offset", 0)))
        done.append((path, results))
    return done


def read_claims_doc(path: pathlib.Path) -> dict[str, Any]:
    """One run's claims.json or a combined claims*.json; a damaged one is a WorkdirConflict naming it."""
    with _damaged_if_malformed(path, reading=True):
        doc = workdir_lib.read_json(path)
        if not (isinstance(doc, dict) and (isinstance(doc.get("claims"), list) and isinstance(doc.get("experiment"), str)
                                           or isinstance(doc.get("experiments"), list))):
            raise ValueError("neither one run's claims nor a combined report")
    return doc


@contextlib.contextmanager
def _damaged_if_malformed(path: pathlib.Path, reading: bool = False) -> Iterator[None]:
    """Malformed content of `path` (and, while `reading` it, an unreadable file) as a WorkdirConflict naming it."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        if isinstance(e, (UnknownNameError, config_lib.ConfigError)) or (isinstance(e, OSError) and not reading):
            raise
        raise WorkdirConflict(f"{path} is damaged ({type(e).__name__}: {str(e)[:120]}); run its experiment again "
                              "(with --force), or move the file out of the way") from None


def terminal_summary(results: Iterable[Mapping[str, Any]], report_path: str | os.PathLike | None = None) -> str:
    """'80 of 82 claims pass (1 fail, 1 inconclusive)', then the failed and inconclusive claims first,
    one short line each, then the report's path."""
    from nnbasics.runs.claims import check_text

    claims = [(r["experiment"], c) for r in results for c in r["claims"]]
    counts = {v: sum(c["verdict"] == v for _, c in claims) for v in ("pass", "fail", "inconclusive")}
    lines = []
    for verdict in ("fail", "inconclusive"):
        for exp, c in claims:
            if c["verdict"] == verdict:
                why = "; ".join(check_text(k) for k in c.get("checks", []) if k["verdict"] != "pass")
                why = why or c.get("error") or f"expected {c['expected']}"
                lines.append(f"  {verdict.upper():<12} {exp}/{c['id']}: {why}")
    head = f"{counts['pass']} of {len(claims)} claims pass"
    rest = [f"{counts[v]} {'failed' if v == 'fail' else v}" for v in ("fail", "inconclusive") if counts[v]]
    head += f" ({', '.join(rest)})" if rest else ""
    out = [head, *lines]
    if report_path is not None:
        out.append(f"report: {report_path}")
    return "\n".join(out)
