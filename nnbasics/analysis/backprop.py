"""Backpropagation by hand: a forward pass that stores every layer's input, and a backward pass
that applies the chain rule layer by layer, top to bottom (the lecture's two formulas):

    dL/dx^(l-1) = dL/dx^(l) . df^(l)/dx^(l-1)        dL/dW^(l) = dL/dx^(l) . df^(l)/dW^(l)

A network is a tuple of layers (Dense, Conv2D, Activation, Flatten) and a list of parameter
dicts, one per layer. Every layer has `forward(params, x) -> (y, cache)` and
`backward(params, cache, dy) -> (dparams, dx)` written out with array operations only (no
autodiff). `reference_forward` computes the same function with the library's ops
(`nnbasics.nn.activations`, `nnbasics.nn.conv.conv_general`), so `jax.grad` of it is the check.

    layers = mlp_layers((64, 32, 32, 10), "tanh")
    params = init_params(layers, seed=0, input_shape=(64,))
    grads = gradients(layers, params, x, y)               # by hand
    ref = jax.grad(reference_loss)(params, layers, x, y)   # by autodiff
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nnbasics.nn.activations import get_activation, leaky_relu
from nnbasics.nn.conv import conv_general

Params = list[dict[str, jax.Array]]

LEAKY_ALPHA = 0.02  # the lecture's leaky-ReLU slope
PRELU_INIT = 0.25  # He et al. 2015's initial PReLU slope
ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu")


# ------------------------------------------------------------------ activations and derivatives


def activation_forward(name: str, z: jax.Array, alpha: jax.Array | None = None) -> jax.Array:
    """f(z) for the lecture's nonlinearities (PReLU takes its learned slope `alpha`)."""
    if name == "prelu":
        return jnp.where(z > 0, z, alpha * z)
    if name == "leaky_relu":
        return leaky_relu(z, LEAKY_ALPHA)
    return get_activation(name)(z)


def activation_derivative(name: str, z: jax.Array, alpha: jax.Array | None = None) -> jax.Array:
    """f'(z), written out: sigmoid s(1-s), tanh 1-t^2, ReLU [z>0], leaky ReLU [z>0] or alpha,
    PReLU [z>0] or its learned alpha. At z = 0 the ReLU family takes the left slope, as jax does."""
    if name == "sigmoid":
        s = 1.0 / (1.0 + jnp.exp(-z))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - jnp.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "leaky_relu":
        return jnp.where(z > 0, 1.0, LEAKY_ALPHA).astype(z.dtype)
    if name == "prelu":
        return jnp.where(z > 0, jnp.ones_like(z), alpha * jnp.ones_like(z))
    raise ValueError(f"no hand-written derivative for activation {name!r}; valid: {', '.join(ACTIVATION_NAMES)}")


# ------------------------------------------------------------------------------------ layers


