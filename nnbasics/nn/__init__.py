"""Layers and elementwise functions, each registered by name."""

from nnbasics.nn.activations import ACTIVATIONS, get_activation
from nnbasics.nn.conv import Conv, conv_general

__all__ = ["ACTIVATIONS", "get_activation", "Conv", "conv_general"]
