"""Normalizers against batch size (Wu & He 2018, Fig. 1): BatchNorm degrades as the batch shrinks, GroupNorm does not.

The same CNN (norm_cnn: three conv-norm-ReLU stages of 16, 32 and 64 channels with 2x max pooling
between them, global average pooling and the classifier) is trained with no normalizer, BatchNorm,
LayerNorm, InstanceNorm, GroupNorm and GroupNorm + Weight Standardization at batch sizes from 32
down to 2, with Wu & He's protocol: SGD with momentum, the learning rate 0.1 N / 32 (linear in the
batch size N), the same number of epochs at every batch size, the rate divided by 10 at 30%, 60%
and 90% of training, and BatchNorm evaluated with its running statistics. The task is MNIST-1D
with 20,000 sequences (16,000 to train, 4,000 to test; the package's own generator), hard enough
that the fit BatchNorm loses at batch 2 costs test error: on the 8x8 digits it does not (there
the lost fit shows only in the training loss). All normalizers and seeds of a batch size train side
by side in one `fit` (`SelectedNorm`: each normalizer is a choice of averaging over examples and
channels, so the choice is a call argument that differs per member). The lecture's figure of which
axes each normalizer averages over is drawn from the layers' own gradients (`statistics_mask`).

Every comparison is paired over seeds (a seed fixes the initial weights, shared by every
normalizer and batch size, and the order of the batches) and decided by a 95% t-interval.

    nnbasics run normalizers --quick
    nnbasics run normalizers --config.seeds='(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)'
"""

from __future__ import annotations

import ml_collections
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.nn.normalization import KINDS, NORM_AXES, statistics_mask
from nnbasics.runs import claims as C
from nnbasics.runs.plotting import subplots

TOPIC = "normalization"
ORDER = 60
SOURCE = "Wu & He 2018, Group Normalization, Figure 1 and Tables 1-2"
VARIANTS = {  # name -> (normalizer, weight standardization)
    "none": ("none", False),
    "batch": ("batch", False),
    "layer": ("layer", False),
    "instance": ("instance", False),
    "group": ("group", False),
    "group+ws": ("group", True),
}
# one colour per normalizer in both panels (the paper's panel draws BN, GN, LN, IN in these colours too)
COLORS = {"none": "C0", "batch": "C1", "layer": "C2", "instance": "C3", "group": "C4", "group+ws": "C5"}
LABELS = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm", "instance": "InstanceNorm",
          "group": "GroupNorm", "group+ws": "GroupNorm + WS"}
# Wu & He 2018, ResNet-50 on ImageNet, top-1 validation error (%): Table 2 (batch size per GPU)
# and Table 1 (batch 32, every normalizer).
PAPER_BATCH_SIZES = (32, 16, 8, 4, 2)
PAPER_ERROR = {"batch": (23.6, 23.7, 24.8, 27.3, 34.7), "group": (24.1, 24.2, 24.0, 24.2, 24.1)}
PAPER_ERROR_AT_32 = {"batch": 23.6, "layer": 25.3, "instance": 28.4, "group": 24.1}

