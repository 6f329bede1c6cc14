"""Equivariance, invariance and deformation measurements, on functions with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from nnbasics.analysis import equivariance as eq
from nnbasics.nn.conv import conv_general
from nnbasics.nn.pooling import global_pool


def test_translate_by_hand():
    x = np.arange(12.0).reshape(1, 3, 4, 1)
    np.testing.assert_array_equal(eq.translate(x, (0, 1))[0, 0, :, 0], [3, 0, 1, 2])  # circular
    np.testing.assert_array_equal(eq.translate(x, (0, 1), circular=False)[0, 0, :, 0], [0, 0, 1, 2])
    np.testing.assert_array_equal(eq.translate(x, (-1, 0), circular=False)[0, :, 0, 0], [4, 8, 0])
    np.testing.assert_array_equal(eq.translate(jnp.asarray(x), (1, -2)), np.roll(x, (1, -2), axis=(1, 2)))


def circular_conv(w):
    def f(x):
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        return jax.nn.relu(conv_general(x, w, 1, "VALID"))

    return jax.jit(f)


def test_conv_is_equivariant_and_dense_is_not(rng):
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
    f = circular_conv(jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32))
    for s in [(1, 0), (3, -2), (8, 8)]:
        assert eq.equivariance_error(f, x, s) < 1e-6
    w = jnp.asarray(rng.standard_normal((128, 128)), jnp.float32)
    dense = jax.jit(lambda z: (z.reshape(2, -1) @ w).reshape(z.shape))
    assert eq.equivariance_error(dense, x, (1, 0)) > 0.5
    # Zero padding: equivariant away from the border only.
    g = jax.jit(lambda z: conv_general(z, jnp.ones((3, 3, 2, 1)), 1, "SAME"))
    assert eq.equivariance_error(g, x, (2, 0), circular=False) > 1e-3
    assert eq.equivariance_error(g, x, (2, 0), circular=False, border=3) < 1e-6


def test_strided_net_is_equivariant_to_multiples_of_the_stride(rng):
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 1)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 2)), jnp.float32)

    def f(z):
        z = jnp.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        return conv_general(z, w, 2, "VALID")

    assert eq.equivariance_error(f, x, (2, 4), stride=2) < 1e-6
    with pytest.raises(ValueError, match="multiple"):
        eq.equivariance_error(f, x, (1, 0), stride=2)


def test_global_pooling_is_shift_invariant(rng):
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
    f = circular_conv(jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32))
    assert eq.invariance_error(lambda z: global_pool(f(z)), x, (3, 5)) < 1e-6
    assert eq.invariance_error(f, x, (3, 5)) > 0.1
    assert eq.shift_sensitivity(lambda z: global_pool(f(z), "max"), x, [(1, 0), (0, 1)], circular=True) < 1e-6


def test_relative_difference():
    assert eq.relative_difference(np.array([3.0, 4.0]), np.array([0.0, 0.0]) + [3.0, 0.0]) == pytest.approx(4 / 3)


def test_warp_matches_scipy_and_shifts(rng):
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    d = eq.smooth_displacement(0, (9, 11), 2.5)
    assert np.max(np.linalg.norm(d, axis=-1)) == pytest.approx(2.5, rel=1e-5)
    got = np.asarray(eq.warp(x, d))
    coords = [np.arange(9)[:, None] + d[..., 0], np.arange(11)[None] + d[..., 1]]
    ref = np.stack([np.stack([ndi.map_coordinates(x[n, ..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
                    for n in range(2)])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(eq.warp(x, np.zeros((9, 11, 2), np.float32))), x)
    one_left = np.zeros((9, 11, 2), np.float32)
    one_left[..., 1] = -1.0  # sample one pixel to the left: a shift right by one
    np.testing.assert_allclose(np.asarray(eq.warp(x, one_left))[:, :, 1:], x[:, :, :-1], atol=1e-6)


def test_deformation_stability(rng):
    x = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
    xw = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    r = eq.deformation_stability(lambda z: z, x, xw)
    assert r["ratio"] == pytest.approx(1.0)
    assert r["pixel_change"] == pytest.approx(r["feature_change"])
    const = eq.deformation_stability(lambda z: 2.0 * z, x, xw)  # scaling cancels out
    assert const["ratio"] == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError):
        eq.deformation_stability(lambda z: z, x[:1], xw[:1])
