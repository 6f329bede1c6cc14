"""Keep freed host memory for reuse: glibc's malloc tuned so XLA:CPU stops paying page faults every step.

XLA:CPU allocates each execution's temporary buffer (all of a training step's activations and
gradients: 298 MB for ResNet-20 at batch 128) with `posix_memalign` from one of its worker threads and
frees it when the step ends. glibc serves an allocation that large from a fresh `mmap` (a worker
thread's arena cannot hold more than 64 MB) and returns it with `munmap`, so every step touches
~300 MB of new pages: 72,776 minor page faults and ~0.1 s of kernel time per ResNet-20 step on one
core, a quarter of the step (experiments/benchmarks/README.md, round eleven). With every thread on
the main arena, no `mmap` for large blocks and freed memory kept up to 2 GiB, the next step reuses
the same pages: no faults.

`keep_freed_memory()` sets that (`mallopt`: M_ARENA_MAX 1, M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB - 1).
It must run before any thread has allocated (before JAX starts its backend), so `import nnbasics`
calls it, on Linux with glibc and when no accelerator plug-in of JAX is installed (on a GPU or TPU the
big buffers live on the device). What it costs: the process keeps up to 2 GiB of freed memory instead
of returning it to the system, and all threads share one malloc arena (on a many-core machine with a
busy multi-threaded input pipeline, an arena lock to share). NNBASICS_MALLOC=system leaves glibc's
defaults alone.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
KEEP_BYTES = 2**31 - 1  # mallopt takes a C int
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
ENV = "NNBASICS_MALLOC"

_state: dict = {"applied": None}


def accelerator_plugin() -> str | None:
    """The first installed JAX accelerator plug-in (CUDA, ROCm, TPU), or None: found without starting JAX."""
    for name in ACCELERATOR_PLUGINS:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def wanted(env: dict | None = None) -> tuple[bool, str]:
    """(whether to tune malloc here, why): glibc on Linux, and JAX on the CPU (JAX_PLATFORMS=cpu, or unset
    with no accelerator plug-in installed), unless NNBASICS_MALLOC says 'system' (never) or 'keep' (on
    any platform). Another NNBASICS_MALLOC value: ValueError naming the valid ones."""
    env = os.environ if env is None else env
    choice = env.get(ENV, "").strip().lower()
    if choice not in ("", "keep", "system"):
        raise ValueError(f"{ENV}={env.get(ENV)!r}: valid values are 'keep' and 'system' (unset: keep, on the CPU)")
    if choice == "system":
        return False, f"{ENV}=system"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False, f"not glibc on Linux ({platform.system()}, {platform.libc_ver()[0] or 'unknown libc'})"
    platforms = [p for p in env.get("JAX_PLATFORMS", "").strip().lower().split(",") if p]
    if choice != "keep":  # 'keep' asks for it whatever the platform
        if platforms and platforms != ["cpu"]:
            return False, f"JAX_PLATFORMS={','.join(platforms)}"
        plugin = accelerator_plugin()
        if not platforms and plugin:
            return False, f"an accelerator plug-in of JAX is installed ({plugin})"
    return True, "glibc, CPU"


def keep_freed_memory(env: dict | None = None) -> bool:
    """Tune glibc's malloc as the module docstring says (once per process); True when it was applied."""
    if _state["applied"] is not None:
        return _state["applied"]
    ok, _ = wanted(env)
    if ok:
        try:
            libc = ctypes.CDLL(None)
            ok = all(libc.mallopt(opt, val) == 1 for opt, val in
                     ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_BYTES)))
        except (OSError, AttributeError):
            ok = False
    _state["applied"] = ok
    return ok


def applied() -> bool | None:
    """Whether `keep_freed_memory` tuned malloc in this process (None: not asked yet)."""
    return _state["applied"]
