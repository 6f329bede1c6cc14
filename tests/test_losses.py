"""Losses as objects: each says whether it classifies and carries its own parameters; `fit` takes a
name, a mapping or an object, and a custom train step; the default path is bit for bit the old one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnbasics import TrainConfig, fit, get_model, load_dataset
from nnbasics.engine.state import forward
from nnbasics.nn import losses as L
from nnbasics.registry import UnknownNameError

LOGITS = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-4.0, 6.0, 0.0]])
LABELS = jnp.array([0, 2, 0])


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_registry_holds_objects_that_say_whether_they_classify():
    assert {"cross_entropy", "mse", "softmax_squared_error", "label_smoothing"} <= set(L.LOSSES.names())
    assert [L.get_loss(n).classifies for n in ("cross_entropy", "mse", "softmax_squared_error", "label_smoothing")] == [
        True, False, True, True]
    assert L.get_loss("label_smoothing", epsilon=0.2) == L.LabelSmoothing(0.2)
    assert L.get_loss({"name": "label_smoothing", "epsilon": 0.3}).epsilon == 0.3
    assert L.get_loss(L.LabelSmoothing(0.05)).epsilon == 0.05
    assert L.loss_key("cross_entropy") == "cross_entropy" and L.loss_key(L.LabelSmoothing(0.2)) == "label_smoothing(epsilon=0.2)"


@pytest.mark.parametrize("spec, params, message", [
    ("hinge", {}, "unknown loss 'hinge'.*Valid losss: cross_entropy, label_smoothing, mse, softmax_squared_error"),
    ("mse", {"epsilon": 0.1}, "the mse loss has no parameter 'epsilon'; its parameters: none"),
    ("label_smoothing", {"eps": 0.1}, "no parameter 'eps'; its parameters: epsilon"),
    ("label_smoothing", {"epsilon": 1.0}, r"epsilon must be a number in \[0, 1\), got 1.0"),
    ({"epsilon": 0.1}, {}, "needs a 'name'"),
    (3, {}, "loss must be a name"),
])
def test_bad_losses_are_refused_naming_what_is_valid(spec, params, message):
    with pytest.raises((ValueError, UnknownNameError), match=message):
        L.get_loss(spec, **params)


def test_cross_entropy_is_the_negative_log_likelihood():
    want = -_log_softmax(LOGITS)[np.arange(3), np.asarray(LABELS)]
    np.testing.assert_allclose(L.get_loss("cross_entropy").per_example(LOGITS, LABELS), want, rtol=1e-6)
    np.testing.assert_allclose(float(L.cross_entropy(LOGITS, LABELS)), want.mean(), rtol=1e-6)


def test_label_smoothing_by_hand_and_zero_is_cross_entropy():
    eps, logp = 0.2, _log_softmax(LOGITS)
    want = -(1 - eps) * logp[np.arange(3), np.asarray(LABELS)] - eps * logp.mean(-1)
    np.testing.assert_allclose(L.LabelSmoothing(eps).per_example(LOGITS, LABELS), want, rtol=1e-6)
    np.testing.assert_allclose(L.LabelSmoothing(0.0)(LOGITS, LABELS), L.cross_entropy(LOGITS, LABELS), rtol=1e-6)


def test_softmax_squared_error_by_hand_and_its_vanishing_gradient():
    p = np.exp(_log_softmax(LOGITS))
    want = ((p - np.eye(3)[np.asarray(LABELS)]) ** 2).sum(-1)
    np.testing.assert_allclose(L.SoftmaxSquaredError().per_example(LOGITS, LABELS), want, rtol=1e-5)
    # wrong and confident (the third row: label 0, logit 6 on class 1): cross-entropy's gradient is p - y,
    # of order 1; the squared error of the softmax passes through softmax' ~ p(1 - p) ~ 0 and vanishes
    wrong = LOGITS[2:] * 2
    g_ce = jax.grad(lambda z: L.cross_entropy(z, LABELS[2:]))(wrong)
    g_se = jax.grad(lambda z: L.SoftmaxSquaredError()(z, LABELS[2:]))(wrong)
    assert float(jnp.abs(g_ce).max()) > 0.99 and float(jnp.abs(g_se).max()) < 1e-4


def _fit(**kw):
    data = load_dataset("digits")
    tc = TrainConfig(steps=30, batch_size=16, eval_every=15, seeds=(0, 1), optimizer={"name": "sgd", "learning_rate": 0.1},
                     **{k: v for k, v in kw.items() if k == "loss"})
    return fit(get_model("mlp", num_classes=10, hidden=(16,)), data, tc, **{k: v for k, v in kw.items() if k != "loss"})


def _params(r):
    return [np.asarray(a) for a in jax.tree.leaves(r.state.params)]


def old_train_step(state, x, y, loss):
    """The step as it was before losses were objects (the name's function, CLASSIFICATION by name)."""
    def objective(params):
        out, new_stats = forward(state, params, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), (out, new_stats)

    (value, (out, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": value, "accuracy": jnp.mean(jnp.argmax(out, -1) == y)}
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state), metrics


def test_default_path_is_bit_identical_to_the_old_step_and_names_objects_and_mappings_agree():
    ref = _fit()  # loss "cross_entropy" by name, the default step
    old = _fit(train_step=old_train_step)
    by_object = _fit(loss=L.CrossEntropy())
    for other in (old, by_object):
        for a, b in zip(_params(ref), _params(other)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ref.curve("train_loss")[1], other.curve("train_loss")[1])
    assert 0.0 < ref.final("test_accuracy").min() <= 1.0  # a classifier: accuracy measured
    smooth = _fit(loss=L.LabelSmoothing(0.2))
    smooth_map = _fit(loss={"name": "label_smoothing", "epsilon": 0.2})
    for a, b in zip(_params(smooth), _params(smooth_map)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_params(smooth)[0], _params(ref)[0])  # the parameter changes the training
    assert "test_accuracy" in smooth.history[-1]


def test_a_custom_step_replaces_the_default():
    calls = []

    def frozen_step(state, x, y, loss):  # no update: the parameters stay at their initial values
        calls.append(loss)
        out, _ = forward(state, state.params, x, train=True)
        return state.replace(step=state.step + 1), {"loss": loss(out, y)}

    r = _fit(train_step=frozen_step, loss="label_smoothing")
    init = _fit(train_step=frozen_step)
    assert calls and isinstance(calls[0], L.LabelSmoothing)
    for a, b in zip(_params(r), _params(init)):
        np.testing.assert_array_equal(a, b)
    assert "train_accuracy" not in r.history[-1] and "test_accuracy" in r.history[-1]
    np.testing.assert_allclose(r.curve("train_loss")[1][:, 0], r.curve("train_loss")[1][:, -1], rtol=0.2)


def test_a_registered_function_says_whether_it_classifies():
    L.LOSSES.register("hinge_for_test", lambda z, y: jnp.mean(jax.nn.relu(1 - z[jnp.arange(z.shape[0]), y])),
                      classifies=True)
    try:
        loss = L.get_loss("hinge_for_test")
        assert loss.classifies and loss.describe() == "hinge_for_test"
        z = jnp.array([[0.5, 0.0], [2.0, -1.0]])
        np.testing.assert_allclose(loss.per_example(z, jnp.array([0, 0])), [0.5, 0.0])
        assert "test_accuracy" in _fit(loss="hinge_for_test").history[-1]
    finally:
        L.LOSSES._entries.pop("hinge_for_test")
        L.LOSSES._info.pop("hinge_for_test")
