"""Data sets by name. Embedded sets need no network and live on the device as arrays.

`load_dataset(name, **kwargs)` returns an `ArrayDataset`. Every module in this package registers
its sets with `@register("name")`; modules are imported on first use.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable

import numpy as np

from nnbasics.registry import Registry, import_submodules

DATASETS: Registry[Callable[..., "ArrayDataset"]] = Registry("data set")


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """An in-memory data set: train and test arrays (NumPy), and what they are."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0 for regression
    task: str = "classification"  # classification | regression
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError(f"{self.name}: inputs and targets differ in length")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    def subset(self, num_train: int | None = None, seed: int = 0) -> "ArrayDataset":
        """A class-balanced-by-chance random subset of the training set (test set unchanged)."""
        if num_train is None or num_train >= self.num_train:
            return self
        if num_train <= 0:
            raise ValueError(f"num_train must be positive, got {num_train}")
        idx = np.random.default_rng(seed).permutation(self.num_train)[:num_train]
        return dataclasses.replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx])


def register(name: str, **info: Any):
    """Decorator: register a data set loader `(**kwargs) -> ArrayDataset` under `name`."""
    return DATASETS.register(name, **info)


def _load_all() -> None:
    import_submodules(__name__, __path__, skip=("tfds",))


def load_dataset(name: str, **kwargs: Any) -> ArrayDataset:
    """Load the registered data set `name` (embedded, no network)."""
    _load_all()
    return DATASETS.get(name)(**kwargs)


def dataset_names() -> list[str]:
    """The names `load_dataset` accepts, sorted."""
    _load_all()
    return DATASETS.names()


def check_dataset(name: str) -> None:
    _load_all()
    DATASETS.check(name)


def save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Cache arrays as .npz atomically (temp file + rename; no pickle)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a cache file is as readable as any other
    os.replace(tmp, path)


class CorruptCacheWarning(UserWarning):
    """A cached data file was damaged; it was set aside and the data generated anew."""


def read_npz_cache(path: pathlib.Path, shapes: dict[str, tuple[int | None, ...]],
                   num_classes: int | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a cached .npz, or None if there is none. A damaged file (unreadable, a key
    missing, a shape or length that does not match `shapes` (None = any size), a non-finite value,
    a label outside [0, num_classes)) is moved aside to `<name>.corrupt-<time>` with a warning
    naming it, so the caller regenerates it instead of failing until someone deletes it."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # our handle: closed also when np.load fails
            arrays = {k: f[k] for k in shapes}
        sizes: dict[str, int] = {}
        for k, want in shapes.items():
            a = arrays[k]
            if a.ndim != len(want) or any(w is not None and w != d for w, d in zip(want, a.shape)):
                raise ValueError(f"{k} has shape {a.shape}, expected {want}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{k} holds non-finite values")
            split = "test" if "test" in k else "train"
            if k[0] in "xy" and sizes.setdefault(split, a.shape[0]) != a.shape[0]:
                raise ValueError(f"{k} has {a.shape[0]} rows, other {split} arrays {sizes[split]}")
            if num_classes is not None and k.startswith("y") and (a.min() < 0 or a.max() >= num_classes):
                raise ValueError(f"{k} holds labels outside 0..{num_classes - 1}")
    except Exception as e:  # noqa: BLE001 - zip, CRC, EOF, key and shape errors all mean: damaged
        import time
        import warnings

        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        warnings.warn(f"the cached data file {path} is damaged ({type(e).__name__}: {e}); moved it to {aside.name} "
                      "and generating the data anew", CorruptCacheWarning, stacklevel=3)
        return None
    return arrays


def cache_dir() -> pathlib.Path:
    """Where generated data sets are cached ($NNBASICS_CACHE or ~/.cache/nnbasics)."""
    root = os.environ.get("NNBASICS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nnbasics")
    path = pathlib.Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from nnbasics.files import WorkdirUnusable

        raise WorkdirUnusable(f"cannot create the data cache directory {path}: {e.strerror or e}. Set NNBASICS_CACHE to "
                              "a writable directory") from None
    return path
