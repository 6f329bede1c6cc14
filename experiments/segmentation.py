"""Semantic segmentation: a patch classifier against a fully convolutional net (sky/cloud/bird/ground).

The lecture's "what is the object class of the centre pixel?": procedurally generated outdoor
scenes (`scenes` data set) with per-pixel labels. A patch classifier (a small conv net on one
9x9 patch, trained on random patches) is run once per pixel; a fully convolutional net with the
same architecture is trained on whole images and labels every pixel at once. Both reach the same
pixel accuracy on held-out scenes, the FCN is far faster (speed ratio measured), the patch
classifier's own weights run as an FCN give exactly its per-pixel answers ("W is a
convolutional kernel applied to the full image"), and the FCN runs on images larger than it was
trained on.

    nnbasics run segmentation --quick
    nnbasics run segmentation --config.large_size=128
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nnbasics import claims as C
from nnbasics.data.scenes import CLASSES, make_scenes
from nnbasics.models import get_model
from nnbasics.models.fcn import fcn_radius, init_params
from nnbasics.plotting import subplots

TOPIC = "convolution"
ORDER = 45
SOURCE = "Lecture: semantic segmentation as per-pixel classification; Long, Shelhamer & Darrell 2015 (FCN)"


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.scenes = ml_collections.ConfigDict({"n_train": 1000, "n_test": 200, "size": 32, "noise": 0.05, "seed": 0})
    c.model = ml_collections.ConfigDict({"channels": 16, "depth": 4})
    c.fcn = ml_collections.ConfigDict({"steps": 400, "batch_size": 8, "learning_rate": 3e-3})
    c.patch = ml_collections.ConfigDict({"steps": 2000, "batch_size": 128, "learning_rate": 3e-3})
    c.seed = 0
    c.large_size = 96
    c.n_large = 20
    c.timing_repeats = 3
    c.min_pixel_accuracy = 0.95
    c.max_accuracy_gap = 0.02
    c.min_speedup = 5.0
    c.min_mean_iou = 0.8
    if preset == "quick":
        c.scenes.n_train, c.scenes.n_test = 400, 100
        c.fcn.steps = 150
        c.patch.steps = 600
        c.n_large = 8
    elif preset == "smoke":
        c.scenes.n_train, c.scenes.n_test = 16, 4
        c.scenes.size = 16
        c.model.channels, c.model.depth = 4, 2
        c.fcn.steps, c.fcn.batch_size = 3, 2
        c.patch.steps, c.patch.batch_size = 3, 16
        c.large_size, c.n_large = 24, 1
        c.timing_repeats = 1
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if config.scenes.size < 8:
        raise ValueError(f"config.scenes.size must be >= 8, got {config.scenes.size}")
    if config.model.depth < 1 or config.model.channels < 1:
        raise ValueError("config.model.depth and config.model.channels must be positive")
    if config.large_size < config.scenes.size:
        raise ValueError(f"config.large_size ({config.large_size}) must be >= config.scenes.size ({config.scenes.size})")
    if config.fcn.batch_size > config.scenes.n_train:
        raise ValueError(f"config.fcn.batch_size ({config.fcn.batch_size}) exceeds the {config.scenes.n_train} training scenes")
    if config.timing_repeats < 1 or config.n_large < 1:
        raise ValueError("config.timing_repeats and config.n_large must be >= 1")


# ------------------------------------------------------------------------------------- helpers


def all_patches(x_padded: jax.Array, size: int, height: int, width: int) -> jax.Array:
    """Every size x size patch of padded images (n, H+2r, W+2r, C): one per pixel, (n*H*W, size, size, C)."""
    rows = [x_padded[:, i:i + height] for i in range(size)]  # each (n, H, W+2r, C)
    patches = jnp.stack([jnp.stack([r[:, :, j:j + width] for j in range(size)], axis=3) for r in rows], axis=3)
    n, c = x_padded.shape[0], x_padded.shape[-1]
    return patches.reshape(n * height * width, size, size, c)  # (n, H, W, size, size, C) flattened


def train(
    loss_batch: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any, sample: Callable[[np.ndarray], tuple],
    steps: int, batch_size: int, lr: float, seed: int,
) -> tuple[Any, list[float]]:
    """Adam on `loss_batch(params, x, y)` with batches from `sample(indices)`; a Python loop of
    jitted steps (for these small conv nets XLA's CPU backend runs a scan-compiled loop slower)."""
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, xb, yb):
        value, g = jax.value_and_grad(loss_batch)(p, xb, yb)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, value

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        xb, yb = sample(rng, batch_size)
        params, opt, value = step(params, opt, xb, yb)
        losses.append(value)
    return params, [float(v) for v in jax.device_get(losses)]


