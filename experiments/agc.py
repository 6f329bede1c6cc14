"""Adaptive gradient clipping (Brock et al. 2021): NF-ResNets at large batch need AGC, at small batch not.

An NF-ResNet at a large batch and a high learning rate diverges without AGC and trains with it;
at a small batch (and the linearly scaled, smaller learning rate) clipping is not needed.

An NF-ResNet (Scaled WS, alpha = 0.2, no normalization layers) on the 8x8 digits, SGD with
momentum 0.9, the learning rate scaled linearly with the batch size, the same epochs at both
batch sizes. One `fit` trains every (lambda, batch size, seed) side by side in one compiled program:
AGC (`nnbasics.engine.agc`) unit-wise on the raw gradients with the logits layer unclipped, lambda = inf
being plain SGD; a large batch is the average gradient of several small micro-batches (gradient
accumulation, exact here: the network has no batch-dependent layer).
The paper finds AGC necessary to train NF-ResNets at large batches, with smaller lambda needed
for larger batches, and little effect at small batches. Every comparison is paired over seeds
(a seed fixes the initial weights and the batch order, shared by every lambda and batch size) and
decided by a 95% t-interval; a diverged run counts as chance-level accuracy.

    nnbasics run agc --quick
    nnbasics run agc --config.clips='(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)'
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.runs import claims as C
from nnbasics.runs.plotting import subplots

TOPIC = "normalization"
ORDER = 64
SOURCE = "Brock, De, Smith & Simonyan 2021, NFNets, section 4.1 and Figure 2"

# "Equal within 3 points" of test accuracy: about 2.5 binomial standard errors of one evaluation on
# the 360 test digits at the ~6% error these NF-ResNets reach (sqrt(0.06 * 0.94 / 360) = 1.25).
SAME_WITHIN = 3.0
THRESHOLDS = {
    "agc_gain_at_large_batch": C.Threshold(">=", 10.0, "Brock et al. 2021, Fig. 2(a) and section 4.1: without AGC "
                                           "NF-ResNets cannot be trained at large batch sizes (they degrade or "
                                           "diverge) while with AGC they match BN-ResNets; 10 points of accuracy is "
                                           "a failure no seed or rounding noise explains"),
    "agc_large_vs_no_agc_small": C.Threshold(">=", -SAME_WITHIN, "Brock et al. 2021, Fig. 2(a): with AGC the "
                                             "NF-ResNet's accuracy at large batch stays close to its small-batch "
                                             "accuracy; 'close' = within 3 points (2.5 standard errors of one "
                                             "evaluation on 360 test digits)"),
    "agc_gain_at_small_batch": C.Threshold("<=", SAME_WITHIN, "Brock et al. 2021, section 4.1 and Fig. 2(b): at "
                                           "small batch sizes the unclipped NF-ResNet trains and clipping brings "
                                           "little; 'little' = within 3 points (2.5 standard errors of one "
                                           "evaluation on 360 test digits)"),
}

SWEEPS = {"learning_rate": [{"learning_rate": lr} for lr in (0.05, 0.1, 0.2)]}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "digits"  # a fixed, published data set: no data seed
    c.depth = 8  # 6n + 2: one NF block per stage (16/32/64 channels at 8x8/4x4/2x2)
    c.width = 16
    c.alpha = 0.2
    c.clips = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)  # lambda grid; plain SGD (no AGC) is always added
    c.large_batch = 256
    c.small_batch = 32
    c.learning_rate = 0.1  # at the small batch; scaled linearly with the batch size (0.8 at 256)
    c.momentum = 0.9
    c.large_batch_steps = 100  # about 18 epochs of the 1437 training digits
    c.eval_every = 10  # steps of the large batch (the small batch evaluates at the same epochs)
    c.seeds = tuple(range(8))
    # AGC at the large batch against the unclipped small batch, at equal epochs (8x fewer updates):
    # at quick's 60 large-batch steps it trails by 2-4 points (8 seeds, offsets 0/100/200), which decides
    # nothing about stability, so quick checks only that no seed diverges and full makes the comparison
    c.compare_with_small_batch = True
    c.conv_impl = "patches"  # fastest on CPU for these 8x8 maps (measured: 72 us/image vs 137 chunked)
    if preset == "quick":
        c.width = 8
        c.clips = (0.01, 0.16)
        c.large_batch_steps = 60
        c.seeds = tuple(range(8))
        c.compare_with_small_batch = False
    elif preset == "smoke":
        c.clips = (0.04,)
        c.depth = 8
        c.width = 4
        c.large_batch = 64
        c.small_batch = 32
        c.large_batch_steps = 4
        c.eval_every = 2
        c.seeds = (0, 1)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.clips or any(not float(c) > 0 for c in config.clips):
        raise ValueError(f"config.clips must be a non-empty list of positive thresholds, got {config.clips}")
    if int(config.small_batch) >= int(config.large_batch) or int(config.large_batch) % int(config.small_batch):
        raise ValueError(f"config.small_batch ({config.small_batch}) must divide large_batch ({config.large_batch}) "
                         "and be smaller")
    if not 0 <= float(config.momentum) < 1:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum}")
    if int(config.eval_every) > int(config.large_batch_steps) or int(config.large_batch_steps) % int(config.eval_every):
        raise ValueError("config.eval_every must divide config.large_batch_steps")


def train_grid(model, data, config, workdir, clips: list[float], ratio: int) -> dict:
    """Train every (batch size, lambda, seed) side by side in one `fit` (one compiled program).

    Every member sees the same number of micro-batches of `small_batch` images; the large batch is
    `ratio` of them averaged before each update (gradient accumulation, exactly large-batch SGD: the
    NF-ResNet has no batch-dependent layer) at the linearly scaled rate ratio x learning_rate.
    lambda = inf is plain SGD (agc_clip 0: AGC off). A diverging member does not stop the others.
    Returns the members' settings, their training loss and test accuracy (%) per eval point."""
    lr = float(config.learning_rate)
    members = [{"agc_clip": 0.0 if math.isinf(c) else c, "accumulate": k, "learning_rate": lr * k}
               for k in (ratio, 1) for c in clips]
    tc = TrainConfig(
        steps=int(config.large_batch_steps) * ratio, batch_size=int(config.small_batch),
        eval_every=int(config.eval_every) * ratio, seeds=tuple(int(s) for s in config.seeds), members=members,
        optimizer={"name": "momentum", "learning_rate": lr, "momentum": float(config.momentum)}, stop_on_nan=False)
    res = fit(model, data, tc, workdir=workdir, tag="nf_resnet")
    steps, loss = res.curve("train_loss")
    _, acc = res.curve("test_accuracy")
    runs = [(math.inf if m["agc_clip"] == 0 else m["agc_clip"], m["seed"], m.get("accumulate", 1)) for m in res.members]
    return {"runs": runs, "loss": loss, "test_accuracy": 100.0 * acc, "eval_steps": steps}


