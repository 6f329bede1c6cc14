"""Closed-form ridge against the normal equations and scikit-learn, parameter budgets of the
capacity experiment against real models, dropout at evaluation and across steps, and the
capacity and regularization experiments' claims contracts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics import optim
from nnbasics.analysis.ridge import polynomial_features, ridge_fit, ridge_objective, ridge_path, rms_error
from nnbasics.models import get_model
from nnbasics.train import create_state, forward


def test_polynomial_features():
    phi = polynomial_features(np.array([[2.0], [-1.0]]), 3)
    np.testing.assert_array_equal(phi, [[1, 2, 4, 8], [1, -1, 1, -1]])
    with pytest.raises(ValueError):
        polynomial_features(np.zeros(3), -1)


def test_ridge_equals_normal_equations_and_sklearn():
    from sklearn.linear_model import Ridge

    r = np.random.default_rng(0)
    x = r.uniform(0, 1, 12)
    y = np.sin(2 * np.pi * x) + 0.2 * r.standard_normal(12)
    phi = polynomial_features(x, 5)
    for lam in (1e-3, 0.1, 10.0):
        theta = ridge_fit(phi, y, lam)
        direct = np.linalg.solve(phi.T @ phi + lam * np.eye(6), phi.T @ y)
        np.testing.assert_allclose(theta, direct, rtol=1e-6, atol=1e-8)
        sk = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(phi, y).coef_
        np.testing.assert_allclose(theta, sk, rtol=1e-6, atol=1e-8)
        # the gradient of J = ||Phi t - y||^2 + lam ||t||^2 vanishes at the solution
        grad = 2 * phi.T @ (phi @ theta - y) + 2 * lam * theta
        np.testing.assert_allclose(grad, 0, atol=1e-8)
        assert ridge_objective(theta, phi, y, lam) <= ridge_objective(theta + 1e-3, phi, y, lam)
    # lam = 0 is least squares; with more coefficients than points it interpolates (min-norm)
    np.testing.assert_allclose(ridge_fit(phi, y, 0.0), np.linalg.lstsq(phi, y, rcond=None)[0], rtol=1e-6)
    phi9 = polynomial_features(x[:8], 9)
    np.testing.assert_allclose(phi9 @ ridge_fit(phi9, y[:8], 0.0), y[:8], atol=1e-6)


def test_ridge_path_and_rms():
    r = np.random.default_rng(1)
    phi = polynomial_features(r.uniform(0, 1, 10), 4)
    y = r.standard_normal(10)
    lams = [0.0, 0.01, 1.0]
    path = ridge_path(phi, y, lams)
    for i, lam in enumerate(lams):
        np.testing.assert_allclose(path[i], ridge_fit(phi, y, lam))
    errs = rms_error(phi, y, path)
    assert errs.shape == (3,) and np.all(np.diff(errs) >= 0)  # training error grows with lambda
    np.testing.assert_allclose(rms_error(phi, y, path[1]), np.sqrt(np.mean((phi @ path[1] - y) ** 2)))
    with pytest.raises(ValueError):
        ridge_path(phi, y, [-1.0])


def test_capacity_widths_match_the_parameter_budget():
    from experiments.capacity import mlp_param_count, width_for_budget

    for depth, want in [(1, 180), (2, 27), (4, 16)]:
        w = width_for_budget(2, 2, depth, 900)
        assert w == want
        model = get_model("mlp", num_classes=2, hidden=(w,) * depth)
        params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 2)))["params"]  # shapes only
        n = sum(math.prod(a.shape) for a in jax.tree.leaves(params))
        assert n == mlp_param_count(2, (w,) * depth, 2)
        assert abs(n - 900) / 900 < 0.01


def test_dropout_is_off_at_eval_and_fresh_every_step():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 8)), jnp.float32)
    drop = get_model("mlp", num_classes=3, hidden=(64, 64), dropout=0.5)
    plain = get_model("mlp", num_classes=3, hidden=(64, 64))
    tx = optim.make_optimizer({"name": "sgd", "learning_rate": 0.1})

    @jax.jit
    def outputs(key):
        st = create_state(drop, tx, key, x[:1])
        ev, _ = forward(st, st.params, x, train=False)
        a, _ = forward(st, st.params, x, train=True)
        a2, _ = forward(st, st.params, x, train=True)
        b, _ = forward(st.replace(step=st.step + 1), st.params, x, train=True)
        return ev, plain.apply({"params": st.params}, x), a, a2, b

    ev, ev_plain, a, a2, b = outputs(jax.random.key(1))
    np.testing.assert_array_equal(ev, ev_plain)  # eval: no dropout at all
    np.testing.assert_array_equal(a, a2)  # the mask is a function of (rng, step): reproducible
    assert not np.allclose(a, b)  # and a new one every step
    assert not np.allclose(a, ev)


def test_dropout_keeps_a_fraction_and_rescales():
    import flax.linen as nn

    layer = nn.Dropout(0.5, deterministic=False)
    y = layer.apply({}, jnp.ones((200, 200)), rngs={"dropout": jax.random.key(0)})
    kept = float(jnp.mean(y != 0))
    assert 0.48 < kept < 0.52
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 2.0])  # inverted dropout: kept units x 1/(1-p)


@pytest.mark.parametrize("name,ids", [
    ("capacity", ["one_layer_fails", "two_plus_layers_fit", "deep_beats_wide"]),
    ("regularization", ["ridge_u_shape", "weight_decay_and_dropout_help", "dropout_eval_and_fresh_masks"]),
])
def test_experiment_smoke(tmp_path, name, ids):
    from nnbasics.experiment import run_experiment

    res = run_experiment(name, "smoke", workdir=tmp_path)
    assert [c["id"] for c in res["claims"]] == ids
    for c in res["claims"]:
        assert c["verdict"] in ("pass", "fail")
        for v in c["measured"].values():
            assert all(isinstance(a, float) for a in (v if isinstance(v, list) else [v]))
    assert res["figures"]
    if name == "regularization":  # closed form and mask checks hold even in the smoke preset
        verdicts = {c["id"]: c["verdict"] for c in res["claims"]}
        assert verdicts["ridge_u_shape"] == "pass" and verdicts["dropout_eval_and_fresh_masks"] == "pass"
