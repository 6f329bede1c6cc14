"""Procedural outdoor scenes with per-pixel labels: the lecture's sky/bird segmentation example.

Each image is a sky (a blue vertical gradient), clouds (soft white ellipses), birds (small dark
'V' shapes in the sky) and the ground (textured green or brown below a wavy horizon, with dark
stones that look like birds up close). Classes: 0 sky, 1 cloud, 2 bird, 3 ground. Colours,
horizon, lighting and noise vary per image, so the class of a pixel depends on its neighbourhood
(a dark pixel is a bird above the horizon and a stone below it): "what is the class of the
centre pixel?" is a patch classification problem, and a fully convolutional net answers it for
every pixel at once. Images can be drawn at any size (`make_scenes`).
"""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, register

CLASSES = ("sky", "cloud", "bird", "ground")
SKY, CLOUD, BIRD, GROUND = range(4)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [-1, 1]: random values on a coarse grid, bilinearly upsampled."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.uniform(-1, 1, (gh, gw))
    yy = np.arange(h) / cell
    xx = np.arange(w) / cell
    y0, x0 = np.floor(yy).astype(int), np.floor(xx).astype(int)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def scene(rng: np.random.Generator, height: int = 32, width: int = 32, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image (H, W, 3) float32 in [0, 1] and labels (H, W) int32."""
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Object sizes in pixels do not depend on the image size; object counts grow with the area.
    area = h * w / 1024.0
    labels = np.full((h, w), SKY, np.int32)

    # Sky: a vertical gradient between two blues, per-image brightness.
    top = np.array([0.15, 0.35, 0.75]) + rng.uniform(-0.08, 0.08, 3)
    bottom = np.array([0.55, 0.75, 0.95]) + rng.uniform(-0.08, 0.05, 3)
    t = np.clip(yy / 32.0 - rng.uniform(0, max(h / 32.0 - 1, 0)), 0, 1)[..., None]
    img = top * (1 - t) + bottom * t

    # Ground below a wavy horizon.
    horizon = rng.uniform(0.55, 0.8) * h
    phase, period, amp = rng.uniform(0, 2 * np.pi), rng.uniform(16, 64), rng.uniform(0.5, 2.5)
    line = horizon + amp * np.sin(2 * np.pi * xx[0] / period + phase)
    ground = yy >= line[None, :]
    base = np.array([0.25, 0.5, 0.15]) if rng.random() < 0.6 else np.array([0.5, 0.38, 0.2])
    base = base + rng.uniform(-0.06, 0.06, 3)
    texture = 0.12 * _smooth_noise(rng, h, w, 3)[..., None]
    img = np.where(ground[..., None], base + texture, img)
    labels[ground] = GROUND

    # Stones on the ground: small dark blobs (bird-coloured, but below the horizon).
    for _ in range(round(rng.integers(1, 5) * area)):
        cy, cx = rng.uniform(line.min() + 2, h + 2), rng.uniform(0, w)
        r = rng.uniform(0.8, 1.6)
        m = ground & (((yy - cy) / r) ** 2 + ((xx - cx) / (1.3 * r)) ** 2 <= 1)
        img[m] = rng.uniform(0.05, 0.2)

    # Clouds: soft white ellipses in the sky.
    for _ in range(round(rng.integers(0, 4) * area)):
        cy, cx = rng.uniform(0, max(line.min() - 4, 1)), rng.uniform(0, w)
        ry, rx = rng.uniform(1.5, 3.5), rng.uniform(3, 7)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        m = (d <= 1) & ~ground
        shade = rng.uniform(0.85, 1.0) - 0.1 * d
        img[m] = np.clip(shade[m, None] + np.array([0.0, 0.0, 0.03]), 0, 1)
        labels[m] = CLOUD

    # Birds: dark 'V' shapes (two short strokes) in the sky, over clouds too.
    for _ in range(round(rng.integers(1, 6) * area)):
        cy = rng.uniform(1, max(line.min() - 3, 2))
        cx = rng.uniform(2, w - 2)
        span = rng.uniform(1.5, 3.0)
        thick = 0.85
        dx = xx - cx
        wing = cy - 0.6 * np.abs(dx)  # the V: wings rise away from the body
        m = (np.abs(dx) <= span) & (np.abs(yy - wing) <= thick) & ~ground
        img[m] = rng.uniform(0.02, 0.15)
        labels[m] = BIRD

    img = img + noise * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype(np.float32), labels


def make_scenes(n: int, height: int = 32, width: int | None = None, seed: int = 0,
                noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """n scenes: images (n, H, W, 3) float32 and labels (n, H, W) int32."""
    width = height if width is None else width
    rng = np.random.default_rng([int(seed), 0x5CE7E])
    xs = np.empty((n, height, width, 3), np.float32)
    ys = np.empty((n, height, width), np.int32)
    for i in range(n):
        xs[i], ys[i] = scene(rng, height, width, noise)
    return xs, ys


@register("scenes", input_shape=(32, 32, 3))
def scenes(n_train: int = 1000, n_test: int = 200, size: int = 32, noise: float = 0.03, seed: int = 0) -> ArrayDataset:
    """Scenes of sky, clouds, birds and ground; y is the per-pixel class map (N, H, W)."""
    if size < 8:
        raise ValueError(f"scenes need size >= 8, got {size}")
    xtr, ytr = make_scenes(n_train, size, seed=seed, noise=noise)
    xte, yte = make_scenes(n_test, size, seed=seed + 1_000_003, noise=noise)
    return ArrayDataset(
        "scenes", xtr, ytr, xte, yte, num_classes=len(CLASSES), task="segmentation",
        info={"classes": list(CLASSES), "noise": noise},
    )
