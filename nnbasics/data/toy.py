"""Small 2-D and 1-D data sets for the lecture's first half: xor, blobs, spirals, polynomial."""

from __future__ import annotations

import numpy as np

from nnbasics.data import ArrayDataset, register


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@register("xor", input_shape=(2,))
def xor(n_per_corner: int = 1, noise: float = 0.0, seed: int = 0) -> ArrayDataset:
    """The XOR truth table (label = x1 XOR x2) on {0,1}^2; with noise, Gaussian clouds
    around the four corners. The test set is a fresh draw (the table itself when noise=0)."""

    def draw(rng):
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        labels = np.array([0, 1, 1, 0], np.int32)
        x = np.repeat(corners, n_per_corner, axis=0)
        y = np.repeat(labels, n_per_corner)
        x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
        return x.astype(np.float32), y

    rng = _rng(seed)
    xtr, ytr = draw(rng)
    xte, yte = draw(rng)
    return ArrayDataset("xor", xtr, ytr, xte, yte, num_classes=2)


@register("logic_gates", input_shape=(2,))
def logic_gates(gate: str = "and") -> ArrayDataset:
    """The truth table of AND, OR, NAND or XOR on {0,1}^2 (train = test = the 4 rows)."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    a, b = x[:, 0].astype(bool), x[:, 1].astype(bool)
    table = {"and": a & b, "or": a | b, "nand": ~(a & b), "xor": a ^ b}
    if gate not in table:
        raise ValueError(f"unknown gate {gate!r}; valid: {', '.join(table)}")
    y = table[gate].astype(np.int32)
    return ArrayDataset(f"logic_{gate}", x, y, x.copy(), y.copy(), num_classes=2)


def _check_classes(name: str, value: object, what: str) -> None:
    """A count of classes must be a whole number of at least 2 (numpy said "high <= 0" for 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(f"{name} must be a whole number of at least 2 ({what}), got {value!r}")


@register("blobs", input_shape=(2,))
def blobs(
    n_train: int = 500, n_test: int = 500, centers: int = 3, std: float = 1.0, seed: int = 0
) -> ArrayDataset:
    """Isotropic Gaussian clusters in 2-D, one class per cluster (centres in [-5, 5]^2)."""
    _check_classes("centers", centers, "one class per cluster")
    rng = _rng(seed)
    mu = rng.uniform(-5, 5, size=(centers, 2))

    def draw(n):
        y = rng.integers(0, centers, n).astype(np.int32)
        x = mu[y] + std * rng.standard_normal((n, 2))
        return x.astype(np.float32), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return ArrayDataset("blobs", xtr, ytr, xte, yte, num_classes=centers)


@register("spirals", input_shape=(2,))
def spirals(
    n_train: int = 1000, n_test: int = 1000, arms: int = 2, turns: float = 1.5, noise: float = 0.05, seed: int = 0
) -> ArrayDataset:
    """Interleaved spirals in 2-D (one class per arm): not linearly separable."""
    _check_classes("arms", arms, "one class per arm")
    rng = _rng(seed)

    def draw(n):
        y = rng.integers(0, arms, n).astype(np.int32)
        t = np.sqrt(rng.uniform(0.0, 1.0, n))  # denser near the centre, like the classic set
        angle = 2 * np.pi * turns * t + 2 * np.pi * y / arms
        x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        x = x + noise * rng.standard_normal(x.shape)
        return x.astype(np.float32), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return ArrayDataset("spirals", xtr, ytr, xte, yte, num_classes=arms)


@register("polynomial", input_shape=(1,))
def polynomial(
    n_train: int = 15, n_test: int = 200, noise: float = 0.2, target: str = "sin", seed: int = 0
) -> ArrayDataset:
    """1-D regression, Bishop's PRML example: y = sin(2 pi x) + noise on x in [0, 1]
    (target='cubic' gives y = 2x^3 - x + noise instead). Targets have shape (N, 1)."""
    funcs = {"sin": lambda x: np.sin(2 * np.pi * x), "cubic": lambda x: 2 * x**3 - x}
    if target not in funcs:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(funcs)}")
    f = funcs[target]
    rng = _rng(seed)
    xtr = rng.uniform(0, 1, (n_train, 1))
    ytr = f(xtr) + noise * rng.standard_normal(xtr.shape)
    xte = np.linspace(0, 1, n_test)[:, None]
    yte = f(xte) + noise * rng.standard_normal(xte.shape)
    return ArrayDataset(
        "polynomial", xtr.astype(np.float32), ytr.astype(np.float32), xte.astype(np.float32),
        yte.astype(np.float32), num_classes=0, task="regression", info={"target": target, "noise": noise},
    )
