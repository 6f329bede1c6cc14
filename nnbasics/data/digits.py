"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with the wheel) as NHWC images."""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, register


@register("digits", input_shape=(8, 8, 1))
def digits(test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    """Digits 0-9, pixels scaled to [0, 1], shape (N, 8, 8, 1); a stratified split fixed by seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return ArrayDataset("digits", xtr, ytr, xte, yte, num_classes=10)
