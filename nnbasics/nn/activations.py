"""Nonlinearities by name: the lecture's sigmoid, tanh, ReLU and leaky ReLU (and identity)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nnbasics.registry import Registry

Activation = Callable[[jax.Array], jax.Array]
ACTIVATIONS: Registry[Activation] = Registry("activation")


def step(x: jax.Array) -> jax.Array:
    """The perceptron's threshold: 1 where x > 0, else 0."""
    return (x > 0).astype(jnp.result_type(x, jnp.float32))


def sigmoid(x: jax.Array) -> jax.Array:
    """1 / (1 + exp(-x)); saturates for large |x|."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """tanh(x) = 2 sigmoid(2x) - 1; zero-centred but saturating."""
    return jnp.tanh(x)


def relu(x: jax.Array) -> jax.Array:
    """max(0, x)."""
    return jax.nn.relu(x)


def leaky_relu(x: jax.Array, alpha: float = 0.02) -> jax.Array:
    """max(alpha x, x) with the lecture's alpha = 0.02."""
    return jnp.where(x > 0, x, alpha * x)


def identity(x: jax.Array) -> jax.Array:
    """No nonlinearity (a linear network)."""
    return x


for _name, _fn in [
    ("step", step),
    ("sigmoid", sigmoid),
    ("tanh", tanh),
    ("relu", relu),
    ("leaky_relu", leaky_relu),
    ("identity", identity),
    ("gelu", jax.nn.gelu),
    ("elu", jax.nn.elu),
    ("softplus", jax.nn.softplus),
]:
    ACTIVATIONS.register(_name, _fn)


def get_activation(name_or_fn: str | Activation) -> Activation:
    """Look an activation up by name (a callable is returned unchanged)."""
    if callable(name_or_fn):
        return name_or_fn
    return ACTIVATIONS.get(name_or_fn)
