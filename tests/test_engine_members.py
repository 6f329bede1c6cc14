"""`fit` members that differ by more than the seed: optimizer numbers, gradient accumulation,
model call arguments; each member equals a separate run with that setting alone."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnbasics.data import load_dataset
from nnbasics.engine import PRNG_IMPL, TrainConfig, create_state, evaluate, fit, optim
from nnbasics.engine.batches import batch_indices
from nnbasics.models import get_model


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs", n_train=120, n_test=60)


def _params(result, i):
    return result.member_state(i).params


def test_members_differing_by_optimizer_numbers_equal_separate_runs(blobs):
    model = get_model("mlp", num_classes=3, hidden=(8,))
    base = dict(steps=30, batch_size=10, eval_every=15, seeds=(0, 1))
    opt = {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9}
    settings = [{"learning_rate": 0.02, "momentum": 0.5}, {"weight_decay": 1e-2, "grad_clip_norm": 0.5}, {}]
    grid = fit(model, blobs, TrainConfig(members=settings, optimizer=opt, **base))
    assert [m["seed"] for m in grid.members] == [0, 1] * 3
    assert grid.members[0] == {"seed": 0, "learning_rate": 0.02, "momentum": 0.5, "weight_decay": 0.0,
                               "grad_clip_norm": 0.0}
    for j, setting in enumerate(settings):
        alone = fit(model, blobs, TrainConfig(optimizer={**opt, **setting}, **base))
        for s in range(2):
            chex.assert_trees_all_close(_params(grid, 2 * j + s), _params(alone, s), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(grid.final("test_loss")[2 * j + s], alone.final("test_loss")[s], rtol=1e-5)
    assert grid.history[-1]["momentum"] == [0.5, 0.5, 0.9, 0.9, 0.9, 0.9]  # every member's value, in the row


def test_agc_lambda_per_member_and_zero_means_unclipped(blobs):
    model = get_model("mlp", num_classes=3, hidden=(8,))
    base = dict(steps=20, batch_size=10, eval_every=20, seeds=(3,))
    opt = {"name": "sgd", "learning_rate": 0.5}
    grid = fit(model, blobs, TrainConfig(members=[{"agc_clip": 0.0}, {"agc_clip": 0.01}], optimizer=opt, **base))
    plain = fit(model, blobs, TrainConfig(optimizer=opt, **base))
    clipped = fit(model, blobs, TrainConfig(optimizer={**opt, "agc_clip": 0.01}, **base))
    chex.assert_trees_all_close(_params(grid, 0), _params(plain, 0), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(_params(grid, 1), _params(clipped, 0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(grid.final("test_loss")[0], grid.final("test_loss")[1])  # clipping did something


def test_batch_indices_accumulated_micro_batches_tile_the_large_batch():
    big = batch_indices([7], 0, 6, 100, 24)  # 6 updates of 24
    micro = batch_indices([7], 0, 24, 100, 6, accumulate=[4])  # the same, as 4 micro-batches of 6 each
    np.testing.assert_array_equal(micro.reshape(6, 24), big.reshape(6, 24))
    # a chunk that starts inside an update continues it
    np.testing.assert_array_equal(batch_indices([7], 5, 7, 100, 6, accumulate=[4])[0], micro[0, 5:12])


def test_accumulation_equals_large_batch_training(blobs):
    model = get_model("mlp", num_classes=3, hidden=(8,))  # no batch-dependent layer: exact
    opt = {"name": "momentum", "learning_rate": 0.1}
    acc = fit(model, blobs, TrainConfig(steps=40, batch_size=10, eval_every=20, seeds=(0,), optimizer=opt,
                                        members=[{"accumulate": 4, "learning_rate": 0.4}, {}]))
    large = fit(model, blobs, TrainConfig(steps=10, batch_size=40, eval_every=5, seeds=(0,),
                                          optimizer={**opt, "learning_rate": 0.4}))
    small = fit(model, blobs, TrainConfig(steps=40, batch_size=10, eval_every=20, seeds=(0,), optimizer=opt))
    # the mean of four micro-batch means is the large batch's mean up to float32 rounding (~1e-7),
    # which ten momentum steps at rate 0.4 amplify to ~1e-5
    chex.assert_trees_all_close(_params(acc, 0), _params(large, 0), rtol=2e-4, atol=2e-5)
    chex.assert_trees_all_close(_params(acc, 1), _params(small, 0), rtol=1e-5, atol=1e-6)
    assert acc.history[-1]["accumulate"] == [4, 1]


def test_accumulate_gradients_updates_once_per_k_micro_batches():
    tx = optim.accumulate_gradients(optax.sgd(1.0), every=3)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    grads = [jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array([5.0, 6.0])]
    for i, g in enumerate(grads):
        upd, state = tx.update({"w": g}, state, params)
        want = -np.mean(grads, axis=0) if i == 2 else np.zeros(2)
        np.testing.assert_allclose(upd["w"], want, rtol=1e-6)
    assert int(state.count) == 0
    chex.assert_trees_all_close(state.grads, {"w": jnp.zeros(2)})


class Scaled(nn.Module):
    """A linear classifier whose logits are multiplied by a call argument (traced per member)."""

    default_scale: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False, scale=None):
        return nn.Dense(3)(x.reshape(x.shape[0], -1)) * (self.default_scale if scale is None else scale)


def test_model_arguments_per_member(blobs):
    cfg = dict(steps=20, batch_size=10, eval_every=10, seeds=(0,), optimizer={"name": "sgd", "learning_rate": 0.1})
    grid = fit(Scaled(), blobs, TrainConfig(members=[{"model": {"scale": 1.0}}, {"model": {"scale": 3.0}}], **cfg))
    for i, scale in enumerate((1.0, 3.0)):
        alone = fit(Scaled(default_scale=scale), blobs, TrainConfig(**cfg))
        chex.assert_trees_all_close(_params(grid, i), _params(alone, 0), rtol=1e-5, atol=1e-6)
    assert grid.members[1]["model"] == {"scale": 3.0}
    assert not np.allclose(grid.final("test_loss")[0], grid.final("test_loss")[1])


def test_eval_at_start_row_has_the_initial_evaluation(blobs):
    model = get_model("mlp", num_classes=3, hidden=(8,))
    res = fit(model, blobs, TrainConfig(steps=10, batch_size=10, eval_every=5, seeds=(0, 1), eval_at_start=True))
    assert [r["step"] for r in res.history] == [0, 5, 10]
    assert "train_loss" not in res.history[0]
    steps, loss = res.curve("train_loss")
    assert list(steps) == [5, 10] and loss.shape == (2, 2)
    steps, test = res.curve("test_loss")
    assert list(steps) == [0, 5, 10]
    for i, seed in enumerate((0, 1)):  # the row at step 0 is the evaluation of each seed's initial state
        key = jax.random.fold_in(jax.random.key(seed, impl=PRNG_IMPL), 0)
        st = create_state(model, optim.make_optimizer({}), key, jnp.zeros((1, 2)))
        want = evaluate(st, jnp.asarray(blobs.x_test), jnp.asarray(blobs.y_test))["loss"]
        np.testing.assert_allclose(test[i, 0], want, rtol=1e-5)
    assert np.all(test[:, -1] < test[:, 0])


@pytest.mark.parametrize("members, message", [
    ([{"nesterov": True}], "member setting"),
    ([{"name": "adam"}], "member setting"),
    ([{"learning_rate": -1.0}], "learning_rate must be > 0"),
    ([{"accumulate": 0}], "accumulate must be a positive"),
    ([{"model": 3}], "call arguments"),
])
def test_bad_member_settings_are_refused_before_compiling(blobs, members, message):
    with pytest.raises(ValueError, match=message):
        fit(get_model("mlp", num_classes=3, hidden=(4,)), blobs, TrainConfig(steps=2, batch_size=10, members=members))


def test_schedule_needs_one_accumulation_count(blobs):
    tc = TrainConfig(steps=4, batch_size=10, members=[{"accumulate": 2}, {}],
                     optimizer={"name": "sgd", "learning_rate": 0.1, "schedule": "cosine"})
    with pytest.raises(ValueError, match="same accumulate"):
        fit(get_model("mlp", num_classes=3, hidden=(4,)), blobs, tc)
    with pytest.raises(ValueError, match="not both"):
        fit(get_model("mlp", num_classes=3, hidden=(4,)), blobs,
            TrainConfig(steps=4, batch_size=10, learning_rates=(0.1,), members=[{}]))


def test_injected_learning_rate_follows_the_schedule():
    tx = optim.make_optimizer({"name": "sgd", "learning_rate": 1.0, "schedule": "linear"}, total_steps=4,
                              member_overrides=[{"learning_rate": 2.0}])
    params = {"w": jnp.zeros(1)}
    state = optim.set_member(tx.init(params), {"learning_rate": 2.0})
    got = []
    for _ in range(4):
        upd, state = tx.update({"w": jnp.ones(1)}, state, params)
        got.append(float(-upd["w"][0]))
    np.testing.assert_allclose(got, [2.0, 1.5, 1.0, 0.5], rtol=1e-6)
    jax.tree.map(lambda a: a, state)  # the state stays a plain pytree


@pytest.mark.parametrize("model_name, kw", [("mlp", {"hidden": (8,)}), ("small_cnn", {})])
def test_step_mode_equals_chunk_mode(blobs, model_name, kw):
    data = load_dataset("digits") if model_name == "small_cnn" else blobs
    model = get_model(model_name, num_classes=data.num_classes, **kw)
    cfg = dict(steps=7, batch_size=10, eval_every=3, seeds=(0, 1), learning_rates=(0.05, 0.1),
               optimizer={"name": "momentum", "learning_rate": 0.1})
    chunk = fit(model, data, TrainConfig(**cfg))
    step = fit(model, data, TrainConfig(step_mode="step", **cfg))
    for i in range(4):
        chex.assert_trees_all_close(_params(step, i), _params(chunk, i), rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in step.history] == [3, 6, 7]
    np.testing.assert_allclose(step.curve("train_loss")[1], chunk.curve("train_loss")[1], rtol=1e-5)


def test_step_mode_is_checked(blobs):
    with pytest.raises(ValueError, match="step_mode"):
        fit(get_model("mlp", num_classes=3, hidden=(4,)), blobs, TrainConfig(steps=2, batch_size=10, step_mode="fast"))
