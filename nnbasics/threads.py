"""How many threads XLA's CPU backend runs a program's operations on.

XLA:CPU sizes its thread pools once, when JAX creates the CPU backend, from the cores the process
may use (its affinity). For the small models of this lecture (MNIST-1D's MLP and CNN, batch 100) one
thread runs the training loop faster than two: the operations are too small to split, and each split
costs a hand-over between threads (MNIST-1D CNN, 5750 steps on a 2-core machine: 3.1 s on one
thread, 3.8-3.9 s on two). It also makes the numbers independent of the machine's core count: an
operation split over more threads may add its parts in another order, so a run on a 16-core server
could differ at rounding level from the same run on a laptop; with one thread both compute exactly
what one core computes.

`set_cpu_threads(n)` restricts the process to n of its cores while the backend is created (its pools
get n threads) and then gives every thread back all of its cores, so compilation, which runs in the
calling threads, still uses every core. It must run before the first JAX computation.
"""

from __future__ import annotations

import os
import warnings

_pool_threads: int | None = None  # what set_cpu_threads gave XLA's pools in this process


def available_cores() -> list[int]:
    """The cores this process may use (its affinity; every core where the system has none)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def cpu_threads() -> int:
    """The threads XLA:CPU runs an operation on in this process: what `set_cpu_threads` set, else one
    per core the process may use (XLA's default)."""
    return _pool_threads if _pool_threads is not None else len(available_cores())


def _backend_exists() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a jax that moved it: assume not yet
        return False
    probe = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(probe()) if probe is not None else bool(getattr(xla_bridge, "_backends", {}))


def _threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def set_cpu_threads(n: int) -> bool:
    """Create JAX's backends with XLA:CPU's thread pools sized to `n` threads (1 to the number of cores
    this process may use); compilation still uses every core. Call it before the first JAX computation.
    Returns True when applied; False (with a warning) on a system without per-thread CPU affinity
    (macOS, Windows), where XLA keeps one thread per core. Raises ValueError for an `n` out of range
    and RuntimeError when JAX's backends already exist (their pools cannot be resized)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"cpu threads must be a whole number from 1 to the number of cores, got {n!r}")
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        warnings.warn("set_cpu_threads needs Linux's per-thread CPU affinity; XLA keeps one thread per core here",
                      stacklevel=2)
        return False
    cores = available_cores()
    if not 1 <= n <= len(cores):
        raise ValueError(f"cpu threads must be from 1 to {len(cores)} (the cores this process may use: "
                         f"{','.join(map(str, cores))}), got {n}")
    if _backend_exists():
        raise RuntimeError("set_cpu_threads must run before JAX creates its backends (before the first JAX "
                           "computation or jax.devices()); XLA sizes its CPU thread pools once, at that moment")
    global _pool_threads
    import jax

    before = _threads()
    os.sched_setaffinity(0, cores[:n])
    try:
        jax.devices()  # creates the backends: XLA:CPU's pools now have n threads
    finally:
        # this thread and every thread the backends started get all the cores back
        for tid in (_threads() - before) | {0}:
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:  # a thread that has already ended
                pass
    _pool_threads = n
    return True


DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def xla_flags_device_count(flags: str) -> str | None:
    """The CPU device count that an XLA_FLAGS string asks for (its last DEVICE_COUNT_FLAG's value, as
    written), or None where it asks for none."""
    given = [f for f in flags.split() if f.startswith(DEVICE_COUNT_FLAG + "=")]
    return given[-1].split("=", 1)[1] if given else None


def set_cpu_devices(n: int, environ: "os._Environ[str] | dict[str, str] | None" = None) -> None:
    """Before JAX creates its backends: make the CPU backend show `n` devices (XLA_FLAGS gets
    --xla_force_host_platform_device_count=n; inherited by worker processes). On a multi-core CPU,
    `fit` then trains its members (seeds x settings) split over them, each device's members as a
    program of its own, all devices at once (see `nnbasics.engine.parallel`). Raises ValueError for an
    `n` below 1 or an XLA_FLAGS that already asks for another count, RuntimeError once the backends
    exist."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu devices must be a whole number of at least 1, got {n!r}")
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    given = xla_flags_device_count(flags)
    if given is not None and given != str(n):
        raise ValueError(f"XLA_FLAGS already sets {DEVICE_COUNT_FLAG}={given}; it and {n} CPU devices cannot both hold: "
                         "leave one out")
    if given is not None:
        return
    if environ is None and _backend_exists():
        raise RuntimeError("set_cpu_devices must run before JAX creates its backends (before the first JAX "
                           "computation or jax.devices())")
    env["XLA_FLAGS"] = " ".join([*flags.split(), f"{DEVICE_COUNT_FLAG}={n}"])


# XLA:CPU aborts the whole process when one simulated device waits more than 40 s (its default) for the
# others at a collective. With more simulated devices than cores (8 on a 2-core laptop, or several runs
# side by side) a device thread can fall that far behind without anything being wrong: seen once in a
# 4-device quick reproduction with two workers on two cores. These flags give such waits an hour.
PATIENT_COLLECTIVE_FLAGS = ("--xla_cpu_collective_call_warn_stuck_timeout_seconds=600",
                            "--xla_cpu_collective_call_terminate_timeout_seconds=3600")


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA defines `flag` (an unknown flag in XLA_FLAGS aborts the process)."""
    import mmap
    import pathlib

    try:
        import jaxlib
    except ImportError:
        return False
    name = flag.lstrip("-").split("=")[0].encode()
    libs = sorted(pathlib.Path(jaxlib.__file__).parent.glob("*.so"), key=lambda p: "common" not in p.name)
    for lib in libs:
        try:
            with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(name) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


def patient_collectives(environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Before JAX starts: when XLA_FLAGS simulates several CPU devices, add PATIENT_COLLECTIVE_FLAGS
    (unless the user set them, or this XLA does not know them). Returns whether it added them."""
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if xla_flags_device_count(flags) in (None, "1") or "collective_call_terminate" in flags:
        return False
    if env.get("JAX_PLATFORMS", "cpu").split(",")[0] not in ("", "cpu"):
        return False
    if not all(_xla_knows(f) for f in PATIENT_COLLECTIVE_FLAGS):
        return False
    env["XLA_FLAGS"] = " ".join([flags.strip(), *PATIENT_COLLECTIVE_FLAGS]).strip()
    return True
