"""Stop signals are never dropped: SIGTERM or Ctrl-C during the last chunk of a training run, or to
`reproduce` while an experiment trains, ends the command with a checkpoint and status 143/130; the
next run continues with the metrics rows in the order of an uninterrupted run.

The signal is sent once a training loop listens for it (the command's handler is installed: the
process catches SIGTERM, read from /proc/PID/status; and the loop touched NNBASICS_LISTENING_FILE),
never after a fixed sleep: on a loaded machine the timing of a sleep means nothing.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nnbasics.engine import interrupt
from nnbasics.runs.workdir import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/PID/status")

# as in a terminal: a shell running pytest in the background passes SIGINT on as ignored
START = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv[0] = 'nnbasics'; runpy.run_module('nnbasics.cli', run_name='__main__')")


MARK = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"nnbasics-listening-{os.getpid()}")


def _env():
    # the command touches MARK when a training loop starts listening for stop signals (the handler
    # itself is installed by the command line before the experiment loads its data)
    return {**os.environ, "JAX_PLATFORMS": "cpu", "NNBASICS_LISTENING_FILE": MARK}


def _cmd(*argv):
    if os.path.exists(MARK):
        os.remove(MARK)
    return [sys.executable, "-c", START, "--quiet", *argv]


def _signal_when_training(proc: subprocess.Popen, signum: int, ready=lambda: True, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not (
            interrupt.handles(proc.pid) and os.path.exists(MARK) and ready()):
        time.sleep(0.005)
    assert proc.poll() is None, "the command finished before it could be stopped"
    proc.send_signal(signum)


def _rows(wd):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(wd / "metrics.jsonl")]


ONE_CHUNK = ["run", "mnist1d", "--smoke", "--config.models=('mlp',)", "--config.steps=300", "--config.eval_every=300"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stop_signal_in_the_last_chunk_stops_with_a_checkpoint(tmp_path, signum):
    """A run whose one chunk is its last: the request made while it compiles or trains was dropped
    (the loop only stopped before step == total) and the command ran on to exit 0/1."""
    wd = tmp_path / "wd"
    proc = subprocess.Popen(_cmd(*ONE_CHUNK, "--workdir", str(wd)), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _signal_when_training(proc, signum)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted at step 300 of 300" in err and "Run the same command again" in err
    assert not (wd / "claims.json").exists()
    assert [p.name for p in (wd / "checkpoints" / "mlp").iterdir() if p.name.isdigit()] == ["300"]
    rows = _rows(wd)
    again = subprocess.run(_cmd(*ONE_CHUNK, "--workdir", str(wd)), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode in (0, 1), again.stderr[-2000:]
    assert (wd / "claims.json").exists() and _rows(wd) == rows  # resumed at its end: nothing trained again


def test_sigterm_to_reproduce_stops_at_the_current_experiment(tmp_path):
    """SIGTERM to `reproduce` (one process) while its first experiment trains: it stops after the chunk,
    the later experiments do not start, the message says what is kept and how to go on, status 143."""
    root = tmp_path / "r"
    # every training run one chunk long (its last): the request was dropped and every experiment ran on
    argv = ["reproduce", "--smoke", "--only", "mnist1d,capacity", "--root", str(root), "--jobs", "1",
            "--config.eval_every=200"]
    proc = subprocess.Popen(_cmd(*argv), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _signal_when_training(proc, signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert "mnist1d: " in err and "interrupted at step" in err and "reproduce stopped at experiment 1 of 2" in err
    assert "Run the same command again to continue" in err
    assert list((root / "mnist1d-smoke" / "checkpoints").glob("*/*"))
    assert not (root / "capacity-smoke").exists() and not (root / "claims.json").exists()
    again = subprocess.run(_cmd(*argv), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode in (0, 1), again.stderr[-3000:]
    names = [r["experiment"] for r in json.loads((root / "claims.json").read_text())["experiments"]]
    assert names == ["mnist1d", "capacity"]


TWO_MODELS = ["run", "mnist1d", "--smoke", "--config.models=('mlp','cnn')", "--config.steps=400"]


def test_ctrl_c_without_checkpoints_keeps_the_rows_in_order(tmp_path):
    """Ctrl-C while the second model trains, checkpoints off: the first model, finished without a checkpoint,
    was trained again on the next run and its rows came after the second model's. It is checkpointed on the
    stop, and the rows stay in the order of an uninterrupted run."""
    ref, wd = tmp_path / "ref", tmp_path / "wd"
    out = subprocess.run(_cmd(*TWO_MODELS, "--workdir", str(ref)), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    proc = subprocess.Popen(_cmd(*TWO_MODELS, "--workdir", str(wd)), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _signal_when_training(proc, signal.SIGINT,
                          ready=lambda: any(r.get("run") == "cnn" for r in read_metrics(wd / "metrics.jsonl")))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    # the finished MLP is checkpointed on the stop too: the next run restores it instead of training it again
    saved = {p.name: sorted(int(q.name) for q in p.iterdir() if q.name.isdigit()) for p in (wd / "checkpoints").iterdir()}
    assert saved["mlp"] == [400] and len(saved["cnn"]) == 1 and 100 <= saved["cnn"][0] <= 400, saved
    again = subprocess.run(_cmd(*TWO_MODELS, "--workdir", str(wd)), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode in (0, 1), again.stderr[-2000:]
    assert [(r["run"], r["step"]) for r in _rows(wd)] == [(r["run"], r["step"]) for r in _rows(ref)]
    assert _rows(wd) == _rows(ref)


def test_ctrl_c_between_training_runs_checkpoints_the_finished_ones(tmp_path, monkeypatch):
    """Ctrl-C after a training run finished, checkpoints off (say while the experiment analyses it): the run
    was lost and trained again next time. It is checkpointed on the way out and restored, not retrained."""
    import jax
    import numpy as np

    import experiments.momentum as mod
    from nnbasics.data import load_dataset
    from nnbasics.engine import TrainConfig, fit
    from nnbasics.engine.interrupt import graceful_interrupt
    from nnbasics.models import get_model
    from nnbasics.runs import experiment as exp
    from nnbasics.runs.workdir import Workdir

    data, tc = load_dataset("blobs", n_train=100, n_test=20), TrainConfig(steps=20, batch_size=10, eval_every=10)
    done = []

    def run(cfg, wd):
        done.append(fit(get_model("mlp", num_classes=3, hidden=(8,)), data, tc, workdir=wd, tag="first"))
        raise KeyboardInterrupt  # Ctrl-C while the experiment works on the result

    monkeypatch.setattr(mod, "run", run)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # as in a terminal (a test runner may have its own handlers), with the handler the command line installs
        with pytest.raises(KeyboardInterrupt), graceful_interrupt():
            exp.run_experiment("momentum", "smoke", workdir=tmp_path / "wd")
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    assert sorted(p.name for p in (tmp_path / "wd" / "checkpoints" / "first").iterdir() if p.name.isdigit()) == ["20"]
    wd = Workdir(tmp_path / "wd")
    wd.enable_checkpoints(0)
    again = fit(get_model("mlp", num_classes=3, hidden=(8,)), data, tc, workdir=wd, tag="first")
    assert again.history == done[0].history and wd.fits[0]["steps"] == 0  # restored at its end: no step trained
    for a, b in zip(jax.tree.leaves(done[0].state.params), jax.tree.leaves(again.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_handles_reads_the_installed_handlers():
    """interrupt.handles: True once a handler is installed for the signal, False with the default one, for
    a process that does not exist and for a signal not caught."""
    old = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        assert not interrupt.handles(os.getpid(), signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, lambda *_: None)
        assert interrupt.handles(os.getpid(), signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert not interrupt.handles(2 ** 22 + 1)  # above Linux's pid_max: no such process
