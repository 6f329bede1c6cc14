import numpy as np
import pytest

from nnbasics.data import dataset_names, load_dataset
from nnbasics.registry import UnknownNameError


def test_registry_lists_embedded_sets():
    names = dataset_names()
    for n in ["xor", "blobs", "spirals", "polynomial", "digits", "mnist1d", "photos", "logic_gates"]:
        assert n in names


def test_unknown_dataset_message():
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digit")


def test_xor_truth_table():
    d = load_dataset("xor")
    np.testing.assert_array_equal(d.y_train, (d.x_train[:, 0] != d.x_train[:, 1]).astype(int))
    assert d.num_classes == 2 and d.x_train.shape == (4, 2)


@pytest.mark.parametrize("gate,expected", [("and", [0, 0, 0, 1]), ("or", [0, 1, 1, 1]), ("xor", [0, 1, 1, 0])])
def test_logic_gates(gate, expected):
    np.testing.assert_array_equal(load_dataset("logic_gates", gate=gate).y_train, expected)


def test_spirals_and_blobs_are_deterministic():
    a, b = load_dataset("spirals", seed=3), load_dataset("spirals", seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert set(np.unique(a.y_train)) == {0, 1}
    bl = load_dataset("blobs", centers=4)
    assert bl.num_classes == 4 and bl.x_train.dtype == np.float32


def test_polynomial_is_regression():
    d = load_dataset("polynomial", noise=0.0)
    assert d.task == "regression" and d.y_train.shape == (15, 1)
    np.testing.assert_allclose(d.y_train, np.sin(2 * np.pi * d.x_train), atol=1e-6)


def test_digits_images():
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (8, 8, 1) and d.num_train + d.num_test == 1797
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert set(np.unique(d.y_test)) == set(range(10))


def test_mnist1d_matches_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    d = load_dataset("mnist1d")
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.num_classes == 10
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    np.testing.assert_allclose(d.x_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(d.y_test, ref["y_test"])
    assert (tmp_path / "mnist1d_default_seed42.npz").exists()
    again = load_dataset("mnist1d")  # from the cache
    np.testing.assert_array_equal(again.x_test, d.x_test)


def test_mnist1d_more_samples_from_the_package(tmp_path, monkeypatch):
    """num_samples asks the package's generator for more sequences, split 80/20 as it does; cached apart."""
    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    d = load_dataset("mnist1d", num_samples=600)
    assert d.x_train.shape == (480, 40) and d.x_test.shape == (120, 40)
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 600
    ref = make_dataset(args)
    np.testing.assert_allclose(d.x_test, ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(d.y_train, ref["y"])
    assert (tmp_path / "mnist1d_n600_seed42.npz").exists() and not (tmp_path / "mnist1d_default_seed42.npz").exists()
    with pytest.raises(ValueError, match="num_samples must be at least 10"):
        load_dataset("mnist1d", num_samples=3)


def test_photos_small(tmp_path, monkeypatch):
    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    d = load_dataset("photos", n_train=40, n_test=20, size=16, num_classes=4)
    assert d.x_train.shape == (40, 16, 16, 3) and d.num_classes == 4
    assert set(np.unique(d.y_train)) == {0, 1, 2, 3}
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("photos", num_classes=1)


def test_subset():
    d = load_dataset("digits").subset(100, seed=1)
    assert d.num_train == 100 and d.num_test == 360