def confusion(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


# ------------------------------------------------------------------------------------------ run


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    sc = config.scenes
    xtr, ytr = make_scenes(sc.n_train, sc.size, seed=sc.seed, noise=sc.noise)
    xte, yte = make_scenes(sc.n_test, sc.size, seed=sc.seed + 1_000_003, noise=sc.noise)
    k = len(CLASSES)
    depth, channels = int(config.model.depth), int(config.model.channels)
    r = fcn_radius(depth)
    p = 2 * r + 1
    fcn = get_model("fcn", num_classes=k, channels=channels, depth=depth)
    patch_clf = get_model("patch_classifier", num_classes=k, channels=channels, depth=depth)

    def ce(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # 1. The FCN, trained on whole images (every pixel's label at once).
    x_dev, y_dev = jnp.asarray(xtr), jnp.asarray(ytr)
    params0 = init_params(fcn, xtr.shape[1:], config.seed)

    def sample_images(rng, b):
        idx = rng.integers(0, len(xtr), b)
        return x_dev[idx], y_dev[idx]

    t0 = time.perf_counter()
    fcn_params, fcn_losses = train(
        lambda prm, xb, yb: ce(fcn.apply({"params": prm}, xb), yb), params0, sample_images,
        config.fcn.steps, config.fcn.batch_size, config.fcn.learning_rate, config.seed,
    )
    fcn_train_s = time.perf_counter() - t0

    # 2. The patch classifier, trained on random patches labelled by their centre pixel.
    x_pad = jnp.asarray(np.pad(xtr, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge"))
    cut = jax.jit(jax.vmap(lambda i, a, b: jax.lax.dynamic_slice(x_pad[i], (a, b, 0), (p, p, 3))))

    def sample_patches(rng, b):
        i, a, c = (rng.integers(0, n, b) for n in (len(xtr), sc.size, sc.size))
        return cut(i, a, c), y_dev[i, a, c]

    t0 = time.perf_counter()
    patch_params, patch_losses = train(
        lambda prm, xb, yb: ce(patch_clf.apply({"params": prm}, xb), yb), params0, sample_patches,
        config.patch.steps, config.patch.batch_size, config.patch.learning_rate, config.seed,
    )
    patch_train_s = time.perf_counter() - t0
    workdir.metrics.write({"run": "fcn", "losses": fcn_losses[-5:], "train_seconds": fcn_train_s})
    workdir.metrics.write({"run": "patch", "losses": patch_losses[-5:], "train_seconds": patch_train_s})

    # 3. Label every test pixel: once per pixel (patches) and all at once (FCN).
    h = w = sc.size
    chunk = max(1, min(len(xte), 16))
    n_chunks = -(-len(xte) // chunk)
    xte_chunks = jnp.asarray(np.concatenate([xte, np.repeat(xte[-1:], n_chunks * chunk - len(xte), 0)])).reshape(
        n_chunks, chunk, h, w, 3
    )

    @jax.jit
    def fcn_logits(prm, xc):
        return jax.lax.map(lambda xb: fcn.apply({"params": prm}, xb), xc)

    @jax.jit
    def patch_logits(prm, xc):
        def one(xb):
            xp = jnp.pad(xb, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
            return patch_clf.apply({"params": prm}, all_patches(xp, p, h, w)).reshape(xb.shape[0], h, w, k)

        return jax.lax.map(one, xc)

    def unchunk(a):
        return np.asarray(a).reshape(-1, h, w, k)[: len(xte)]

    t_fcn = best_time(lambda: fcn_logits(fcn_params, xte_chunks), config.timing_repeats)
    t_patch = best_time(lambda: patch_logits(patch_params, xte_chunks), config.timing_repeats)
    pred_fcn = unchunk(fcn_logits(fcn_params, xte_chunks)).argmax(-1)
    pred_patch = unchunk(patch_logits(patch_params, xte_chunks)).argmax(-1)
    acc_fcn, acc_patch = float(np.mean(pred_fcn == yte)), float(np.mean(pred_patch == yte))
    iou_fcn = iou_per_class(confusion(pred_fcn, yte, k))
    iou_patch = iou_per_class(confusion(pred_patch, yte, k))
    miou_fcn, miou_patch = float(np.nanmean(iou_fcn)), float(np.nanmean(iou_patch))
    speedup = t_patch / t_fcn

    # 4. The patch classifier's weights, run as a fully convolutional net on whole images.
    with jax.default_matmul_precision("highest"):  # an identity: full float32 on GPU/TPU too
        as_fcn = unchunk(fcn_logits(patch_params, xte_chunks))
        per_patch = unchunk(patch_logits(patch_params, xte_chunks))
    same_fn_err = float(np.max(np.abs(as_fcn - per_patch)))

    # 5. The FCN on larger scenes than it was trained on.
    xl, yl = make_scenes(config.n_large, config.large_size, seed=sc.seed + 2_000_003, noise=sc.noise)
    pred_large = np.asarray(jax.jit(fcn.apply)({"params": fcn_params}, jnp.asarray(xl))).argmax(-1)
    acc_large = float(np.mean(pred_large == yl))
    miou_large = float(np.nanmean(iou_per_class(confusion(pred_large, yl, k))))

    _figures(workdir, xte, yte, pred_fcn, pred_patch, xl, yl, pred_large, fcn_losses, patch_losses)

    lo = float(config.min_pixel_accuracy)
    return [
        C.claim(
            "fcn_pixel_accuracy",
            f"A fully convolutional net trained on {sc.size}x{sc.size} scenes labels held-out pixels correctly "
            f"(>= {lo:.0%}); mean IoU over {k} classes reported",
            SOURCE, f"pixel accuracy >= {lo:.2f}; mean IoU >= {config.min_mean_iou:.2f}",
            {"pixel_accuracy": acc_fcn, "mean_iou": miou_fcn, **{f"iou_{c}": v for c, v in zip(CLASSES, iou_fcn)},
             "train_seconds": fcn_train_s, "steps": config.fcn.steps},
            C.at_least(acc_fcn, lo) and C.at_least(miou_fcn, config.min_mean_iou),
        ),
        C.claim(
            "patch_classifier_same_accuracy",
            f"A classifier of the centre pixel of one {p}x{p} patch, run once per pixel, reaches the same "
            "pixel accuracy as the FCN",
            SOURCE, f">= {lo:.2f} and within {config.max_accuracy_gap:.2f} of the FCN",
            {"pixel_accuracy_patch": acc_patch, "pixel_accuracy_fcn": acc_fcn, "gap": abs(acc_patch - acc_fcn),
             "mean_iou_patch": miou_patch, "train_seconds": patch_train_s, "steps": config.patch.steps},
            C.at_least(acc_patch, lo) and C.at_most(abs(acc_patch - acc_fcn), config.max_accuracy_gap),
        ),
        C.claim(
            "fcn_speedup",
            "Labelling every pixel at once with the FCN is far faster than classifying one patch per pixel",
            SOURCE, f"speed ratio (patch time / FCN time) >= {config.min_speedup:g}",
            {"speedup": speedup, "seconds_patch_classifier": t_patch, "seconds_fcn": t_fcn,
             "pixels": float(yte.size)},
            C.at_least(speedup, config.min_speedup),
        ),
        C.claim(
            "patch_classifier_is_a_convolution",
            "The patch classifier's weights applied as convolution kernels to the whole image give exactly its "
            "per-patch answers (W is a convolutional kernel applied to the full image)",
            "Lecture, convolutional networks", "max |logit difference| <= 1e-4",
            {"max_abs_logit_difference": same_fn_err},
            C.at_most(same_fn_err, 1e-4),
        ),
        C.claim(
            "fcn_any_input_size",
            f"The FCN trained on {sc.size}x{sc.size} images labels {config.large_size}x{config.large_size} scenes "
            "as well",
            "Lecture: conv layers can be applied to arbitrarily-sized inputs",
            f"pixel accuracy >= {lo:.2f}",
            {"pixel_accuracy_large": acc_large, "mean_iou_large": miou_large, "size": config.large_size},
            C.at_least(acc_large, lo),
        ),
    ]


def _figures(workdir, xte, yte, pred_fcn, pred_patch, xl, yl, pred_large, fcn_losses, patch_losses) -> None:
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#7fb2ff", "#f0f0f0", "#d62728", "#4a8c2a"])
    n = min(3, len(xte))
    fig, axes = subplots(n + 1, 4, size=(2.6, 2.6))
    axes = axes.reshape(n + 1, 4)
    rows = [(xte[i], yte[i], pred_fcn[i], pred_patch[i], f"test {i}") for i in range(n)]
    rows.append((xl[0], yl[0], pred_large[0], None, f"{xl.shape[1]}x{xl.shape[2]} (FCN only)"))
    for ax_row, (img, gt, pf, pp, name) in zip(axes, rows):
        panels = [(img, "image"), (gt, "ground truth"), (pf, "FCN"), (pp, "patch classifier")]
        for ax, (a, title) in zip(ax_row, panels):
            ax.set_xticks([])
            ax.set_yticks([])
            if a is None:
                ax.axis("off")
                continue
            if a.ndim == 3:
                ax.imshow(a)
            else:
                ax.imshow(a, cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
            ax.set_title(f"{title}: {name}" if title == "image" else title, fontsize=8)
    handles = [__import__("matplotlib").patches.Patch(color=cmap(i), label=c) for i, c in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASSES), frameon=False)
    fig.suptitle("Segmentation: image, ground truth, FCN and patch-classifier predictions")
    workdir.save_figure(fig, "segmentation_examples")

    fig, (ax,) = subplots(size=(6, 3.8))
    ax.plot(np.arange(1, len(fcn_losses) + 1), fcn_losses, label="FCN (whole images)")
    ax.plot(np.arange(1, len(patch_losses) + 1), patch_losses, label="patch classifier (one patch per example)")
    ax.set(xlabel="training step", ylabel="cross-entropy (training batch)", yscale="log",
           title="Training loss: FCN vs patch classifier")
    ax.legend()
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "training_loss")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
