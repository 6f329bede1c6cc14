"""nnbasics: neural network basics and convolutional networks in JAX/Flax.

Every lecture idea is a small tested function or linen module; every comparison is an
experiment in `experiments/` that `nnbasics run NAME` reproduces.
"""

__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (default: $NNBASICS_CACHE/jax or
    ~/.cache/nnbasics/jax), so a re-run skips XLA compilation (about half of a short CPU run).
    Set NNBASICS_NO_COMPILE_CACHE=1 to leave it off. Returns the directory used, or None."""
    import os

    if os.environ.get("NNBASICS_NO_COMPILE_CACHE"):
        return None
    import jax

    root = os.environ.get("NNBASICS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nnbasics")
    path = path or os.path.join(root, "jax")
    try:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except (OSError, AttributeError, ValueError):  # read-only home, or a jax without the option
        return None
    return path
