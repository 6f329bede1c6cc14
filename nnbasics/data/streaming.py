"""Data sets too large for the device: host batches from a pipeline, streamed into training."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass
class StreamingData:
    """A data set too large for the device: host batches from a pipeline (e.g. grain over tfds).

    `batches(start_step)` yields this process's part of each global batch as
    {"image": (B_local, ...), "label": (B_local,)} from step `start_step` on (so a resumed run
    continues with the batches an uninterrupted run would have seen); `x_test`, `y_test` are a
    (small) evaluation set kept on the device. Every member (seed) sees the same batches."""

    name: str
    batches: Callable[[int], Any]
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    steps_per_transfer: int = 8  # host batches stacked into one device transfer

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one training example."""
        return tuple(self.input_shape)
