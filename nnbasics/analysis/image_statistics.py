"""Pixel statistics of natural images: how the correlation of two pixels falls with their distance.

"Why CNNs?": statistical dependences between pixels of photographs decay with distance (roughly a
power law, Simoncelli 2005), so modelling local dependences first (convolution) and long-range
ones through depth (a hierarchy) puts the parameters where the dependences are. Scrambling the
pixels of the same image keeps its histogram and removes every spatial dependence: the control.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) luminance (ITU-R 601 weights); (H, W) is returned unchanged."""
    img = np.asarray(img, np.float64)
    return img if img.ndim == 2 else img[..., :3] @ LUMA


def pixel_correlation(img: np.ndarray, distances: Sequence[int]) -> np.ndarray:
    """Pearson correlation between pixels `d` apart, horizontally and vertically pooled, per distance."""
    x = to_gray(img)
    out = []
    for d in distances:
        d = int(d)
        if d < 1 or d >= min(x.shape):
            raise ValueError(f"distance {d} must be between 1 and {min(x.shape) - 1} for an image of {x.shape}")
        a = np.concatenate([x[:, :-d].ravel(), x[:-d].ravel()])
        b = np.concatenate([x[:, d:].ravel(), x[d:].ravel()])
        a, b = a - a.mean(), b - b.mean()
        denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
        out.append(float(np.sum(a * b) / denom) if denom > 0 else 0.0)
    return np.asarray(out)


def scramble(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same pixels in a random order (same histogram, no spatial structure)."""
    x = to_gray(img)
    return rng.permutation(x.ravel()).reshape(x.shape)


def power_law_fit(distances: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Least-squares line through (log d, log value): value ~ A d^(-exponent). Non-positive values
    are left out (the log is undefined); `r2` is measured on the log-log axes."""
    d = np.asarray(distances, np.float64)
    v = np.asarray(values, np.float64)
    keep = v > 0
    if keep.sum() < 2:
        return {"exponent": float("nan"), "prefactor": float("nan"), "r2": float("nan"), "points": int(keep.sum())}
    lx, ly = np.log(d[keep]), np.log(v[keep])
    slope, intercept = np.polyfit(lx, ly, 1)
    pred = slope * lx + intercept
    ss_res, ss_tot = np.sum((ly - pred) ** 2), np.sum((ly - ly.mean()) ** 2)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {"exponent": float(-slope), "prefactor": float(np.exp(intercept)), "r2": float(r2), "points": int(keep.sum())}


def log_distances(max_distance: int, num: int) -> np.ndarray:
    """About `num` distinct integer distances from 1 to `max_distance`, evenly spaced in log d."""
    return np.unique(np.round(np.logspace(0, np.log10(max_distance), num)).astype(int))
