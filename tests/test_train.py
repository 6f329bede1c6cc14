import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.data import ArrayDataset, load_dataset
from nnbasics.engine import (
    TrainConfig,
    TrainingDiverged,
    batch_indices,
    create_state,
    evaluate,
    fit,
    forward,
    optim,
    train_step,
)
from nnbasics.models import get_model
from nnbasics.runs.workdir import MetricsWriter, read_metrics


def _linear_data(n=64, d=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
    return ArrayDataset("lin", x, y, x, y, num_classes=0, task="regression")


def test_train_step_equals_hand_written_sgd():
    d = _linear_data()
    model = get_model("logistic", num_classes=1)
    tx = optim.make_optimizer({"name": "sgd", "learning_rate": 0.1})
    state = create_state(model, tx, jax.random.key(0), jnp.asarray(d.x_train[:1]))
    w = np.asarray(state.params["head"]["kernel"], np.float64)
    b = np.asarray(state.params["head"]["bias"], np.float64)
    x, y = d.x_train.astype(np.float64), d.y_train.astype(np.float64)
    # hand-written: L = mean((xw + b - y)^2) -> dL/dw = 2/N x^T r, dL/db = 2/N sum r
    r = x @ w + b - y
    w_new = w - 0.1 * 2 / len(x) * x.T @ r
    b_new = b - 0.1 * 2 / len(x) * r.sum(0)
    new_state, metrics = train_step(state, jnp.asarray(d.x_train), jnp.asarray(d.y_train), loss="mse")
    np.testing.assert_allclose(new_state.params["head"]["kernel"], w_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.params["head"]["bias"], b_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], np.mean(r**2), rtol=1e-5)
    assert int(new_state.step) == 1


def test_batch_indices_are_epoch_permutations():
    idx = batch_indices([0, 1], start=0, length=10, n=50, batch_size=10)
    assert idx.shape == (2, 10, 10)
    for m in range(2):
        for e in range(2):  # 5 batches per epoch
            epoch = idx[m, 5 * e:5 * e + 5].ravel()
            assert sorted(epoch.tolist()) == list(range(50))
    assert not np.array_equal(idx[0], idx[1])  # seeds shuffle differently
    # resuming mid-way gives the same batches
    np.testing.assert_array_equal(batch_indices([0], 3, 4, 50, 10)[0], idx[0, 3:7])


def test_fit_learns_blobs_and_seeds_vmap_equals_separate_runs():
    d = load_dataset("blobs", n_train=200, n_test=200, std=0.5)
    model = get_model("mlp", num_classes=3, hidden=(16,))
    base = dict(steps=60, batch_size=20, eval_every=30, optimizer={"name": "adam", "learning_rate": 0.02})
    both = fit(model, d, TrainConfig(seeds=(0, 1), **base))
    assert both.final("test_accuracy").min() > 0.9
    for i, s in enumerate((0, 1)):
        one = fit(model, d, TrainConfig(seeds=(s,), **base))
        a, b = jax.tree.leaves(both.member_state(i).params), jax.tree.leaves(one.member_state(0).params)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in both.history] == [30, 60]


