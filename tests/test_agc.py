"""Adaptive gradient clipping: the hand-written AGC against optax.adaptive_grad_clip (compiled and eager) and the formula."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from nnbasics.analysis import model_stats
from nnbasics.engine.agc import (
    agc,
    clip_gradients,
    clip_unitwise,
    exclude_logits_layer,
    exclude_paths,
    is_classifier,
    logits_layer,
    path_names,
    unitwise_norm,
)
from nnbasics.models import get_model, model_info, model_names


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


class AgcEqualsOptaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.01, 0.1, 1.0)
    def test_agc_equals_optax(self, clip):
        params = _tree(0)
        grads = _tree(1, scale=0.3)
        ref_tx = optax.adaptive_grad_clip(clip)

        @self.variant
        def both(grads, params):
            mine = agc(clip).update(grads, agc(clip).init(params), params)[0]
            return mine, ref_tx.update(grads, ref_tx.init(params), params)[0]

        mine, ref = both(grads, params)
        chex.assert_trees_all_close(mine, ref, rtol=1e-6, atol=1e-7)
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


def _sample(name):
    """A tiny input for a registered model (ImageNet-sized nets at 32x32: global pools allow it)."""
    shape = tuple(model_info(name).get("input_shape") or (6,))
    if len(shape) == 3 and shape[0] > 32:
        shape = (64, 64, 3) if name == "alexnet" else (32, 32, 3)
    return jax.ShapeDtypeStruct((2, *shape), jnp.float32)


def _param_paths(variables):
    return [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]]


# Traced with their blocks in nn.scan (one block body per stage): the unrolled trace of the deepest
# nets is slow on a small CPU, and the scanned form checks that scanned layers are never candidates.
SCANNED = ("resnet101", "resnet152", "plain101", "plain152", "resnet110", "plain110")


@pytest.mark.parametrize("name", model_names())
def test_exactly_the_logits_layer_is_excluded_in_every_model(name):
    """Over the whole model registry: AGC leaves exactly one layer unclipped, its kernel and bias,
    and that layer's output is the logits (traced, not guessed from names: mnist1d_cnn's `linear`,
    mnist1d_mlp's `linear3`)."""
    kw = {"hidden": 16} if name.startswith(("vgg", "alexnet")) else {}
    if name in SCANNED:
        kw["scan_blocks"] = True
    model, x = get_model(name, num_classes=7, **kw), _sample(name)
    shapes = jax.eval_shape(lambda xx: model.init(jax.random.key(0), xx), x)
    path, params = logits_layer(model, x, shapes)
    exclude = exclude_paths(params)
    excluded = [p for p in _param_paths(shapes) if exclude(p)]
    assert sorted(excluded) == sorted(params) == [(*path, "bias"), (*path, "kernel")], (name, excluded)
    assert exclude(("params", *params[0])) and not exclude(("params",))
    expect = {"mnist1d_cnn": ("linear",), "mnist1d_mlp": ("linear3",), "linear_regression": ("linear",),
              "fcn": ("classifier",), "patch_classifier": ("classifier",)}.get(name, ("head",))
    assert path == expect
    leaf = shapes["params"]
    for k in (*path, "bias"):
        leaf = leaf[k]
    assert leaf.shape == (7,)  # one bias per class


@pytest.mark.parametrize("name", ["mnist1d_cnn", "mnist1d_mlp"])
def test_logits_layer_bias_moves_the_logits_one_for_one(name):
    """The excluded layer produces the logits: adding 1 to its bias adds exactly 1 to every logit."""
    model = get_model(name, num_classes=7)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 40)), jnp.float32)
    v = model_stats.random_variables(model, (40,))
    path, _ = logits_layer(model, x, v)
    bumped = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 1.0 if path_names(p) == ("params", *path, "bias") else a, v)
    y = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(jax.tree.map(lambda a, b: jnp.stack([a, b]), v, bumped), x)
    np.testing.assert_allclose(y[1] - y[0], 1.0, rtol=1e-5)


def test_googlenet_aux_heads_hidden_fc_is_clipped():
    """GoogLeNet with auxiliary heads: their hidden `fc` (and their own read-outs) are clipped; only
    the main classifier is left alone. The name heuristic got the `fc` wrong."""
    model = get_model("googlenet", num_classes=7, aux_logits=True)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    exclude = exclude_logits_layer(model, x)
    paths = _param_paths(jax.eval_shape(lambda xx: model.init(jax.random.key(0), xx), x))
    assert ("aux1", "fc", "kernel") in paths and ("aux2", "head", "kernel") in paths
    assert [p for p in paths if exclude(p)] == [("head", "bias"), ("head", "kernel")]
    assert is_classifier(("aux1", "fc", "kernel"))  # the old name-based rule's mistake


class _ConvReadout(nn.Module):
    """Logits from a 1x1 conv on a 1x1 map, flattened: found through the reshape."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID", name="body")(x))
        return nn.Conv(5, (1, 1), name="out")(x).reshape(x.shape[0], -1)


class _OwnParams(nn.Module):
    """A read-out written with self.param in the root module itself."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(8, name="hidden")(x))
        return h @ self.param("w", nn.initializers.normal(), (8, 3)) + self.param("b", nn.initializers.zeros, (3,))


class _Scaled(nn.Module):
    @nn.compact
    def __call__(self, x):
        return 2.0 * nn.Dense(3, name="out")(x)


def test_logits_layer_through_reshape_root_params_and_failure():
    path, params = logits_layer(_ConvReadout(), jnp.zeros((2, 3, 3, 2)))
    assert path == ("out",) and params == (("out", "bias"), ("out", "kernel"))
    path, params = logits_layer(_OwnParams(), jnp.zeros((2, 4)))
    assert path == () and params == (("b",), ("w",))
    ex = exclude_logits_layer(_OwnParams(), jnp.zeros((2, 4)))
    assert ex(("w",)) and ex(("b",)) and not ex(("hidden", "kernel"))
    with pytest.raises(ValueError, match="outputs its logits"):
        logits_layer(_Scaled(), jnp.zeros((2, 4)))


def test_structural_exclusion_in_make_optimizer():
    """make_optimizer(model=..., sample_input=...) leaves mnist1d_mlp's `linear3` (a name the old rule
    missed) unclipped and clips every other layer."""
    from nnbasics.engine.optim import make_optimizer

    model = get_model("mnist1d_mlp", num_classes=10)
    x = jnp.zeros((2, 40))
    params = model_stats.random_variables(model, (40,))["params"]
    grads = jax.tree.map(lambda p: 50.0 * np.ones_like(p), params)
    tx = make_optimizer({"name": "sgd", "learning_rate": 1.0, "agc_clip": 0.01}, model=model, sample_input=x)
    u, _ = tx.update(grads, tx.init(params), params)
    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(u["linear3"][leaf], -grads["linear3"][leaf])
        for layer in ("linear1", "linear2"):
            assert float(jnp.abs(u[layer][leaf]).max()) < 50.0
    assert not is_classifier(("linear3", "kernel"))  # the old name-based rule would have clipped it
