"""Semantic segmentation: a patch classifier against a fully convolutional net (sky/cloud/bird/ground).

The lecture's "what is the object class of the centre pixel?": procedurally generated outdoor
scenes (`scenes` data set) with per-pixel labels. A patch classifier (a small conv net on one
9x9 patch, trained on random patches) is run once per pixel; a fully convolutional net with the
same architecture is trained on whole images and labels every pixel at once. Both reach the same
pixel accuracy on held-out scenes, the FCN is far faster (speed ratio measured), the patch
classifier's own weights run as an FCN give exactly its per-pixel answers ("W is a
convolutional kernel applied to the full image"), and the FCN runs on images larger than it was
trained on.

Both nets train through the engine's `fit` (Adam, the seeds side by side), so they stop on a NaN
loss, checkpoint, honour Ctrl-C and write the standard metrics rows (tags `fcn` and `patch`). The
FCN's training set is the training scenes themselves (batches of whole images, drawn without
replacement per epoch). The patch classifier's is a fixed set of `patch.steps * patch.batch_size`
patches pre-sampled once from the training scenes, centres uniform over every image and pixel
(independent draws, as the per-step sampling before), so one epoch covers the run: every step
still sees fresh random patches, and every seed sees the same patches in its own order (the
seeds vary initialization and batch order; the FCN and the patch classifier of one seed start
from the same weights, the engine's He-normal init). Memory: 972 bytes a patch, about 75 MB
quick and 250 MB full. The claims are measured by this module's evaluation on every pixel of the
held-out scenes; the metrics rows of the patch classifier evaluate a fixed sample of 2048
held-out patches. On a CPU the engine's scan-compiled chunks run these small conv nets about 2-3x
slower per step than a Python loop of jitted steps (the quick preset: ~100 s of CPU, ~60 before).

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

from nnbasics.data import ArrayDataset
from nnbasics.data.scenes import CLASSES, make_scenes
from nnbasics.engine import TrainConfig, TrainResult, fit, validate_train_config
from nnbasics.models import get_model
from nnbasics.models.fcn import fcn_radius
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
    # eval_every: steps between the metrics rows (each evaluates the held-out set and checks for NaN)
    # step_mode: the FCN trains one compiled step per dispatch, 3.5x faster on a 2-core CPU than a compiled
    # loop of steps, whose body XLA:CPU compiles less well for this net (the same numbers to float rounding)
    c.fcn = ml_collections.ConfigDict({"steps": 400, "batch_size": 8, "learning_rate": 3e-3, "eval_every": 50,
                                       "step_mode": "step"})
    c.patch = ml_collections.ConfigDict({"steps": 2000, "batch_size": 128, "learning_rate": 3e-3, "eval_every": 250,
                                         "step_mode": "chunk"})
    c.seeds = (0, 1, 2)  # initialization and batch order; the seeds train side by side (vmapped)
    c.large_size = 96
    c.n_large = 20
    c.timing_repeats = 5  # the speed-up is the ratio of the medians of interleaved repeats
    if preset == "quick":
        c.scenes.n_train, c.scenes.n_test = 400, 100
        c.fcn.steps = 150
        c.patch.steps, c.patch.eval_every = 600, 150
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
    seeds = tuple(int(s) for s in config.seeds)
    validate_train_config(train_config(config.fcn, seeds), num_train=config.scenes.n_train)
    validate_train_config(train_config(config.patch, seeds))


# ------------------------------------------------------------------------------------- helpers


def all_patches(x_padded: jax.Array, size: int, height: int, width: int) -> jax.Array:
    """Every size x size patch of padded images (n, H+2r, W+2r, C): one per pixel, (n*H*W, size, size, C)."""
    rows = [x_padded[:, i:i + height] for i in range(size)]  # each (n, H, W+2r, C)
    patches = jnp.stack([jnp.stack([r[:, :, j:j + width] for j in range(size)], axis=3) for r in rows], axis=3)
    n, c = x_padded.shape[0], x_padded.shape[-1]
    return patches.reshape(n * height * width, size, size, c)  # (n, H, W, size, size, C) flattened


def train_config(opt: ml_collections.ConfigDict, seeds: tuple[int, ...]) -> TrainConfig:
    """The engine's TrainConfig of one net: Adam at `opt.learning_rate`, per-pixel cross-entropy."""
    return TrainConfig(steps=int(opt.steps), batch_size=int(opt.batch_size), eval_every=int(opt.eval_every),
                       seeds=seeds, optimizer={"name": "adam", "learning_rate": float(opt.learning_rate)},
                       loss="cross_entropy", step_mode=str(opt.step_mode))


