"""Activations and their hand-written derivatives against jax.grad (compiled and eager); PReLU's learned slope;
per-layer gradient norms and dead-unit counts against hand computations; the activations experiment."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.analysis.gradients import dead_fraction, dead_units, kernel_gradient_norms, layer_gradient_norms
from nnbasics.models import get_model
from nnbasics.nn import activations

X = jnp.array([-3.0, -1.0, -0.25, 0.3, 1.0, 2.5])  # no exact zero: the kinks are conventions


def _hand_and_autodiff_derivative(name):
    return lambda x: (activations.derivative(name)(x), jax.vmap(jax.grad(activations.get_activation(name)))(x))


class DerivativeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_written_derivatives_equal_jax_grad(self):
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "identity", "step"):
            hand, auto = self.variant(_hand_and_autodiff_derivative(name))(X)
            chex.assert_trees_all_close(hand, auto, rtol=1e-6, atol=1e-7)


def test_activation_values():
    np.testing.assert_allclose(activations.sigmoid(jnp.array([0.0])), [0.5])
    np.testing.assert_allclose(activations.tanh(X), 2 * activations.sigmoid(2 * X) - 1, atol=1e-6)  # the lecture's identity
    np.testing.assert_allclose(activations.leaky_relu(jnp.array([-1.0, 2.0])), [-0.02, 2.0])  # alpha = 0.02
    np.testing.assert_allclose(activations.prelu(jnp.array([-2.0, 3.0]), 0.5), [-1.0, 3.0])
    np.testing.assert_allclose(activations.step(jnp.array([-1.0, 0.0, 1e-3])), [0.0, 0.0, 1.0])
    # sigmoid' peaks at 1/4, tanh' at 1: a sigmoid layer shrinks the backward signal at least 4x
    grid = jnp.linspace(-6, 6, 1001)
    np.testing.assert_allclose(activations.sigmoid_grad(grid).max(), 0.25, rtol=1e-6)
    np.testing.assert_allclose(activations.tanh_grad(grid).max(), 1.0, rtol=1e-6)


def test_autodiff_fallback_for_activations_without_a_hand_written_derivative():
    np.testing.assert_allclose(activations.derivative("softplus")(X), jax.nn.sigmoid(X), rtol=1e-6)
    with pytest.raises(KeyError, match="did you mean"):
        activations.derivative("reluu")


def test_prelu_module_learns_alpha_with_the_right_gradient():
    layer = activations.PReLU()
    v = layer.init(jax.random.key(0), X)
    assert float(v["params"]["alpha"]) == pytest.approx(0.25)  # He et al.'s initial slope
    g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, X)))(v["params"])["alpha"]
    np.testing.assert_allclose(g, jnp.sum(activations.prelu_alpha_grad(X)), rtol=1e-6)  # sum of min(x, 0)
    per_channel = activations.PReLU(channelwise=True, init_alpha=0.1).init(jax.random.key(0), jnp.ones((2, 3)))
    assert per_channel["params"]["alpha"].shape == (3,)


def test_prelu_by_name_gives_each_layer_its_own_slope():
    model = get_model("mlp", num_classes=3, hidden=(4, 4), activation="prelu")
    params = model.init(jax.random.key(0), jnp.ones((2, 5)))["params"]
    alphas = [k for k in params if k.startswith("PReLU")]
    assert alphas == ["PReLU_0", "PReLU_1"]
    # outside a module the name still works, at the initial slope
    np.testing.assert_allclose(activations.get_activation("prelu")(jnp.array([-4.0])), [-1.0])


class _TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        h = nn.relu(nn.Dense(3, name="hidden")(x))
        return nn.Dense(2, name="head")(h)


def test_layer_gradient_norms_match_hand_backprop():
    model = _TwoLayer()
    r = np.random.default_rng(1)
    x = r.standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    v = jax.jit(model.init)(jax.random.key(0), x)
    norms = jax.jit(lambda v: layer_gradient_norms(model.apply, v, x, y))(v)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    z = x @ p["hidden"]["kernel"] + p["hidden"]["bias"]
    h = np.maximum(z, 0)
    logits = h @ p["head"]["kernel"] + p["head"]["bias"]
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    d_logits = (prob - np.eye(2)[y]) / len(x)
    g_head = h.T @ d_logits
    g_hidden = x.T @ ((d_logits @ p["head"]["kernel"].T) * (z > 0))
    np.testing.assert_allclose(norms["head"], np.linalg.norm(g_head), rtol=1e-5)
    np.testing.assert_allclose(norms["hidden"], np.linalg.norm(g_hidden), rtol=1e-5)
    # keys follow the params' own order (forward order for an eager init), not jax's sorted order
    grads = {"head": {"kernel": jnp.ones((2, 2))}, "hidden": {"kernel": jnp.zeros((2, 2)), "bias": jnp.ones(2)}}
    order = {"hidden": {"kernel": 0, "bias": 0}, "head": {"kernel": 0}}
    assert list(kernel_gradient_norms(grads, order=order)) == ["hidden", "head"]
    np.testing.assert_allclose(kernel_gradient_norms(grads)["head"], 2.0)


def test_dead_units_counts_units_never_positive():
    model = _TwoLayer()
    x = jnp.abs(jax.random.normal(jax.random.key(1), (6, 4)))  # non-negative inputs
    v = model.init(jax.random.key(0), x)
    p = jax.tree.map(lambda a: a, v["params"])
    k = np.array(p["hidden"]["kernel"])
    k[:, 0] = -1.0  # unit 0: pre-activation < 0 for every non-negative input -> dead
    k[:, 1] = 1.0  # unit 1: always positive -> alive
    p["hidden"]["kernel"] = jnp.asarray(k)
    p["hidden"]["bias"] = jnp.zeros(3)
    counts = dead_units(model.apply, {"params": p}, x)
    assert list(counts) == ["hidden"]  # the read-out is excluded
    z = x @ p["hidden"]["kernel"]
    want = int(jnp.sum(jnp.max(z, 0) <= 0))
    assert int(counts["hidden"][0]) == want and want >= 1 and counts["hidden"][1] == 3
    np.testing.assert_allclose(dead_fraction(model.apply, {"params": p}, x), want / 3)


def test_small_cnn_is_four_layers_and_takes_any_activation():
    model = get_model("small_cnn", num_classes=10, activation="tanh")
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 8, 8, 1)))  # shapes only: no compile
    kernels = [k for k in v["params"] if "kernel" in v["params"][k]]
    assert kernels == ["conv1", "conv2", "conv3", "head"]
    # 3x3 convs 1->32->32->64 on 8x8 pooled to 1x1, then 64->10
    n = sum(math.prod(a.shape) for a in jax.tree.leaves(v["params"]))
    assert n == (9 * 1 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (64 * 10 + 10)
    cnn = get_model("small_cnn", num_classes=5, activation="prelu", features=(4, 4, 4))
    out, v = jax.eval_shape(cnn.init_with_output, jax.random.key(0), jnp.ones((2, 32, 32, 3)))
    assert out.shape == (2, 5) and v["params"]["PReLU_0"]["alpha"].shape == ()


def test_small_cnn_init_std_draws_every_weight_from_one_gaussian():
    x = jnp.ones((1, 16, 16, 3))
    v = jax.jit(get_model("small_cnn", num_classes=10, activation="tanh", init_std=0.05).init)(jax.random.key(0), x)
    for name in ("conv1", "conv2", "conv3", "head"):  # AlexNet: N(0, std^2) in every layer, whatever the fan-in
        w = np.asarray(v["params"][name]["kernel"])
        assert abs(w.std() - 0.05) < 0.15 * 0.05 and abs(w.mean()) < 0.02
    he = jax.eval_shape(get_model("small_cnn", num_classes=10, activation="relu").init, jax.random.key(0), x)
    assert he["params"]["conv1"]["kernel"].shape == v["params"]["conv1"]["kernel"].shape  # default unchanged
    with pytest.raises(ValueError, match="init_std"):
        get_model("small_cnn", num_classes=10, init_std=-1.0).init(jax.random.key(0), x)


class _ReferenceMNIST1DCNN(nn.Module):
    """The MNIST-1D CNN as it was before its activation / init options (ReLU, PyTorch init)."""

    @nn.compact
    def __call__(self, x, train=False):
        from nnbasics.models.init import torch_bias_init, torch_kernel_init
        from nnbasics.nn.conv import Conv

        x = x[..., None]
        for i, (k, s, p) in enumerate([(5, 2, 1), (3, 2, 1), (3, 2, 1)]):
            x = jax.nn.relu(Conv(25, (k,), strides=s, padding=[(p, p)], kernel_init=torch_kernel_init,
                                 bias_init=torch_bias_init(k * x.shape[-1]), name=f"conv{i + 1}")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10, kernel_init=torch_kernel_init, bias_init=torch_bias_init(x.shape[-1]), name="linear")(x)


def _conv1d_s2(x, w, b):
    """Hand-written stride-2, padding-1 1-D convolution: x (N, W, Ci), w (K, Ci, Co)."""
    x = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    k = w.shape[0]
    cols = [x[:, i:i + k].reshape(len(x), -1) for i in range(0, x.shape[1] - k + 1, 2)]
    return np.stack([c @ w.reshape(-1, w.shape[-1]) + b for c in cols], 1)


def test_mnist1d_cnn_activation_and_init_options():
    x = jax.random.normal(jax.random.key(1), (3, 40))
    key = jax.random.key(7)
    ref = _ReferenceMNIST1DCNN()
    v_ref = ref.init(key, x)
    for model in (get_model("mnist1d_cnn"), get_model("mnist1d_cnn", activation="relu", init_scheme="torch")):
        v = model.init(key, x)  # the default is the reference model: same parameters, same outputs
        jax.tree.map(np.testing.assert_array_equal, v, v_ref)
        np.testing.assert_array_equal(model.apply(v, x), ref.apply(v_ref, x))
    # tanh: the same layers with tanh, checked against a hand-written forward pass
    tanh = get_model("mnist1d_cnn", activation="tanh", init_scheme="preferred")
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), tanh.init(key, x)["params"])
    h = np.asarray(x, np.float64)[..., None]
    for name in ("conv1", "conv2", "conv3"):
        h = np.tanh(_conv1d_s2(h, p[name]["kernel"], p[name]["bias"]))
    want = h.reshape(len(h), -1) @ p["linear"]["kernel"] + p["linear"]["bias"]
    np.testing.assert_allclose(tanh.apply({"params": p}, x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="init_scheme"):
        get_model("mnist1d_cnn", init_scheme="he").init(key, x)


@pytest.mark.parametrize("act,gain", [("relu", 2.0), ("tanh", 1.0)])
def test_mnist1d_cnn_preferred_init_is_he_or_lecun(act, gain):
    v = jax.jit(get_model("mnist1d_cnn", activation=act, init_scheme="preferred").init)(
        jax.random.key(3), jnp.zeros((1, 40)))["params"]
    # He: Var = 2 / fan_in for ReLU; LeCun: 1 / fan_in for tanh; fan_in = kernel width x input channels
    for name, fan_in, g in (("conv1", 5, gain), ("conv2", 75, gain), ("conv3", 75, gain), ("linear", 125, 1.0)):
        w = np.asarray(v[name]["kernel"])
        n = w.size  # the sample std's relative error is about 1 / sqrt(2n): 6% for conv1 (125), < 2% for the rest
        np.testing.assert_allclose(w.std(), math.sqrt(g / fan_in), rtol=4 / math.sqrt(2 * n))
        assert abs(w.mean()) < 4 * math.sqrt(g / fan_in / n)
        np.testing.assert_array_equal(v[name]["bias"], 0.0)


def _experiment():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "activations.py"
    spec = importlib.util.spec_from_file_location("activations_exp", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    return exp


def test_cnn_config_validation_and_sweeps():
    from nnbasics.config import apply_dict

    exp = _experiment()
    assert exp.get_config("quick").cnn.data == "mnist1d"
    for name in ("cnn_data", "cnn_recipe"):  # every point is a valid config, for every preset
        for point in exp.SWEEPS[name]:
            for preset in ("full", "quick", "smoke"):
                exp.validate(apply_dict(exp.get_config(preset), point))
    assert {p["cnn.data"] for p in exp.SWEEPS["cnn_data"]} == {"mnist1d", "digits", "photos"}
    with pytest.raises(ValueError, match="torch"):
        exp.validate(_with(exp.get_config("smoke"), data="digits", init="torch"))
    with pytest.raises(ValueError, match="raw_centered"):
        exp.validate(_with(exp.get_config("smoke"), input_scale="raw_centered"))
    with pytest.raises(ValueError, match="cnn.data"):
        exp.validate(_with(exp.get_config("smoke"), data="cifar"))


def test_cnn_input_scales():
    from nnbasics.data import ArrayDataset

    exp = _experiment()
    r = np.random.default_rng(0)
    xtr, xte = r.uniform(0, 1, (20, 4, 4, 1)).astype(np.float32), r.uniform(0, 1, (5, 4, 4, 1)).astype(np.float32)
    d = ArrayDataset("t", xtr, np.zeros(20, np.int32), xte, np.zeros(5, np.int32), num_classes=2)
    raw = exp.scale_inputs(d, "raw_centered")  # AlexNet: 0-255 scale minus the mean image, std not divided out
    np.testing.assert_allclose(raw.x_train, 255 * (xtr - xtr.mean(0)), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(raw.x_test, 255 * (xte - xtr.mean(0)), rtol=1e-5, atol=1e-3)
    std = exp.scale_inputs(d, "standardized")
    np.testing.assert_allclose(std.x_train.std(), 1.0, rtol=1e-4)
    assert exp.scale_inputs(d, "unit") is d
    with pytest.raises(ValueError, match="input_scale"):
        exp.validate(_with(exp.get_config("smoke"), input_scale="bad"))


def _with(config, **cnn):
    for k, v in cnn.items():
        config.cnn[k] = v
    return config


def test_thresholds_live_in_code_not_config():
    from nnbasics.runs.experiment import get_config

    exp = _experiment()
    cfg = get_config("activations", "quick").to_dict()
    keys = {k for v in cfg.values() if isinstance(v, dict) for k in v} | set(cfg)
    assert not {"min_orders", "min_fraction", "min_ratio", "min_mean_abs_alpha", "min_change"} & keys
    assert all(t.why for t in exp.THRESHOLDS.values())
    assert exp.THRESHOLDS["log_epochs_ratio_tanh_over_relu"].value == 0  # the direction; AlexNet's 6x is shown beside
    shifted = get_config("activations", "quick", seed_offset=100)
    for part in ("gradients", "dead", "cnn", "prelu"):
        assert shifted[part].seeds[0] == 100 and len(shifted[part].seeds) >= 4
    assert shifted.cnn.data_seed == 100


def test_activations_experiment_smoke(tmp_path):
    from nnbasics.data import load_dataset
    from nnbasics.runs.experiment import get_config, run_experiment

    res = run_experiment("activations", "smoke", workdir=tmp_path)
    claims = {c["id"]: c for c in res["claims"]}
    assert list(claims) == ["vanishing_gradients_sigmoid", "dead_relu_units", "relu_faster_than_tanh", "prelu_learns_slope"]
    g = claims["vanishing_gradients_sigmoid"]["measured"]
    # depth 4 at init: sigmoid' <= 1/4 over 3 layers already costs more than one order of magnitude, per seed
    assert len(g["orders_of_magnitude_relu_over_sigmoid"]) == 2
    assert all(o > 1 for o in g["orders_of_magnitude_relu_over_sigmoid"])
    np.testing.assert_allclose(g["orders_of_magnitude_relu_over_sigmoid"],
                               np.log10(np.divide(g["grad_norm_first_relu"], g["grad_norm_first_sigmoid"])), rtol=1e-6)
    d = claims["dead_relu_units"]["measured"]
    assert all(0 <= f <= 1 for f in d["dead_fraction_large_lr"] + d["dead_fraction_small_lr"])
    increase = {k["name"]: k for k in claims["dead_relu_units"]["checks"]}["dead_fraction_increase"]
    np.testing.assert_allclose(increase["samples"], np.subtract(d["dead_fraction_large_lr"], d["dead_fraction_small_lr"]))
    p = claims["prelu_learns_slope"]["measured"]
    np.testing.assert_allclose(p["mean_abs_alpha"], np.mean(np.abs([p["alpha_layer1"], p["alpha_layer2"]]), 0), rtol=1e-6)
    assert all(a != 0.25 and abs(a) < 3 for a in p["alpha_layer1"])  # learned: moved from the 0.25 init, finite
    # ReLU against tanh: epochs to the target error per seed (inf: never within the run), their ratio and its log
    s = claims["relu_faster_than_tanh"]["measured"]
    cnn = get_config("activations", "smoke").cnn
    num_train = int(cnn.num_train) or load_dataset(cnn.data).num_train  # the subset the CNN trains on
    assert s["epochs_run"] == cnn.steps / (num_train // cnn.batch_size)
    assert s["best_lr_relu"] in cnn.learning_rates and s["best_lr_tanh"] in cnn.learning_rates
    assert all(e == math.inf or 0 < e <= s["epochs_run"] for e in s["epochs_relu"] + s["epochs_tanh"])
    with np.errstate(invalid="ignore"):
        want = np.divide(s["epochs_tanh"], s["epochs_relu"])  # inf / inf: nan, a failing sample
    np.testing.assert_allclose(s["epochs_ratio_per_seed"], want, rtol=1e-6)
    speed = claims["relu_faster_than_tanh"]["checks"][0]
    np.testing.assert_allclose(speed["samples"], np.log(want), rtol=1e-6)
    assert claims["relu_faster_than_tanh"]["verdict"] == speed["verdict"]  # its one check decides it
    assert (tmp_path / "figures" / "activation_functions.png").exists()
