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


def test_sample_patches_are_the_patches_around_their_labelled_centres(rng):
    from experiments.segmentation import sample_patches

    x = rng.uniform(size=(3, 6, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, (3, 6, 5)).astype(np.int32)
    px, py = sample_patches(x, y, 200, 1, seed=7)
    assert px.shape == (200, 3, 3, 3) and px.dtype == np.float32 and py.shape == (200,) and py.dtype == np.int32
    # each patch's centre pixel is the pixel of x whose label it carries, and the patch is that
    # pixel's edge-padded neighbourhood
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    for patch, label in zip(px[:20], py[:20]):
        hits = [(i, a, b) for i in range(3) for a in range(6) for b in range(5)
                if np.array_equal(xp[i, a:a + 3, b:b + 3], patch)]
        assert len(hits) == 1 and y[hits[0]] == label
    assert 60 < len({p.tobytes() for p in px}) <= 90  # 200 independent draws over 90 pixels: most of them, repeats
    np.testing.assert_array_equal(sample_patches(x, y, 200, 1, seed=7)[0], px)  # fixed by the seed


def test_dense_cross_entropy_and_pixel_accuracy_as_fit_uses_them(rng):
    """Per-pixel logits (N, H, W, C) against labels (N, H, W): the registered loss is the mean of the
    per-pixel cross-entropies, its per-example form the per-image mean, accuracy the pixel fraction."""
    from nnbasics.nn.losses import LOSSES, accuracy, accuracy_per_example, per_example_loss

    logits = rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, (2, 3, 4)).astype(np.int32)
    m = logits.max(-1, keepdims=True)
    log_p = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    per_pixel = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]  # (2, 3, 4), by hand
    np.testing.assert_allclose(float(LOSSES.get("cross_entropy")(logits, labels)), per_pixel.mean(), rtol=1e-5)
    np.testing.assert_allclose(per_example_loss("cross_entropy")(logits, labels), per_pixel.mean((1, 2)), rtol=1e-5)
    right = logits.argmax(-1) == labels
    np.testing.assert_allclose(float(accuracy(logits, labels)), right.mean(), rtol=1e-6)
    np.testing.assert_allclose(accuracy_per_example(logits, labels), right.mean((1, 2)), rtol=1e-6)


def test_segmentation_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment
    from nnbasics.runs.workdir import read_metrics

    # the smoke preset, with nets of 8 channels and the FCN trained long enough (40 steps) to learn the scenes
    longer = ["config.model.channels=8", "config.fcn.steps=40", "config.fcn.eval_every=20", "config.fcn.learning_rate=0.01"]
    doc = run_experiment("segmentation", "smoke", longer, workdir=tmp_path)
    assert [c["id"] for c in doc["claims"]] == ["fcn_pixel_accuracy", "patch_classifier_same_accuracy", "fcn_speedup",
                                                "patch_classifier_is_a_convolution", "fcn_any_input_size"]
    byid = {c["id"]: c for c in doc["claims"]}
    acc = byid["fcn_pixel_accuracy"]["measured"]
    assert len(acc["pixel_accuracy"]) == 2  # one per seed
    assert 0.25 <= acc["majority_class_fraction"] < 0.7
    assert min(acc["pixel_accuracy"]) >= 0.9  # far above the majority class: the FCN learned the scenes
    # trained through fit: its metrics rows (tags fcn and patch), whose held-out accuracy is the
    # experiment's own pixel count
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["run"], r["step"]) for r in rows] == [("fcn", 20), ("fcn", 40), ("patch", 3)]
    np.testing.assert_allclose(rows[1]["test_accuracy"], acc["pixel_accuracy"], rtol=1e-6)
    assert rows[1]["test_loss"][0] < rows[0]["test_loss"][0] and max(rows[1]["test_loss"]) < 0.5
    gap = byid["patch_classifier_same_accuracy"]["measured"]
    np.testing.assert_allclose(gap["gap"], np.subtract(gap["pixel_accuracy_patch"], gap["pixel_accuracy_fcn"]))
    speed = byid["fcn_speedup"]["measured"]
    assert speed["speedup"] == speed["seconds_patch_classifier"] / speed["seconds_fcn"] > 0
    # depth 2, 8 channels: per pixel (27*8*9 + 72*8*1) / (27*8 + 72*8) multiply-adds
    assert speed["flop_ratio"] == (216 * 9 + 576) / (216 + 576)
    # an identity: holds for any (even untrained) weights
    assert byid["patch_classifier_is_a_convolution"]["verdict"] == "pass"
    assert max(byid["patch_classifier_is_a_convolution"]["measured"]["max_abs_logit_difference"]) < 1e-4
    assert (tmp_path / "figures" / "segmentation_examples.png").exists()


def test_flop_ratio_of_the_quick_nets():
    from experiments.segmentation import flop_ratio

    # 9x9 patches, 4 layers of 16 channels: 49, 25, 9 and 1 positions against one per layer
    assert round(flop_ratio(4, 16), 2) == round((432 * 49 + 2304 * (25 + 9 + 1)) / (432 + 3 * 2304), 2)
