"""Multilayer perceptrons: logistic regression (no hidden layer), plain MLPs, the MNIST-1D MLP."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.models.init import torch_bias_init, torch_kernel_init
from nnbasics.nn.activations import get_activation


def TorchDense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    """A Dense layer initialized like PyTorch's nn.Linear."""
    return nn.Dense(features, kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), name=name)


class MLP(nn.Module):
    """Flatten, then Dense-activation blocks, then a linear read-out.

    `hidden=()` is logistic (softmax) regression; `dropout` > 0 adds dropout after each hidden
    activation (a fresh key every step through the 'dropout' rng stream)."""

    num_classes: int
    hidden: Sequence[int] = (100, 100)
    activation: str = "relu"
    dropout: float = 0.0
    init_scheme: str = "he"  # he | lecun | torch

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        act = get_activation(self.activation)
        for i, width in enumerate(self.hidden):
            x = self._dense(width, x.shape[-1], f"hidden_{i}")(x)
            x = act(x)
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return self._dense(self.num_classes, x.shape[-1], "head")(x)

    def _dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
        if self.init_scheme == "torch":
            return TorchDense(features, fan_in, name=name)
        kinit = {
            "he": nn.initializers.he_normal(),
            "lecun": nn.initializers.lecun_normal(),
        }[self.init_scheme]
        return nn.Dense(features, kernel_init=kinit, name=name)


class ResidualMLP(nn.Module):
    """The MNIST-1D MLP (Greydanus & Kobak): h = relu(W1 x); h = h + relu(W2 h); W3 h."""

    num_classes: int
    width: int = 100

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        h = jax.nn.relu(TorchDense(self.width, x.shape[-1], "linear1")(x))
        h = h + jax.nn.relu(TorchDense(self.width, self.width, "linear2")(h))
        return TorchDense(self.num_classes, self.width, "linear3")(h)


@register("logistic")
def logistic(num_classes: int, **kw) -> nn.Module:
    """Softmax (multinomial logistic) regression: one linear layer."""
    return MLP(num_classes=num_classes, hidden=(), init_scheme=kw.pop("init_scheme", "torch"), **kw)


@register("mlp")
def mlp(num_classes: int, **kw) -> nn.Module:
    """A plain MLP; `hidden`, `activation`, `dropout` and `init_scheme` are configurable."""
    return MLP(num_classes=num_classes, **kw)


@register("mnist1d_mlp", input_shape=(40,))
def mnist1d_mlp(num_classes: int = 10, **kw) -> nn.Module:
    """MNIST-1D MLP: 40-100-100(residual)-10, PyTorch init."""
    return ResidualMLP(num_classes=num_classes, **kw)


@register("mnist1d_logistic", input_shape=(40,))
def mnist1d_logistic(num_classes: int = 10, **kw) -> nn.Module:
    """MNIST-1D logistic regression: Linear(40, 10), PyTorch init."""
    return MLP(num_classes=num_classes, hidden=(), init_scheme="torch")


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(jnp.size(p) for p in jax.tree.leaves(params)))
