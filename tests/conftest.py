"""Shared test set-up: CPU only, progress bars off."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from nnbasics import enable_compilation_cache  # noqa: E402
from nnbasics.progress import set_quiet  # noqa: E402

set_quiet(True)
enable_compilation_cache()


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
