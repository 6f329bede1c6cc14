"""The perceptron (Rosenblatt 1958) and linear regression as one-layer networks.

The perceptron computes g(x^T w + b) with the step g(y) = 1 if y > 0 else 0. The step has zero
derivative almost everywhere, so it is not trained by gradient descent but by the perceptron
learning rule, one example at a time:

    y_hat = g(x^T w + b);   w <- w + lr (y - y_hat) x;   b <- b + lr (y - y_hat)

which converges whenever the classes are linearly separable (AND, OR) and never can on XOR.
Everything here is a pure function; `perceptron_train` is one compiled `lax.scan` over epochs
and examples, and `vmap`s over initializations.

Linear regression is the linear layer x^T w + b trained on the squared error; `least_squares`
is its closed-form solution, which gradient descent on the registered `linear_regression`
model reaches.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnbasics.models import register
from nnbasics.nn.activations import step


class PerceptronParams(NamedTuple):
    """Weights w (D,) and bias b () of a single perceptron."""

    w: jax.Array
    b: jax.Array


def perceptron_init(key: jax.Array, num_inputs: int, scale: float = 0.1) -> PerceptronParams:
    """Small random weights N(0, scale^2) and a zero bias (scale=0 gives the classic zero init)."""
    return PerceptronParams(scale * jax.random.normal(key, (num_inputs,)), jnp.zeros(()))


def perceptron_score(params: PerceptronParams, x: jax.Array) -> jax.Array:
    """The linear part y = x^T w + b for a batch x (N, D) -> (N,)."""
    return x @ params.w + params.b


def perceptron_predict(params: PerceptronParams, x: jax.Array) -> jax.Array:
    """The perceptron's output g(x^T w + b) in {0, 1}, for a batch x (N, D) -> (N,)."""
    return step(perceptron_score(params, x))


def perceptron_update(params: PerceptronParams, x: jax.Array, y: jax.Array, lr: float = 1.0) -> PerceptronParams:
    """One application of the perceptron learning rule to one example x (D,), label y in {0, 1}:
    nothing changes when the prediction is right; otherwise move w toward (y=1) or away (y=0) from x."""
    err = y - step(x @ params.w + params.b)
    return PerceptronParams(params.w + lr * err * x, params.b + lr * err)


def perceptron_accuracy(params: PerceptronParams, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples classified correctly."""
    return jnp.mean(perceptron_predict(params, x) == y)


@functools.partial(jax.jit, static_argnames=("epochs",))
def perceptron_train(
    params: PerceptronParams, x: jax.Array, y: jax.Array, key: jax.Array, epochs: int = 100, lr: float = 1.0
) -> tuple[PerceptronParams, dict[str, jax.Array]]:
    """Run the perceptron rule for `epochs` passes over (x, y) in a fresh random order each pass.

    Returns the final parameters and, per epoch, the number of mistakes made during the pass
    (`mistakes`) and the training accuracy at its end (`accuracy`)."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)

    def one_example(p, i):
        wrong = step(x[i] @ p.w + p.b) != y[i]
        return perceptron_update(p, x[i], y[i], lr), wrong

    def one_epoch(p, k):
        order = jax.random.permutation(k, x.shape[0])
        p, wrong = jax.lax.scan(one_example, p, order)
        return p, {"mistakes": jnp.sum(wrong), "accuracy": perceptron_accuracy(p, x, y)}

    return jax.lax.scan(one_epoch, params, jax.random.split(key, epochs))


# --------------------------------------------------------------------------- linear regression


class LinearRegression(nn.Module):
    """f(x) = x^T W + b: linear regression as a network with one linear layer and no nonlinearity."""

    outputs: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.outputs, kernel_init=nn.initializers.zeros_init(), name="linear")(x)


@register("linear_regression")
def linear_regression(num_classes: int = 1, **kw) -> nn.Module:
    """One linear layer; `num_classes` is the number of outputs (0, a regression set's value, means 1)."""
    return LinearRegression(outputs=max(int(num_classes), 1), **kw)


def least_squares(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The closed-form least-squares fit of y ~ x W + b: (W (D, K), b (K,)), via lstsq on [x, 1]."""
    x = jnp.asarray(x).reshape(x.shape[0], -1)
    y = jnp.asarray(y).reshape(x.shape[0], -1)
    design = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    theta, *_ = jnp.linalg.lstsq(design, y)
    return theta[:-1], theta[-1]
