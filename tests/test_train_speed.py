"""The fixed-cost measures of `fit` (issue 8): each program lowered and compiled once, the init, first
chunk and evaluation compiled side by side, the rarely run programs with lighter XLA options, and
all of it without changing a single number."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, compile_side_by_side, fit, light_jit
from nnbasics.engine import compile as compile_mod
from nnbasics.models import get_model

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # one per program jax lowers
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per program XLA compiles
_events: list[str] | None = None


def _listener(event: str, duration: float, **kw) -> None:
    if _events is not None:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_listener)


def _lowerings(fn, event: str = LOWERING_EVENT) -> int:
    global _events
    _events = []
    try:
        fn()
        return _events.count(event)
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
    # two members: the same three (on the CPU the members' states are joined on the host, no program)
    assert _lowerings(lambda: _fit(data, hidden=13, seeds=(0, 1))) == 3


def test_the_chunk_traces_the_train_step_once(data, monkeypatch):
    """The chunk's loop body replays the step's jaxpr instead of tracing the step a second time (it was
    traced once for the metrics' shapes and once in the body: a 56-layer ResNet's trace takes seconds)."""
    from nnbasics.engine.state import train_step

    calls = []
    data_tc = TrainConfig(steps=40, batch_size=50, eval_every=20, seeds=(0, 1), optimizer={"name": "adam", "learning_rate": 1e-2})
    result = fit(get_model("mlp", num_classes=10, hidden=(11,)), data, data_tc,
                 train_step=lambda *a, **k: (calls.append(1), train_step(*a, **k))[1])
    assert len(calls) == 1
    assert np.all(np.isfinite(result.curve("train_loss")[1]))


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


def test_member_keys_made_inside_the_init_program_equal_eager_keys():
    from nnbasics.engine import loop

    seeds = [0, 1, 123, -5, 2**31 - 1, -2**31, 2**31, 2**32 - 1]
    as_int32, _ = loop._seeds([{"seed": s, "overrides": {}, "accumulate": 1, "model": {}} for s in seeds])
    assert as_int32.dtype == np.int32
    traced = jax.jit(lambda s: jax.random.key_data(jax.random.key(s, impl=loop.PRNG_IMPL)))
    for s, v in zip(seeds, as_int32):
        np.testing.assert_array_equal(np.asarray(traced(v)),
                                      np.asarray(jax.random.key_data(jax.random.key(s, impl=loop.PRNG_IMPL))))


def test_compile_side_by_side_takes_a_generator_and_compiles_each_program():
    fs = [jax.jit(lambda x, k=k: x * k) for k in range(3)]
    x = np.ones(4, np.float32)
    assert _lowerings(lambda: compile_side_by_side(f.lower(x) for f in fs), COMPILE_EVENT) == 3
    assert _lowerings(lambda: [f(x) for f in fs], COMPILE_EVENT) == 0  # served from the cache


def _long_chain(x):
    for i in range(400):  # unrolled: ~1200 lines of StableHLO
        x = jax.numpy.sin(x) * 1.0001 + i * 1e-3
    return x


def test_light_jit_picks_options_by_program_size_and_computes_the_same(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the size rule is for the CPU")
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    small, big = light_jit(lambda v: jax.numpy.tanh(v) * 3 + v.sum()), light_jit(_long_chain)
    assert small.lower(x).light and not big.lower(x).light
    options = []
    real_compile = jax.stages.Lowered.compile
    monkeypatch.setattr(jax.stages.Lowered, "compile",
                        lambda self, opts=None: options.append(opts) or real_compile(self, opts))
    np.testing.assert_array_equal(np.asarray(small(x)), np.asarray(jax.jit(lambda v: jax.numpy.tanh(v) * 3 + v.sum())(x)))
    np.testing.assert_array_equal(np.asarray(big(x)), np.asarray(jax.jit(_long_chain)(x)))
    assert options == [compile_mod.LIGHT_COMPILE_OPTIONS, None]
    assert _lowerings(lambda: (small(x), big(x))) == 0  # the compiled programs are kept and reused
    # another shape compiles again; under a trace it is plain jit
    assert small(np.ones(8, np.float32)).shape == (8,)
    assert jax.eval_shape(big, jax.ShapeDtypeStruct((5,), np.float32)).shape == (5,)
    assert jax.jit(lambda v: small(v) + 1)(x).shape == (64,)
    static = light_jit(lambda v, n: v * n, static_argnums=1)  # static arguments: plain jit, light options
    assert float(static(np.float32(2), 3)) == 6.0 and float(static(np.float32(2), 4)) == 8.0


def test_stack_members_joins_on_the_host_exactly_as_the_compiled_concatenation():
    from nnbasics.engine.loop import PRNG_IMPL

    rng = np.random.default_rng(0)
    states = [{"w": rng.normal(size=(1, 3, 2)).astype(np.float32), "n": np.array([i], np.int32),
               "key": jax.random.split(jax.random.key(i, impl=PRNG_IMPL), 1)} for i in range(3)]
    ref = compile_mod.concat_members(*states)
    got = _lowerings_and(lambda: compile_mod.stack_members(states))
    assert got[0] == 0  # nothing compiled
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got[1])):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(b) == jax.random.key_impl(a)
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert compile_mod.stack_members(states[:1]) is states[0]


def _lowerings_and(fn):
    out = []
    return _lowerings(lambda: out.append(fn())), out[0]


def test_mnist1d_benchmark_child_run_reports_json(capsys, monkeypatch):
    import json

    from experiments.benchmarks import mnist1d_speed
    from nnbasics import progress

    monkeypatch.setattr(progress, "_QUIET", progress._QUIET)  # the child run silences progress bars

    assert mnist1d_speed.main(["--child", "mnist1d_mlp", "--steps", "20"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(r) == {"seconds", "cpu", "first_chunk", "acc"}
    assert 0 < r["first_chunk"] <= r["seconds"] and 0 <= r["acc"] <= 1
