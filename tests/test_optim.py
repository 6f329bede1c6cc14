import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnbasics.engine.optim import OPTIMIZERS, learning_rate_schedule, make_optimizer


def _run(tx, steps=5):
    p = {"w": jnp.array([1.0, -2.0, 3.0])}
    s = tx.init(p)
    for _ in range(steps):
        g = jax.tree.map(lambda w: 2 * w + 0.1, p)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
    return p["w"]


@pytest.mark.parametrize(
    "cfg,ref",
    [
        ({"name": "sgd", "learning_rate": 0.1}, optax.sgd(0.1)),
        ({"name": "momentum", "learning_rate": 0.1, "momentum": 0.8}, optax.sgd(0.1, momentum=0.8)),
        ({"name": "nesterov", "learning_rate": 0.1}, optax.sgd(0.1, momentum=0.9, nesterov=True)),
        ({"name": "rmsprop", "learning_rate": 0.01}, optax.rmsprop(0.01, decay=0.9, eps=1e-8)),
        ({"name": "adam", "learning_rate": 0.01}, optax.adam(0.01)),
        ({"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1}, optax.adamw(0.01, weight_decay=0.1)),
    ],
)
def test_optimizers_equal_optax(cfg, ref):
    np.testing.assert_allclose(_run(make_optimizer(cfg)), _run(ref), rtol=1e-6)


def test_all_lecture_optimizers_registered():
    assert {"sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"} <= set(OPTIMIZERS.names())


def test_coupled_weight_decay_is_l2_gradient():
    # sgd + weight decay wd: w <- w - lr (g + wd w)
    tx = make_optimizer({"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.5})
    w = _run(tx, steps=1)
    w0 = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(w, w0 - 0.1 * (2 * w0 + 0.1 + 0.5 * w0), rtol=1e-6)


def test_schedules():
    cos = learning_rate_schedule({"learning_rate": 1.0, "schedule": "cosine"}, 100)
    assert float(cos(0)) == pytest.approx(1.0) and float(cos(100)) == pytest.approx(0.0, abs=1e-6)
    assert float(cos(50)) == pytest.approx(0.5, abs=1e-6)
    step = learning_rate_schedule({"learning_rate": 1.0, "schedule": "step", "decay_steps": (10, 20)}, 30)
    assert [float(step(s)) for s in (0, 15, 25)] == pytest.approx([1.0, 0.1, 0.01])
    warm = learning_rate_schedule({"learning_rate": 1.0, "schedule": "cosine", "warmup_steps": 10}, 100)
    assert float(warm(5)) == pytest.approx(0.5)


def test_clipping_bounds_update_norm():
    tx = make_optimizer({"name": "sgd", "learning_rate": 1.0, "grad_clip_norm": 1.0})
    p = {"w": jnp.zeros(3)}
    u, _ = tx.update({"w": jnp.array([30.0, 40.0, 0.0])}, tx.init(p), p)
    np.testing.assert_allclose(u["w"], [-0.6, -0.8, 0.0], rtol=1e-6)


@pytest.mark.parametrize("bad,match", [
    ({"learning_rate": -1}, "learning_rate"),
    ({"momentum": 1.5}, "momentum"),
    ({"schedule": "cosin"}, "did you mean 'cosine'"),
    ({"learnin_rate": 0.1}, "did you mean 'learning_rate'"),
])
def test_bad_optimizer_configs(bad, match):
    with pytest.raises((ValueError, KeyError), match=match):
        make_optimizer(bad)


def test_agc_from_config_equals_the_agc_transformation():
    from nnbasics.engine.agc import agc, is_classifier

    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)) * 0.1}, "head": {"kernel": jnp.ones((4, 10)) * 0.1}}
    grads = jax.tree.map(lambda p: p * 50.0, params)  # far above the clipping threshold
    ref = optax.chain(agc(0.01, exclude=is_classifier), optax.sgd(1.0))
    ours = make_optimizer({"name": "sgd", "learning_rate": 1.0, "agc_clip": 0.01})
    u_ref, _ = ref.update(grads, ref.init(params), params)
    u, _ = ours.update(grads, ours.init(params), params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # the conv kernel is clipped to 1% of its norm; the classifier is left alone
    np.testing.assert_allclose(jnp.linalg.norm(u["conv"]["kernel"][..., 0]),
                               0.01 * jnp.linalg.norm(params["conv"]["kernel"][..., 0]), rtol=1e-4)
    np.testing.assert_allclose(u["head"]["kernel"], -grads["head"]["kernel"], rtol=1e-6)