def _summary(res: dict, clip: float, k: int) -> dict:
    """Accuracy of one (clip, batch) cell: per seed the mean test accuracy over the evaluations of
    the last 20% of training (at least the final one; steadier than the final value alone), a
    diverged seed at chance level; their mean over seeds and the number of diverged seeds."""
    rows = [i for i, (c, _, kk) in enumerate(res["runs"]) if c == clip and kk == k]
    finite = np.all(np.isfinite(res["loss"][rows]), axis=1)
    n_last = max(1, math.ceil(0.2 * res["test_accuracy"].shape[1]))
    acc = np.where(finite, res["test_accuracy"][rows, -n_last:].mean(axis=1), 10.0)
    acc = np.where(np.isfinite(acc), acc, 10.0)
    return {"accuracy": float(np.mean(acc)), "diverged": int(np.sum(~finite)), "per_seed": acc.tolist()}


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)
    model = get_model("nf_resnet", num_classes=data.num_classes, depth=int(config.depth), width=int(config.width),
                      alpha=float(config.alpha), conv_impl=config.conv_impl)
    clips = [math.inf] + [float(c) for c in config.clips]
    ratio = int(config.large_batch) // int(config.small_batch)  # the large batch = `ratio` small micro-batches
    res = train_grid(model, data, config, workdir, clips, ratio)
    summaries = {}
    for name, k in (("large", ratio), ("small", 1)):
        summaries[name] = {c: _summary(res, c, k) for c in clips}
        for c, s in summaries[name].items():
            workdir.metrics.write({"batch": name, "batch_size": int(config.small_batch) * k,
                                   "clip": "none" if math.isinf(c) else c, **s})
    _figure(workdir, res, clips, ratio, config)
    return _claims(summaries, clips, config)


def _label(c: float) -> str:
    return "no AGC" if math.isinf(c) else f"AGC lambda={c:g}"


def _check(name, samples):
    return C.check(name, samples, THRESHOLDS[name])


