"""Two processes on localhost (CPU backend, gloo collectives) train to the same result as one."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SGD: with Adam the two runs agree to 1e-5 at step 30 but not always at step 60 (jax 0.12: 1.4e-4),
# because a different order of the gradient's sum over the batch (an all-reduce across processes
# against one device's sum) changes near-zero gradient entries at rounding level, and Adam's
# g / sqrt(v) scales those up to full-size steps. SGD keeps rounding differences at rounding level.
ARGS = ["run", "mnist1d", "--smoke", "--config.models=('mlp',)", "--config.steps=60", "--config.eval_every=30",
        "--config.optimizer.name='sgd'", "--config.optimizer.learning_rate=0.1", "--config.seeds=(0,1)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def test_two_processes_equal_one(tmp_path):
    one = tmp_path / "one"
    out = subprocess.run([sys.executable, "-m", "nnbasics.cli", "--quiet", *ARGS, "--workdir", str(one)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    two = tmp_path / "two"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nnbasics.cli", "--quiet", "--multihost", "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", "2", "--process-id", str(i), *ARGS, "--workdir", str(two)],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode in (0, 1), se[-2000:]
    rows1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(rows1) == len(rows2) == 2  # process 1 wrote nothing extra
    for a, b in zip(rows1, rows2):
        assert a["step"] == b["step"]
        for k in ("train_loss", "test_loss", "test_accuracy"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert json.loads((two / "claims.json").read_text())["versions"]["devices"] == "2"
