"""nnbasics: neural network basics and convolutional networks in JAX/Flax.

Every lecture idea is a small tested function or linen module; every comparison is an
experiment in `experiments/` that `nnbasics run NAME` reproduces. The Python API:

    from nnbasics import fit, TrainConfig, get_model, load_dataset
    data = load_dataset("mnist1d")
    result = fit(get_model("mnist1d_cnn"), data, TrainConfig(steps=1000, batch_size=100, seeds=(0, 1)))
    result.final("test_accuracy")  # one number per seed

Names are imported on first use, so `import nnbasics` stays cheap (no JAX import).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from nnbasics import allocator as _allocator

__version__ = "0.1.0"

try:  # before JAX starts its threads: XLA:CPU's per-step buffers reuse their pages (nnbasics/allocator.py)
    _allocator.keep_freed_memory()
except ValueError as _e:
    warnings.warn(f"{_e}; glibc's malloc defaults kept", stacklevel=2)

# public name -> (module, attribute); every one has a docstring (tested)
_API = {
    # training
    "fit": ("nnbasics.engine", "fit"),
    "TrainConfig": ("nnbasics.engine", "TrainConfig"),
    "TrainResult": ("nnbasics.engine", "TrainResult"),
    "TrainState": ("nnbasics.engine", "TrainState"),
    "train_step": ("nnbasics.engine", "train_step"),
    "evaluate": ("nnbasics.engine", "evaluate"),
    "LOSSES": ("nnbasics.nn.losses", "LOSSES"),
    "make_optimizer": ("nnbasics.engine.optim", "make_optimizer"),
    # models and data
    "get_model": ("nnbasics.models", "get_model"),
    "model_names": ("nnbasics.models", "model_names"),
    "load_dataset": ("nnbasics.data", "load_dataset"),
    "dataset_names": ("nnbasics.data", "dataset_names"),
    # experiments and claims
    "get_config": ("nnbasics.runs.experiment", "get_config"),
    "run_experiment": ("nnbasics.runs.experiment", "run_experiment"),
    "reproduce": ("nnbasics.runs.experiment", "reproduce"),
    "experiment_names": ("nnbasics.runs.experiment", "experiment_names"),
    "claim": ("nnbasics.runs.claims", "claim"),
    "check": ("nnbasics.runs.claims", "check"),
    "Threshold": ("nnbasics.runs.claims", "Threshold"),
    # the CPU
    "set_cpu_threads": ("nnbasics.threads", "set_cpu_threads"),
}
__all__ = ["enable_compilation_cache", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nnbasics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (default: $NNBASICS_CACHE/jax or
    ~/.cache/nnbasics/jax), so a re-run skips XLA compilation (about half of a short CPU run).
    Set NNBASICS_NO_COMPILE_CACHE=1 to leave it off. Returns the directory used, or None."""
    import os

    if os.environ.get("NNBASICS_NO_COMPILE_CACHE"):
        return None
    import jax

    root = os.environ.get("NNBASICS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nnbasics")
    path = path or os.path.join(root, "jax")
    try:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except (OSError, AttributeError, ValueError):  # read-only home, or a jax without the option
        return None
    from nnbasics.engine.compile import watch_compilation_cache

    watch_compilation_cache(path)  # a damaged entry is set aside and rebuilt, not warned about forever
    return path
