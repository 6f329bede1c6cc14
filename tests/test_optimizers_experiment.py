"""Optimizers: the library's named optimizers equal optax's own, the learning-rate scaling used
for the vmapped 2-D paths is exact, the 2-D test functions and 0th/1st/2nd-order methods are right,
the MNIST-1D grids trained through `fit` equal a hand-written training loop, and the `optimizers`
experiment keeps the claims contract."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnbasics.analysis import momentum_theory as M
from nnbasics.analysis import test_functions as T
from nnbasics.analysis import zeroth_second_order as Z
from nnbasics.engine import PRNG_IMPL, batch_indices, create_state
from nnbasics.engine.optim import make_optimizer

HYPER = {"momentum": 0.8, "b1": 0.85, "b2": 0.99, "eps": 1e-7, "decay": 0.95, "weight_decay": 0.01}
OPTAX = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.8),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True),
    "rmsprop": lambda lr: optax.rmsprop(lr, decay=0.95, eps=1e-7),
    "adam": lambda lr: optax.adam(lr, b1=0.85, b2=0.99, eps=1e-7),
    "adamw": lambda lr: optax.adamw(lr, b1=0.85, b2=0.99, eps=1e-7, weight_decay=0.01),
}


def _updates(tx, params, grads_seq, scale=1.0):
    state = tx.init(params)
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        u = jax.tree.map(lambda a: scale * a, u)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "b": jnp.asarray(rng.standard_normal(2),
                                                                                            jnp.float32)}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params) for _ in range(4)]
    return params, grads


@pytest.mark.parametrize("name", list(OPTAX))
def test_named_optimizer_equals_optax_and_scales_with_the_learning_rate(name, problem):
    params, grads = problem
    wd = HYPER["weight_decay"] if name == "adamw" else 0.0
    cfg = {**HYPER, "name": name, "weight_decay": wd}
    lr = 0.05
    ours = _updates(make_optimizer({**cfg, "learning_rate": lr}), params, grads)
    ref = _updates(OPTAX[name](lr), params, grads)
    scaled = _updates(make_optimizer({**cfg, "learning_rate": 1.0}), params, grads, scale=lr)  # the grid trick
    for a, b, c in zip(ours, ref, scaled):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(c[k], b[k], rtol=1e-6, atol=1e-7)


def test_test_functions_have_their_minima_and_a_saddle():
    for name in ("valley", "beale", "saddle"):
        tf = T.get_test_function(name)
        values, grads = jax.jit(jax.vmap(jax.value_and_grad(tf.fn)))(jnp.asarray(tf.minima, jnp.float32))
        np.testing.assert_allclose(values, tf.f_min, atol=1e-6)
        np.testing.assert_allclose(grads, 0.0, atol=1e-5)
    sad = T.get_test_function("saddle")
    h = np.asarray(jax.jit(jax.hessian(sad.fn))(jnp.zeros(2)))
    assert np.sort(np.linalg.eigvalsh(h)).tolist() == pytest.approx([-1.0, 2.0])
    with pytest.raises(KeyError, match="did you mean"):
        T.get_test_function("vally")


def test_optimizer_paths_follow_the_closed_form_and_a_python_loop():
    lam = jnp.array([1.0, 10.0])

    def fn(w):
        return 0.5 * jnp.sum(lam * w**2)

    lrs = np.array([0.01, 0.05, 0.15])
    txs = {"sgd": make_optimizer({"name": "sgd", "learning_rate": 1.0}),
           "adam": make_optimizer({"name": "adam", "learning_rate": 1.0})}
    out = T.optimizer_paths(fn, txs, (1.0, 1.0), lrs, 20)
    paths, values = out["sgd"]
    k = np.arange(21)[:, None]
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(paths[i], (1 - lr * np.asarray(lam)) ** k, rtol=1e-4, atol=1e-6)
    # Adam at one rate, stepped by hand with make_optimizer(learning_rate=lr).
    tx = make_optimizer({"name": "adam", "learning_rate": 0.05})
    w, s = jnp.ones(2), None
    s = tx.init(w)
    for step in range(20):
        u, s = tx.update(jax.grad(fn)(w), s, w)
        w = optax.apply_updates(w, u)
        np.testing.assert_allclose(out["adam"][0][1, step + 1], w, rtol=1e-5, atol=1e-6)
    assert values.shape == (3, 21)


def test_convergence_bookkeeping():
    v = np.array([5.0, 0.5, 2.0, 0.01, 0.001, 0.002])
    assert T.steps_to_tolerance(v, 0.0, 0.6) == 1.0
    assert T.steps_to_converge(v, 0.0, 0.6) == 3.0
    assert T.steps_to_converge(v, 0.0, 1e-4) == math.inf
    vals = np.array([[1.0, 0.1, 0.01], [1.0, 1e-3, 1e-4], [1.0, np.nan, np.nan]])
    assert T.best_member(vals, 0.0, 0.05) == 1
    assert T.best_member(vals, 0.0, 1e-9) == 1  # nobody settles: lowest final value


def test_zeroth_first_second_order_on_a_quadratic():
    quad = M.make_quadratic(10.0, dim=4, seed=0)
    w0 = M.start_point(quad)
    with M.float64():
        A = jnp.asarray(quad.A)

        def f(w):
            return 0.5 * w @ (A @ w)

        nt = np.asarray(Z.newton(f, jnp.asarray(w0), 2))
        alpha, rate = M.gd_optimal(quad.lmin, quad.lmax)
        gd = np.asarray(Z.gradient_descent(f, jnp.asarray(w0), alpha, 100))
        rs = np.asarray(Z.random_search(f, jnp.asarray(w0), np.random.default_rng(0).standard_normal((3000, 4))))
    assert nt[1] <= 1e-25 * nt[0]  # Newton is exact in one step on a quadratic
    assert Z.iterations_to_tolerance(nt, 0.0, 1e-12) == 1
    assert gd[-1] <= rate ** (2 * 100) * gd[0] * (1 + 1e-9)  # f falls at least at rate^2 per step
    assert np.all(np.diff(rs) <= 0)  # random search only accepts improvements
    assert Z.iterations_to_tolerance(rs, 0.0, 1e-8) < 3000
    assert Z.iterations_to_tolerance(gd, 0.0, 1e-8) < Z.iterations_to_tolerance(rs, 0.0, 1e-8)


def _experiment_module():
    from nnbasics.runs.experiment import load_experiment

    return load_experiment("optimizers")


def _hand_written_grid(model, data, spec, lrs, seeds, batch_size, steps, evals):
    """The MNIST-1D grid as a plain loop: optax from the engine's per-seed initialization (loop.py:
    fold_in(key(seed), 0)), the engine's batches, the full training-set loss at evals + 1 points."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    sample = jnp.zeros((1, *x.shape[1:]), jnp.float32)

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

    idx = batch_indices(seeds, 0, steps, len(x), batch_size)
    out = np.zeros((len(seeds), len(lrs), evals + 1))
    for i, seed in enumerate(seeds):
        key = jax.random.fold_in(jax.random.key(seed, impl=PRNG_IMPL), 0)
        for j, lr in enumerate(lrs):
            tx = make_optimizer({**spec, "learning_rate": lr})
            p = create_state(model, tx, key, sample).params
            s, step = tx.init(p), jax.jit(lambda p, s, ix: _sgd_step(tx, loss, p, s, x[ix], y[ix]))
            out[i, j, 0] = loss(p, x, y)
            for t in range(steps):
                p, s = step(p, s, idx[i, t])
                if (t + 1) % (steps // evals) == 0:
                    out[i, j, (t + 1) // (steps // evals)] = loss(p, x, y)
    return out


def _sgd_step(tx, loss, p, s, xb, yb):
    u, s = tx.update(jax.grad(loss)(p, xb, yb), s, p)
    return optax.apply_updates(p, u), s


@pytest.mark.parametrize("spec", [{"name": "sgd"}, {"name": "adam", "b1": 0.8}])
def test_grid_through_fit_equals_a_hand_written_loop(spec):
    from nnbasics.data import load_dataset
    from nnbasics.models import get_model

    exp = _experiment_module()
    data, model = load_dataset("mnist1d"), get_model("mnist1d_mlp", num_classes=10)
    lrs, seeds = (0.03, 0.3, 1e6), [3, 1]  # rate 1e6 diverges: kept training (NaN), never a seed's best
    got = exp._grid(model, data, None, "t", spec, lrs, 32, 12, 3, seeds)
    ref = _hand_written_grid(model, data, spec, lrs, seeds, 32, 12, 3)
    np.testing.assert_array_equal(got["points"], [0, 4, 8, 12])
    assert got["losses"].shape == (2, 3, 4) and got["acc"].shape == (2, 3)
    np.testing.assert_allclose(got["losses"][:, :2], ref[:, :2], rtol=2e-5)
    np.testing.assert_allclose(got["losses"][:, :, 0], np.log(10), rtol=0.1)  # at init: about chance
    assert not (got["losses"][:, 2, -1] < 10).any()  # NaN or far above chance
    best = np.argmin(ref[:, :2, -1], axis=1)
    np.testing.assert_array_equal(got["best"], best)
    np.testing.assert_allclose(got["best_loss"], ref[[0, 1], best, -1], rtol=2e-5)
    assert got["best_lr"].tolist() == [lrs[b] for b in best]
    assert np.all((got["acc"][:, :2] > 0.1) & (got["acc"][:, :2] < 0.6))


def test_best_per_seed_skips_diverged_rates_and_picks_at_a_point():
    exp = _experiment_module()
    losses = np.array([[[2.3, 1.0, 0.9], [2.3, 0.5, np.nan], [2.3, 0.8, 0.7]],
                       [[2.3, 0.6, 0.2], [2.3, np.inf, np.inf], [2.3, 0.4, 0.3]]])
    acc = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    r = exp._best_per_seed(losses, acc, (0.1, 1.0, 0.3), np.arange(3))
    assert r["best"].tolist() == [2, 0] and r["best_lr"].tolist() == [0.3, 0.1]
    np.testing.assert_allclose(r["best_loss"], [0.7, 0.2])
    np.testing.assert_allclose(r["best_acc"], [0.3, 0.4])
    np.testing.assert_allclose(r["best_curve"], [[2.3, 0.8, 0.7], [2.3, 0.6, 0.2]])
    early = exp._best_per_seed(losses, acc, (0.1, 1.0, 0.3), np.arange(3), at=1)  # the best after one point
    assert early["best"].tolist() == [1, 2] and early["best_loss"].tolist() == [0.5, 0.4]


def test_optimizers_experiment_smoke(tmp_path):
    from nnbasics.runs.experiment import get_config, run_experiment
    from nnbasics.runs.workdir import read_metrics

    doc = run_experiment("optimizers", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in doc["claims"]]
    assert ids == [
        "momentum_faster_on_test_functions", "adaptive_escape_saddle", "sgd_faster_per_epoch",
        "momentum_faster_same_lr", "gradient_variance_slope", "order_of_information",
    ]
    claims = {c["id"]: c for c in doc["claims"]}
    # deterministic 2-D problems at 60 steps: nothing settles on the valley (61 = not within 60);
    # on the saddle RMSProp and Adam escape in the same few steps from every offset, GD only from 1e-2
    sad = claims["adaptive_escape_saddle"]["measured"]
    assert claims["momentum_faster_on_test_functions"]["measured"]["valley_steps_sgd"] == 61.0
    assert sad["escape_steps_rmsprop"] == [5.0] * 3 and sad["escape_steps_adam"] == [9.0] * 3
    assert 45 <= sad["escape_steps_sgd"][0] <= 53 and sad["escape_steps_sgd"][-1] == 61.0
    # MNIST-1D, one epoch from chance (log 10 = 2.30): batch 1 (4000 updates) far ahead, batch 32 (125) and
    # full batch (1 update per epoch) barely moved; momentum at the same rate ahead of SGD
    batch, mom = claims["sgd_faster_per_epoch"]["measured"], claims["momentum_faster_same_lr"]["measured"]
    assert all(1.2 < v < 1.8 for v in batch["loss_batch1"])
    assert all(1.9 < v < 2.3 for v in batch["loss_batch32"] + batch["loss_full_batch"])
    assert all(a < b for a, b in zip(batch["loss_full_batch_2_epochs"], batch["loss_full_batch"]))
    assert mom["loss_sgd"] == batch["loss_batch32"]  # one rate (0.01) in the smoke grid: the same SGD run
    assert all(m < s - 0.2 for m, s in zip(mom["loss_momentum"], mom["loss_sgd"]))
    assert all(20 < v < 60 for k in ("rmsprop", "adam") for v in mom[f"best_test_accuracy_{k}"])
    # training went through fit: its metrics rows, one run per optimizer and batch size, each from the
    # same per-seed initialization (equal losses at step 0)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    start = {r["run"]: r["train_full_loss"] for r in rows if r["step"] == 0}
    assert sorted(start) == sorted(["sgd_batch32", "momentum_batch32", "nesterov_batch32", "rmsprop_batch32",
                                    "adam_batch32", "sgd_batch1", "sgd_full_batch"])
    for v in start.values():
        np.testing.assert_allclose(v, start["sgd_batch32"], rtol=1e-6)
    assert [r["step"] for r in rows if r["run"] == "sgd_full_batch"] == [0, 1, 2]
    # random claims: one value per seed (2 in the smoke preset), paired statistics
    slopes = claims["gradient_variance_slope"]["measured"]["slope"]
    assert len(slopes) == 2 and all(-1.3 < v < -0.7 for v in slopes)  # Var ~ 1/B
    for cid in ("sgd_faster_per_epoch", "momentum_faster_same_lr", "gradient_variance_slope"):
        assert all(k["random"] and k["n"] == 2 for k in claims[cid]["checks"]), cid
    order = claims["order_of_information"]
    assert order["measured"]["iterations_newton"] == 1.0 and order["checks"][0]["verdict"] == "pass"
    assert len(order["measured"]["iterations_random_search"]) == 2
    assert {"fn_tolerance", "order_tolerance", "saddle_escape", "seed"}.isdisjoint(get_config("optimizers", "smoke"))
    assert {"test_function_paths.png", "mnist1d.png", "orders.png"} <= {p.split("/")[-1] for p in doc["figures"]}


def test_config_validation():
    from nnbasics.config import ConfigError
    from nnbasics.runs.experiment import get_config

    with pytest.raises(ConfigError, match="same_learning_rate"):
        get_config("optimizers", "quick", ["--config.same_learning_rate=0.5"])
    with pytest.raises(ConfigError, match="optimizers.momentum"):
        get_config("optimizers", "quick", ["--config.optimizers.momentum.momentum=1.5"])
