"""The experiment contract, written once: what a module `experiments/NAME.py` provides.

Required:
- `get_config(preset: str = "full") -> ml_collections.ConfigDict`, for the presets "full" (the
  default of `nnbasics run`), "quick" (`nnbasics reproduce`) and "smoke" (seconds; the tests);
- `run(config, workdir) -> list[Claim]`: trains and measures, saves its figures with
  `workdir.save_figure(fig, name)` and returns claims made with `nnbasics.runs.claims.claim`;
- `THRESHOLDS: dict[str, Threshold]`: every number a check compares with, each with the source
  of its value (code, never config, so stored runs are re-judged without retraining).
Optional:
- `TOPIC` (a heading of the report: basics, optimization, convolution, architectures,
  normalization; default "other"), `ORDER` (its place in lecture order; default 1000),
  `REPRODUCE` (False: `nnbasics reproduce` skips it; default True),
  `SWEEPS = {"name": [{dotted config key: value}, ...]}` (`nnbasics sweep`),
  `validate(config)` (raise ValueError naming the key for a config the experiment cannot run).
The module's docstring is its description in `nnbasics list` and the report (first line first).
Nothing else is needed: an experiment without a measured time shows "?" in `list` and in
`reproduce`'s plan (docs/adding_an_experiment.md has a template).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from nnbasics.runs.claims import Claim, Threshold
from nnbasics.runs.report import TOPICS as _REPORT_TOPICS

TOPICS = tuple(key for key, _ in _REPORT_TOPICS)  # the report's headings


class ContractError(TypeError):
    """An experiment module that does not provide what the contract asks for."""


@dataclass(frozen=True)
class Experiment:
    """What one experiment module provides, checked (see the module docstring)."""

    name: str
    module: ModuleType
    get_config: Callable[..., Any]
    run: Callable[[Any, Any], list[Claim]]
    thresholds: Mapping[str, Threshold]
    topic: str = "other"
    order: int = 1000
    reproduce: bool = True
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    validate: Callable[[Any], None] | None = None

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.module) or ""
        return doc.splitlines()[0] if doc else ""


def _fail(name: str, what: str) -> ContractError:
    return ContractError(f"experiments.{name}: {what} (the experiment contract: nnbasics/runs/contract.py, "
                         "docs/adding_an_experiment.md)")


def _callable(mod: ModuleType, name: str, attr: str, params: int) -> Callable[..., Any]:
    fn = getattr(mod, attr, None)
    if fn is None:
        raise _fail(name, f"defines no `{attr}`")
    if not callable(fn):
        raise _fail(name, f"`{attr}` is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(*range(params))
    except TypeError:
        raise _fail(name, f"`{attr}{inspect.signature(fn)}` cannot be called with {params} argument(s)") from None
    except ValueError:  # no signature (a builtin): take it on trust
        pass
    return fn


def check_experiment(mod: ModuleType, name: str | None = None) -> Experiment:
    """The module's contract as an `Experiment`, or a ContractError naming what is missing or wrong."""
    name = name or mod.__name__.rsplit(".", 1)[-1]
    get_config = _callable(mod, name, "get_config", 1)
    run = _callable(mod, name, "run", 2)
    th = getattr(mod, "THRESHOLDS", None)
    if th is None:
        raise _fail(name, "defines no `THRESHOLDS` (a dict of nnbasics.runs.claims.Threshold, one per check name)")
    if not isinstance(th, Mapping) or not th:
        raise _fail(name, f"`THRESHOLDS` must be a non-empty dict of Threshold, got {type(th).__name__}")
    for k, t in th.items():
        if not isinstance(t, Threshold):
            raise _fail(name, f"THRESHOLDS[{k!r}] is a {type(t).__name__}, not a nnbasics.runs.claims.Threshold")
    topic = getattr(mod, "TOPIC", "other")
    if topic not in TOPICS:
        raise _fail(name, f"TOPIC {topic!r} is not a heading of the report; valid topics: {', '.join(TOPICS)}")
    order = getattr(mod, "ORDER", 1000)
    if not isinstance(order, (int, float)) or isinstance(order, bool):
        raise _fail(name, f"ORDER must be a number (its place in lecture order), got {order!r}")
    reproduce = getattr(mod, "REPRODUCE", True)
    if not isinstance(reproduce, bool):
        raise _fail(name, f"REPRODUCE must be True or False, got {reproduce!r}")
    sweeps = getattr(mod, "SWEEPS", None) or {}
    if not isinstance(sweeps, Mapping) or not all(
            isinstance(points, (list, tuple)) and all(isinstance(p, Mapping) for p in points) for points in sweeps.values()):
        raise _fail(name, "SWEEPS must be {sweep name: [{dotted config key: value}, ...]}")
    validate = getattr(mod, "validate", None)
    if validate is not None and not callable(validate):
        raise _fail(name, f"`validate` is a {type(validate).__name__}, not a function of the config")
    return Experiment(name=name, module=mod, get_config=get_config, run=run, thresholds=dict(th), topic=topic,
                      order=order, reproduce=reproduce, sweeps=dict(sweeps), validate=validate)


def is_experiment_module(mod: ModuleType) -> bool:
    """A module of the experiments package that means to be an experiment (it defines `run` or
    `get_config`); `check_experiment` then says what else it lacks."""
    return hasattr(mod, "run") or hasattr(mod, "get_config")