@dataclasses.dataclass(frozen=True)
class Dense:
    """y = x W + b on (N, D) inputs."""

    features: int

    def init(self, rng: np.random.Generator, in_shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
        d = in_shape[-1]
        w = rng.standard_normal((d, self.features)) * np.sqrt(2.0 / d)
        return {"W": _f32(w), "b": _f32(0.1 * rng.standard_normal(self.features))}, (self.features,)

    def forward(self, p: dict, x: jax.Array) -> tuple[jax.Array, Any]:
        return x @ p["W"] + p["b"], x

    def backward(self, p: dict, x: Any, dy: jax.Array) -> tuple[dict, jax.Array]:
        return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ p["W"].T

    def reference(self, p: dict, x: jax.Array) -> jax.Array:
        return x @ p["W"] + p["b"]


@dataclasses.dataclass(frozen=True)
class Activation:
    """Elementwise nonlinearity; PReLU has a learned slope per channel (last axis)."""

    name: str

    def init(self, rng: np.random.Generator, in_shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
        if self.name == "prelu":
            return {"alpha": jnp.full((in_shape[-1],), PRELU_INIT)}, in_shape
        return {}, in_shape

    def forward(self, p: dict, z: jax.Array) -> tuple[jax.Array, Any]:
        return activation_forward(self.name, z, p.get("alpha")), z

    def backward(self, p: dict, z: Any, dy: jax.Array) -> tuple[dict, jax.Array]:
        dz = dy * activation_derivative(self.name, z, p.get("alpha"))
        if self.name == "prelu":  # d f / d alpha = z where z <= 0; summed over all but channels
            da = jnp.sum(dy * jnp.where(z > 0, 0.0, z), axis=tuple(range(z.ndim - 1)))
            return {"alpha": da}, dz
        return {}, dz

    def reference(self, p: dict, z: jax.Array) -> jax.Array:
        if self.name == "prelu":
            return jax.nn.relu(z) - p["alpha"] * jax.nn.relu(-z)
        return activation_forward(self.name, z)


@dataclasses.dataclass(frozen=True)
class Flatten:
    """(N, ...) -> (N, prod(...))."""

    def init(self, rng: np.random.Generator, in_shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
        n = 1
        for s in in_shape:
            n *= s
        return {}, (n,)

    def forward(self, p: dict, x: jax.Array) -> tuple[jax.Array, Any]:
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, p: dict, shape: Any, dy: jax.Array) -> tuple[dict, jax.Array]:
        return {}, dy.reshape(shape)

    def reference(self, p: dict, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Conv2D:
    """NHWC convolution (cross-correlation, as in every framework) with a (kh, kw, Cin, Cout)
    kernel, stride and symmetric zero padding, computed as a patch matrix times the kernel."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    stride: int = 1
    padding: int = 1

    def init(self, rng: np.random.Generator, in_shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
        h, w, c = in_shape
        kh, kk = self.kernel_size
        kernel = rng.standard_normal((kh, kk, c, self.features)) * np.sqrt(2.0 / (kh * kk * c))
        ho, wo = self._out(h, kh), self._out(w, kk)
        return {"W": _f32(kernel), "b": _f32(0.1 * rng.standard_normal(self.features))}, (ho, wo, self.features)

    def _out(self, size: int, k: int) -> int:
        return (size + 2 * self.padding - k) // self.stride + 1

    def _patches(self, x: jax.Array) -> jax.Array:
        """(N, Ho, Wo, kh, kw, C): the input window under each output position."""
        kh, kw = self.kernel_size
        s, p = self.stride, self.padding
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        ho, wo = self._out(x.shape[1], kh), self._out(x.shape[2], kw)
        rows = []
        for i in range(kh):
            cols = [xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :] for j in range(kw)]
            rows.append(jnp.stack(cols, axis=3))
        return jnp.stack(rows, axis=3)

    def forward(self, p: dict, x: jax.Array) -> tuple[jax.Array, Any]:
        patches = self._patches(x)
        y = jnp.einsum("nhwijc,ijcf->nhwf", patches, p["W"]) + p["b"]
        return y, (patches, x.shape)

    def backward(self, p: dict, cache: Any, dy: jax.Array) -> tuple[dict, jax.Array]:
        patches, shape = cache
        dw = jnp.einsum("nhwijc,nhwf->ijcf", patches, dy)
        db = dy.sum((0, 1, 2))
        dpatches = jnp.einsum("nhwf,ijcf->nhwijc", dy, p["W"])
        # Each patch entry came from one padded-input pixel: add the gradients back there.
        # Patch entry (i, j) of output (a, b) is padded-input pixel (i + s a, j + s b): place each
        # offset's gradients there (zero-padding with s - 1 zeros between them) and sum.
        kh, kw = self.kernel_size
        s, pad = self.stride, self.padding
        n, h, w, c = shape
        ho, wo = dy.shape[1], dy.shape[2]
        hp, wp = h + 2 * pad, w + 2 * pad
        dxp = jnp.zeros((n, hp, wp, c), dy.dtype)
        for i in range(kh):
            for j in range(kw):
                rows = (i, hp - i - s * (ho - 1) - 1, s - 1)  # (low, high, interior) zero padding
                cols = (j, wp - j - s * (wo - 1) - 1, s - 1)
                zero = jnp.zeros((), dy.dtype)
                dxp = dxp + lax.pad(dpatches[:, :, :, i, j, :], zero, [(0, 0, 0), rows, cols, (0, 0, 0)])
        return {"W": dw, "b": db}, dxp[:, pad:pad + h, pad:pad + w, :]

    def reference(self, p: dict, x: jax.Array) -> jax.Array:
        pad = [(self.padding, self.padding)] * 2
        return conv_general(x, p["W"], strides=self.stride, padding=pad) + p["b"]


Layer = Dense | Activation | Flatten | Conv2D


# ----------------------------------------------------------------------------------- networks


def mlp_layers(sizes: Sequence[int], activation: str) -> tuple[Layer, ...]:
    """An L-layer MLP, sizes = (input, hidden..., output): Dense-activation blocks, linear output."""
    layers: list[Layer] = []
    for i, width in enumerate(sizes[1:]):
        layers.append(Dense(int(width)))
        if i < len(sizes) - 2:
            layers.append(Activation(activation))
    return tuple(layers)


def conv_layers(
    channels: Sequence[int], strides: Sequence[int], num_classes: int, activation: str
) -> tuple[Layer, ...]:
    """A small conv net: [3x3 conv (padding 1) - activation] per entry, flatten, dense read-out."""
    layers: list[Layer] = []
    for c, s in zip(channels, strides):
        layers += [Conv2D(int(c), (3, 3), int(s), 1), Activation(activation)]
    return tuple(layers) + (Flatten(), Dense(int(num_classes)))


def init_params(layers: Sequence[Layer], seed: int, input_shape: tuple[int, ...]) -> Params:
    """One parameter dict per layer (He-normal weights, small random biases, PReLU slope 0.25),
    drawn with NumPy (instant; eager jax.random compiles one program per shape)."""
    rng = np.random.default_rng(seed)
    params, shape = [], tuple(input_shape)
    for layer in layers:
        p, shape = layer.init(rng, shape)
        params.append(p)
    return params


def _f32(a: np.ndarray) -> jax.Array:
    return jnp.asarray(a, jnp.float32)


def forward(layers: Sequence[Layer], params: Params, x: jax.Array) -> tuple[jax.Array, list[Any]]:
    """x^(l) = f^(l)(x^(l-1), W^(l)) for l = 1..L; returns x^(L) and every layer's cache."""
    caches = []
    for layer, p in zip(layers, params):
        x, cache = layer.forward(p, x)
        caches.append(cache)
    return x, caches


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and its gradient with respect to the logits, (softmax - onehot) / N."""
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - jnp.log(jnp.exp(z).sum(axis=-1, keepdims=True))
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    n = logits.shape[0]
    return -(onehot * logp).sum() / n, (jnp.exp(logp) - onehot) / n


def backward(layers: Sequence[Layer], params: Params, caches: list[Any], dout: jax.Array) -> tuple[Params, jax.Array]:
    """From dL/dx^(L) down to dL/dx^(0), collecting dL/dW^(l) on the way."""
    grads: Params = [{} for _ in layers]
    d = dout
    for i in reversed(range(len(layers))):
        grads[i], d = layers[i].backward(params[i], caches[i], d)
    return grads, d


def loss_and_gradients(layers: Sequence[Layer], params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Params]:
    """Cross-entropy loss and its parameter gradients, by the hand-written forward and backward."""
    logits, caches = forward(layers, params, x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    grads, _ = backward(layers, params, caches, dlogits)
    return loss, grads


def gradients(layers: Sequence[Layer], params: Params, x: jax.Array, y: jax.Array) -> Params:
    return loss_and_gradients(layers, params, x, y)[1]


def reference_forward(layers: Sequence[Layer], params: Params, x: jax.Array) -> jax.Array:
    """The same network with the library's ops (for `jax.grad`)."""
    for layer, p in zip(layers, params):
        x = layer.reference(p, x)
    return x


def reference_loss(params: Params, layers: Sequence[Layer], x: jax.Array, y: jax.Array) -> jax.Array:
    """optax's softmax cross-entropy of the library forward pass."""
    return optax.softmax_cross_entropy_with_integer_labels(reference_forward(layers, params, x), y).mean()


def autodiff_gradients(layers: Sequence[Layer], params: Params, x: jax.Array, y: jax.Array) -> Params:
    return jax.grad(reference_loss)(params, layers, x, y)


def relative_errors(hand: Params, ref: Params) -> list[dict[str, float]]:
    """||g_hand - g_ref|| / ||g_ref|| per layer and parameter (0 where both are zero)."""
    out = []
    for gh, gr in zip(hand, ref):
        d = {}
        for k in gr:
            a, b = np.asarray(gh[k], np.float64), np.asarray(gr[k], np.float64)
            num, den = np.linalg.norm(a - b), np.linalg.norm(b)
            d[k] = float(num / den) if den > 0 else float(num)
        out.append(d)
    return out


def max_relative_error(hand: Params, ref: Params) -> float:
    return max((v for d in relative_errors(hand, ref) for v in d.values()), default=0.0)


def sgd_step(params: Params, grads: Params, learning_rate: float) -> Params:
    """theta <- theta - eta dJ/dtheta, written out."""
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)


def max_abs_difference(a: Params, b: Params) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return float(max(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) for x, y in zip(la, lb)))