def sample_patches(x: np.ndarray, y: np.ndarray, n: int, radius: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` patches of (2 radius + 1)^2 pixels of images x (N, H, W, C) (edge-padded by `radius`),
    centres drawn independently and uniformly over every image and pixel, each labelled by its
    centre pixel's class: (n, P, P, C) float32 and (n,) int32."""
    rng = np.random.default_rng(seed)
    i, a, b = (rng.integers(0, m, n) for m in y.shape)
    xp = np.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    p = 2 * radius + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (p, p), axis=(1, 2))  # (N, H, W, C, P, P), no copy
    return np.ascontiguousarray(windows[i, a, b].transpose(0, 2, 3, 1), np.float32), y[i, a, b].astype(np.int32)


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
    fcn = get_model("fcn", num_classes=k, channels=channels, depth=depth)
    patch_clf = get_model("patch_classifier", num_classes=k, channels=channels, depth=depth)
    seeds = tuple(int(s) for s in config.seeds)
    # 1. The FCN, trained on whole images (every pixel's label at once), and 2. the patch
    # classifier, trained on random patches labelled by their centre pixel; one model per seed.
    data = training_sets(config, xtr, ytr, xte, yte)
    results = {name: fit(model, data[name], train_config(config[name], seeds), workdir=workdir, tag=name)
               for name, model in (("fcn", fcn), ("patch", patch_clf))}
    params = {name: [res.member_state(i).params for i in range(len(seeds))] for name, res in results.items()}
    m = evaluate(config, fcn, patch_clf, params, xte, yte, xl, yl, r)
    _figures(workdir, xte, yte, m["pred_fcn"], m["pred_patch"], xl, yl, m["pred_large"], results)
    return _claims(config, m, {name: res.seconds for name, res in results.items()}, 2 * r + 1)


def training_sets(config: ml_collections.ConfigDict, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                  yte: np.ndarray) -> dict[str, ArrayDataset]:
    """What `fit` trains each net on: the FCN the scenes themselves (per-pixel labels); the patch
    classifier `steps * batch_size` patches of the training scenes (one epoch: fresh patches every
    step), evaluated in the metrics rows on a fixed sample of patches of the held-out scenes."""
    sc, r, n = config.scenes, fcn_radius(int(config.model.depth)), int(config.patch.steps) * int(config.patch.batch_size)
    k = len(CLASSES)
    px, py = sample_patches(xtr, ytr, n, r, seed=sc.seed + 3_000_003)
    px_te, py_te = sample_patches(xte, yte, min(2048, yte.size), r, seed=sc.seed + 4_000_003)
    return {"fcn": ArrayDataset("scenes", xtr, ytr, xte, yte, num_classes=k, task="segmentation"),
            "patch": ArrayDataset("scenes_patches", px, py, px_te, py_te, num_classes=k)}


def evaluate(config, fcn, patch_clf, params, xte, yte, xl, yl, r) -> dict:
    """Per seed: pixel accuracy and mean IoU of both nets, the FCN on larger scenes, the patch
    classifier's weights run as an FCN; the timings (seed 0's weights: timing does not depend on them).
    `params` maps "fcn" and "patch" to the trained parameters, one per seed."""
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

    fcn_p, patch_p = params["fcn"], params["patch"]
    t_patch, t_fcn = median_times([lambda: patch_logits(patch_p[0], xte_chunks),
                                   lambda: fcn_logits(fcn_p[0], xte_chunks)], config.timing_repeats)
    out: dict[str, list] = {key: [] for key in ("acc_fcn", "acc_patch", "miou_fcn", "miou_patch", "acc_large",
                                                "miou_large", "same_fn_err", "iou_fcn")}
    large = jax.jit(fcn.apply)
    for i in range(len(config.seeds)):
        pf = unchunk(fcn_logits(fcn_p[i], xte_chunks)).argmax(-1)
        pp = unchunk(patch_logits(patch_p[i], xte_chunks)).argmax(-1)
        pl = np.asarray(large({"params": fcn_p[i]}, jnp.asarray(xl))).argmax(-1)
        with jax.default_matmul_precision("highest"):  # an identity: full float32 on GPU/TPU too
            as_fcn = unchunk(fcn_logits(patch_p[i], xte_chunks))
            per_patch = unchunk(patch_logits(patch_p[i], xte_chunks))
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
            SOURCE, f">= {lo:.2f} and " "patch - FCN {accuracy_gap_low} and {accuracy_gap_high} " f"(paired over {n} seeds)",
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
            "Lecture, convolutional networks", f"max |logit difference| over {n} trained nets " "{same_function_error}",
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


def _figures(workdir, xte, yte, pred_fcn, pred_patch, xl, yl, pred_large, results: dict[str, TrainResult]) -> None:
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
    for name, label in (("fcn", "FCN (whole images)"), ("patch", "patch classifier (one patch per example)")):
        steps, losses = results[name].curve("train_loss")  # (members, eval points)
        ax.plot(steps, losses.mean(0), marker="o", label=label)
    ax.set(xlabel="training step", ylabel="cross-entropy (training batches,\nmean since the previous point)",
           yscale="log", title="Training loss: FCN vs patch classifier (mean over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "training_loss")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
