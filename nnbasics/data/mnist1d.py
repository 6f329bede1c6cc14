"""MNIST-1D (Greydanus & Kobak 2020), regenerated offline by the `mnist1d` package.

`make_dataset(get_dataset_args())` with the default arguments (seed 42) gives 4000 training and
1000 test sequences of length 40; the result is cached as .npz (no pickle) in `cache_dir()`.
"""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, cache_dir, read_npz_cache, register, save_npz


def _generate(num_samples: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples  # the package's own knob: more samples of the same generator
    d = make_dataset(args)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test", "t")}


DEFAULT_SAMPLES = 5000  # the package's default: the published 4000 / 1000 split


@register("mnist1d", input_shape=(40,))
def mnist1d(num_samples: int = DEFAULT_SAMPLES, cache: bool = True) -> ArrayDataset:
    """MNIST-1D with the package's default arguments: x (4000, 40), y (4000,), test 1000.

    `num_samples` asks the generator for more (or fewer) sequences, split 80/20 as the package does:
    the same task with more data (e.g. 20000: 16000 training and 4000 test sequences)."""
    num_samples = int(num_samples)
    if num_samples < 10:
        raise ValueError(f"mnist1d: num_samples must be at least 10 (80% train, 20% test), got {num_samples}")
    name = "default" if num_samples == DEFAULT_SAMPLES else f"n{num_samples}"
    path = cache_dir() / f"mnist1d_{name}_seed42.npz"
    n_train = int(num_samples * 0.8)
    shapes = {"x": (n_train, 40), "y": (n_train,), "x_test": (num_samples - n_train, 40),
              "y_test": (num_samples - n_train,), "t": (40,)}
    arrays = read_npz_cache(path, shapes, num_classes=10) if cache else None
    if arrays is None:
        arrays = _generate(num_samples)
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
