"""Nonlinearities by name: the lecture's step, sigmoid, tanh, ReLU, leaky ReLU and PReLU, with
their hand-written derivatives.

`get_activation(name)` returns an elementwise function. "prelu" is special: it has a learned
slope, so it is the linen module `PReLU`; called inside a linen module's compact method (e.g. as
`MLP(activation="prelu")`) each call creates a new PReLU layer with its own `alpha` parameter.

`derivative(name)` returns the hand-written g'(y) the lecture writes down (used for plots and
for hand-written backprop); tests check each one against `jax.grad`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.errors import CallCompactUnboundModuleError

from nnbasics.registry import Registry

Activation = Callable[[jax.Array], jax.Array]
ACTIVATIONS: Registry[Activation] = Registry("activation")
DERIVATIVES: Registry[Activation] = Registry("activation derivative")

LEAKY_ALPHA = 0.02  # the lecture's "alpha is small (e.g. 0.02)"
PRELU_INIT = 0.25  # He et al. 2015, Sec. 2.1: a_i = 0.25 at initialization


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


def leaky_relu(x: jax.Array, alpha: float = LEAKY_ALPHA) -> jax.Array:
    """max(alpha x, x) with the lecture's alpha = 0.02."""
    return jnp.where(x > 0, x, alpha * x)


def prelu(x: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Parametric ReLU (He et al. 2015): x for x > 0, alpha x otherwise; alpha broadcasts
    against x (a scalar, or one slope per channel on the last axis)."""
    return jnp.where(x > 0, x, jnp.asarray(alpha, x.dtype) * x)


def identity(x: jax.Array) -> jax.Array:
    """No nonlinearity (a linear network)."""
    return x


class PReLU(nn.Module):
    """PReLU with a learned slope `alpha` for negative inputs (He et al. 2015).

    `channelwise=True` learns one slope per channel (last axis), else one shared slope for the
    layer (He et al.'s "channel-shared" variant). Weight decay should not be applied to alpha."""

    init_alpha: float = PRELU_INIT
    channelwise: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (x.shape[-1],) if self.channelwise else ()
        alpha = self.param("alpha", nn.initializers.constant(self.init_alpha), shape, jnp.float32)
        return prelu(x, alpha)


def prelu_layer(x: jax.Array) -> jax.Array:
    """The registered "prelu": a fresh PReLU layer (learned alpha) when called inside a linen
    module's compact method; outside any module, PReLU at its initial slope 0.25."""
    try:
        return PReLU()(x)
    except CallCompactUnboundModuleError:
        return prelu(x, PRELU_INIT)


# ------------------------------------------------------------------------------- derivatives


def step_grad(x: jax.Array) -> jax.Array:
    """0 everywhere (almost): why the perceptron cannot be trained by gradient descent."""
    return jnp.zeros_like(x)


def sigmoid_grad(x: jax.Array) -> jax.Array:
    """sigma(x) (1 - sigma(x)); at most 1/4 (at x = 0), so every sigmoid layer shrinks gradients."""
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


def tanh_grad(x: jax.Array) -> jax.Array:
    """1 - tanh(x)^2; at most 1 (at x = 0), vanishing for large |x|."""
    return 1 - jnp.tanh(x) ** 2


def relu_grad(x: jax.Array) -> jax.Array:
    """1 for x > 0, 0 otherwise (jax.grad also gives 0 at x = 0)."""
    return (x > 0).astype(x.dtype)


def leaky_relu_grad(x: jax.Array, alpha: float = LEAKY_ALPHA) -> jax.Array:
    """1 for x > 0, alpha otherwise: never exactly zero, so a leaky unit cannot die."""
    return jnp.where(x > 0, 1.0, alpha).astype(x.dtype)


def prelu_grad(x: jax.Array, alpha: jax.Array | float = PRELU_INIT) -> jax.Array:
    """d prelu / dx: 1 for x > 0, alpha otherwise."""
    return jnp.where(x > 0, jnp.ones_like(x), jnp.asarray(alpha, x.dtype) * jnp.ones_like(x))


def prelu_alpha_grad(x: jax.Array) -> jax.Array:
    """d prelu / d alpha = min(x, 0): the slope learns only from negative inputs."""
    return jnp.minimum(x, 0)


def identity_grad(x: jax.Array) -> jax.Array:
    return jnp.ones_like(x)


for _name, _fn, _grad in [
    ("step", step, step_grad),
    ("sigmoid", sigmoid, sigmoid_grad),
    ("tanh", tanh, tanh_grad),
    ("relu", relu, relu_grad),
    ("leaky_relu", leaky_relu, leaky_relu_grad),
    ("prelu", prelu_layer, prelu_grad),
    ("identity", identity, identity_grad),
    ("gelu", jax.nn.gelu, None),
    ("elu", jax.nn.elu, None),
    ("softplus", jax.nn.softplus, None),
]:
    ACTIVATIONS.register(_name, _fn)
    if _grad is not None:
        DERIVATIVES.register(_name, _grad)

# The lecture's comparison, in its order.
LECTURE_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu")


def get_activation(name_or_fn: str | Activation) -> Activation:
    """Look an activation up by name (a callable is returned unchanged)."""
    if callable(name_or_fn):
        return name_or_fn
    return ACTIVATIONS.get(name_or_fn)


def autodiff_derivative(fn: Activation) -> Activation:
    """g'(x) elementwise by `jax.grad` (for activations without a hand-written derivative)."""

    def d(x: jax.Array) -> jax.Array:
        flat = jnp.ravel(x)
        return jax.vmap(jax.grad(lambda v: fn(v)))(flat).reshape(jnp.shape(x))

    return d


def derivative(name_or_fn: str | Activation) -> Activation:
    """The derivative g'(x) of an activation: the hand-written one for the lecture's names,
    else `jax.grad` elementwise."""
    if isinstance(name_or_fn, str):
        ACTIVATIONS.check(name_or_fn)
        if name_or_fn in DERIVATIVES:
            return DERIVATIVES.get(name_or_fn)
    return autodiff_derivative(get_activation(name_or_fn))
