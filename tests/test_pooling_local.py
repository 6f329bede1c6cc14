"""Pooling (max, mean, across channels) and the locally connected layer, against hand-written loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.nn.conv import Conv
from nnbasics.nn.local import LocallyConnected, param_counts
from nnbasics.nn.pooling import channel_max_pool, channel_mean_pool, get_pooling, global_pool, max_pool, mean_pool


def loop_pool(x, k, s, op):
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = op(x[:, i * s:i * s + k, j * s:j * s + k], axis=(1, 2))
    return out


def test_pools_equal_hand_loops_and_flax(rng):
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(max_pool(x, 2), loop_pool(x, 2, 2, np.max), atol=1e-6)
    np.testing.assert_allclose(mean_pool(x, 3, 1), loop_pool(x, 3, 1, np.mean), atol=1e-6)
    np.testing.assert_allclose(max_pool(x, 3, 2, "SAME"), nn.max_pool(x, (3, 3), (2, 2), "SAME"), atol=0)
    np.testing.assert_allclose(mean_pool(x, 3, 2, "SAME", count_include_pad=True), nn.avg_pool(x, (3, 3), (2, 2), "SAME"),
                               atol=1e-6)
    np.testing.assert_allclose(mean_pool(x, 3, 2, "SAME"),
                               nn.avg_pool(x, (3, 3), (2, 2), "SAME", count_include_pad=False), atol=1e-6)
    assert get_pooling("max") is max_pool and get_pooling("mean") is mean_pool
    with pytest.raises(KeyError):
        get_pooling("median")


def test_mean_pool_excludes_padding_by_hand():
    x = jnp.ones((1, 2, 2, 1))
    assert float(mean_pool(x, 3, 1, "SAME")[0, 0, 0, 0]) == pytest.approx(1.0)  # 4 real pixels / 4
    assert float(mean_pool(x, 3, 1, "SAME", count_include_pad=True)[0, 0, 0, 0]) == pytest.approx(4 / 9)


def test_channel_pooling_by_hand():
    x = jnp.asarray([[1.0, 5.0, 2.0, -1.0, 0.0, 3.0]])
    np.testing.assert_array_equal(channel_max_pool(x, 3), [[5.0, 3.0]])
    np.testing.assert_allclose(channel_mean_pool(x, 2), [[3.0, 0.5, 1.5]])
    with pytest.raises(ValueError):
        channel_max_pool(x, 4)
    y = jnp.arange(24.0).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(global_pool(y, "max"), [[20.0, 21.0, 22.0, 23.0]])
    np.testing.assert_allclose(global_pool(y), [[10.0, 11.0, 12.0, 13.0]])


def test_max_pool_gradient_goes_to_the_max():
    x = jnp.asarray([[1.0, 4.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
    g = jax.grad(lambda z: max_pool(z, 2).sum())(x)
    np.testing.assert_array_equal(g.reshape(2, 2), [[0.0, 1.0], [0.0, 0.0]])


def test_locally_connected_by_hand(rng):
    x = rng.standard_normal((2, 4, 5, 2)).astype(np.float32)
    layer = LocallyConnected(3, (2, 2))
    v = jax.eval_shape(layer.init, jax.random.key(0), x)  # shapes only; NumPy weights compile nothing
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), v)
    k, b = np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["bias"])
    assert k.shape == (3, 4, 8, 3) and b.shape == (3, 4, 3)
    out = np.asarray(layer.apply(v, x))
    for i in range(3):
        for j in range(4):
            patch = x[:, i:i + 2, j:j + 2, :].reshape(2, -1)  # (kh, kw, c) order, like the kernel rows
            np.testing.assert_allclose(out[:, i, j], patch @ k[i, j] + b[i, j], atol=1e-5)


def test_locally_connected_with_shared_weights_is_conv(rng):
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)), jnp.float32)
    conv = Conv(4, (3, 3), padding="SAME", strides=2)
    vc = jax.eval_shape(conv.init, jax.random.key(1), x)
    vc = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), vc)
    local = LocallyConnected(4, (3, 3), padding="SAME", strides=2)
    kernel = vc["params"]["kernel"].reshape(-1, 4)
    vl = {"params": {"kernel": jnp.broadcast_to(kernel, (3, 3, 27, 4)),
                     "bias": jnp.broadcast_to(vc["params"]["bias"], (3, 3, 4))}}
    np.testing.assert_allclose(local.apply(vl, x), conv.apply(vc, x), atol=1e-5)


def test_param_counts_match_modules():
    counts = param_counts((32, 32), 3, 16, (3, 3))
    assert counts == {"fully_connected": 50_348_032, "locally_connected": 458_752, "convolutional": 448}
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)

    def count(m, inp):
        return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(jax.eval_shape(m.init, jax.random.key(0), inp)))

    small = param_counts((8, 8), 3, 5, (3, 3))
    assert count(LocallyConnected(5, (3, 3), padding="SAME"), x) == small["locally_connected"]
    assert count(Conv(5, (3, 3)), x) == small["convolutional"]
    assert count(nn.Dense(8 * 8 * 5), jax.ShapeDtypeStruct((1, 192), jnp.float32)) == small["fully_connected"]
