"""The perceptron rule against a hand-written loop, its behaviour on AND/OR/XOR, linear regression's
closed form, and the perceptron_xor experiment's claims contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.data import ArrayDataset, load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.models.perceptron import (
    PerceptronParams,
    least_squares,
    perceptron_accuracy,
    perceptron_init,
    perceptron_predict,
    perceptron_train,
    perceptron_update,
)


def test_perceptron_update_is_the_learning_rule():
    p = PerceptronParams(jnp.array([0.5, -1.0]), jnp.array(0.0))
    x = jnp.array([1.0, 2.0])  # score -1.5 -> predicts 0
    same = perceptron_update(p, x, jnp.array(0.0), lr=0.1)  # right: no change
    np.testing.assert_array_equal(same.w, p.w)
    moved = perceptron_update(p, x, jnp.array(1.0), lr=0.1)  # wrong: w += lr (1 - 0) x, b += lr
    np.testing.assert_allclose(moved.w, [0.6, -0.8])
    np.testing.assert_allclose(moved.b, 0.1)
    np.testing.assert_array_equal(perceptron_predict(moved, jnp.array([[0.0, 0.0], [10.0, 0.0]])), [1.0, 1.0])


def test_perceptron_train_equals_a_hand_written_loop():
    d = load_dataset("logic_gates", gate="or")
    key, k_init = jax.random.key(3), jax.random.key(4)
    p0 = perceptron_init(k_init, 2, scale=0.5)
    p, hist = perceptron_train(p0, d.x_train, d.y_train, key, epochs=4, lr=0.5)
    w, b = np.asarray(p0.w, np.float64), float(p0.b)
    mistakes = []
    for k in jax.random.split(key, 4):
        wrong = 0
        for i in np.asarray(jax.random.permutation(k, 4)):
            pred = float(d.x_train[i] @ w + b > 0)
            err = d.y_train[i] - pred
            wrong += err != 0
            w, b = w + 0.5 * err * d.x_train[i], b + 0.5 * err
        mistakes.append(wrong)
    np.testing.assert_allclose(p.w, w, rtol=1e-6)
    np.testing.assert_allclose(p.b, b, rtol=1e-6)
    np.testing.assert_array_equal(hist["mistakes"], mistakes)


@pytest.mark.parametrize("gate", ["and", "or", "nand"])
def test_perceptron_separates_linearly_separable_gates(gate):
    d = load_dataset("logic_gates", gate=gate)
    p, hist = perceptron_train(perceptron_init(jax.random.key(0), 2), d.x_train, d.y_train, jax.random.key(1), epochs=30)
    assert float(perceptron_accuracy(p, jnp.asarray(d.x_train), jnp.asarray(d.y_train))) == 1.0
    assert int(hist["mistakes"][-1]) == 0  # converged: an error-free pass


def test_perceptron_never_separates_xor():
    d = load_dataset("logic_gates", gate="xor")
    keys = jax.random.split(jax.random.key(0), 8)
    _, hist = jax.vmap(lambda k: perceptron_train(perceptron_init(k, 2), d.x_train, d.y_train, k, epochs=40))(keys)
    assert float(hist["accuracy"].max()) <= 0.75  # no line gets all four points
    assert int(hist["mistakes"][:, -1].min()) >= 1  # and it never stops making mistakes


def test_least_squares_equals_normal_equations():
    r = np.random.default_rng(0)
    x = r.standard_normal((30, 3))
    y = x @ np.array([[1.0, 0.5], [-2.0, 0.0], [0.3, 1.0]]) + np.array([0.7, -0.2]) + 0.05 * r.standard_normal((30, 2))
    w, b = least_squares(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    design = np.hstack([x, np.ones((30, 1))])
    theta = np.linalg.solve(design.T @ design, design.T @ y)
    np.testing.assert_allclose(w, theta[:-1], atol=1e-5)
    np.testing.assert_allclose(b, theta[-1], atol=1e-5)


def test_linear_regression_net_reaches_the_closed_form():
    r = np.random.default_rng(1)
    x = r.standard_normal((64, 2)).astype(np.float32)
    y = (x @ np.array([[2.0], [-1.0]]) + 0.5 + 0.1 * r.standard_normal((64, 1))).astype(np.float32)
    data = ArrayDataset("lin", x, y, x, y, num_classes=0, task="regression")
    model = get_model("linear_regression", num_classes=0)
    res = fit(model, data, TrainConfig(steps=150, batch_size=64, eval_every=150, loss="mse",
                                       optimizer={"name": "sgd", "learning_rate": 0.3}))
    p = res.member_state(0).params["linear"]
    w, b = least_squares(jnp.asarray(x), jnp.asarray(y))
    assert sum(a.size for a in jax.tree.leaves(p)) == 3  # 2 weights and a bias
    np.testing.assert_allclose(p["kernel"], w, atol=1e-4)
    np.testing.assert_allclose(p["bias"], b, atol=1e-4)


def test_perceptron_xor_experiment_smoke(tmp_path):
    from nnbasics.runs.experiment import get_config, run_experiment

    res = run_experiment("perceptron_xor", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in res["claims"]]
    assert ids == ["perceptron_and_or", "perceptron_xor_fails", "mlp_solves_xor", "linear_regression_closed_form"]
    claims = {c["id"]: c for c in res["claims"]}
    # by theorem: XOR never above 75%; AND and OR separated after finitely many updates (Novikoff's
    # bound: a handful for the 4 points and init scale 0.1; 20 smoke epochs suffice)
    assert claims["perceptron_xor_fails"]["verdict"] == claims["perceptron_and_or"]["verdict"] == "pass"
    assert claims["perceptron_xor_fails"]["measured"]["accuracy_xor_best"] <= 75.0
    assert claims["perceptron_and_or"]["measured"]["accuracy_and_min"] == 100.0
    assert claims["linear_regression_closed_form"]["measured"]["max_abs_diff_closed_form"] < 0.5  # 20 of 300 steps
    mlp = claims["mlp_solves_xor"]
    assert len(mlp["measured"]["accuracy_mlp_xor"]) == 2 and mlp["checks"][0]["random"]
    assert all(a in (0.0, 25.0, 50.0, 75.0, 100.0) for a in mlp["measured"]["accuracy_mlp_xor"])
    assert "tolerance" not in get_config("perceptron_xor", "smoke").linear_regression
    assert (tmp_path / "figures" / "decision_regions.png").exists()
