"""Matplotlib without a display (Agg), and small helpers for the experiments' figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def subplots(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.5, 3.4), **kw):
    """plt.subplots with a per-panel size; axes always returned as a flat array."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    return fig, axes.ravel()


def band(ax, x, values, label: str | None = None, **kw) -> None:
    """Mean line and min-max band of values[member, point] over members (seeds)."""
    values = np.asarray(values, np.float64)
    mean = values.mean(axis=0)
    (line,) = ax.plot(x, mean, label=label, **kw)
    if values.shape[0] > 1:
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)
