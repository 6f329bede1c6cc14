"""Scenes data set, the FCN / patch classifier pair, and the segmentation experiment's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.data import load_dataset
from nnbasics.data.scenes import BIRD, CLASSES, GROUND, SKY, make_scenes
from nnbasics.models import get_model
from nnbasics.models.fcn import fcn_radius, init_params


def test_scenes_shapes_labels_and_determinism():
    x, y = make_scenes(6, 24, seed=3)
    assert x.shape == (6, 24, 24, 3) and x.dtype == np.float32 and y.shape == (6, 24, 24) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= set(range(len(CLASSES)))
    x2, y2 = make_scenes(6, 24, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(make_scenes(6, 24, seed=4)[1], y)
    # Ground is at the bottom, sky at the top; birds are dark and only above the ground.
    assert np.all(y[:, -1] == GROUND) and np.mean(y[:, 0] == SKY) > 0.5
    big_x, big_y = make_scenes(2, 64, 48, seed=0)
    assert big_x.shape == (2, 64, 48, 3) and (big_y == BIRD).any()
    assert x[y == BIRD].mean() < 0.2 < x[y == SKY].mean()


def test_scenes_registered():
    data = load_dataset("scenes", n_train=4, n_test=2, size=16)
    assert data.task == "segmentation" and data.num_classes == 4
    assert data.x_train.shape == (4, 16, 16, 3) and data.y_test.shape == (2, 16, 16)
    with pytest.raises(ValueError):
        load_dataset("scenes", size=4)


def test_fcn_any_size_and_patch_classifier_is_the_same_function(rng):
    fcn = get_model("fcn", num_classes=4, channels=4, depth=3, dilations=(1, 2, 1))
    r = fcn_radius(3, (1, 2, 1))
    assert r == 4
    params = init_params(fcn, (16, 16, 3), seed=0)
    for shape in [(16, 16), (23, 40)]:
        x = jnp.asarray(rng.uniform(size=(2, *shape, 3)), jnp.float32)
        assert fcn.apply({"params": params}, x).shape == (2, *shape, 4)
    # The patch classifier with the same weights on the (2r+1)^2 patch around a pixel gives the
    # FCN's scores of that pixel.
    x = rng.uniform(size=(1, 12, 10, 3)).astype(np.float32)
    dense = np.asarray(fcn.apply({"params": params}, x))
    patch_clf = get_model("patch_classifier", num_classes=4, channels=4, depth=3, dilations=(1, 2, 1))
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    pixels = [(0, 0), (5, 7), (11, 9)]
    patches = np.stack([xp[0, i:i + 2 * r + 1, j:j + 2 * r + 1] for i, j in pixels])
    out = np.asarray(patch_clf.apply({"params": params}, patches))
    np.testing.assert_allclose(out, np.stack([dense[0, i, j] for i, j in pixels]), atol=1e-5)
    with pytest.raises(ValueError, match="patches"):
        patch_clf.apply({"params": params}, patches[:, :-1])


def test_init_params_he_scale():
    fcn = get_model("fcn", num_classes=4, channels=64, depth=2)
    p = init_params(fcn, (8, 8, 3), seed=1)
    k = np.asarray(p["conv2"]["kernel"])
    assert k.shape == (3, 3, 64, 64)
    assert np.std(k) == pytest.approx(np.sqrt(2.0 / (9 * 64)), rel=0.05)
    assert not np.any(np.asarray(p["conv2"]["bias"]))
    ref = jax.eval_shape(fcn.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    assert jax.tree.map(lambda a: a.shape, p) == jax.tree.map(lambda a: a.shape, ref)


def test_all_patches_order(rng):
    from experiments.segmentation import all_patches

    x = jnp.asarray(rng.standard_normal((2, 7, 6, 3)), jnp.float32)  # padded by r = 1 around 5 x 4
    p = np.asarray(all_patches(x, 3, 5, 4)).reshape(2, 5, 4, 3, 3, 3)
    np.testing.assert_array_equal(p[1, 2, 3], np.asarray(x[1, 2:5, 3:6]))


def test_segmentation_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    doc = run_experiment("segmentation", "smoke", workdir=tmp_path)
    assert [c["id"] for c in doc["claims"]] == ["fcn_pixel_accuracy", "patch_classifier_same_accuracy", "fcn_speedup",
                                                "patch_classifier_is_a_convolution", "fcn_any_input_size"]
    byid = {c["id"]: c for c in doc["claims"]}
    acc = byid["fcn_pixel_accuracy"]["measured"]
    assert len(acc["pixel_accuracy"]) == 2 and all(0 <= a <= 1 for a in acc["pixel_accuracy"])  # one per seed
    assert 0.25 <= acc["majority_class_fraction"] <= 1
    gap = byid["patch_classifier_same_accuracy"]["measured"]
    np.testing.assert_allclose(gap["gap"], np.subtract(gap["pixel_accuracy_patch"], gap["pixel_accuracy_fcn"]))
    speed = byid["fcn_speedup"]["measured"]
    assert speed["speedup"] == speed["seconds_patch_classifier"] / speed["seconds_fcn"] > 0
    # depth 2, 4 channels: per pixel (27*4*9 + 36*4*1) / (27*4 + 36*4) multiply-adds
    assert speed["flop_ratio"] == (108 * 9 + 144) / (108 + 144)
    # an identity: holds for any (even untrained) weights
    assert byid["patch_classifier_is_a_convolution"]["verdict"] == "pass"
    assert max(byid["patch_classifier_is_a_convolution"]["measured"]["max_abs_logit_difference"]) < 1e-4
    assert (tmp_path / "figures" / "segmentation_examples.png").exists()


def test_flop_ratio_of_the_quick_nets():
    from experiments.segmentation import flop_ratio

    # 9x9 patches, 4 layers of 16 channels: 49, 25, 9 and 1 positions against one per layer
    assert round(flop_ratio(4, 16), 2) == round((432 * 49 + 2304 * (25 + 9 + 1)) / (432 + 3 * 2304), 2)
