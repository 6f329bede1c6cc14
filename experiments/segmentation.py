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

from nnbasics.data.scenes import CLASSES, make_scenes
from nnbasics.models import get_model
from nnbasics.models.fcn import fcn_radius, init_params
from nnbasics.runs import claims as C
from nnbasics.runs.plotting import subplots

TOPIC = "convolution"
ORDER = 45
SOURCE = "Lecture: semantic segmentation as per-pixel classification; Long, Shelhamer & Darrell 2015 (FCN)"

_SEPARABLE = ("the scenes' four classes are told apart by colour and shape inside the 9x9 receptive field "
              "(5% pixel noise): a working segmenter labels nearly every pixel")
THRESHOLDS = {
    "min_pixel_accuracy": C.Threshold(">=", 0.95, _SEPARABLE),
    "min_mean_iou": C.Threshold(">=", 0.8, _SEPARABLE + "; IoU also counts the small class (bird)"),
    "accuracy_gap_low": C.Threshold(">=", -0.02, "lecture: the patch classifier and the FCN compute the same "
                                    "function class, so they reach the same accuracy (within 2 points)"),
    "accuracy_gap_high": C.Threshold("<=", 0.02, "as accuracy_gap_low, the other side"),
    "min_speedup": C.Threshold(">=", 5.0, "lecture: labelling every pixel at once is far faster; the FLOP ratio of "
                               "the 9x9 patch net run per pixel to the FCN is ~14 (computed in the claim), 5 leaves "
                               "room for memory traffic"),
    "same_function_error": C.Threshold("<=", 1e-4, "an exact identity (the patch classifier's weights as conv "
                                       "kernels) in float32 at highest precision: logits of order 10 round at ~1e-6"),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.scenes = ml_collections.ConfigDict({"n_train": 1000, "n_test": 200, "size": 32, "noise": 0.05, "seed": 0})
    c.model = ml_collections.ConfigDict({"channels": 16, "depth": 4})
    c.fcn = ml_collections.ConfigDict({"steps": 400, "batch_size": 8, "learning_rate": 3e-3})
    c.patch = ml_collections.ConfigDict({"steps": 2000, "batch_size": 128, "learning_rate": 3e-3})
    c.seeds = (0, 1, 2)  # initialization and batch order; the seeds train side by side (vmapped)
    c.large_size = 96
    c.n_large = 20
    c.timing_repeats = 5  # the speed-up is the ratio of the medians of interleaved repeats
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
        c.seeds = (0, 1)
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
    if len(config.seeds) < 2:
        raise ValueError("config.seeds needs at least two seeds (the accuracy claims take intervals)")
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
    loss_batch: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any, sample: Callable[[list, int], tuple],
    steps: int, batch_size: int, lr: float, seeds: tuple[int, ...],
) -> tuple[Any, np.ndarray]:
    """Adam on `loss_batch(params, x, y)`, one model per seed side by side: `params` is stacked over
    the seeds and `sample(rngs, b)` returns batches stacked the same way (seed s draws its batches
    from its own generator). A Python loop of jitted steps (for these small conv nets XLA's CPU
    backend runs a scan-compiled loop slower). Returns the stacked parameters and losses (steps, seeds)."""
    tx = optax.adam(lr)
    opt = jax.vmap(tx.init)(params)

    def one(p, o, xb, yb):
        value, g = jax.value_and_grad(loss_batch)(p, xb, yb)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, value

    step = jax.jit(jax.vmap(one))
    rngs = [np.random.default_rng(s) for s in seeds]
    losses = []
    for _ in range(steps):
        xb, yb = sample(rngs, batch_size)
        params, opt, value = step(params, opt, xb, yb)
        losses.append(value)
    return params, np.asarray(jax.device_get(losses), np.float64)


