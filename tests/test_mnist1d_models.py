"""The MNIST-1D reference models: parameter counts of the PyTorch reference and PyTorch's init."""

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.models import get_model, model_names
from nnbasics.models.mlp import count_params


def _params(name):
    return get_model(name).init(jax.random.key(0), jnp.zeros((2, 40)))["params"]


def test_parameter_counts_equal_the_reference():
    # torch: Linear(40,10); Linear(40,100)+Linear(100,100)+Linear(100,10);
    # Conv1d(1,25,5)+Conv1d(25,25,3)x2+Linear(125,10)
    assert count_params(_params("mnist1d_logistic")) == 40 * 10 + 10
    assert count_params(_params("mnist1d_mlp")) == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    assert count_params(_params("mnist1d_cnn")) == (5 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (125 * 10 + 10)


def test_cnn_layer_shapes_follow_the_reference():
    p = _params("mnist1d_cnn")
    assert p["conv1"]["kernel"].shape == (5, 1, 25) and p["linear"]["kernel"].shape == (125, 10)


def test_torch_default_init_bounds():
    p = _params("mnist1d_mlp")
    w, b = np.asarray(p["linear2"]["kernel"]), np.asarray(p["linear2"]["bias"])
    bound = 1 / np.sqrt(100)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound  # uniform over the whole range
    np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05)


def test_mlp_is_residual():
    m = get_model("mnist1d_mlp")
    x = jax.random.normal(jax.random.key(1), (3, 40))
    p = m.init(jax.random.key(0), x)["params"]
    relu = jax.nn.relu
    h = relu(x @ p["linear1"]["kernel"] + p["linear1"]["bias"])
    h = h + relu(h @ p["linear2"]["kernel"] + p["linear2"]["bias"])
    np.testing.assert_allclose(m.apply({"params": p}, x), h @ p["linear3"]["kernel"] + p["linear3"]["bias"],
                               rtol=1e-5, atol=1e-6)


def test_registered():
    assert {"mnist1d_logistic", "mnist1d_mlp", "mnist1d_cnn", "mlp", "logistic"} <= set(model_names())
