"""Convolution as a matrix: M @ x equals lax.conv_general_dilated; Toeplitz structure; composition."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nnbasics.analysis import conv_matrix as cm
from nnbasics.nn.conv import explicit_padding

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def lax_conv(x, w, stride, padding, dilation):
    nd = x.ndim - 2
    pads = explicit_padding(padding, x.shape[1:-1], w.shape[:nd], (stride,) * nd, (dilation,) * nd)
    return np.asarray(lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), (stride,) * nd, pads,
        rhs_dilation=(dilation,) * nd, dimension_numbers=SPECS[nd]))


@pytest.mark.parametrize("trial", range(12))
def test_matrix_equals_lax_conv_on_random_layers(trial):
    rng = np.random.default_rng(trial)
    nd = 1 + trial % 2
    spatial = tuple(int(v) for v in rng.integers(5, 9, nd))
    ks = tuple(int(v) for v in rng.integers(1, 4, nd))
    cin, cout = (int(v) for v in rng.integers(1, 4, 2))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    padding = ("SAME", "VALID", 1, [(2, 0)] * nd)[trial % 4]
    if padding == "VALID" and any(n < dilation * (k - 1) + 1 for n, k in zip(spatial, ks)):
        padding = "SAME"
    x = rng.standard_normal((2, *spatial, cin))
    w = rng.standard_normal((*ks, cin, cout))
    ref = lax_conv(x, w, stride, padding, dilation)
    got = cm.conv_by_matrix(x, w, stride, padding, dilation)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())


def test_toeplitz_matrix_by_hand():
    m = cm.toeplitz_matrix([1.0, 2.0, 3.0], 5)  # VALID: 3 outputs
    expected = np.array([[1, 2, 3, 0, 0], [0, 1, 2, 3, 0], [0, 0, 1, 2, 3]], float)
    np.testing.assert_array_equal(m, expected)
    same = cm.toeplitz_matrix([1.0, 2.0, 3.0], 4, "SAME")  # zero padding drops taps at the ends
    np.testing.assert_array_equal(same, [[2, 3, 0, 0], [1, 2, 3, 0], [0, 1, 2, 3], [0, 0, 1, 2]])
    assert cm.is_toeplitz(m) and cm.is_toeplitz(same)
    assert not cm.is_toeplitz(np.array([[1.0, 2.0], [3.0, 4.0]]))


def test_2d_single_channel_is_doubly_block_toeplitz(rng):
    k = rng.standard_normal((3, 3, 1, 1))
    m = cm.conv_matrix(k, (5, 4), 1, "SAME")
    assert m.shape == (20, 20)
    assert cm.is_doubly_block_toeplitz(m, (4, 4))
    assert not cm.is_toeplitz(m)  # zero padding breaks the diagonals across rows
    strided = cm.conv_matrix(k, (6, 6), 2, "SAME")
    assert not cm.is_doubly_block_toeplitz(strided, (3, 6))
    assert cm.band_fraction(m) < 0.5


def test_matrix_is_linear_map_with_kernel_entries(rng):
    """Each row of the matrix is the kernel (flattened) placed at the window of that output."""
    k = rng.standard_normal((2, 2, 1, 1))
    m = cm.conv_matrix(k, (3, 3), 1, "VALID")
    row0 = np.zeros((3, 3))
    row0[:2, :2] = k[..., 0, 0]
    np.testing.assert_array_equal(m[0], row0.ravel())


def test_compose_kernels_equals_stacked_convs(rng):
    x = rng.standard_normal((2, 9, 8, 2))
    k1, k2 = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal((3, 2, 4, 3))
    k = np.asarray(cm.compose_kernels(k1, k2))
    assert k.shape == (5, 4, 2, 3)
    two = lax_conv(lax_conv(x, k1, 1, "VALID", 1), k2, 1, "VALID", 1)
    np.testing.assert_allclose(lax_conv(x, k, 1, "VALID", 1), two, atol=1e-4 * np.abs(two).max())
    sep = np.asarray(cm.compose_kernels(rng.standard_normal((3, 1, 1, 1)), rng.standard_normal((1, 3, 1, 1))))
    assert np.linalg.matrix_rank(sep[..., 0, 0]) == 1  # separable filter


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        cm.conv_matrix(np.ones((3, 3, 1, 1)), (5,))
    with pytest.raises(ValueError):
        cm.conv_matrix(np.ones((5, 1, 1)), (3,))  # output would be empty


def test_conv_properties_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    doc = run_experiment("conv_properties", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in doc["claims"]]
    assert ids == ["parameter_counts", "conv_is_toeplitz_matrix", "translation_equivariance", "any_input_size",
                   "strided_conv_is_subsampled_conv", "max_pooling_shift_stability",
                   "channel_pooling_rotation_invariance", "deformation_stability"]
    byid = {c["id"]: c for c in doc["claims"]}
    for exact in ("parameter_counts", "conv_is_toeplitz_matrix", "translation_equivariance", "any_input_size",
                  "strided_conv_is_subsampled_conv", "channel_pooling_rotation_invariance"):
        assert byid[exact]["verdict"] == "pass"  # identities and fixed filters: pass at any size
    assert byid["translation_equivariance"]["measured"]["conv_net_error_max"] <= 1e-5
    assert byid["translation_equivariance"]["measured"]["dense_net_error_min"] > 0.5
    # random claims: one value per seed (3 at smoke), decided by an interval
    pool = byid["max_pooling_shift_stability"]
    assert pool["checks"][0]["n"] == 3 and all(0 < r < 1 for r in pool["measured"]["ratio"])
    deform = byid["deformation_stability"]
    assert [k["n"] for k in deform["checks"]] == [3, 3]
    for r, r0 in zip(deform["measured"]["ratio_with_pooling"], deform["measured"]["ratio_no_pooling"]):
        assert 0 < r < r0  # global pooling removes most of the warp; the unpooled map keeps it
    assert (tmp_path / "figures" / "toeplitz.png").exists()
