"""Hand-written backprop: derivatives, layers and whole networks against jax.grad, lax.conv,
optax and the library MLP; and the experiment's claims contract."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from jax import lax

from nnbasics.analysis import backprop

RNG = np.random.default_rng(0)


def _x(*shape):
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("name", backprop.ACTIVATION_NAMES)
def test_activation_derivatives_equal_jax_grad(name):
    z = _x(200)
    alpha = jnp.float32(0.3)

    @jax.jit
    def both(z):
        ref = jax.vmap(jax.grad(lambda t: backprop.activation_forward(name, t, alpha)))(z)
        return backprop.activation_derivative(name, z, alpha), ref

    hand, ref = both(z)
    np.testing.assert_allclose(hand, ref, rtol=1e-6, atol=1e-7)


def test_leaky_relu_uses_the_lecture_slope():
    z = jnp.array([-2.0, 3.0])
    np.testing.assert_allclose(backprop.activation_forward("leaky_relu", z), [-0.04, 3.0])


def _vjp_check(layer, params, x, rtol=1e-5):
    """A layer's hand-written backward equals jax.vjp of its reference forward (one compiled program)."""
    out_shape = jax.eval_shape(layer.reference, params, x).shape
    dy = jnp.asarray(RNG.standard_normal(out_shape), jnp.float32)

    @jax.jit
    def both(params, x, dy):
        y, cache = layer.forward(params, x)
        ref_y, vjp = jax.vjp(layer.reference, params, x)
        return y, ref_y, layer.backward(params, cache, dy), vjp(dy)

    y, ref_y, (dparams, dx), (rparams, rdx) = both(params, x, dy)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, rdx, rtol=rtol, atol=1e-5)
    for k in rparams:
        np.testing.assert_allclose(dparams[k], rparams[k], rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_conv_layer_forward_is_lax_conv_and_backward_is_its_vjp(stride, padding):
    layer = backprop.Conv2D(5, (3, 3), stride, padding)
    params, out_shape = layer.init(np.random.default_rng(1), (7, 8, 3))
    x = _x(2, 7, 8, 3)
    y, _ = layer.forward(params, x)
    ref = lax.conv_general_dilated(x, params["W"], (stride, stride), [(padding, padding)] * 2,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["b"]
    assert y.shape[1:] == out_shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    _vjp_check(layer, params, x)


@pytest.mark.parametrize("name", backprop.ACTIVATION_NAMES)
def test_activation_layer_backward(name):
    layer = backprop.Activation(name)
    params, _ = layer.init(np.random.default_rng(0), (4, 6))
    _vjp_check(layer, params, _x(4, 6))


def test_dense_and_flatten_backward():
    layer = backprop.Dense(3)
    params, _ = layer.init(np.random.default_rng(0), (5,))
    _vjp_check(layer, params, _x(4, 5))
    flat = backprop.Flatten()
    y, cache = flat.forward({}, _x(2, 3, 4, 5))
    _, dx = flat.backward({}, cache, y)
    assert dx.shape == (2, 3, 4, 5)


def test_softmax_cross_entropy_and_its_gradient():
    logits, labels = _x(6, 4), jnp.array([0, 1, 2, 3, 0, 1])

    def ref(z):
        return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

    both = jax.jit(lambda z: (*backprop.softmax_cross_entropy(z, labels), *jax.value_and_grad(ref)(z)))
    loss, dlogits, ref_loss, ref_grad = both(logits)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(dlogits, ref_grad, rtol=1e-5, atol=1e-7)


class NetworksTest(chex.TestCase):
    """Whole networks' hand-written gradients and SGD step against jax.grad and optax, compiled and eager
    (the conv net with every activation is checked by the experiment's quick preset)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*[("mlp", a) for a in backprop.ACTIVATION_NAMES], ("conv", "tanh"), ("conv", "prelu"))
    def test_networks_match_jax_grad_and_optax_sgd(self, net, name):
        y = jnp.array([0, 1, 2, 1, 0, 2])
        if net == "mlp":
            layers, x = backprop.mlp_layers((5, 7, 6, 6, 3), name), _x(6, 5)
        else:
            layers, x = backprop.conv_layers((3, 4), (1, 2), 3, name), _x(6, 6, 6, 2)
        params = backprop.init_params(layers, 0, x.shape[1:])

        @self.variant
        def check(params, x):
            hand = backprop.gradients(layers, params, x, y)
            ref = backprop.autodiff_gradients(layers, params, x, y)
            tx = optax.sgd(0.1)
            upd, _ = tx.update(ref, tx.init(params), params)
            return hand, ref, backprop.sgd_step(params, hand, 0.1), optax.apply_updates(params, upd)

        hand, ref, p_hand, p_optax = check(params, x)
        chex.assert_trees_all_equal_shapes(hand, ref, params)
        assert backprop.max_relative_error(hand, ref) < 1e-5
        chex.assert_trees_all_close(p_hand, p_optax, atol=1e-6, rtol=0)


def test_mlp_forward_equals_the_library_mlp():
    from nnbasics.models.mlp import MLP

    layers = backprop.mlp_layers((5, 8, 8, 3), "tanh")
    params = backprop.init_params(layers, 0, (5,))
    dense = [p for p in params if "W" in p]
    names = ["hidden_0", "hidden_1", "head"]
    flax_params = {n: {"kernel": p["W"], "bias": p["b"]} for n, p in zip(names, dense)}
    x = _x(4, 5)
    out = MLP(num_classes=3, hidden=(8, 8), activation="tanh").apply({"params": flax_params}, x)
    np.testing.assert_allclose(backprop.forward(layers, params, x)[0], out, rtol=1e-5, atol=1e-6)


def test_prelu_slope_is_learned_per_channel():
    layers = backprop.mlp_layers((4, 5, 2), "prelu")
    params = backprop.init_params(layers, 0, (4,))
    assert params[1]["alpha"].shape == (5,)
    np.testing.assert_allclose(params[1]["alpha"], 0.25)


def test_backprop_experiment_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    doc = run_experiment("backprop", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in doc["claims"]]
    assert ids == ["mlp_gradients_match", "conv_gradients_match", "sgd_step_matches", "training_matches"]
    for c in doc["claims"]:
        assert all(not k["random"] for k in c["checks"])
    m = {c["id"]: c["measured"] for c in doc["claims"]}
    # identities up to rounding: float32 gradients and one step, float64 training
    assert 0 < m["mlp_gradients_match"]["max_rel_error_mlp"] < 1e-5
    assert 0 <= m["conv_gradients_match"]["max_rel_error_conv"] < 1e-5
    assert m["sgd_step_matches"]["max_abs_param_diff_mlp"] < 1e-6
    assert m["training_matches"]["max_rel_loss_diff"] < 1e-12
    assert m["training_matches"]["loss_start"] == pytest.approx(np.log(10), rel=0.1)  # 10 classes at init
    verdicts = {c["id"]: c["verdict"] for c in doc["claims"]}
    assert verdicts["mlp_gradients_match"] == verdicts["conv_gradients_match"] == verdicts["sgd_step_matches"] == "pass"
    assert (tmp_path / "figures" / "backprop.png").exists()
