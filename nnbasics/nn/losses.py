"""Losses of the lecture as objects: softmax cross-entropy (the negative log-likelihood of the
softmax classifier), squared error for regression, and for comparison the squared error of the
softmax outputs and cross-entropy with label smoothing; accuracy.

A loss is a `Loss`: it says whether it classifies (`classifies`: integer labels, accuracy measured)
and carries its own parameters (`LabelSmoothing(epsilon=0.1)`). `LOSSES` registers one default
instance per name (like the models' registry), and `get_loss` turns a name, a {"name": ..., params}
mapping or an object into a `Loss`:

    get_loss("cross_entropy"); get_loss("label_smoothing", epsilon=0.2); get_loss(LabelSmoothing(0.2))

A loss is defined per example (`per_example`: one value per row, dense labels averaged within their
row); training takes `loss(outputs, targets)` (the mean over every element, as optax computes it)
and evaluation sums `per_example` over a data set. A plain function registered with
`LOSSES.register(name, fn, classifies=...)` still works: it becomes a `FunctionLoss`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from nnbasics.registry import Registry, UnknownNameError


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss of outputs (N, ...) against targets: `__call__` the training value (a mean), `per_example`
    one value per example (N,). Subclasses are frozen dataclasses whose fields are the parameters."""

    name = "loss"
    classifies = False  # integer labels (N,) or dense (N, ...), logits (N, ..., C); accuracy is measured

    def __call__(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        return jnp.mean(self.per_example(outputs, targets))

    def per_example(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} defines no per_example")

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """'label_smoothing(epsilon=0.1)', or the bare name of a loss without parameters."""
        p = self.params()
        return self.name + (f"({', '.join(f'{k}={v!r}' for k, v in p.items())})" if p else "")


def _rows(per: jax.Array, n: int) -> jax.Array:
    return per.reshape(n, -1).mean(1)


@dataclasses.dataclass(frozen=True)
class CrossEntropy(Loss):
    """Softmax cross-entropy of integer labels: -log softmax(logits)[label], the negative
    log-likelihood of the labels under the softmax classifier."""

    name = "cross_entropy"
    classifies = True

    def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def per_example(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return _rows(optax.softmax_cross_entropy_with_integer_labels(logits, labels), logits.shape[0])


@dataclasses.dataclass(frozen=True)
class SquaredError(Loss):
    """Mean squared error over every element (regression: float targets of the outputs' shape)."""

    name = "mse"

    def __call__(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean((pred - target.reshape(pred.shape)) ** 2)

    def per_example(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(((pred - target.reshape(pred.shape)) ** 2).reshape(pred.shape[0], -1), axis=1)


@dataclasses.dataclass(frozen=True)
class SoftmaxSquaredError(Loss):
    """Squared error between the softmax probabilities and the one-hot label, summed over the
    classes (the Brier score): a classification loss whose gradient vanishes when a wrong output
    saturates (softmax' -> 0), unlike cross-entropy's p - y."""

    name = "softmax_squared_error"
    classifies = True

    def _per_position(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return jnp.sum((jax.nn.softmax(logits) - onehot) ** 2, axis=-1)

    def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return self._per_position(logits, labels).mean()

    def per_example(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return _rows(self._per_position(logits, labels), logits.shape[0])


@dataclasses.dataclass(frozen=True)
class LabelSmoothing(Loss):
    """Cross-entropy against labels smoothed to (1 - epsilon) one-hot + epsilon / C (Szegedy et al.
    2016, Sec. 7); epsilon = 0 is `CrossEntropy`."""

    epsilon: float = 0.1
    name = "label_smoothing"
    classifies = True

    def __post_init__(self) -> None:
        if not isinstance(self.epsilon, (int, float)) or isinstance(self.epsilon, bool) or not 0 <= self.epsilon < 1:
            raise ValueError(f"label_smoothing: epsilon must be a number in [0, 1), got {self.epsilon!r}")

    def _per_position(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, self.epsilon))

    def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return self._per_position(logits, labels).mean()

    def per_example(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return _rows(self._per_position(logits, labels), logits.shape[0])


@dataclasses.dataclass(frozen=True)
class FunctionLoss(Loss):
    """A plain function fn(outputs, targets) -> mean, as a Loss: per example, fn of each example alone."""

    fn: Callable[[jax.Array, jax.Array], jax.Array] = dataclasses.field(compare=True)
    label: str = "function"
    is_classifier: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label

    @property
    def classifies(self) -> bool:  # type: ignore[override]
        return self.is_classifier

    def __call__(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        return self.fn(outputs, targets)

    def per_example(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        return jax.vmap(lambda o, t: self.fn(o[None], t[None]))(outputs, targets)

    def describe(self) -> str:
        return self.label


LOSSES: Registry[Any] = Registry("loss")
LOSSES.register("cross_entropy", CrossEntropy())
LOSSES.register("mse", SquaredError())
LOSSES.register("softmax_squared_error", SoftmaxSquaredError())
LOSSES.register("label_smoothing", LabelSmoothing())


def get_loss(spec: str | Mapping[str, Any] | Loss, **params: Any) -> Loss:
    """The Loss named `spec` (with `params` replacing its defaults), `spec` itself when it is one, or
    the loss of a {"name": ..., **params} mapping (a config). Unknown names and parameters are
    refused naming the valid ones."""
    if isinstance(spec, Loss):
        base = spec
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"a loss given as a mapping needs a 'name' (one of {', '.join(LOSSES.names())}), got {spec}")
        return get_loss(spec.pop("name"), **spec, **params)
    elif isinstance(spec, str):
        entry = LOSSES.get(spec)
        base = entry if isinstance(entry, Loss) else FunctionLoss(entry, spec, bool(LOSSES.info(spec).get("classifies")))
    else:
        raise ValueError(f"loss must be a name ({', '.join(LOSSES.names())}) or a nnbasics.nn.losses.Loss, "
                         f"got {type(spec).__name__}")
    if not params:
        return base
    valid = [f.name for f in dataclasses.fields(base)] if not isinstance(base, FunctionLoss) else []
    bad = [k for k in params if k not in valid]
    if bad:
        raise UnknownNameError(f"the {base.name} loss has no parameter {', '.join(map(repr, bad))}; its parameters: "
                               f"{', '.join(valid) or 'none'}")
    return dataclasses.replace(base, **params)


def loss_key(spec: str | Mapping[str, Any] | Loss) -> str:
    """The loss as text for a checkpoint's fingerprint: a registered name as itself (as before losses
    were objects), otherwise its description."""
    return spec if isinstance(spec, str) else get_loss(spec).describe()


def per_example_loss(name: str | Loss) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss as one value per example (N,)."""
    return get_loss(name).per_example


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels (N,) (or dense (N, ...)) against logits (N, ..., C)."""
    return CrossEntropy()(logits, labels)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element."""
    return SquaredError()(pred, target)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows (or pixels, for dense labels) whose arg-max equals the label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def accuracy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Accuracy of each example (N,): its fraction of correct pixels for dense labels."""
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32).reshape(logits.shape[0], -1).mean(1)
