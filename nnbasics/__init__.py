"""nnbasics: neural network basics and convolutional networks in JAX/Flax.

Every lecture idea is a small tested function or linen module; every comparison is an
experiment in `experiments/` that `nnbasics run NAME` reproduces.
"""

__version__ = "0.1.0"
