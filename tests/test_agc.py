"""Adaptive gradient clipping: the hand-written AGC against optax.adaptive_grad_clip and the formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnbasics.agc import agc, clip_gradients, clip_unitwise, is_classifier, unitwise_norm


def _tree(seed, scale=1.0):
    """A parameter-like pytree: conv kernel, bias, dense kernel, a scalar gain and a classifier."""
    r = np.random.default_rng(seed)

    def n(*shape):
        return jnp.asarray(scale * r.standard_normal(shape), jnp.float32)

    return {"conv": {"kernel": n(3, 3, 4, 5), "bias": n(5)}, "dense": {"kernel": n(7, 3)}, "gain": n(),
            "head": {"kernel": n(3, 2)}}


def test_unitwise_norm_is_per_output_unit():
    w = jnp.arange(24.0).reshape(2, 3, 4)
    n = unitwise_norm(w)
    np.testing.assert_allclose(n[0, 0], jnp.sqrt(jnp.sum(w**2, axis=(0, 1))), rtol=1e-6)
    assert n.shape == w.shape
    v = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(unitwise_norm(v), [5.0, 5.0])


@pytest.mark.parametrize("clip", [0.01, 0.1, 1.0])
def test_agc_equals_optax(clip):
    params = _tree(0)
    grads = _tree(1, scale=0.3)
    mine, _ = agc(clip).update(grads, agc(clip).init(params), params)
    ref_tx = optax.adaptive_grad_clip(clip)
    ref, _ = ref_tx.update(grads, ref_tx.init(params), params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # and clipping actually happened for the small thresholds
    if clip < 1:
        assert not all(np.allclose(a, g) for a, g in zip(jax.tree.leaves(mine), jax.tree.leaves(grads)))


def test_agc_formula_and_classifier_excluded():
    params = _tree(2)
    grads = _tree(3, scale=5.0)
    clip = 0.05
    out = clip_gradients(grads, params, clip, exclude=is_classifier)
    np.testing.assert_array_equal(out["head"]["kernel"], grads["head"]["kernel"])  # untouched
    g, w, o = grads["conv"]["kernel"], params["conv"]["kernel"], out["conv"]["kernel"]
    for i in range(g.shape[-1]):  # every output unit: ||G_i|| <= clip * ||W_i||, direction kept
        gn, wn, on = (float(jnp.linalg.norm(a[..., i])) for a in (g, w, o))
        expect = g[..., i] * min(1.0, clip * max(wn, 1e-3) / gn)
        np.testing.assert_allclose(o[..., i], expect, rtol=1e-5)
        assert on <= clip * wn * (1 + 1e-5)
    # a zero-initialized parameter is clipped relative to eps, not to 0
    z = clip_unitwise(jnp.ones((4,)), jnp.zeros((4,)), 0.1, eps=1e-3)
    np.testing.assert_allclose(jnp.linalg.norm(z), 0.1 * 1e-3, rtol=1e-5)


def test_agc_in_a_chain_and_traced_threshold():
    params = _tree(4)
    grads = _tree(5)
    tx = optax.chain(agc(0.02, exclude=is_classifier), optax.sgd(0.1))
    upd, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(upd["head"]["kernel"], -0.1 * grads["head"]["kernel"], rtol=1e-6)
    # inf disables clipping; a vmapped grid of thresholds gives one result per threshold
    same = clip_gradients(grads, params, jnp.inf)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(a, b)
    grid = jax.vmap(lambda c: clip_gradients(grads, params, c))(jnp.array([0.01, 0.1]))
    np.testing.assert_allclose(grid["dense"]["kernel"][1], clip_gradients(grads, params, 0.1)["dense"]["kernel"],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="> 0"):
        agc(0.0)


def test_agc_experiment_smoke(tmp_path):
    from nnbasics.experiment import run_experiment

    res = run_experiment("agc", "smoke", workdir=tmp_path)
    assert [c["id"] for c in res["claims"]] == [
        "no_agc_fails_at_large_batch", "agc_trains_stably_at_large_batch", "agc_unneeded_at_small_batch"]
    for c in res["claims"]:
        assert c["verdict"] in ("pass", "fail")
        for v in c["measured"].values():
            assert all(isinstance(a, float) for a in (v if isinstance(v, list) else [v]))
    assert (tmp_path / "figures" / "agc_training_curves.png").exists()

