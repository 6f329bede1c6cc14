"""Compile tuning for the CPU: light options for rarely-run programs, compiling side by side.

Programs that run rarely (the init, the evaluation) cost mostly their compile time. On CPU, XLA's
classic loop emitters compile them in ~30% less CPU time than its newer MLIR fusion emitters
(MNIST-1D CNN: init 1.15 -> 0.88 s, eval 0.38 -> 0.21 s), with identical numbers for every model
tried. The training chunk keeps XLA's defaults (with them the CNN's trajectory changes after a few
hundred steps). On GPU/TPU everything is plain `jax.jit`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LIGHT_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_light_compile_ok: bool | None = None


def light_jit(fun: Callable, **kw) -> Callable:
    """`jax.jit` for programs that run rarely: on CPU with LIGHT_COMPILE_OPTIONS when this XLA knows
    them (checked once per process; NNBASICS_DEFAULT_COMPILE=1 turns them off), else plain jit."""
    global _light_compile_ok
    if jax.default_backend() != "cpu" or os.environ.get("NNBASICS_DEFAULT_COMPILE"):
        return jax.jit(fun, **kw)
    if _light_compile_ok is None:
        try:
            jax.jit(lambda v: v + 1, compiler_options=LIGHT_COMPILE_OPTIONS).lower(np.float32(0)).compile()
            _light_compile_ok = True
        except Exception:  # an XLA without the option: plain jit
            _light_compile_ok = False
    return jax.jit(fun, compiler_options=LIGHT_COMPILE_OPTIONS, **kw) if _light_compile_ok else jax.jit(fun, **kw)


@jax.jit
def concat_members(*states: Any) -> Any:
    """Members' states (each with a leading axis of 1) into one stacked state: one small program."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *states)


def compile_side_by_side(lowered: Sequence[Any]) -> None:
    """Compile lowered programs in parallel threads (XLA releases the GIL), filling jit's caches, so
    a run's init, first chunk and evaluation compile side by side on a multi-core CPU instead of
    one after the other. A failure is ignored here: the real call compiles again and raises it."""
    from concurrent.futures import ThreadPoolExecutor

    def one(low):
        try:
            low.compile()
        except Exception:
            pass

    with ThreadPoolExecutor(max(1, min(len(lowered), os.cpu_count() or 1))) as ex:
        list(ex.map(one, lowered))
