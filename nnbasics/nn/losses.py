"""Losses of the lecture: softmax cross-entropy for classification (the softmax classifier),
squared error for regression; accuracy. Registered by name so a config can pick one.

Each loss is defined per example (one value per row, dense labels averaged within their row); the
training loss is its mean over the batch, and evaluation sums it over a data set, so a newly
registered loss is trained and evaluated the same way.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from nnbasics.registry import Registry

LOSSES: Registry[Callable[[jax.Array, jax.Array], jax.Array]] = Registry("loss")
PER_EXAMPLE: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {}
CLASSIFICATION = {"cross_entropy"}  # losses whose outputs are logits, so accuracy is measured too


def _cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    per = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return per.reshape(logits.shape[0], -1).mean(1)


def _mse_per_example(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(((pred - target.reshape(pred.shape)) ** 2).reshape(pred.shape[0], -1), axis=1)


@LOSSES.register("cross_entropy")
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels (N,) (or dense (N, ...)) against logits (N, ..., C)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@LOSSES.register("mse")
def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element."""
    return jnp.mean((pred - target.reshape(pred.shape)) ** 2)


PER_EXAMPLE.update(cross_entropy=_cross_entropy_per_example, mse=_mse_per_example)


def per_example_loss(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss `name` as one value per example (N,); for a loss registered without a per-example
    form, its mean applied to each example on its own."""
    fn = PER_EXAMPLE.get(name)
    if fn is not None:
        return fn
    mean_fn = LOSSES.get(name)
    return jax.vmap(lambda o, t: mean_fn(o[None], t[None]))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows (or pixels, for dense labels) whose arg-max equals the label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def accuracy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Accuracy of each example (N,): its fraction of correct pixels for dense labels."""
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32).reshape(logits.shape[0], -1).mean(1)
