"""NF-ResNets: the activation gain, structure and zero head, AGC on them, scan = unrolled,
the baselines (BN-ReLU and unnormalized pre-activation ResNets)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.analysis.signal_propagation import collect
from nnbasics.models import get_model
from nnbasics.models.nf_resnet import RELU_GAMMA, activation_gamma, depth_to_stages

KEY = jax.random.key(0, impl="rbg")  # rbg keys compile far faster than threefry on CPU
X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)


def test_relu_gamma():
    assert RELU_GAMMA == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)))
    z = np.random.default_rng(1).standard_normal(2_000_000)
    assert RELU_GAMMA == pytest.approx(1 / np.maximum(z, 0).std(), rel=2e-3)
    assert activation_gamma("identity") == 1.0
    assert activation_gamma("tanh") == pytest.approx(1 / np.tanh(z).std(), rel=2e-3)  # quadrature path


def test_depth_to_stages():
    assert depth_to_stages(20) == (3, 3, 3) and depth_to_stages(206) == (34, 34, 34)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        depth_to_stages(21)


def _init(model, x=X):
    return jax.jit(lambda k: model.init(k, x))(KEY)


def test_nf_resnet_structure_zero_head_and_agc():
    from nnbasics.engine.agc import clip_gradients, is_classifier

    model = get_model("nf_resnet", num_classes=5, depth=8, width=4)
    v = _init(model)
    assert set(v) == {"params"}  # no normalization layers, no running statistics
    p = v["params"]
    assert set(p["stage1_block1"]) == {"conv1", "conv2"}  # identity shortcut
    assert set(p["stage2_block1"]) == {"conv1", "conv2", "shortcut_conv"}  # a transition
    assert set(p["stage2_block1"]["conv1"]) == {"kernel", "bias", "gain"}  # Scaled WS
    out = jax.jit(lambda v: model.apply(v, X))(v)
    assert out.shape == (2, 5)
    np.testing.assert_array_equal(out, 0.0)  # zero-initialized classifier, as in the paper
    # AGC clips every unit to lambda ||W_i|| but leaves the classifier alone
    grads = jax.tree.map(lambda a: 100.0 * jnp.ones_like(a), p)
    clipped = jax.jit(lambda g, p: clip_gradients(g, p, 0.01, exclude=is_classifier))(grads, p)
    np.testing.assert_array_equal(clipped["head"]["kernel"], grads["head"]["kernel"])
    k, g = p["stage1_block1"]["conv1"]["kernel"], clipped["stage1_block1"]["conv1"]["kernel"]
    ratio = jnp.linalg.norm(g.reshape(-1, g.shape[-1]), axis=0) / jnp.linalg.norm(k.reshape(-1, k.shape[-1]), axis=0)
    np.testing.assert_allclose(ratio, 0.01, rtol=1e-4)


def test_scan_equals_unrolled():
    kw = {"num_classes": 3, "depth": 14, "width": 4}
    unrolled, scanned = get_model("nf_resnet", **kw), get_model("nf_resnet", scan=True, **kw)
    v = _init(unrolled)
    p = dict(v["params"])
    head = {"kernel": jnp.asarray(np.random.default_rng(2).standard_normal((16, 3)), jnp.float32), "bias": jnp.zeros(3)}
    p["head"] = head
    sp = {k: p[k] for k in p if "block" not in k or k.endswith("block1")}
    for s in (1, 2, 3):  # block 2 of every stage stacked along a leading axis (a scan of length 1)
        sp[f"stage{s}_blocks2to2"] = {"block": jax.tree.map(lambda a: a[None], p[f"stage{s}_block2"])}
    assert jax.tree.map(jnp.shape, sp) == jax.tree.map(jnp.shape, jax.eval_shape(lambda: scanned.init(KEY, X))["params"])
    a = jax.jit(lambda p: unrolled.apply({"params": p}, X))(p)
    b, state = jax.jit(lambda p: scanned.apply({"params": p}, X, mutable=["spp"]))(sp)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(a).max()) > 1e-3
    # the scanned stages record one row of signal propagation statistics per block, in order
    spp = collect(state)
    assert spp["blocks"] == ["stage1_block1", "stage1_blocks2to2/block", "stage2_block1", "stage2_blocks2to2/block",
                             "stage3_block1", "stage3_blocks2to2/block"]
    assert np.all(np.isfinite(spp["avg_var"])) and np.all(spp["avg_var"] > 0)


def test_baselines_bn_relu_and_unnormalized():
    bn = get_model("bn_relu_resnet", num_classes=4, depth=8, width=4)
    un = get_model("unnorm_resnet", num_classes=4, depth=8, width=4)
    vb, vu = _init(bn), jax.eval_shape(lambda: un.init(KEY, X))
    assert "batch_stats" in vb and "batch_stats" not in vu
    assert "norm1" in vb["params"]["stage1_block1"] and "norm1" not in vu["params"]["stage1_block1"]
    assert "bias" in vu["params"]["stage1_block1"]["conv1"]  # unnormalized convs keep their bias

    @jax.jit
    def both_modes(v):
        yt, new = bn.apply(v, X, train=True, mutable=["batch_stats"])
        return yt, bn.apply({**v, **new}, X, train=False)

    yt, ye = both_modes(vb)
    assert float(jnp.abs(yt - ye).max()) > 1e-4  # batch statistics vs running averages

