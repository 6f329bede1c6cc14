"""Compile tuning for the CPU: light options for rarely-run programs, compiling side by side.

Programs that run rarely (the init, the evaluation) cost mostly their compile time. On CPU, XLA's
classic loop emitters compile them in ~30% less CPU time than its newer MLIR fusion emitters
(MNIST-1D CNN: init 1.15 -> 0.88 s, eval 0.38 -> 0.21 s), with identical numbers for every model
tried. The training chunk keeps XLA's defaults (with them the CNN's trajectory changes after a few
hundred steps). On GPU/TPU everything is plain `jax.jit`.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LIGHT_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
# Above this many lines of StableHLO a program compiles faster with XLA's defaults: their fusion
# emitters compile identical kernels once (a deep net's repeated layers and their random draws), the
# classic emitters once per copy. Measured per program (init and evaluation of every experiment's
# quick preset, one core): below ~900 lines light is 25-40% cheaper, at 1000-1150 the two are within
# 15%, at 2260-2520 (the 56-layer ResNets) defaults are 1.3-2.3x cheaper. Numbers are identical.
LIGHT_MAX_LINES = 1000
_light_compile_ok = True  # False once this XLA has refused the options (an XLA without them)


class _SizedJit:
    """A jitted function that compiles on the CPU with LIGHT_COMPILE_OPTIONS when its lowered program
    is small (at most LIGHT_MAX_LINES lines of StableHLO) and with XLA's defaults when it is large.
    Lowered once and compiled once per argument signature; the compiled program is kept and called
    directly. Under a trace (`jax.eval_shape`, an outer jit) it is plain `jax.jit`."""

    def __init__(self, fun: Callable, **kw):
        self._jit = jax.jit(fun, **kw)
        self._compiled: Any = None

    def lower(self, *args) -> "_SizedLowered":
        return _SizedLowered(self, self._jit.lower(*args))

    def __call__(self, *args):
        if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args)):
            return self._jit(*args)
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except TypeError:  # other shapes or dtypes than it was compiled for: compile for these
                pass
        return self.lower(*args).compile()(*args)


class _SizedLowered:
    """The lowered program of a `_SizedJit`; `compile()` picks the options by size and keeps the
    result in its `_SizedJit`."""

    def __init__(self, owner: _SizedJit, lowered: Any):
        self._owner, self._lowered = owner, lowered

    @property
    def light(self) -> bool:
        return self._lowered.as_text().count("\n") <= LIGHT_MAX_LINES

    def compile(self) -> Any:
        global _light_compile_ok
        compiled = None
        if _light_compile_ok and self.light:
            try:
                compiled = self._lowered.compile(LIGHT_COMPILE_OPTIONS)
            except Exception:  # an XLA that does not know the options: its defaults from now on
                _light_compile_ok = False
        if compiled is None:
            compiled = self._lowered.compile()
        self._owner._compiled = compiled
        return compiled


def light_jit(fun: Callable, **kw) -> Callable:
    """`jax.jit` for programs that run rarely (the init, the evaluation): on CPU each program compiles
    with LIGHT_COMPILE_OPTIONS when it is small and with XLA's defaults when it is large (see
    LIGHT_MAX_LINES), which compile the same numbers; plain jit on GPU/TPU, with an XLA without the
    options, or when NNBASICS_DEFAULT_COMPILE=1. The result supports `f(*args)` and `f.lower(*args)`
    (whose `compile()` is the one the later calls use). With static arguments: always light."""
    if jax.default_backend() != "cpu" or os.environ.get("NNBASICS_DEFAULT_COMPILE") or not _light_compile_ok:
        return jax.jit(fun, **kw)
    if "static_argnums" in kw or "static_argnames" in kw:  # a compiled program is called without those
        return jax.jit(fun, compiler_options=LIGHT_COMPILE_OPTIONS, **kw)
    return _SizedJit(fun, **kw)


@jax.jit
def concat_members(*states: Any) -> Any:
    """Members' states (each with a leading axis of 1) into one stacked state: one small program."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *states)


def stack_members(states: Sequence[Any]) -> Any:
    """Members' states (each with a leading axis of 1) into one stacked state. On the CPU the arrays
    are joined on the host (no program to compile: a 56-layer ResNet's stacking program took 1.4 s to
    compile); elsewhere by one small compiled program. Typed PRNG keys keep their implementation."""
    if len(states) == 1:
        return states[0]
    if jax.default_backend() != "cpu":
        return concat_members(*states)

    def join(*a):
        if jax.dtypes.issubdtype(a[0].dtype, jax.dtypes.prng_key):
            data = np.concatenate([np.asarray(jax.random.key_data(k)) for k in a])
            return jax.random.wrap_key_data(jax.device_put(data), impl=jax.random.key_impl(a[0]))
        return jax.device_put(np.concatenate([np.asarray(x) for x in a]))

    return jax.tree.map(join, *states)


def compile_side_by_side(lowered: Iterable[Any]) -> None:
    """Compile lowered programs in parallel threads (XLA releases the GIL), filling jit's caches, so
    a run's init, first chunk and evaluation compile side by side on a multi-core CPU instead of
    one after the other. `lowered` may be a generator: each program's compile starts while the next
    is lowered here. A failure is ignored here: the real call compiles again and raises it."""
    from concurrent.futures import ThreadPoolExecutor

    def one(low):
        try:
            low.compile()
        except Exception:
            pass

    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
        for f in [ex.submit(one, low) for low in lowered]:
            f.result()


_CACHE_READ_ERROR = "Error reading persistent compilation cache entry for '"
_watched: set[str] = set()


def _decompress(blob: bytes) -> bytes:
    """A cache entry's payload, decompressed the way this jax wrote it (zstd or zlib)."""
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:  # a jax that moved it: zlib, its fallback
        import zlib

        return zlib.decompress(blob)
    return decompress_executable(blob)


def set_aside_damaged_entries(cache: str | os.PathLike, program: str) -> list[str]:
    """Move every entry of `program` (file names starting with it) in the compilation cache that does
    not decompress to `<name>.corrupt-<time>`; returns the names moved. jax only warns about such an
    entry and never rewrites it, so without this every later run would warn and compile again."""
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for p in sorted(pathlib.Path(cache).glob(f"{program}*")):
        if not p.is_file() or ".corrupt-" in p.name:
            continue
        try:
            _decompress(p.read_bytes())
        except Exception:  # noqa: BLE001 - zlib/zstd errors, a truncated file: damaged
            try:
                os.replace(p, p.with_name(f"{p.name}.corrupt-{stamp}"))
                moved.append(p.name)
            except OSError:
                pass
    return moved


def watch_compilation_cache(cache: str | os.PathLike) -> None:
    """When jax warns that it cannot read an entry of the persistent compilation cache in `cache`,
    move the damaged entries of that program aside (jax then compiles it and writes a fresh entry)
    and say so in one line naming the files; other warnings pass through unchanged."""
    if str(cache) in _watched:
        return
    _watched.add(str(cache))
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text.startswith(_CACHE_READ_ERROR):
            program = text[len(_CACHE_READ_ERROR):].split("'", 1)[0]
            moved = set_aside_damaged_entries(cache, program) if program else []
            if moved:
                why = text.split("': ", 1)[-1][:120]
                print(f"nnbasics: warning: {len(moved)} damaged compilation cache "
                      f"{'entry' if len(moved) == 1 else 'entries'} of {program} in {cache} ({why}): "
                      f"{', '.join(moved)} moved aside to NAME.corrupt-<time>; compiled anew and cached again",
                      file=sys.stderr)
                return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
