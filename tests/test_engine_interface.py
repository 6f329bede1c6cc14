"""The engine meets run management through a typed interface (RunDirectory), and stop signals are
handled by the command line: `fit` installs no handler, it listens to the installed one."""

import pathlib
import re
import signal

import numpy as np
import pytest

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.engine import interrupt as interrupt_lib
from nnbasics.engine.run_directory import RunDirectory, check_run_directory
from nnbasics.engine.state import train_step as default_step
from nnbasics.models import get_model
from nnbasics.runs.workdir import Workdir

ENGINE = pathlib.Path(__file__).parents[1] / "nnbasics" / "engine"
TC = TrainConfig(steps=30, batch_size=16, eval_every=10, seeds=(0,), optimizer={"name": "sgd", "learning_rate": 0.1})


def _model():
    return get_model("mlp", num_classes=10, hidden=(8,))


def test_the_engine_never_guesses_attributes_of_the_work_directory():
    guesses = re.compile(r"(hasattr|getattr)\((kw\.get\(\"workdir\"\)|workdir|wd)\b")
    found = [f"{p.name}: {m.group(0)}" for p in ENGINE.glob("*.py") for m in guesses.finditer(p.read_text())]
    assert not found, found
    assert "__wrapped__" not in (ENGINE / "loop.py").read_text()


def test_a_workdir_is_a_run_directory_and_anything_else_is_refused_naming_what_lacks(tmp_path):
    wd = Workdir(tmp_path / "wd")
    assert isinstance(wd, RunDirectory) and check_run_directory(wd) is wd and check_run_directory(None) is None

    class Half:
        metrics = None
        checkpoint_dir = None

    with pytest.raises(TypeError, match="a Half lacks checkpoint_every, interrupt_dir, finished_fits, record_fit"):
        fit(_model(), load_dataset("digits"), TC, workdir=Half())
    res = fit(_model(), load_dataset("digits"), TC, workdir=wd, tag="m")
    assert wd.fits == [{"tag": "m", "steps": 30, "members": 1, "seconds": round(res.seconds, 3),
                        "compile_seconds": round(res.compile_seconds, 3)}]
    rows = (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and res.steps_trained == 30


@pytest.fixture
def default_sigint():
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    yield
    signal.signal(signal.SIGINT, before)


def test_fit_installs_no_handler_and_listens_to_the_installed_one(tmp_path, default_sigint):
    seen = []

    def step(state, x, y, loss):  # traced inside fit: what the process looks like while it trains
        flag = interrupt_lib.active()
        seen.append((signal.getsignal(signal.SIGINT), flag.listening if flag else None))
        return default_step(state, x, y, loss)

    fit(_model(), load_dataset("digits"), TC, workdir=Workdir(tmp_path / "a"), train_step=step)
    assert seen == [(signal.default_int_handler, None)]  # the library left the signal alone
    seen.clear()
    with interrupt_lib.graceful_interrupt("training") as flag:
        assert flag.installed and interrupt_lib.active() is flag and flag.listening == 0
        fit(_model(), load_dataset("digits"), TC, workdir=Workdir(tmp_path / "b"), train_step=step)
        assert seen[0][1] == 1 and seen[0][0] is not signal.default_int_handler and flag.listening == 0
        flag.requested = True  # as if Ctrl-C came: the next fit checkpoints after its first chunk
        with pytest.raises(interrupt_lib.TrainingInterrupted, match="interrupted at step 10 of 30") as e:
            fit(_model(), load_dataset("digits"), TC, workdir=Workdir(tmp_path / "c"), tag="m")
        assert e.value.directory == str(tmp_path / "c" / "checkpoints" / "m")
        assert sorted(p.name for p in (tmp_path / "c" / "checkpoints" / "m").iterdir()) == ["10"]
    assert interrupt_lib.active() is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_while_nothing_listens_stops_at_once(default_sigint):
    import os

    with interrupt_lib.graceful_interrupt("training") as flag:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # no training loop would check a request: as without a handler
            for _ in range(10**6):  # the handler runs between bytecodes of the main thread
                pass
        assert not flag.requested
        with interrupt_lib.listening(flag):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            assert flag.requested and flag.signum == signal.SIGINT
    np.testing.assert_equal(interrupt_lib.active(), None)


def plain_loop(model, data, tc, seed):
    """The textbook loop, no speed machinery: initialise, then for each step one jitted `train_step`
    on the step's batch (the batches and keys `fit` draws for this seed)."""
    import jax
    import jax.numpy as jnp

    from nnbasics.engine import optim
    from nnbasics.engine.batches import batch_indices
    from nnbasics.engine.loop import PRNG_IMPL
    from nnbasics.engine.state import create_state

    x, y = np.asarray(data.x_train, np.float32), np.asarray(data.y_train, np.int32)
    sample = np.zeros((1, *x.shape[1:]), np.float32)
    tx = optim.make_optimizer(tc.optimizer, total_steps=tc.steps, model=model, sample_input=sample, member_overrides=[{}])
    state = create_state(model, tx, jax.random.fold_in(jax.random.key(seed, impl=PRNG_IMPL), 0), sample)
    state = state.replace(opt_state=optim.set_member(state.opt_state, {}, np.int32(1)))
    step = jax.jit(lambda s, a, b: default_step(s, a, b, tc.loss))
    losses = []
    for ix in batch_indices([seed], 0, tc.steps, len(x), tc.batch_size)[0]:
        state, metrics = step(state, jnp.asarray(x[ix]), jnp.asarray(y[ix]))
        losses.append(np.float32(metrics["loss"]))
    return state, np.array(losses, np.float32)


@pytest.mark.parametrize("step_mode", ["chunk", "step"])
def test_fit_equals_the_plain_loop_bit_for_bit(step_mode):
    """Chunks compiled as one loop of replayed steps (or one dispatch per step), members vmapped side by
    side, programs compiled in parallel: the same parameters and losses as the plain loop, bit for bit."""
    import dataclasses

    import jax

    data, model = load_dataset("digits"), get_model("mlp", num_classes=10, hidden=(16,))
    tc = dataclasses.replace(TC, seeds=(3, 4), step_mode=step_mode)
    res = fit(model, data, tc)
    for m, seed in enumerate(tc.seeds):
        state, losses = plain_loop(model, data, tc, seed)
        for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(state.params)):
            np.testing.assert_array_equal(np.asarray(a)[m], np.asarray(b))
        chunk_means = [float(np.mean(losses[i:i + tc.eval_every])) for i in range(0, tc.steps, tc.eval_every)]
        assert res.curve("train_loss")[1][m].tolist() == chunk_means