# One point of test error, set when the study ran on the 360 test digits: the binomial standard error
# of one evaluation there at the 2-4% error this CNN reaches (sqrt(0.03 * 0.97 / 360) = 0.9 points).
# Wu & He's GroupNorm errors span 0.2 points over batch 32..2 (Table 2), about one standard error of
# their 50,000-image evaluation (0.19 points at 24% error): "unchanged" there means within one
# evaluation's noise. The band was kept, not re-derived, when the study moved to MNIST-1D's 4,000
# test sequences, where one standard error at ~3% error is ~0.3 points: the +-1 band is about three
# of them there, looser than the paper's one (the measured change is reported beside it).
SAME_WITHIN = 1.0
THRESHOLDS = {
    "bn_rise": C.Threshold(">", 0.0, "Wu & He Table 2: BatchNorm's error rises from 23.6% at batch 32 to 34.7% at "
                           "batch 2; the size of the rise depends on the task's error level, its sign does not"),
    "gn_change_up": C.Threshold("<=", SAME_WITHIN, "Wu & He Table 2: GroupNorm's error is 24.1% at batch 32 and "
                                "24.1% at batch 2 (24.0-24.2 in between), unchanged within one evaluation's binomial "
                                "standard error; ours is 1 point (one standard error on 360 test digits; ~3 on "
                                "MNIST-1D's 4,000 test sequences)"),
    "gn_change_down": C.Threshold(">=", -SAME_WITHIN, "the lower side of the same band (see gn_change_up)"),
    "gn_minus_bn_at_smallest": C.Threshold("<", 0.0, "Wu & He Table 2: at batch 2 GroupNorm's error is 10.6 points "
                                           "lower than BatchNorm's (24.1% vs 34.7%)"),
    "bn_train_loss_log_ratio": C.Threshold(">", 0.0, "Wu & He sec. 1 and 3: at small batches BatchNorm's batch "
                                           "statistics are inaccurate estimates, which hurts training; log "
                                           "(loss at the smallest batch / at the largest) > 0"),
    "gn_minus_bn_train_loss_log_ratio": C.Threshold("<", 0.0, "Wu & He sec. 3: GroupNorm's computation is "
                                                    "independent of the batch size, so its fit suffers less: "
                                                    "its log loss ratio below BatchNorm's"),
    "bn_minus_best_other_at_largest": C.Threshold("<=", SAME_WITHIN, "Wu & He Table 1 at batch 32: BatchNorm "
                                                  "23.6% is the best (GN 24.1, LN 25.3, IN 28.4); 'at least as good' "
                                                  "within one evaluation's standard error (~1 point here)"),
}

