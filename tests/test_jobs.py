"""`nnbasics reproduce --jobs N`: experiments side by side in worker processes, one share of the cores each."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nnbasics.cli import main
from nnbasics.runs import experiment as exp
from nnbasics.runs import jobs as jobs_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_core_sets_split_the_cores_evenly_and_contiguously():
    assert jobs_lib.core_sets(2, [0, 1]) == [[0], [1]]
    assert jobs_lib.core_sets(1, [0, 1]) == [[0, 1]]
    assert jobs_lib.core_sets(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert jobs_lib.core_sets(3, [4, 5]) == [[4], [5], [4]]  # more workers than cores: shared round robin


def test_longest_first_and_makespan(monkeypatch):
    from nnbasics.runs import estimate

    est = {"a": 10.0, "b": 50.0, "c": None, "d": 30.0, "e": 20.0}
    monkeypatch.setattr(estimate, "seconds", lambda n, preset: est[n])
    assert jobs_lib.longest_first(est, "quick") == ["c", "b", "d", "e", "a"]
    # two workers, longest first: b | d, e (50) ... then a on the lighter one: b=50, d+e=50, a -> 60
    assert jobs_lib.makespan(["a", "b", "d", "e"], "quick", 2) == 60.0
    assert jobs_lib.makespan(["a", "b", "d", "e"], "quick", 1) == 110.0


@pytest.mark.parametrize("bad", ["-1", "two", "1.5", "5000"])
def test_bad_jobs_value_is_refused_before_anything_runs(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--smoke", "--only", "momentum", "--root", str(tmp_path / "r"), "--jobs", bad])
    assert info.value.code == 2
    assert "--jobs wants a whole number of workers from 0 (one per core) to 1024" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_reproduce_with_two_jobs_runs_each_experiment_in_a_worker_on_one_core(tmp_path):
    """Two experiments on two workers: each ran in its own process pinned to one core (its result says
    so), the combined report lists both with the timing table, and a second call reuses both runs."""
    root = tmp_path / "r"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "nnbasics.cli", "reproduce", "--smoke", "--only", "momentum,perceptron_xor",
           "--root", str(root), "--jobs", "2"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert "2 experiments on 2 workers" in out.stderr and "finished momentum" in out.stderr
    doc = json.loads((root / "claims.json").read_text())
    by_name = {r["experiment"]: r for r in doc["experiments"]}
    assert set(by_name) == {"momentum", "perceptron_xor"}
    for r in by_name.values():
        assert r["cores"] == 1 and r["finished"] > r["started"]
    assert by_name["perceptron_xor"]["training"]["member_steps"] > 0  # trains through fit: its steps counted
    text = (root / "report.md").read_text()
    assert "| XLA threads | compile s | member-steps/s |" in text and "From the first experiment's start" in text
    assert not list((root / ".jobs").glob("*.log"))  # a worker's log is kept only when it failed
    stamp = (root / "momentum-smoke" / "claims.json").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == out.returncode and "workers" not in again.stderr  # nothing left to run
    assert (root / "momentum-smoke" / "claims.json").stat().st_mtime_ns == stamp


def test_sigterm_reaches_the_workers_which_checkpoint_and_stop(tmp_path):
    """SIGTERM to `reproduce --jobs 2`: every running worker gets it once, writes a checkpoint after its
    chunk and stops; the command exits 143 and the next one resumes."""
    root = tmp_path / "r"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "nnbasics.cli", "reproduce", "--quick", "--only", "mnist1d,momentum", "--root",
           str(root), "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = root / "mnist1d-quick" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "running worker(s): each finishes its chunk in flight and writes a checkpoint" in err
    assert list((root / "mnist1d-quick" / "checkpoints").glob("*/*")), "the worker wrote no checkpoint"
    assert not (root / "mnist1d-quick" / "claims.json").exists()
    assert exp.default_workdir("mnist1d", "quick", root) == root / "mnist1d-quick"


def test_span_only_for_experiments_that_ran_as_one_reproduction():
    """Side by side or back to back: the span from the first start to the last end. With an idle gap
    (a run reused from hours before, an `--only` re-run) there is no span, and the timing table says why."""
    from nnbasics.runs import report

    def res(name, start, end):
        return {"experiment": name, "started": start, "finished": end, "seconds": end - start, "claims": []}

    side_by_side = [res("a", 0.0, 100.0), res("b", 1.0, 60.0), res("c", 61.0, 90.0)]
    assert report.span_seconds(side_by_side) == 100.0
    assert report._time_text(side_by_side).startswith("1.7 min of wall time, 3.1 min of experiment time")  # 188 s summed
    back_to_back = [res("a", 0.0, 100.0), res("b", 100.0 + report.SPAN_GAP_SECONDS, 300.0)]
    assert report.span_seconds(back_to_back) == 300.0
    reused = [res("a", 0.0, 100.0), res("b", 101.0 + report.SPAN_GAP_SECONDS, 400.0)]
    assert report.span_seconds(reused) is None
    assert report._time_text(reused) == f"{(100.0 + 400.0 - 221.0) / 60:.1f} min of experiment time"
    table = report.timing_table(reused)
    assert "no wall-time span" in table and "From the first experiment's start" not in table
    assert report.span_seconds([{"experiment": "old", "seconds": 3.0, "claims": []}]) is None