def test_learning_rate_grid_member_equals_single_run():
    d = load_dataset("blobs", n_train=100, n_test=50)
    model = get_model("mlp", num_classes=3, hidden=(8,))
    base = dict(steps=20, batch_size=10, eval_every=20, seeds=(0,))
    opt = {"name": "momentum", "learning_rate": 0.05}
    grid = fit(model, d, TrainConfig(learning_rates=(0.01, 0.1), optimizer=opt, **base))
    single = fit(model, d, TrainConfig(optimizer={"name": "momentum", "learning_rate": 0.1}, **base))
    assert grid.members == [{"seed": 0, "learning_rate": 0.01}, {"seed": 0, "learning_rate": 0.1}]
    for x, y in zip(jax.tree.leaves(grid.member_state(1).params), jax.tree.leaves(single.member_state(0).params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_dropout_fresh_key_every_step_and_off_at_eval():
    model = get_model("mlp", num_classes=2, hidden=(64,), dropout=0.5)
    tx = optim.make_optimizer({"name": "sgd", "learning_rate": 0.0 + 1e-9})
    x = jnp.ones((4, 5))
    s0 = create_state(model, tx, jax.random.key(0), x)
    s1 = s0.replace(step=s0.step + 1)
    a, _ = forward(s0, s0.params, x, train=True)
    b, _ = forward(s1, s1.params, x, train=True)
    assert not np.allclose(a, b)  # a different dropout mask at the next step
    e1, _ = forward(s0, s0.params, x, train=False)
    e2, _ = forward(s1, s1.params, x, train=False)
    np.testing.assert_array_equal(e1, e2)
    # evaluation equals the network with dropout removed
    plain = get_model("mlp", num_classes=2, hidden=(64,), dropout=0.0)
    np.testing.assert_allclose(e1, plain.apply({"params": s0.params}, x), rtol=1e-6)


def test_evaluate_pads_and_masks():
    d = load_dataset("blobs", n_train=50, n_test=37)
    model = get_model("mlp", num_classes=3, hidden=(8,))
    st = create_state(model, optim.make_optimizer({}), jax.random.key(1), jnp.asarray(d.x_test[:1]))
    m = evaluate(st, jnp.asarray(d.x_test), jnp.asarray(d.y_test), batch_size=10)
    logits = model.apply({"params": st.params}, d.x_test)
    acc = np.mean(np.argmax(logits, -1) == d.y_test)
    import optax

    loss = optax.softmax_cross_entropy_with_integer_labels(logits, d.y_test).mean()
    np.testing.assert_allclose(m["accuracy"], acc, rtol=1e-6)
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-5)


def test_nan_stops_with_step_and_keeps_metrics(tmp_path):
    d = _linear_data()
    model = get_model("mlp", num_classes=1, hidden=(32, 32))
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    tc = TrainConfig(steps=400, batch_size=16, eval_every=2, seeds=(0,), loss="mse",
                     optimizer={"name": "sgd", "learning_rate": 0.6})
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(seed 0"):
        fit(model, d, tc, metrics_writer=writer, tag="diverge")
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows and all(np.isfinite(r["train_loss"][0]) for r in rows)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(batch_size=5000), "larger than the training set"),
        (dict(seeds=()), "non-empty"),
        (dict(steps=0), "steps must be"),
        (dict(optimizer={"name": "adam", "learning_rate": 0.0}), "learning_rate must be > 0"),
        (dict(optimizer={"name": "adamm"}), "did you mean 'adam'"),
        (dict(loss="hinge"), "unknown loss"),
    ],
)
def test_invalid_values_rejected_before_compiling(kw, match):
    d = load_dataset("blobs", n_train=100, n_test=10)
    model = get_model("mlp", num_classes=3)
    with pytest.raises((ValueError, KeyError), match=match):
        fit(model, d, TrainConfig(**{**dict(steps=5, batch_size=10), **kw}))


def _blobs(**arrays):
    """blobs (3 classes, 2 inputs) as a plain namespace, its arrays replaced by `arrays`."""
    import types

    d = load_dataset("blobs", n_train=100, n_test=10)
    return types.SimpleNamespace(**{**dict(x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test),
                                    **arrays})


def _with(a, index, value):
    a = np.array(a, dtype=np.float32 if isinstance(value, float) else a.dtype)
    a[index] = value
    return a


_X, _Y = _blobs().x_train, _blobs().y_train


@pytest.mark.parametrize("data, kw, match", [
    (_blobs(y_train=_Y[:90]), {}, r"x_train has 100 examples but y_train has 90; they must have the same length"),
    (_blobs(y_test=_blobs().y_test[:3]), {}, r"x_test has 10 examples but y_test has 3"),
    (_blobs(x_train=_X[:0], y_train=_Y[:0]), {}, r"the training set is empty \(x_train has 0 examples\); give at least "
                                                 r"batch_size=10 examples"),
    (_blobs(x_train=_with(_X, (7, 1), np.nan)), {},
     r"x_train holds 1 NaN or infinite values \(the first at index \(7, 1\): nan\)"),
    (_blobs(x_test=_with(_blobs().x_test, (0, 0), np.inf)), {}, r"x_test holds 1 NaN or infinite"),
    (_blobs(y_train=_with(_Y, 3, 3.7)), {}, r"y_train holds labels that are not whole numbers \(the first: 3.7 at index "
                                            r"\(3,\)\); the cross_entropy loss needs integer class labels"),
    (_blobs(y_train=_with(_Y, 5, -1)), {}, r"y_train holds negative labels \(the smallest: -1\)"),
    (_blobs(y_train=_with(_Y, 5, 3)), {}, r"y_train holds labels up to 3, but the model gives 3 classes .*labels must "
                                          r"lie in \[0, 3\)"),
    (_blobs(y_test=_with(_blobs().y_test, 0, 9)), {}, r"y_test holds labels up to 9, but the model gives 3 classes"),
    (_blobs(y_train=np.zeros((100, 2), np.int32), y_test=np.zeros((10, 2), np.int32)), {},
     r"the model's output on one example has shape \(1, 3\), but the cross_entropy loss needs \(1, 2, 'num_classes'\)"),
    (_blobs(), dict(steps=10**12), r"steps must be an integer between 1 and 1,000,000,000, got 1000000000000"),
    (_blobs(), dict(batch_size=2.5), r"batch_size must be an integer between 1 and 1,000,000,000, got 2.5"),
    (_blobs(), dict(eval_every="x" * 100_000), r"eval_every must be an integer .*got 'x+\.\.\.$"),
])
def test_fit_refuses_inputs_it_cannot_train_on_before_compiling(data, kw, match, monkeypatch):
    from nnbasics.config import ConfigError
    from nnbasics.engine import loop

    monkeypatch.setattr(loop, "_programs", lambda *a, **k: pytest.fail("compiled before refusing"))
    model = get_model("mlp", num_classes=3)
    with pytest.raises(ConfigError, match=match) as e:
        fit(model, data, TrainConfig(**{**dict(steps=5, batch_size=10), **kw}))
    assert len(str(e.value)) < 400 and "lower the learning rate" not in str(e.value)


