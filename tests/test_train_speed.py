"""The fixed-cost measures of `fit` (issue 8): each program lowered and compiled once, the init, first
chunk and evaluation compiled side by side, the rarely run programs with lighter XLA options, and
all of it without changing a single number."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, compile_side_by_side, fit, light_jit
from nnbasics.models import get_model

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # one per program jax lowers
_events: list[str] | None = None


def _listener(event: str, duration: float, **kw) -> None:
    if _events is not None and event == LOWERING_EVENT:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_listener)


def _lowerings(fn) -> int:
    global _events
    _events = []
    try:
        fn()
        return len(_events)
    finally:
        _events = None


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist1d")


def _fit(data, hidden=16, seeds=(0,), **kw):
    tc = TrainConfig(steps=40, batch_size=50, eval_every=20, seeds=seeds,
                     optimizer={"name": "adam", "learning_rate": 1e-2}, **kw)
    return fit(get_model("mlp", num_classes=10, hidden=(hidden,)), data, tc)


def test_fit_lowers_each_program_once(data):
    _fit(data, hidden=8)  # compiles the small eager helpers (keys) once per process
    # one member: init, chunk, eval, and nothing else (no per-leaf stacking, no second compile of a
    # program whose side-by-side lowering did not match the real call)
    assert _lowerings(lambda: _fit(data, hidden=12)) == 3
    # two members: plus one program that stacks the members' states
    assert _lowerings(lambda: _fit(data, hidden=13, seeds=(0, 1))) == 4


def test_side_by_side_light_and_default_compiles_give_identical_runs(data, monkeypatch):
    ref = _fit(data, hidden=10, seeds=(0, 1), eval_train=True)
    monkeypatch.setenv("NNBASICS_SERIAL_COMPILE", "1")
    monkeypatch.setenv("NNBASICS_DEFAULT_COMPILE", "1")
    plain = _fit(data, hidden=10, seeds=(0, 1), eval_train=True)
    for key in ("train_loss", "test_loss", "test_accuracy", "train_full_loss"):
        np.testing.assert_array_equal(ref.curve(key)[1], plain.curve(key)[1])
    for a, b in zip(jax.tree.leaves(ref.state.params), jax.tree.leaves(plain.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_compile_side_by_side_fills_jit_cache_and_light_jit_computes_the_same():
    f = jax.jit(lambda x: jax.numpy.tanh(x) * 3 + x.sum())
    g = light_jit(lambda x: jax.numpy.tanh(x) * 3 + x.sum())
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    compile_side_by_side([f.lower(x), g.lower(x)])
    assert _lowerings(lambda: (f(x), g(x))) == 0  # both served from the cache the threads filled
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(g(x)), rtol=1e-6)
    compile_side_by_side([])  # nothing to do is fine


def test_mnist1d_benchmark_child_run_reports_json(capsys, monkeypatch):
    import json

    from experiments.benchmarks import mnist1d_speed
    from nnbasics import progress

    monkeypatch.setattr(progress, "_QUIET", progress._QUIET)  # the child run silences progress bars

    assert mnist1d_speed.main(["--child", "mnist1d_mlp", "--steps", "20"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(r) == {"seconds", "cpu", "first_chunk", "acc"}
    assert 0 < r["first_chunk"] <= r["seconds"] and 0 <= r["acc"] <= 1