def confusion(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def median_times(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """The median wall time of each function over `repeats` interleaved calls (after a warm-up
    call each): interleaving exposes every function to the same load on a shared machine."""
    for fn in fns:
        jax.block_until_ready(fn())  # compile and warm up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def flop_ratio(depth: int, channels: int, in_channels: int = 3) -> float:
    """Multiply-adds per pixel of the patch classifier (its 3x3 VALID convs on a (2 depth + 1)^2
    patch: (2 depth - 1)^2, ..., 1 positions) over those of the FCN (one position per layer)."""
    fans = [9 * in_channels * channels] + [9 * channels * channels] * (depth - 1)
    per_patch = sum(f * (2 * (depth - i) - 1) ** 2 for i, f in enumerate(fans))
    return per_patch / sum(fans)


def stack(trees: list) -> Any:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


# ------------------------------------------------------------------------------------------ run


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    sc = config.scenes
    # The scenes are random draws: their seeds derive from config.scenes.seed (shifted by --seed-offset).
    xtr, ytr = make_scenes(sc.n_train, sc.size, seed=sc.seed, noise=sc.noise)
    xte, yte = make_scenes(sc.n_test, sc.size, seed=sc.seed + 1_000_003, noise=sc.noise)
    xl, yl = make_scenes(config.n_large, config.large_size, seed=sc.seed + 2_000_003, noise=sc.noise)
    k = len(CLASSES)
    depth, channels = int(config.model.depth), int(config.model.channels)
    r = fcn_radius(depth)
    p = 2 * r + 1
    fcn = get_model("fcn", num_classes=k, channels=channels, depth=depth)
    patch_clf = get_model("patch_classifier", num_classes=k, channels=channels, depth=depth)
    seeds = tuple(int(s) for s in config.seeds)

    def ce(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # 1. The FCN, trained on whole images (every pixel's label at once), and 2. the patch
    # classifier, trained on random patches labelled by their centre pixel; one model per seed.
    x_dev, y_dev = jnp.asarray(xtr), jnp.asarray(ytr)
    params0 = stack([init_params(fcn, xtr.shape[1:], s) for s in seeds])

    def sample_images(rngs, b):
        idx = np.stack([rng.integers(0, len(xtr), b) for rng in rngs])
        return x_dev[idx], y_dev[idx]

    x_pad = jnp.asarray(np.pad(xtr, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge"))
    cut = jax.jit(jax.vmap(jax.vmap(lambda i, a, b: jax.lax.dynamic_slice(x_pad[i], (a, b, 0), (p, p, 3)))))

    def sample_patches(rngs, b):
        i, a, c = _indices(rngs, b, len(xtr), sc.size)
        return cut(i, a, c), y_dev[i, a, c]

    trained, seconds = {}, {}
    for name, model, sample, opt in (("fcn", fcn, sample_images, config.fcn), ("patch", patch_clf, sample_patches,
                                                                              config.patch)):
        t0 = time.perf_counter()
        trained[name] = train(lambda prm, xb, yb, m=model: ce(m.apply({"params": prm}, xb), yb), params0, sample,
                              opt.steps, opt.batch_size, opt.learning_rate, seeds)
        seconds[name] = time.perf_counter() - t0
        workdir.metrics.write({"run": name, "losses_last_step": trained[name][1][-1].tolist(),
                               "train_seconds": seconds[name]})
    m = evaluate(config, fcn, patch_clf, trained, xte, yte, xl, yl, r)
    _figures(workdir, xte, yte, m["pred_fcn"], m["pred_patch"], xl, yl, m["pred_large"],
             trained["fcn"][1].mean(1), trained["patch"][1].mean(1))
    return _claims(config, m, seconds, p)


def _indices(rngs, b, n_images, size):
    """Per seed: image, row and column indices of `b` random patch centres, stacked (seeds, b)."""
    draws = [(rng.integers(0, n_images, b), rng.integers(0, size, b), rng.integers(0, size, b)) for rng in rngs]
    return tuple(np.stack([d[j] for d in draws]) for j in range(3))


def evaluate(config, fcn, patch_clf, trained, xte, yte, xl, yl, r) -> dict:
    """Per seed: pixel accuracy and mean IoU of both nets, the FCN on larger scenes, the patch
    classifier's weights run as an FCN; the timings (seed 0's weights: timing does not depend on them)."""
    k, p = len(CLASSES), 2 * r + 1
    h = w = config.scenes.size
    chunk = max(1, min(len(xte), 16))
    n_chunks = -(-len(xte) // chunk)
    xte_chunks = jnp.asarray(np.concatenate([xte, np.repeat(xte[-1:], n_chunks * chunk - len(xte), 0)])).reshape(
        n_chunks, chunk, h, w, 3)

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

    def seed(tree, i):
        return jax.tree.map(lambda a: a[i], tree)

    fcn_p, patch_p = trained["fcn"][0], trained["patch"][0]
    t_patch, t_fcn = median_times([lambda: patch_logits(seed(patch_p, 0), xte_chunks),
                                   lambda: fcn_logits(seed(fcn_p, 0), xte_chunks)], config.timing_repeats)
    out: dict[str, list] = {key: [] for key in ("acc_fcn", "acc_patch", "miou_fcn", "miou_patch", "acc_large",
                                                "miou_large", "same_fn_err", "iou_fcn")}
    large = jax.jit(fcn.apply)
    for i in range(len(config.seeds)):
        pf = unchunk(fcn_logits(seed(fcn_p, i), xte_chunks)).argmax(-1)
        pp = unchunk(patch_logits(seed(patch_p, i), xte_chunks)).argmax(-1)
        pl = np.asarray(large({"params": seed(fcn_p, i)}, jnp.asarray(xl))).argmax(-1)
        with jax.default_matmul_precision("highest"):  # an identity: full float32 on GPU/TPU too
            as_fcn = unchunk(fcn_logits(seed(patch_p, i), xte_chunks))
            per_patch = unchunk(patch_logits(seed(patch_p, i), xte_chunks))
        iou_f = iou_per_class(confusion(pf, yte, k))
        out["iou_fcn"].append(iou_f)
        out["acc_fcn"].append(float(np.mean(pf == yte)))
        out["acc_patch"].append(float(np.mean(pp == yte)))
        out["miou_fcn"].append(float(np.nanmean(iou_f)))
        out["miou_patch"].append(float(np.nanmean(iou_per_class(confusion(pp, yte, k)))))
        out["acc_large"].append(float(np.mean(pl == yl)))
        out["miou_large"].append(float(np.nanmean(iou_per_class(confusion(pl, yl, k)))))
        out["same_fn_err"].append(float(np.max(np.abs(as_fcn - per_patch))))
        if i == 0:
            out.update(pred_fcn=pf, pred_patch=pp, pred_large=pl)
    return {**out, "t_patch": t_patch, "t_fcn": t_fcn, "pixels": float(yte.size),
            "majority": float(np.bincount(yte.ravel(), minlength=k).max() / yte.size)}


def _claims(config, m, seconds, p) -> list[dict]:
    sc, th, k = config.scenes, THRESHOLDS, len(CLASSES)
    lo = th["min_pixel_accuracy"].value
    acc_f, acc_p = np.array(m["acc_fcn"]), np.array(m["acc_patch"])
    iou = np.nanmean(np.array(m["iou_fcn"]), axis=0)
    speedup = m["t_patch"] / m["t_fcn"]
    n = len(config.seeds)
    return [
        C.claim(
            "fcn_pixel_accuracy",
            f"A fully convolutional net trained on {sc.size}x{sc.size} scenes labels held-out pixels correctly "
            f"(>= {lo:.0%}); mean IoU over {k} classes reported",
            SOURCE, f"pixel accuracy >= {lo:.2f}; mean IoU >= {th['min_mean_iou'].value:.2f} (means over {n} seeds)",
            {"pixel_accuracy": acc_f, "mean_iou": m["miou_fcn"], **{f"iou_{c}": v for c, v in zip(CLASSES, iou)},
             "majority_class_fraction": m["majority"], "train_seconds": seconds["fcn"], "steps": config.fcn.steps},
            checks=[C.check("min_pixel_accuracy", acc_f, th["min_pixel_accuracy"], statistic="pixel accuracy"),
                    C.check("min_mean_iou", m["miou_fcn"], th["min_mean_iou"], statistic="mean IoU")],
        ),
        C.claim(
            "patch_classifier_same_accuracy",
            f"A classifier of the centre pixel of one {p}x{p} patch, run once per pixel, reaches the same "
            "pixel accuracy as the FCN",
            SOURCE, f">= {lo:.2f} and within 0.02 of the FCN (paired over {n} seeds)",
            {"pixel_accuracy_patch": acc_p, "pixel_accuracy_fcn": acc_f, "gap": acc_p - acc_f,
             "mean_iou_patch": m["miou_patch"], "train_seconds": seconds["patch"], "steps": config.patch.steps},
            checks=[C.check("min_pixel_accuracy", acc_p, th["min_pixel_accuracy"], statistic="patch pixel accuracy"),
                    C.check("accuracy_gap_low", acc_p - acc_f, th["accuracy_gap_low"], statistic="patch - FCN"),
                    C.check("accuracy_gap_high", acc_p - acc_f, th["accuracy_gap_high"], statistic="patch - FCN")],
        ),
        C.claim(
            "fcn_speedup",
            "Labelling every pixel at once with the FCN is far faster than classifying one patch per pixel",
            SOURCE, f"speed ratio (median patch time / median FCN time over {config.timing_repeats} interleaved "
            f"repeats) >= {th['min_speedup'].value:g}; a timing, decided by its value",
            {"speedup": speedup, "seconds_patch_classifier": m["t_patch"], "seconds_fcn": m["t_fcn"],
             "flop_ratio": flop_ratio(int(config.model.depth), int(config.model.channels)), "pixels": m["pixels"]},
            checks=[C.check("min_speedup", speedup, th["min_speedup"], random=False)],
        ),
        C.claim(
            "patch_classifier_is_a_convolution",
            "The patch classifier's weights applied as convolution kernels to the whole image give exactly its "
            "per-patch answers (W is a convolutional kernel applied to the full image)",
            "Lecture, convolutional networks", f"max |logit difference| over {n} trained nets <= 1e-4",
            {"max_abs_logit_difference": m["same_fn_err"]},
            checks=[C.check("same_function_error", max(m["same_fn_err"]), th["same_function_error"], random=False)],
        ),
        C.claim(
            "fcn_any_input_size",
            f"The FCN trained on {sc.size}x{sc.size} images labels {config.large_size}x{config.large_size} scenes "
            "as well",
            "Lecture: conv layers can be applied to arbitrarily-sized inputs",
            f"pixel accuracy >= {lo:.2f} (mean over {n} seeds)",
            {"pixel_accuracy_large": m["acc_large"], "mean_iou_large": m["miou_large"], "size": config.large_size},
            checks=[C.check("min_pixel_accuracy", m["acc_large"], th["min_pixel_accuracy"],
                            statistic="pixel accuracy (large)")],
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
