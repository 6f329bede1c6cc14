"""Pooling (max, mean, across channels) and the locally connected layer, against hand-written loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.nn.conv import Conv
from nnbasics.nn.local import LocallyConnected, param_counts
from nnbasics.nn.pooling import (
    ceil_mode_size,
    channel_max_pool,
    channel_mean_pool,
    get_pooling,
    global_pool,
    max_pool,
    max_pool_ceil,
    mean_pool,
)


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


def ceil_loop_pool(x, k, s, p=0):
    """PyTorch's MaxPool2d(k, s, p, ceil_mode=True) by hand: windows start at -p, p + i*s, ...; the
    last one may run past the input (clipped) but must start inside the input or the left padding."""
    n, h, w, c = x.shape

    def size(d):
        out = int(np.ceil((d + 2 * p - k) / s)) + 1
        return out - 1 if (out - 1) * s >= d + p else out

    oh, ow = size(h), size(w)
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - p, j * s - p
            win = x[:, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            out[:, i, j] = win.max(axis=(1, 2))
    return out


@pytest.mark.parametrize("hw", [(25, 24), (24, 25), (7, 8), (112, 113), (2, 3)])
def test_max_pool_ceil_mode_equals_hand_loop(rng, hw):
    x = rng.standard_normal((2, *hw, 3)).astype(np.float32)
    y = np.asarray(max_pool_ceil(x, 3, 2))
    for d, o in zip(hw, y.shape[1:3]):
        assert o == ceil_mode_size(d, 3, 2) == int(np.ceil((d - 3) / 2)) + 1  # 25 -> 12, 24 -> 12, 113 -> 56
    np.testing.assert_array_equal(y, ceil_loop_pool(x, 3, 2))
    # 'SAME' differs for odd sizes: one more output, every window shifted to start at -1
    same = nn.max_pool(x, (3, 3), (2, 2), "SAME")
    assert same.shape[1:3] == tuple(-(-d // 2) for d in hw)
    if hw == (25, 24):
        assert same.shape[1] == 13 and y.shape[1] == 12


@pytest.mark.parametrize("k,s,p,d", [(3, 2, 1, 10), (3, 2, 1, 9), (2, 2, 0, 7), (2, 3, 0, 8), (4, 3, 2, 10), (3, 1, 1, 5)])
def test_max_pool_ceil_mode_general(rng, k, s, p, d):
    x = rng.standard_normal((1, d, d + 1, 2)).astype(np.float32)
    y = np.asarray(max_pool_ceil(x, k, s, p))
    np.testing.assert_array_equal(y, ceil_loop_pool(x, k, s, p))
    assert ceil_mode_size(9, 3, 2, 1) == 5 and ceil_mode_size(10, 3, 2, 1) == 6  # the last-window rule
    with pytest.raises(ValueError, match="too small"):
        max_pool_ceil(jnp.zeros((1, 1, 1, 1)), 3, 2)


@pytest.mark.parametrize("k,s,p", [(3, 2, 0), (3, 2, 1), (2, 3, 0), (4, 3, 2)])
def test_max_pool_ceil_mode_equals_torch(rng, k, s, p):
    torch = pytest.importorskip("torch")
    for h, w in ((25, 24), (10, 9), (7, 11)):
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        ref = torch.nn.functional.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, s, p, ceil_mode=True)
        np.testing.assert_array_equal(np.asarray(max_pool_ceil(x, k, s, p)), ref.permute(0, 2, 3, 1).numpy())
