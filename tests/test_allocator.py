"""nnbasics.allocator: glibc's malloc tuned at import so XLA:CPU's per-execution buffers reuse their pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from nnbasics import allocator

GLIBC_LINUX = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A program whose 192 MB intermediate (a @ b) XLA:CPU allocates and frees on every execution; prints the
# median over 7 executions (after 2 warm-ups) of the minor page faults per page of it. The median, since on
# a loaded machine a buffer is sometimes freed after the next execution has already allocated its own.
PROBE = """
import resource, statistics
import nnbasics  # noqa: F401
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: (a @ b).T @ a)
a = jnp.ones((4096, 16), jnp.float32); b = jnp.ones((16, 12288), jnp.float32)
for _ in range(2):
    f(a, b).block_until_ready()
counts = []
for _ in range(7):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b).block_until_ready()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(statistics.median(counts) / (4096 * 12288 * 4 / 4096))
"""


def _faults_per_page(**env) -> float:
    full = {k: v for k, v in os.environ.items() if k != "NNBASICS_MALLOC"}
    full.update(JAX_PLATFORMS="cpu", **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's mallopt on Linux only")
def test_kept_memory_removes_the_page_faults_of_every_execution():
    # glibc's defaults: the intermediate is a fresh mmap each execution, every page faulted in again
    assert _faults_per_page(NNBASICS_MALLOC="system") > 0.9
    # tuned at import: the same pages are reused, (almost) no faults
    assert _faults_per_page() < 0.05


def test_wanted_rules(monkeypatch):
    monkeypatch.setattr(allocator, "accelerator_plugin", lambda: None)
    ok, why = allocator.wanted({"NNBASICS_MALLOC": "system"})
    assert not ok and "system" in why
    assert allocator.wanted({"JAX_PLATFORMS": "cuda"})[0] is False
    assert allocator.wanted({"JAX_PLATFORMS": "cpu,cuda"})[0] is False
    if GLIBC_LINUX:
        assert allocator.wanted({})[0] is True
        assert allocator.wanted({"JAX_PLATFORMS": "cpu"})[0] is True
        assert allocator.wanted({"NNBASICS_MALLOC": "keep", "JAX_PLATFORMS": "tpu"})[0] is True
    # an accelerator plug-in installed: left alone unless JAX is told to use the CPU or 'keep' is asked for
    monkeypatch.setattr(allocator, "accelerator_plugin", lambda: "jax_cuda12_plugin")
    ok, why = allocator.wanted({})
    assert not ok and "jax_cuda12_plugin" in why
    if GLIBC_LINUX:
        assert allocator.wanted({"JAX_PLATFORMS": "cpu"})[0] is True
        assert allocator.wanted({"NNBASICS_MALLOC": "keep"})[0] is True


def test_bad_value_names_the_valid_ones():
    with pytest.raises(ValueError, match="'keep' and 'system'"):
        allocator.wanted({"NNBASICS_MALLOC": "jemalloc"})


def test_import_warns_on_a_bad_value_and_keeps_the_defaults():
    env = {**os.environ, "NNBASICS_MALLOC": "bogus"}
    out = subprocess.run([sys.executable, "-c", "import nnbasics; print(nnbasics._allocator.applied())"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "None"
    assert "NNBASICS_MALLOC='bogus'" in out.stderr and "defaults kept" in out.stderr
