"""Which examples each step sees: a fresh permutation per epoch and seed, drawn on the host.

The indices of a whole chunk of steps go to the device at once; the compiled loop gathers the
batches there. A resumed run asks for the same steps and gets the same batches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training set in `epoch` for `seed` (host-side: XLA's CPU sort is slow)."""
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n).astype(np.int32)


def batch_indices(seeds: Sequence[int], start: int, length: int, n: int, batch_size: int,
                  accumulate: Sequence[int] | None = None) -> np.ndarray:
    """Indices (members, length, batch) of the batches of steps start..start+length-1: a fresh
    permutation per epoch, batches without replacement, the last partial batch dropped. A member
    that accumulates k micro-batches per update draws batches of k * batch_size that way and sees
    them as k consecutive micro-batches."""
    accumulate = [1] * len(seeds) if accumulate is None else list(accumulate)
    out = np.empty((len(seeds), length, batch_size), np.int32)
    for m, (seed, k) in enumerate(zip(seeds, accumulate)):
        big = k * batch_size
        per_epoch = n // big
        if per_epoch < 1:
            raise ValueError(f"a batch of {k} x {batch_size} examples is larger than the training set ({n})")
        cache: dict[int, np.ndarray] = {}
        for i in range(length):
            update, micro = divmod(start + i, k)
            epoch, pos = divmod(update, per_epoch)
            if epoch not in cache:
                cache = {epoch: epoch_permutation(seed, epoch, n)}
            lo = pos * big + micro * batch_size
            out[m, i] = cache[epoch][lo:lo + batch_size]
    return out
