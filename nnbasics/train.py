"""Moved: the training engine is `nnbasics.engine` (this name stays until every import is updated)."""

from nnbasics.data.streaming import StreamingData  # noqa: F401
from nnbasics.engine import *  # noqa: F401,F403
from nnbasics.engine import __all__  # noqa: F401
from nnbasics.nn.losses import LOSSES, accuracy, cross_entropy, mse  # noqa: F401
