"""Checkpoints and resume: a run killed with SIGKILL and resumed equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnbasics.runs.workdir import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["run", "mnist1d", "--smoke", "--quiet", "--checkpoint-every", "100", "--config.steps=400",
        "--config.models=('mlp','cnn')"]


def _cmd(wd, *extra):
    return [sys.executable, "-m", "nnbasics.cli", *ARGS, "--workdir", str(wd), *extra]


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _rows(wd):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(wd / "metrics.jsonl")]


def _final_params(wd, tag):
    import orbax.checkpoint as ocp

    path = wd / "checkpoints" / tag
    step = max(int(p.name) for p in path.iterdir() if p.name.isdigit())
    with ocp.CheckpointManager(path.absolute()) as mgr:
        state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    import jax

    return step, [np.asarray(a) for a in jax.tree.leaves(state["params"])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref")
    subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), check=False, capture_output=True, timeout=600)
    assert (ref / "claims.json").exists()
    return ref


def _start_and_stop_midway(wd, sig):
    """Start the run, send `sig` once the MLP is done and the CNN has begun; returns the process."""
    proc = subprocess.Popen(_cmd(wd), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if len(read_metrics(wd / "metrics.jsonl")) >= 5:  # the mlp is done, the cnn has begun
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(sig)
    proc.wait(timeout=600)
    assert not (wd / "claims.json").exists()
    return proc


def _resume_and_compare(wd, ref, same_order=True):
    out = subprocess.run(_cmd(wd), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    rows, ref_rows = _rows(wd), _rows(ref)
    if not same_order:  # runs without a checkpoint are redone, so their rows come after the resumed run's
        rows, ref_rows = (sorted(r, key=lambda row: (row["run"], row["step"])) for r in (rows, ref_rows))
    assert rows == ref_rows  # no duplicate, missing or different metric lines
    for tag in ("mlp", "cnn"):
        s_ref, p_ref = _final_params(ref, tag)
        s_res, p_res = _final_params(wd, tag)
        assert s_ref == s_res == 400
        for a, b in zip(p_ref, p_res):
            np.testing.assert_array_equal(a, b)
    a = json.loads((ref / "claims.json").read_text())["claims"]
    b = json.loads((wd / "claims.json").read_text())["claims"]
    for ca, cb in zip(a, b):
        for k in ca["measured"]:
            if "seconds" not in k:
                assert ca["measured"][k] == cb["measured"][k]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference):
    killed = tmp_path / "killed"
    _start_and_stop_midway(killed, signal.SIGKILL)
    _resume_and_compare(killed, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_stop_signal_writes_a_checkpoint_and_stops(tmp_path, reference, signum):
    """Ctrl-C (or SIGTERM, a scheduler's preemption) stops after the chunk in flight with a checkpoint
    at the last metric row, also without --checkpoint-every, and the next run continues from it to the
    same result; the exit status is 128 + the signal (130, 143)."""
    wd = tmp_path / "interrupted"
    cmd = [c for c in _cmd(wd) if c not in ("--checkpoint-every", "100")]
    # a shell running pytest in the background passes SIGINT on as ignored, and Python then keeps
    # ignoring it (as nnbasics does): give the run the default disposition a terminal would
    # (set in the child itself: a preexec_fn would run Python between fork and exec of a threaded process)
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'nnbasics'; runpy.run_module('nnbasics.cli', run_name='__main__')")
    cmd = [sys.executable, "-c", start, *cmd[3:]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    # as soon as the first of 8 metric rows is out: training (or compiling) is in progress, with at
    # least three chunks of the MLP and the whole CNN still to come
    while time.time() < deadline and proc.poll() is None and len(read_metrics(wd / "metrics.jsonl")) < 1:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "interrupted at step" in err and "Run the same command again" in err
    assert ("Ctrl-C received" if signum == signal.SIGINT else "SIGTERM received") in err
    rows = read_metrics(wd / "metrics.jsonl")
    last_run, last_step = rows[-1]["run"], rows[-1]["step"]
    assert 100 <= last_step < 400
    saved = {p.name: sorted(int(q.name) for q in p.iterdir() if q.name.isdigit())
             for p in (wd / "checkpoints").iterdir()}
    # written on the interrupt, at the row the metrics file ends with; checkpoints were off otherwise
    assert saved == {last_run: [last_step]}
    _resume_and_compare(wd, reference, same_order=False)


def test_checkpoint_of_a_different_model_is_refused(tmp_path):
    from nnbasics.data import load_dataset
    from nnbasics.engine import TrainConfig, fit
    from nnbasics.engine.checkpoint import CheckpointMismatch
    from nnbasics.models import get_model

    d = load_dataset("blobs", n_train=100, n_test=20)
    tc = TrainConfig(steps=20, batch_size=10, eval_every=10)
    fit(get_model("mlp", num_classes=3, hidden=(8,)), d, tc, checkpoint_dir=str(tmp_path), tag="m")
    again = fit(get_model("mlp", num_classes=3, hidden=(8,)), d, tc, checkpoint_dir=str(tmp_path), tag="m")
    assert [r["step"] for r in again.history] == [10, 20]  # restored, nothing retrained
    differs = "(?s)different run.*model: checkpoint has.*hidden = \\(8,\\).*this run has.*hidden = \\(16,\\)"
    with pytest.raises(CheckpointMismatch, match=differs):
        fit(get_model("mlp", num_classes=3, hidden=(16,)), d, tc, checkpoint_dir=str(tmp_path), tag="m")
    with pytest.raises(CheckpointMismatch, match="batch_size"):
        fit(get_model("mlp", num_classes=3, hidden=(8,)), d, TrainConfig(steps=20, batch_size=20, eval_every=10),
            checkpoint_dir=str(tmp_path), tag="m")


@pytest.mark.parametrize("damage", ["last_line", "two_thirds", "torn_line"])
def test_resume_rebuilds_metrics_rows_lost_from_a_damaged_file(tmp_path, damage):
    """The checkpoint holds the run's rows: a metrics.jsonl that lost rows (cut, or a torn line)
    gets them back on resume, with a warning naming the file; other runs' rows are kept."""
    from nnbasics.data import load_dataset
    from nnbasics.engine import TrainConfig, fit
    from nnbasics.models import get_model
    from nnbasics.runs.workdir import MetricsWriter

    d = load_dataset("blobs", n_train=100, n_test=20)
    tc = TrainConfig(steps=60, batch_size=10, eval_every=10, checkpoint_every=30)
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write({"run": "other", "note": 1})
    fit(get_model("mlp", num_classes=3, hidden=(8,)), d, tc, checkpoint_dir=str(tmp_path / "c"), metrics_writer=writer,
        tag="m")
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    assert len(lines) == 7
    cut = {"last_line": "".join(lines[:-1]), "two_thirds": "".join(lines[:3]),
           "torn_line": "".join(lines[:4]) + lines[4][:20]}[damage]
    path.write_text(cut)
    with pytest.warns(UserWarning, match=f"{path}.*rebuilt them from the checkpoint"):
        again = fit(get_model("mlp", num_classes=3, hidden=(8,)), d, tc, checkpoint_dir=str(tmp_path / "c"),
                    metrics_writer=MetricsWriter(path), tag="m")
    assert [r["step"] for r in again.history] == [10, 20, 30, 40, 50, 60]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(path)]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in full.splitlines()]


@pytest.mark.parametrize("gap", [0.05, 0.6])
def test_second_sigint_never_prints_a_traceback_and_the_run_resumes(tmp_path, reference, gap):
    """Ctrl-C twice, the second `gap` seconds after the first (in the chunk, the checkpoint write or the
    exit): the process stops with status 130 (or dies of the signal in Python's final teardown) and
    never a traceback; whatever checkpoint was half-written, the next run ends equal to an uninterrupted one."""
    wd = tmp_path / "twice"
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'nnbasics'; runpy.run_module('nnbasics.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", start, *_cmd(wd)[3:]], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(read_metrics(wd / "metrics.jsonl")) < 1:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    _resume_and_compare(wd, reference, same_order=False)
