"""Real photographs with no network: the pictures shipped in scikit-image's wheel.

`photo(name)` returns one photograph as float32 (H, W, 3) in [0, 1]. The `photos` data set is an
unlimited CIFAR-sized real-image classification task: random square crops (of random size,
resized to `size` x `size`) labelled by the photograph they come from. Training crops come from
the left 70% of each photo and test crops from the right 30%, so no test pixel is seen in
training. Generated sets are cached as .npz.
"""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, cache_dir, read_npz_cache, register, save_npz

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "brick", "grass", "gravel", "coins", "moon", "rocket")
EXTRA_PHOTOS = ("immunohistochemistry", "hubble_deep_field", "cat", "retina", "colorwheel", "clock", "page", "text")


def photo(name: str) -> np.ndarray:
    """A photograph from scikit-image as float32 (H, W, 3) in [0, 1] (grey ones repeated to RGB)."""
    import skimage.data

    valid = PHOTOS + EXTRA_PHOTOS
    if name not in valid:
        from nnbasics.registry import UnknownNameError, unknown_name_message

        raise UnknownNameError(unknown_name_message("photo", name, list(valid)))
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    img = img.astype(np.float32) / (255.0 if img.max() > 1 else 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    """Area-average downsampling to size x size (box filter over the source pixels)."""
    h = crop.shape[0]
    edges = np.linspace(0, h, size + 1)
    lo = np.floor(edges[:-1]).astype(int)
    hi = np.maximum(np.ceil(edges[1:]).astype(int), lo + 1)
    rows = np.stack([crop[a:b].mean(axis=0) for a, b in zip(lo, hi)])
    return np.stack([rows[:, a:b].mean(axis=1) for a, b in zip(lo, hi)], axis=1)


def random_crops(
    img: np.ndarray, n: int, size: int, rng: np.random.Generator, col_range: tuple[float, float],
    min_frac: float, max_frac: float,
) -> np.ndarray:
    """n random square crops from columns col_range (fractions of the width), resized."""
    h, w = img.shape[:2]
    c0, c1 = int(col_range[0] * w), int(col_range[1] * w)
    side_max = min(h, c1 - c0)
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        side = int(rng.uniform(min_frac, max_frac) * side_max)
        side = max(min(side, side_max), size // 2)
        y = rng.integers(0, h - side + 1)
        x = rng.integers(c0, c1 - side + 1)
        out[i] = _resize(img[y:y + side, x:x + side], size)
    return out


@register("photos", input_shape=(32, 32, 3))
def photos(
    n_train: int = 5000,
    n_test: int = 1000,
    size: int = 32,
    num_classes: int = 10,
    min_frac: float = 0.15,
    max_frac: float = 0.5,
    seed: int = 0,
    cache: bool = True,
) -> ArrayDataset:
    """Crops of `num_classes` scikit-image photographs, label = source photo; NHWC float32."""
    if not 2 <= num_classes <= len(PHOTOS):
        raise ValueError(f"num_classes must be between 2 and {len(PHOTOS)}, got {num_classes}")
    if not 0 < min_frac <= max_frac <= 1:
        raise ValueError(f"need 0 < min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    key = f"photos_{n_train}_{n_test}_{size}_{num_classes}_{min_frac}_{max_frac}_{seed}.npz"
    path = cache_dir() / key
    shapes = {"x_train": (n_train, size, size, 3), "y_train": (n_train,), "x_test": (n_test, size, size, 3),
              "y_test": (n_test,)}
    arrays = read_npz_cache(path, shapes, num_classes) if cache else None
    if arrays is None:
        rng = np.random.default_rng(seed)
        names = PHOTOS[:num_classes]
        imgs = [photo(n) for n in names]

        def split(total, cols):
            ys = np.arange(total) % num_classes
            rng.shuffle(ys)
            xs = np.empty((total, size, size, 3), np.float32)
            for c, img in enumerate(imgs):
                idx = np.flatnonzero(ys == c)
                xs[idx] = random_crops(img, len(idx), size, rng, cols, min_frac, max_frac)
            return xs, ys.astype(np.int32)

        xtr, ytr = split(n_train, (0.0, 0.7))
        xte, yte = split(n_test, (0.7, 1.0))
        arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
        if cache:
            save_npz(path, arrays)
    return ArrayDataset(
        "photos", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        num_classes=num_classes, info={"classes": list(PHOTOS[:num_classes])},
    )