def test_fit_input_checks_leave_valid_runs_unchanged():
    """Whole-number float labels, numpy integer counts and per-pixel labels pass the checks; the numbers of a
    valid run are those of the same run with its data given as int labels."""
    d = load_dataset("blobs", n_train=100, n_test=10)
    model = get_model("mlp", num_classes=3)
    tc = TrainConfig(steps=np.int64(6), batch_size=10, eval_every=3)
    a = fit(model, d, tc)
    b = fit(model, _blobs(y_train=d.y_train.astype(np.float32), y_test=d.y_test.astype(np.float64)), tc)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert np.isfinite(a.history[-1]["train_loss"]).all()
    import flax.linen as nn

    class PixelNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(x)  # (N, H, W, 3) logits per pixel

    r = np.random.default_rng(0)
    x, y = r.standard_normal((20, 4, 4, 2)).astype(np.float32), r.integers(0, 3, (20, 4, 4)).astype(np.int32)
    res = fit(PixelNet(), _blobs(x_train=x, y_train=y, x_test=x[:5], y_test=y[:5]), tc)  # per-pixel labels pass
    assert np.isfinite(res.history[-1]["train_loss"]).all()


def test_evaluate_per_pixel_labels():
    import flax.linen as nn

    class PixelNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(x)  # (N, H, W, 3) logits per pixel

    r = np.random.default_rng(0)
    x = r.standard_normal((7, 4, 4, 2)).astype(np.float32)
    y = r.integers(0, 3, (7, 4, 4)).astype(np.int32)
    st = create_state(PixelNet(), optim.make_optimizer({}), jax.random.key(0), jnp.asarray(x[:1]))
    m = evaluate(st, jnp.asarray(x), jnp.asarray(y), batch_size=3)
    logits = PixelNet().apply({"params": st.params}, x)
    np.testing.assert_allclose(m["accuracy"], np.mean(np.argmax(logits, -1) == y), rtol=1e-6)


def test_evaluate_uses_the_registered_loss_not_a_copy():
    """A loss registered without a per-example form is evaluated with its own formula (each example
    on its own, then the mean), not as MSE; the built-in losses agree with their training means."""
    import jax.numpy as jnp

    from nnbasics.nn.losses import LOSSES, per_example_loss

    LOSSES.register("mae_for_test", lambda pred, t: jnp.mean(jnp.abs(pred - t.reshape(pred.shape))))
    try:
        d = _linear_data(n=37)
        x, y = jnp.asarray(d.x_train), jnp.asarray(d.y_train)
        state = create_state(get_model("linear_regression", num_classes=1), optim.make_optimizer({}), jax.random.key(0),
                             x[:1])
        pred = state.apply_fn(state.variables, x, train=False)
        got = evaluate(state, x, y, loss="mae_for_test", batch_size=8)
        np.testing.assert_allclose(float(got["loss"]), float(jnp.mean(jnp.abs(pred - y))), rtol=1e-6)
        assert "accuracy" not in got
        np.testing.assert_allclose(float(evaluate(state, x, y, loss="mse", batch_size=8)["loss"]),
                                   float(LOSSES.get("mse")(pred, y)), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(per_example_loss("mse")(pred, y)), np.asarray((pred - y)[:, 0] ** 2),
                                   rtol=1e-6)
    finally:
        LOSSES._entries.pop("mae_for_test")
