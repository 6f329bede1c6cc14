"""Faults: damaged checkpoints fall back to the previous one; unusable work directories fail early."""

import glob
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.engine.checkpoint import CorruptCheckpointWarning
from nnbasics.models import get_model
from nnbasics.runs.workdir import WorkdirUnusable, ensure_writable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TC = TrainConfig(steps=30, batch_size=10, eval_every=10, checkpoint_every=10, keep_checkpoints=3)


def _data():
    return load_dataset("blobs", n_train=100, n_test=20)


def _fit(ckdir):
    return fit(get_model("mlp", num_classes=3, hidden=(8,)), _data(), TC, checkpoint_dir=str(ckdir), tag="m")


def _leaves(res):
    return [np.asarray(a) for a in jax.tree.leaves(res.state.params)]


def _truncate_meta(step_dir):
    f = step_dir / "meta" / "metadata"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_array_bytes(step_dir):
    files = glob.glob(str(step_dir / "state" / "d" / "*"))
    assert files
    for f in files:
        b = bytearray(open(f, "rb").read())
        b[len(b) // 2] ^= 0xFF
        open(f, "wb").write(bytes(b))


def _wrong_digest(step_dir):  # a checkpoint without its file list (killed just after Orbax finished)
    (step_dir / "nnbasics_files.json").unlink()
    f = step_dir / "meta" / "metadata"
    meta = json.loads(f.read_text())
    meta["digest"] = "0" * 64
    f.write_text(json.dumps(meta))


def _truncate_array_file(step_dir):
    f = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "ocdbt" not in str(p.parent)),
            key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_truncate_meta, _flip_array_bytes, _wrong_digest, _truncate_array_file])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    ref = _fit(tmp_path / "ref")
    _fit(tmp_path / "run")
    damage(tmp_path / "run" / "m" / "30")
    with pytest.warns(CorruptCheckpointWarning, match="step 30 .* damaged.*resuming from step 20"):
        again = _fit(tmp_path / "run")
    # steps 20 -> 30 were trained again from the step-20 checkpoint: same rows, same parameters
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in again.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ref.history]
    for a, b in zip(_leaves(again), _leaves(ref)):
        np.testing.assert_array_equal(a, b)
    names = sorted(p.name for p in (tmp_path / "run" / "m").iterdir())
    assert any(n.startswith("30.corrupt-") for n in names) and "30" in names  # set aside, then saved anew


def test_every_checkpoint_damaged_starts_from_scratch(tmp_path):
    ref = _fit(tmp_path / "ref")
    _fit(tmp_path / "run")
    for step in (10, 20, 30):
        _truncate_meta(tmp_path / "run" / "m" / str(step))
    with pytest.warns(CorruptCheckpointWarning) as record:
        again = _fit(tmp_path / "run")
    messages = [str(w.message) for w in record]
    assert [m.split(" in ")[0] for m in messages] == [f"checkpoint at step {s}" for s in (30, 20, 10)]
    assert "resuming from step 10" in messages[1] and "starting from scratch" in messages[2]
    assert [r["step"] for r in again.history] == [10, 20, 30]
    for a, b in zip(_leaves(again), _leaves(ref)):
        np.testing.assert_array_equal(a, b)


