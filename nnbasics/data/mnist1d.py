"""MNIST-1D (Greydanus & Kobak 2020), regenerated offline by the `mnist1d` package.

`make_dataset(get_dataset_args())` with the default arguments (seed 42) gives 4000 training and
1000 test sequences of length 40; the result is cached as .npz (no pickle) in `cache_dir()`.
"""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, cache_dir, read_npz_cache, register, save_npz


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test", "t")}


@register("mnist1d", input_shape=(40,))
def mnist1d(cache: bool = True) -> ArrayDataset:
    """MNIST-1D with the package's default arguments: x (4000, 40), y (4000,), test 1000."""
    path = cache_dir() / "mnist1d_default_seed42.npz"
    shapes = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,), "t": (40,)}
    arrays = read_npz_cache(path, shapes, num_classes=10) if cache else None
    if arrays is None:
        arrays = _generate()
        if cache:
            save_npz(path, arrays)
    return ArrayDataset(
        "mnist1d",
        arrays["x"].astype(np.float32),
        arrays["y"].astype(np.int32),
        arrays["x_test"].astype(np.float32),
        arrays["y_test"].astype(np.int32),
        num_classes=10,
        info={"t": arrays["t"]},
    )
