"""`nnbasics.set_cpu_threads` / `nnbasics --cpu-threads N`: XLA:CPU's thread pools sized before the
backend exists; the numbers equal a one-core process's; compilation keeps every core."""

import json
import os
import subprocess
import sys

import pytest

from nnbasics.cli import main
from nnbasics.threads import set_cpu_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Programs whose results depend on how XLA splits them over threads (measured on a 2-core machine:
# the sum of a large array and a 1-D convolution's weight gradient differ between 1 and 2 threads).
PROBE = r"""
import hashlib, json, os, sys
import numpy as np
mode = sys.argv[1]
cores = sorted(os.sched_getaffinity(0))
if mode == "pinned":
    os.sched_setaffinity(0, cores[:1])
applied = None
if mode == "threads":
    from nnbasics import set_cpu_threads
    applied = set_cpu_threads(1)
import jax, jax.numpy as jnp
from jax import lax
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((128, 32, 32, 16), np.float32))
x1 = jnp.asarray(rng.standard_normal((100, 40, 32), np.float32))
w1 = jnp.asarray(rng.standard_normal((5, 32, 32), np.float32))
conv = lambda w: lax.conv_general_dilated(x1, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
out = {"sum": jax.jit(jnp.sum)(x), "wgrad": jax.jit(jax.grad(lambda w: (conv(w) ** 2).sum()))(w1)}
digest = {k: hashlib.sha256(np.asarray(v).tobytes()).hexdigest() for k, v in out.items()}
masks = [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]
print(json.dumps({"digest": digest, "applied": applied, "cores": cores, "masks": masks}))
"""


def _probe(mode):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_one_thread_computes_what_one_core_computes_and_compiles_on_every_core():
    threads, pinned = _probe("threads"), _probe("pinned")
    assert threads["applied"] is True
    # bit for bit what a process pinned to one core computes (on a 2-core machine the default pools
    # of two threads give other bits for both programs)
    assert threads["digest"] == pinned["digest"]
    # afterwards every thread of the process may run on every core again (compiles use them all)
    assert all(mask == threads["cores"] for mask in threads["masks"])


@pytest.mark.parametrize("bad", [0, -1, 10_000, "1", 1.0, True])
def test_bad_thread_counts_are_refused_with_the_valid_range(bad):
    with pytest.raises(ValueError, match="cpu threads must be"):
        set_cpu_threads(bad)


def test_refused_once_jax_has_made_its_backends():
    import jax

    jax.devices()  # this test process has its backends
    with pytest.raises(RuntimeError, match="before JAX creates its backends"):
        set_cpu_threads(1)


@pytest.mark.parametrize("bad", ["0", "two", "100000"])
def test_cli_refuses_a_bad_cpu_threads_value_before_anything_runs(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--cpu-threads", bad, "run", "momentum", "--smoke", "--workdir", str(tmp_path / "w")])
    assert info.value.code == 2
    assert "--cpu-threads wants a whole number from 1 to" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_cli_flag_sizes_the_pools_and_the_result_records_it(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "NNBASICS_NO_COMPILE_CACHE": "1"}
    wd = tmp_path / "w"
    out = subprocess.run([sys.executable, "-m", "nnbasics.cli", "--quiet", "--cpu-threads", "1", "run", "momentum",
                          "--smoke", "--workdir", str(wd)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert json.loads((wd / "claims.json").read_text())["cores"] == 1  # default: one per core


def test_public_api_names_it():
    import nnbasics

    assert nnbasics.set_cpu_threads is set_cpu_threads