def _claims(summaries, clips, config) -> list[dict]:
    lg, sm = summaries["large"], summaries["small"]
    agc_clips = [c for c in clips if not math.isinf(c)]
    best_large = max(agc_clips, key=lambda c: lg[c]["accuracy"])
    best_small = max(agc_clips, key=lambda c: sm[c]["accuracy"])
    per_seed = {(name, c): np.asarray(summaries[name][c]["per_seed"]) for name in summaries for c in clips}
    gain_large = per_seed[("large", best_large)] - per_seed[("large", math.inf)]  # paired over seeds
    large_vs_small = per_seed[("large", best_large)] - per_seed[("small", math.inf)]
    gain_small = per_seed[("small", best_small)] - per_seed[("small", math.inf)]
    lr_large = config.learning_rate * config.large_batch / config.small_batch
    lg_acc = {f"accuracy_lambda_{c:g}": lg[c]["accuracy"] for c in agc_clips}
    sm_acc = {f"accuracy_lambda_{c:g}": sm[c]["accuracy"] for c in agc_clips}
    return [
        C.claim(
            "no_agc_fails_at_large_batch",
            f"At batch {config.large_batch} and learning rate {lr_large:g} the NF-ResNet diverges or degrades "
            "without AGC",
            SOURCE, "accuracy(best lambda) - accuracy(no AGC) {agc_gain_at_large_batch} points at the large batch, "
            "paired over seeds",
            {"no_agc_accuracy": lg[math.inf]["accuracy"], "no_agc_diverged_seeds": lg[math.inf]["diverged"],
             "best_agc_accuracy": lg[best_large]["accuracy"], "best_lambda": best_large, "gain": gain_large},
            checks=[_check("agc_gain_at_large_batch", gain_large)],
        ),
        C.claim(
            "agc_trains_stably_at_large_batch",
            f"With AGC the NF-ResNet trains stably at batch {config.large_batch}: no seed diverges"
            + (f" and it comes within {SAME_WITHIN:g} points of the unclipped small-batch run"
               if config.compare_with_small_batch else
               f" (the comparison with the small batch at equal epochs is made at the full preset: after "
               f"{config.large_batch_steps} large-batch steps, 8x fewer updates, it trails by "
               f"{-float(np.mean(large_vs_small)):.1f} points here)"),
            SOURCE, "every seed finite at the best lambda" + (
                f", and accuracy(batch {config.large_batch}, best lambda) - accuracy(batch {config.small_batch}, "
                f"no AGC) >= -{SAME_WITHIN:g}, paired over seeds" if config.compare_with_small_batch else ""),
            {"best_lambda": best_large, "diverged_seeds": lg[best_large]["diverged"],
             "large_minus_small": large_vs_small, **lg_acc},
            checks=[_check("agc_large_vs_no_agc_small", large_vs_small)] if config.compare_with_small_batch else [],
            passed=lg[best_large]["diverged"] == 0,
        ),
        C.claim(
            "agc_unneeded_at_small_batch",
            f"At batch {config.small_batch} (learning rate {config.learning_rate:g}) training is stable without AGC",
            SOURCE, f"no seed diverges without AGC, and accuracy(best lambda) - accuracy(no AGC) <= {SAME_WITHIN:g} "
            "points, paired over seeds",
            {"no_agc_accuracy": sm[math.inf]["accuracy"], "best_agc_accuracy": sm[best_small]["accuracy"],
             "best_lambda": best_small, "no_agc_diverged_seeds": sm[math.inf]["diverged"], "gain": gain_small,
             **sm_acc},
            checks=[_check("agc_gain_at_small_batch", gain_small)],
            passed=sm[math.inf]["diverged"] == 0,
        ),
    ]


def _figure(workdir, res, clips, ratio, config) -> None:
    """Training loss (per update) and test accuracy against epochs, large batch left, small right."""
    fig, axes = subplots(2, 2, size=(5.6, 3.6))
    for col, (name, k) in enumerate((("large", ratio), ("small", 1))):
        b = config.small_batch * k
        lr = config.learning_rate * k
        for i, c in enumerate(clips):
            rows = [j for j, (cc, _, kk) in enumerate(res["runs"]) if cc == c and kk == k]
            color = "k" if math.isinf(c) else f"C{i}"
            loss = res["loss"][rows]  # the mean training loss of each stretch between evaluations
            loss = np.nanmean(np.where(np.isfinite(loss), loss, np.nan), axis=0)
            axes[col].plot(res["eval_steps"] / k, loss, "o-", ms=2.5, color=color, lw=1.2, label=_label(c))
            acc = np.nanmean(res["test_accuracy"][rows], axis=0)
            axes[2 + col].plot(res["eval_steps"] / k, acc, "o-", ms=2.5, color=color, lw=1.2, label=_label(c))
        axes[col].set(yscale="log", xlabel="update", ylabel="training loss",
                      title=f"batch {b}, learning rate {lr:g}: training loss")
        axes[2 + col].set(xlabel="update", ylabel="test accuracy (%)", ylim=(0, 100),
                          title=f"batch {b}: test accuracy (mean over {len(config.seeds)} seeds)")
        for ax in (axes[col], axes[2 + col]):
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    workdir.save_figure(fig, "agc_training_curves")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