def test_unwritable_workdir_is_refused_before_anything_runs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirUnusable, match="cannot create the directory .*a_file/run for the run: .*a_file is a file, "
                                              "not a directory"):
        ensure_writable(blocker / "run")
    from nnbasics.runs.experiment import run_experiment

    with pytest.raises(WorkdirUnusable, match="perceptron_xor"):
        run_experiment("perceptron_xor", "smoke", workdir=blocker / "run")
    out = subprocess.run([sys.executable, "-m", "nnbasics.cli", "run", "perceptron_xor", "--smoke", "--workdir",
                          str(blocker / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 2
    assert "nnbasics: error: cannot create the directory" in out.stderr and "is a file, not a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_full_disk_is_refused_and_nothing_written_is_lost(tmp_path, monkeypatch):
    from nnbasics.runs.experiment import run_experiment

    wd = tmp_path / "wd"
    run_experiment("perceptron_xor", "smoke", workdir=wd)
    before = {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()}
    free = __import__("shutil").disk_usage(tmp_path).free
    monkeypatch.setenv("NNBASICS_MIN_FREE_MB", str(2 * free / 2**20))  # more than the disk has free
    with pytest.raises(WorkdirUnusable, match="not enough free disk space .* MiB free"):
        run_experiment("perceptron_xor", "smoke", workdir=wd, force=True)
    after = {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()}
    assert after == before  # --force did not move the finished run aside


def test_checkpoint_space_is_checked_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("NNBASICS_MIN_FREE_MB", "0")
    ensure_writable(tmp_path / "ok", need_bytes=1)  # fine with no margin
    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises(WorkdirUnusable, match="the checkpoints"):
        ensure_writable(tmp_path / "ck", need_bytes=2 * free, what="the checkpoints")
    monkeypatch.setenv("NNBASICS_MIN_FREE_MB", str(2 * free / 2**20))
    with pytest.raises(WorkdirUnusable, match="for the checkpoints"):
        _fit(tmp_path / "ck2")
    assert not any((tmp_path / "ck2" / "m").glob("[0-9]*"))  # nothing trained or saved


def test_sigint_is_a_request_checked_after_each_chunk(tmp_path):
    import signal

    from nnbasics.engine import fit
    from nnbasics.engine.interrupt import InterruptFlag, TrainingInterrupted, graceful_interrupt, listening

    _fit = fit  # the library installs no signal handler (the command line does): our own request flag

    # Python's own Ctrl-C handler for this check, whatever an earlier test or the test runner's worker left
    # there (a handler that is not Python's default is left alone by design: that is checked below)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        with graceful_interrupt("test") as flag, listening(flag):  # a training loop listens (fit does, as here)
            assert flag.installed
            signal.raise_signal(signal.SIGINT)  # in this (main) thread: the handler has run when it returns
            assert flag.requested
            assert signal.getsignal(signal.SIGINT) is not before  # ours stays: a second Ctrl-C stops at once
        assert signal.getsignal(signal.SIGINT) is before
        mine = lambda signum, frame: None  # noqa: E731 - a program's own handler: graceful_interrupt keeps it
        signal.signal(signal.SIGINT, mine)
        with graceful_interrupt("test"):
            assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, outer)

    requested = InterruptFlag()
    requested.requested = True  # as if Ctrl-C came while compiling: one chunk runs, then it stops
    with pytest.raises(TrainingInterrupted, match="interrupted at step 10 of 30") as info:
        _fit(get_model("mlp", num_classes=3, hidden=(8,)), _data(), TrainConfig(steps=30, batch_size=10, eval_every=10),
             checkpoint_dir=str(tmp_path), tag="m", interrupt=requested)
    assert info.value.step == 10 and sorted(p.name for p in (tmp_path / "m").iterdir()) == ["10"]
    resumed = _fit(get_model("mlp", num_classes=3, hidden=(8,)), _data(), TrainConfig(steps=30, batch_size=10,
                   eval_every=10), checkpoint_dir=str(tmp_path), tag="m", interrupt=InterruptFlag())
    assert [r["step"] for r in resumed.history] == [10, 20, 30]


SECOND_CTRL_C = """
import os, signal, sys, time
import jax, jax.numpy as jnp
from nnbasics.engine.interrupt import graceful_interrupt, listening

SIG = int(sys.argv[1])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background shell ignores SIGINT)
spin = jax.jit(lambda x: jax.lax.fori_loop(0, 2_000_000_000, lambda i, v: v * 1.0000001 + 1e-9, x))
with graceful_interrupt("test") as flag, listening(flag):  # as while fit trains
    os.kill(os.getpid(), SIG)  # the first Ctrl-C (or SIGTERM): a request, nothing stops yet
    assert flag.requested
    print("requested", flush=True)
    spin(jnp.float32(1.0)).block_until_ready()  # a compiled chunk of minutes: Python handlers cannot run
print("the chunk ended", flush=True)
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_second_stop_signal_stops_at_once_with_one_line_and_no_traceback(name):
    """The second Ctrl-C (or SIGTERM) stops the process at once (rc 130, 143) even inside a long compiled
    chunk, with one line on stderr: no KeyboardInterrupt raised at random places (gc callbacks, threads)
    as tracebacks."""
    import signal

    signum = int(getattr(signal, name))
    proc = subprocess.Popen([sys.executable, "-c", SECOND_CTRL_C, str(signum)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        assert proc.stdout.readline().strip() == "requested"
        import time

        time.sleep(1.0)  # inside the compiled loop by now
        t0 = time.perf_counter()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        waited = time.perf_counter() - t0
    finally:
        proc.kill()
    said = "Ctrl-C" if name == "SIGINT" else name
    assert proc.returncode == 128 + signum, err[-2000:]
    assert waited < 10 and "the chunk ended" not in out  # the old default handler waited for the chunk (25 s)
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.count(f"second {said}: test stopped at once") == 1 and err.count(f"{said} received") == 1


_CACHE_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from nnbasics import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
print(float(jax.jit(lambda x: (jnp.sin(x) * 2 + 1).sum())(jnp.arange(5.0))))
"""


def test_damaged_compilation_cache_entry_is_set_aside_and_rebuilt(tmp_path):
    """jax only warns about a cache entry it cannot read (and warns again on every later run): the
    entry is moved aside with one line naming it, the program compiled and cached anew, and the next
    run reads the new entry without a word."""
    cache = tmp_path / "jax"

    def run():
        out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(cache)], capture_output=True, text=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
        assert out.returncode == 0, out.stderr
        return out

    first = run()
    entries = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert entries, "the first run cached nothing"
    for p in entries:  # cut every entry in half
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    second = run()
    assert second.stdout == first.stdout
    assert "damaged compilation cache entr" in second.stderr and entries[0].name in second.stderr
    assert "Error reading persistent compilation cache" not in second.stderr
    assert sorted(p.name for p in cache.glob("*.corrupt-*")) and all(p.exists() for p in entries)  # rebuilt
    third = run()
    assert third.stdout == first.stdout and "damaged" not in third.stderr and "Error reading" not in third.stderr


def test_set_aside_damaged_entries_moves_only_what_does_not_decompress(tmp_path):
    from jax._src.compilation_cache import compress_executable

    from nnbasics.engine.compile import set_aside_damaged_entries

    (tmp_path / "jit_f-aaa-cache").write_bytes(compress_executable(b"a program"))
    (tmp_path / "jit_f-bbb-cache").write_bytes(b"\x00garbage")
    (tmp_path / "jit_g-ccc-cache").write_bytes(b"\x00garbage")  # another program: not touched
    assert set_aside_damaged_entries(tmp_path, "jit_f") == ["jit_f-bbb-cache"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["jit_f-aaa-cache", "jit_f-bbb-cache.corrupt-" + names[1].split(".corrupt-")[1]]
    assert (tmp_path / "jit_g-ccc-cache").exists() and set_aside_damaged_entries(tmp_path, "jit_f") == []


@pytest.mark.parametrize("setting", ["ignore", "error"])
def test_own_warnings_show_whatever_pythonwarnings_says(tmp_path, setting):
    """PYTHONWARNINGS=ignore (a common setting) hid the warning that a damaged cache was set aside and
    rebuilt; =error turned it into a traceback. The project's own warnings show as one line each."""
    load_dataset("mnist1d")  # the user's cache holds an intact copy (written now if it did not)
    src = next((pathlib.Path(os.environ.get("NNBASICS_CACHE") or pathlib.Path.home() / ".cache" / "nnbasics")
                ).glob("mnist1d_*.npz"))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / src.name).write_bytes(src.read_bytes()[:1000])  # cut short
    out = subprocess.run([sys.executable, "-m", "nnbasics.cli", "config", "mnist1d", "--smoke"], cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "NNBASICS_CACHE": str(cache),
                              "PYTHONWARNINGS": setting}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.count("nnbasics: warning: the cached data file") == 1 and src.name in out.stderr


def test_orbax_log_lines_come_as_one_warning_not_error_absl(tmp_path, caplog):
    """A damaged _CHECKPOINT_METADATA (with the file list gone, as after a kill just after Orbax finished):
    Orbax logged `ERROR:absl:Failed to json parse Metadata file ...` on stderr before nnbasics's own lines.
    It comes as a CorruptCheckpointWarning naming the directory, and nothing reaches the absl log."""
    import logging

    first = _fit(tmp_path)
    step_dir = tmp_path / "m" / "30"
    (step_dir / "nnbasics_files.json").unlink()
    (step_dir / "_CHECKPOINT_METADATA").write_text("{garbage")
    with caplog.at_level(logging.INFO), pytest.warns(CorruptCheckpointWarning, match="Orbax reported.*_CHECKPOINT_METADATA"):
        again = _fit(tmp_path)
    assert not [r for r in caplog.records if r.name == "absl" and r.levelno >= logging.WARNING]
    for a, b in zip(_leaves(first), _leaves(again)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", ["loop", "pair", "dangling", "under a loop"])
def test_workdir_that_is_a_broken_symlink_is_one_line_naming_the_link(tmp_path, capsys, make):
    """A --workdir that is a symlink loop or a dangling link said "File exists" (mkdir's words)."""
    from nnbasics.cli import main

    if make in ("loop", "under a loop"):
        (tmp_path / "wd").symlink_to(tmp_path / "wd")
    elif make == "pair":
        (tmp_path / "wd").symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(tmp_path / "wd")
    else:
        (tmp_path / "wd").symlink_to(tmp_path / "nowhere")
    wd = tmp_path / "wd" / "sub" if make == "under a loop" else tmp_path / "wd"
    assert main(["--quiet", "run", "momentum", "--smoke", "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "File exists" not in err, err
    assert f"{tmp_path / 'wd'} is a symbolic link" in err
    assert ("which does not exist" if make == "dangling" else "loops") in err
    assert not (tmp_path / "nowhere").exists()


def _blobs_ns(**arrays):
    import types

    d = _data()
    return types.SimpleNamespace(**{**dict(x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test),
                                    **arrays})


_BX, _BY = _data().x_train, _data().y_train
_TX, _TY = _data().x_test, _data().y_test


@pytest.mark.parametrize("model, data, loss, match", [
    # a model of zero (or, for a classifier, one) classes: was "ZeroDivisionError: 'float division by zero'"
    (dict(name="mlp", num_classes=0), {}, "cross_entropy",
     r"the model has num_classes=0, but the cross_entropy loss needs one output per class to tell apart: num_classes "
     r"must be at least 2, and more than the largest label \(2\): 3 or more"),
    (dict(name="mlp", num_classes=1), {}, "cross_entropy", r"num_classes=1, .*must be at least 2"),
    (dict(name="mlp", num_classes=0), dict(y_train=_BX, y_test=_TX), "mse",
     r"the model has num_classes=0: it gives no outputs to train; num_classes must be 1 or more"),
    # shapes: were errors from inside Flax or JAX naming no input
    (dict(name="mlp", num_classes=3), dict(x_test=_TX[:, :1]), "cross_entropy",
     r"x_test has shape \(20, 1\): examples of shape \(1,\), but x_train's are \(2,\); .*give x_test of shape \(20, 2\)"),
    (dict(name="mlp", num_classes=3), dict(x_test=_TX[:, :, None]), "cross_entropy", r"x_test has shape \(20, 2, 1\)"),
    (dict(name="mlp", num_classes=3), dict(y_test=_TY[:, None]), "cross_entropy",
     r"y_test has shape \(20, 1\), but y_train has \(100,\): .*give y_test of shape \(20,\)"),
    (dict(name="mlp", num_classes=3), dict(x_train=_BX[:, 0]), "cross_entropy",
     r"x_train has shape \(100,\), one number per example; .*x_train\[:, None\], shape \(100, 1\)"),
    (dict(name="mlp", num_classes=3), dict(y_train=_BY[:, None], y_test=_TY[:, None]), "cross_entropy",
     r"y_train, which has shape \(100, 1\).*give y_train of shape \(100,\)"),
    (dict(name="linear_regression", num_classes=1), dict(y_train=_BX, y_test=_TX), "mse",
     r"y_train has shape \(100, 2\), 2 target value\(s\) per example, but the model's output on one example has shape "
     r"\(1, 1\), 1 value\(s\); .*give y_train of shape \(100, 1\) or a model with 2 output\(s\)"),
])
def test_fit_names_the_input_and_the_valid_shape_or_range(model, data, loss, match, monkeypatch):
    from nnbasics.config import ConfigError
    from nnbasics.engine import loop

    monkeypatch.setattr(loop, "_programs", lambda *a, **k: pytest.fail("compiled before refusing"))
    with pytest.raises(ConfigError, match=match):
        fit(get_model(**model), _blobs_ns(**data), TrainConfig(steps=5, batch_size=10, loss=loss))


@pytest.mark.parametrize("name, kw", [("blobs", dict(centers=0)), ("spirals", dict(arms=0)), ("blobs", dict(centers=1.5))])
def test_toy_sets_refuse_a_class_count_below_two(name, kw):
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be a whole number of at least 2"):
        load_dataset(name, **kw)


def test_regression_targets_that_match_the_outputs_still_train():
    d = _blobs_ns(y_train=_BX, y_test=_TX)
    res = fit(get_model("linear_regression", num_classes=2), d, TrainConfig(steps=4, batch_size=10, eval_every=2,
                                                                          loss="mse"))
    assert np.isfinite(res.history[-1]["train_loss"]).all()
    one = _blobs_ns(y_train=_BX[:, 0], y_test=_TX[:, 0])  # one target per example, as a vector: one output
    fit(get_model("linear_regression", num_classes=0), one, TrainConfig(steps=4, batch_size=10, eval_every=2, loss="mse"))


@pytest.mark.parametrize("under", [False, True])
def test_workdir_that_is_a_file_says_so(tmp_path, capsys, under):
    """A --workdir that is a file (or lies under one) said "File exists" or "Not a directory" (mkdir's words)."""
    from nnbasics.cli import main

    (tmp_path / "afile").write_text("x")
    wd = tmp_path / "afile" / "sub" if under else tmp_path / "afile"
    assert main(["--quiet", "run", "momentum", "--smoke", "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{tmp_path / 'afile'} is a file, not a directory; choose another --workdir / --root"), err
    assert (tmp_path / "afile").read_text() == "x"