SWEEPS = {
    "epochs": [{"epochs": e} for e in (2, 4, 8)],
    "learning_rate": [{"learning_rate": lr} for lr in (0.02, 0.05, 0.1)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # MNIST-1D regenerated with 20,000 sequences by its own package (fixed generator seed: no data seed).
    # Also tried: the 8x8 digits (16/32 channels, 8 seeds): BatchNorm's test error does not rise at batch 2
    # (2.0% vs 2.5% at 32 at quick, -1.5 points [-3.3, 0.2] at the former full preset) although its
    # training loss does (0.04 -> 0.3): on that small, easy task the lost fit costs no test error. The
    # photos crops (16x16): test errors of 35-80% that differ by tens of points between seeds.
    c.data = "mnist1d"
    c.data_kwargs = ml_collections.ConfigDict({"num_samples": 20000})  # passed to load_dataset
    c.widths = (16, 32, 64)  # 40 -> 20 -> 10 positions: every normalizer averages over >= 10 per channel
    c.convs_per_stage = 1
    c.num_groups = 4
    c.variants = tuple(VARIANTS)
    c.batch_sizes = (32, 16, 8, 4, 2)
    c.every_variant_at_every_batch = True  # False: only BatchNorm and GroupNorm below the largest batch
    c.epochs = 4.0
    c.learning_rate = 0.1  # at batch 32, scaled linearly with the batch size (Wu & He: 0.1 N / 32)
    c.momentum = 0.9
    # constant, or "step": the rate divided by 10 at the fractions `decay_at` of each batch size's steps
    # (Wu & He train ImageNet 100 epochs and divide by 10 at epochs 30, 60 and 90)
    c.schedule = "step"
    c.decay_at = (0.3, 0.6, 0.9)
    c.seeds = tuple(range(8))
    c.conv_impl = "patches"
    # Wu & He's four test-error claims; False: only the training-fit claims (for tasks too easy for the
    # lost fit to cost test error, such as the digits)
    c.test_error_claims = True
    if preset == "quick":
        # BatchNorm and GroupNorm at batch 32 and 2 only (~2-3 min on one core): the four test-error claims
        # and the two fit claims; the other normalizers and the batch sizes between are the full preset's.
        # 8 seeds: the seed-count rule (docs/seed_counts.md) asked for 7 for GroupNorm's band, pooled over
        # 6 seeds at each of the offsets 0, 100 and 700.
        c.variants = ("batch", "group")
        c.batch_sizes = (32, 2)
        c.seeds = tuple(range(8))
    elif preset == "smoke":
        c.data = "digits"
        c.data_kwargs = ml_collections.ConfigDict()
        c.batch_sizes = (32, 4)
        c.every_variant_at_every_batch = False
        c.variants = ("batch", "group", "group+ws")
        c.widths = (4, 8)
        c.epochs = 0.5
        c.seeds = (0, 1)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    for v in config.variants:
        if v not in VARIANTS:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.variants: " + unknown_name_message("normalizer variant", v, list(VARIANTS)))
    for need in ("batch", "group"):
        if need not in config.variants:
            raise ValueError(f"config.variants must include {need!r} (the claims compare BatchNorm and GroupNorm)")
    if len(config.batch_sizes) < 2 or any(int(b) < 2 for b in config.batch_sizes):
        raise ValueError(f"config.batch_sizes needs at least two sizes >= 2, got {config.batch_sizes}")
    if not float(config.epochs) > 0:
        raise ValueError(f"config.epochs must be > 0, got {config.epochs}")
    if config.schedule not in ("constant", "step"):
        raise ValueError(f"config.schedule must be 'constant' or 'step', got {config.schedule!r}")
    if any(not 0 < float(f) < 1 for f in config.decay_at) or list(config.decay_at) != sorted(config.decay_at):
        raise ValueError(f"config.decay_at must be increasing fractions of training in (0, 1), got {config.decay_at}")
    if not 0 <= float(config.momentum) < 1:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum}")
    for w in config.widths:
        if int(w) % int(config.num_groups):
            raise ValueError(f"config.num_groups={config.num_groups} must divide every width, got {config.widths}")


def optimizer_config(config, lr: float, steps: int) -> dict:
    """SGD with momentum at `lr`; with schedule="step" the rate is divided by 10 at the fractions
    `config.decay_at` of this batch size's `steps` (Wu & He: epochs 30, 60, 90 of 100)."""
    optimizer = {"name": "momentum", "learning_rate": lr, "momentum": float(config.momentum)}
    if config.schedule == "step":
        optimizer.update(schedule="step", decay_factor=0.1,
                         decay_steps=tuple(max(1, round(float(f) * steps)) for f in config.decay_at))
    return optimizer


def _train_batch_size(model, data, config, workdir, b: int, names: list[str]) -> tuple[dict, dict, dict]:
    """Every normalizer in `names` and every seed at batch size `b`, side by side in one `fit`
    (the normalizer is a call argument of the switchable net, one per member). Returns per
    normalizer the test errors (%), the training loss over the last ~20% of steps (one chunk
    between evaluations) per seed, and the summary row."""
    largest = max(int(v) for v in config.batch_sizes)
    steps = max(1, round(float(config.epochs) * len(data.x_train) / b))
    lr = float(config.learning_rate) * b / largest
    members = [{"model": {"kind": KINDS.index(VARIANTS[v][0]), "ws": VARIANTS[v][1]}} for v in names]
    tc = TrainConfig(steps=steps, batch_size=b, eval_every=-(-steps // 5), seeds=tuple(int(s) for s in config.seeds),
                     members=members, optimizer=optimizer_config(config, lr, steps))
    res = fit(model, data, tc, workdir=workdir, tag=f"batch_{b}")
    n = len(config.seeds)
    err = 100.0 * (1.0 - res.final("test_accuracy"))
    loss = res.final("train_loss")  # the mean over the last chunk: the last ~20% of the steps
    errors = {v: err[i * n:(i + 1) * n] for i, v in enumerate(names)}
    fit_loss = {v: loss[i * n:(i + 1) * n] for i, v in enumerate(names)}
    rows = [{"variant": v, "batch_size": b, "steps": steps, "learning_rate": lr, "seed": list(config.seeds),
             "test_error": errors[v].tolist(), "final_train_loss": fit_loss[v].tolist()} for v in names]
    return errors, fit_loss, rows


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data, **config.data_kwargs.to_dict())
    model = get_model("norm_cnn", num_classes=data.num_classes, norm="selected", widths=tuple(config.widths),
                      convs_per_stage=int(config.convs_per_stage), num_groups=int(config.num_groups),
                      conv_impl=config.conv_impl)
    sizes = sorted({int(b) for b in config.batch_sizes}, reverse=True)
    errors: dict[tuple[str, int], np.ndarray] = {}
    fit_loss: dict[tuple[str, int], np.ndarray] = {}  # training loss over the last 20% of steps
    for b in sizes:
        names = [v for v in config.variants if config.every_variant_at_every_batch or b == sizes[0]
                 or v in ("batch", "group")]
        err, loss, rows = _train_batch_size(model, data, config, workdir, b, names)
        errors.update({(v, b): e for v, e in err.items()})
        fit_loss.update({(v, b): v_loss for v, v_loss in loss.items()})
        for row in rows:
            workdir.metrics.write(row)
    # the consequence (test error, Wu & He's figure) where the task shows it, and always its cause: the fit
    # that BatchNorm's noisy batch statistics cost at small batches
    claims = (_claims(errors, sizes, config) if config.test_error_claims else []) + _fit_claims(
        fit_loss, errors, sizes, test_error_claimed=bool(config.test_error_claims))
    _error_figure(workdir, errors, config, sizes, claims)
    _axes_figure(workdir)
    return claims


def _check(name, samples):
    return C.check(name, samples, THRESHOLDS[name])


def _fit_claims(fit_loss, errors, sizes, test_error_claimed: bool = False) -> list[dict]:
    """The training fit BatchNorm loses at small batches (GroupNorm does not), paired over seeds."""
    largest, smallest = sizes[0], sizes[-1]
    log_ratio = {v: np.log(fit_loss[(v, smallest)] / fit_loss[(v, largest)]) for v in ("batch", "group")}
    errs = {f"{v}_test_error": [float(np.mean(errors[(v, b)])) for b in sizes] for v in ("batch", "group")}
    not_here = ("" if test_error_claimed else
                f". Wu & He's test-error rise is not claimed here (BatchNorm's test error at batch {smallest} "
                f"{errs['batch_test_error'][-1]:.2f}% vs {errs['batch_test_error'][0]:.2f}% at {largest}; on an easy "
                "task such as the digits the lost fit costs no test error)")
    return [
        C.claim(
            "bn_fit_suffers_at_small_batch",
            f"BatchNorm's training loss rises as the batch shrinks from {largest} to {smallest}" + not_here,
            SOURCE, "log(train loss at the smallest batch / at the largest) {bn_train_loss_log_ratio}, paired over seeds",
            {"batch_sizes": [float(b) for b in sizes], "bn_train_loss": [float(np.mean(fit_loss[("batch", b)]))
                                                                        for b in sizes],
             "bn_log_ratio": log_ratio["batch"], **errs},
            checks=[_check("bn_train_loss_log_ratio", log_ratio["batch"])],
        ),
        C.claim(
            "gn_fit_suffers_less",
            f"GroupNorm's training loss suffers less than BatchNorm's from batch {largest} to {smallest}",
            SOURCE, "log loss ratio (smallest / largest batch) of GN minus BN's {gn_minus_bn_train_loss_log_ratio}, "
            "paired over seeds",
            {"gn_train_loss": [float(np.mean(fit_loss[("group", b)])) for b in sizes],
             "gn_minus_bn_log_ratio": log_ratio["group"] - log_ratio["batch"]},
            checks=[_check("gn_minus_bn_train_loss_log_ratio", log_ratio["group"] - log_ratio["batch"])],
        ),
    ]


def _claims(errors, sizes, config) -> list[dict]:
    largest, smallest = sizes[0], sizes[-1]
    bn = {b: errors[("batch", b)] for b in sizes}
    gn = {b: errors[("group", b)] for b in sizes}
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    rise = bn[smallest] - bn[largest]  # per seed (paired: same initial weights and batch order)
    gn_change = gn[smallest] - gn[largest]
    others = {v: mean[(v, largest)] for v in config.variants if v != "batch"}
    best_other = min(others, key=others.get)
    bn_vs_best = errors[("batch", largest)] - errors[(best_other, largest)]
    sizes_f = [float(b) for b in sizes]
    paper = f"Wu & He: {PAPER_ERROR['batch'][0]}% -> {PAPER_ERROR['batch'][-1]}% (batch 32 -> 2)"
    return [
        C.claim(
            "bn_error_rises_at_small_batch",
            f"BatchNorm's error rises as the batch shrinks from {largest} to {smallest}",
            SOURCE, f"error(batch {smallest}) - error(batch {largest}) " "{bn_rise} points, " f"paired over seeds ({paper})",
            {"batch_sizes": sizes_f, "bn_error": [mean[("batch", b)] for b in sizes], "bn_rise": rise},
            checks=[_check("bn_rise", rise)],
        ),
        C.claim(
            "gn_error_stable_across_batch",
            f"GroupNorm's error stays within a band of +-{SAME_WITHIN:g} point from batch {largest} to {smallest}",
            SOURCE, f"-{SAME_WITHIN:g} <= error(batch {smallest}) - error(batch {largest}) <= {SAME_WITHIN:g}, paired "
            f"over seeds (Wu & He: {PAPER_ERROR['group'][0]}% -> {PAPER_ERROR['group'][-1]}%)",
            {"batch_sizes": sizes_f, "gn_error": [mean[("group", b)] for b in sizes], "gn_change": gn_change},
            checks=[_check("gn_change_up", gn_change), _check("gn_change_down", gn_change)],
        ),
        C.claim(
            "gn_beats_bn_at_smallest_batch",
            f"At batch {smallest} GroupNorm is better than BatchNorm",
            SOURCE, "error(GN) - error(BN) {gn_minus_bn_at_smallest} "
            f"at batch {smallest}, paired over seeds (Wu & He at batch 2: 24.1% vs 34.7%)",
            {"gn_error": mean[("group", smallest)], "bn_error": mean[("batch", smallest)],
             "gn_minus_bn": gn[smallest] - bn[smallest]},
            checks=[_check("gn_minus_bn_at_smallest", gn[smallest] - bn[smallest])],
        ),
        C.claim(
            "bn_at_least_as_good_at_large_batch",
            f"At batch {largest} BatchNorm is at least as good as the other normalizers",
            SOURCE, f"error(BN) - error(best other) <= {SAME_WITHIN:g} point at batch {largest}, paired over seeds "
            "(Wu & He Table 1: BN 23.6%, GN 24.1%, LN 25.3%, IN 28.4%)",
            {"bn_error": mean[("batch", largest)], "best_other_error": others[best_other],
             "bn_minus_best_other": bn_vs_best, **{f"{v}_error": e for v, e in others.items()}},
            checks=[_check("bn_minus_best_other_at_largest", bn_vs_best)],
            best_other=best_other,
        ),
    ]


def _error_figure(workdir, errors, config, sizes, claims) -> None:
    """Left: this study (mean and 95% t-interval over seeds); right: Wu & He's ResNet-50 numbers."""
    fig, (ax, axp) = subplots(1, 2, size=(5.6, 4.4))
    for v in config.variants:
        bs = [b for b in sizes if (v, b) in errors]
        stats = [C.interval(errors[(v, b)]) for b in bs]
        m = np.array([s["mean"] for s in stats])
        style = {"marker": "o", "lw": 2 if v in ("batch", "group") else 1, "ms": 5 if len(bs) > 1 else 7}
        (line,) = ax.plot(bs, m, label=LABELS[v], color=COLORS[v], **style)
        if len(errors[(v, bs[0])]) > 1:
            lo, hi = np.array([s["ci"] for s in stats]).T
            ax.errorbar(bs, m, yerr=[m - lo, hi - m], fmt="none", color=line.get_color(), capsize=3, lw=1)
            ax.fill_between(bs, lo, hi, color=line.get_color(), alpha=0.12, lw=0)
    verdicts = {c["id"]: c["verdict"] for c in claims}
    bn = [float(np.mean(errors[("batch", b)])) for b in sizes]
    gn = [float(np.mean(errors[("group", b)])) for b in sizes]
    verdict_bn = verdicts.get("bn_error_rises_at_small_batch", "not claimed at this preset")
    verdict_gn = verdicts.get("gn_error_stable_across_batch", "not claimed at this preset")
    ax.set_title(f"this study: {config.data}, {len(config.seeds)} seeds (mean, 95% interval)\n"
                 f"BN {bn[0]:.1f}% -> {bn[-1]:.1f}% ({verdict_bn}), "
                 f"GN {gn[0]:.1f}% -> {gn[-1]:.1f}% ({verdict_gn})", fontsize=9)
    for v, other in (("batch", "group"), ("group", "batch")):
        for b, e, e_other in zip(PAPER_BATCH_SIZES, PAPER_ERROR[v], PAPER_ERROR[other]):
            dy = 7 if e >= e_other else -12  # the higher curve's number above it, the lower's below
            axp.annotate(f"{e:g}", (b, e), textcoords="offset points", xytext=(0, dy), ha="center", fontsize=7,
                         color=COLORS[v])
    for v in ("batch", "group"):
        axp.plot(PAPER_BATCH_SIZES, PAPER_ERROR[v], "o-", color=COLORS[v], lw=2, label=LABELS[v])
    for v in ("layer", "instance"):
        axp.plot([32], [PAPER_ERROR_AT_32[v]], "s", color=COLORS[v], label=f"{LABELS[v]} (batch 32 only)")
    paper_values = [*PAPER_ERROR["batch"], *PAPER_ERROR["group"], *PAPER_ERROR_AT_32.values()]
    axp.set_ylim(min(paper_values) - 1.5, max(paper_values) + 2.5)  # room for the numbers above and below
    axp.set_title("Wu & He 2018 (Fig. 1, Tables 1-2):\nResNet-50, ImageNet validation error", fontsize=9)
    for a, ticks in ((ax, sizes), (axp, PAPER_BATCH_SIZES)):
        a.set_xscale("log", base=2)
        a.set_xticks(ticks, [str(b) for b in ticks])
        a.minorticks_off()
        a.invert_xaxis()
        a.set(xlabel="batch size (examples per step)", ylabel="test error (%)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    workdir.save_figure(fig, "error_vs_batch_size")


def _axes_figure(workdir) -> None:
    """Wu & He's Figure 2 from the code: the activations sharing one activation's statistics."""
    import matplotlib.pyplot as plt

    n, h, w, c, g = 5, 2, 3, 6, 3
    idx = (1, 1, 1, 1)
    fig = plt.figure(figsize=(14, 3.8))
    for i, norm in enumerate(("batch", "layer", "instance", "group")):
        mask = statistics_mask(norm, (n, h, w, c), idx, **({"num_groups": g} if norm == "group" else {}))
        cube = mask.reshape(n, h * w, c).transpose(0, 2, 1)  # axes: N, C, H*W
        ax = fig.add_subplot(1, 4, i + 1, projection="3d")
        ax.voxels(cube, facecolors=(0.2, 0.45, 0.85, 0.85), edgecolor=(0.1, 0.2, 0.4, 0.6), linewidth=0.4)
        ax.voxels(~cube, facecolors=(0.8, 0.8, 0.8, 0.06), edgecolor=(0.5, 0.5, 0.5, 0.15), linewidth=0.2)
        ax.set_xlabel("N (examples)", fontsize=8)
        ax.set_ylabel("C (channels)", fontsize=8)
        ax.set_zlabel("H,W", fontsize=8, labelpad=-4)
        ax.set(xticks=[], yticks=[], zticks=[])
        axes = ", ".join(NORM_AXES[norm]).replace("C/G", f"C/G (G={g})")
        ax.set_title(f"{norm.capitalize()} Norm\nmean, var over ({axes})", fontsize=9)
        ax.view_init(elev=22, azim=-58)
    fig.suptitle("Which activations share the statistics of one activation (blue), from each layer's gradient",
                 fontsize=10)
    workdir.save_figure(fig, "normalizer_axes")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
