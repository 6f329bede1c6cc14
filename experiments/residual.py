"""Residual learning: deeper plain nets train worse (degradation), shortcuts remove it (He et al. 2016, Figs. 1, 6, 7).

Plain-20, plain-56, ResNet-20 and ResNet-56 (the CIFAR nets of section 4.2: BatchNorm, ReLU,
option-A shortcuts, SGD with momentum 0.9, learning rate 0.1, weight decay 1e-4) trained side by
side, several seeds vmapped, on the embedded `photos` set (crops of ten photographs, label =
photo). The final training loss of a net is its mean over the last 20% of steps. Claims, each
paired over the seeds with a 95% interval: plain-56 trains above plain-20 (degradation); the
shortcuts shrink the deep-minus-shallow gap and put ResNet-56 below plain-56; (Fig. 7) the
residual branches' responses (each 3x3 layer after BatchNorm, before the addition) have a
smaller standard deviation than the plain net's layer responses. Over a sweep of three or more
depths (`--config.depths=20,32,44,56`, the full preset's) the ordering is claimed too: the slope of
the final training loss against depth, per seed, positive for the plain nets and negative for the
ResNets. The paper's ResNet-56 at or below ResNet-20 is claimed at the paper's widths (the `paper`
preset: 16/32/64 filters, 32x32 crops, 4000 steps at batch 128, for an accelerator) and at the narrow
CPU scale (4/8/16 filters, 8x8 crops, batch 32) from the number of steps at which the scale search
found it (experiments/benchmarks/README.md, "Residual depth: the scale search"): 32,000 with He et
al.'s init, 8,000 with each residual branch's last BatchNorm scale starting at zero (Goyal et al.
2017; `zero_init_residual`). The full preset trains its ResNets so, over the whole depth sweep
20/32/44/56 at 8,000 steps and 6 seeds, and makes every claim of Fig. 6 within the hour on a 2-core
CPU (docs/full-presets.md). Said plainly: at this budget the zero init trains both ResNets slower
than He et al.'s (ResNet-20 0.27-0.29 against 0.225), the shallow one more, so the deeper net wins
within its init, the paper's comparison; with He et al.'s init it ties at 8,000 steps and pulls ahead
from 32,000 (offsets 100 and 200, 8 seeds; the whole sweep orders there too, 90 minutes on two CPU
devices with the oneDNN extra). The quick preset (800 steps, He init, depths 20 and 56) leaves the
ResNet-56 claim out and says so.

    nnbasics run residual --quick
    nnbasics run residual            # full: the depth sweep, every claim of Fig. 6 (see docs/full-presets.md)
    nnbasics run residual --paper    # the paper's scale, for an accelerator
    nnbasics --cpu-devices 2 --onednn run residual --config.zero_init_residual=False --config.depths='(20,56)' \
        --config.steps=32000 --config.optimizer.decay_steps='(16000,24000)' --config.eval_every=3200 \
        --config.seeds='(0,1,2,3,4,5,6,7)'   # He et al.'s init: ResNet-56 below ResNet-20 from 32,000 steps
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.runs.claims import Threshold, check, claim, interval
from nnbasics.runs.plotting import band, subplots

TOPIC = "architectures"
ORDER = 51
SOURCE = "He, Zhang, Ren & Sun 2016, Deep Residual Learning, Fig. 1, Fig. 6 and Fig. 7 (CIFAR-10)"
PAPER_WIDTH = 16  # the paper's filters in the first stage; narrower nets do not get the ResNet depth claim
# He et al. 2016, Table 6: CIFAR-10 test error (%) of the ResNets (16/32/64 filters, 64k iterations); the
# figure prints them beside the measured ordering (the paper's training-error curves, Fig. 6, have no table)
PAPER_RESNET_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}

# The narrow CPU scale (4/8/16 filters, the full preset's 8x8 hard crops, batch 32) at which ResNet-56 trains
# below ResNet-20 (experiments/benchmarks/README.md, "Residual depth: the scale search"): at 8,000 and 16,000
# steps the two tie (+0.004, -0.003, intervals across 0); at 32,000 (the rate divided by 10 at 16k and 24k)
# -0.017 [-0.037, +0.004] with 5 of 5 seeds below at seed offset 0, and -0.016 [-0.023, -0.009] with 7 of 8
# below at offset 100, -0.014 [-0.024, -0.004] with 6 of 8 below at offset 200. From this many steps the
# narrow nets make the paper's claim too.
RESNET_GAP_CPU_STEPS = 32000
# With each residual branch's last BatchNorm scale starting at zero (Goyal et al. 2017; the identity-at-init
# view of De & Smith 2020 and Fixup, Zhang et al. 2019) every block starts as the identity and the deeper ResNet
# is ahead from 8,000 steps at the same narrow scale (experiments/benchmarks/README.md): ResNet-56 - ResNet-20
# -0.033 [-0.046, -0.021] (offset 0) and -0.033 [-0.044, -0.022] (offset 200), 8 of 8 seeds below each time,
# where He et al.'s init ties (+0.014 [-0.006, +0.034]). The full preset trains its ResNets so.
RESNET_GAP_ZERO_INIT_STEPS = 8000

THRESHOLDS = {
    "plain_gap": Threshold(">", 0.0, "He et al. Fig. 1 and Fig. 6 left: plain-56 has a higher training error than "
                                       "plain-20 throughout training"),
    "gap_reduction": Threshold(">", 0.0, "He et al. Fig. 6: the deep-minus-shallow gap is positive for plain nets "
                                           "and negative for ResNets, so (plain gap) - (ResNet gap) > 0"),
    "resnet_minus_plain": Threshold("<", 0.0, "He et al. Fig. 6: ResNet-56's training error is far below "
                                                "plain-56's"),
    "resnet_gap": Threshold("<=", 0.0, "He et al. Fig. 6 right: ResNet-56 at or below ResNet-20"),
    "plain_depth_slope": Threshold(">", 0.0, "He et al. Fig. 6 left: the plain nets' training error rises with depth "
                                                "(plain-20 < plain-32 < plain-44 < plain-56)"),
    "resnet_depth_slope": Threshold("<", 0.0, "He et al. Fig. 6 right: the ResNets' training error falls with depth "
                                                 "(ResNet-56 < ResNet-44 < ResNet-32 < ResNet-20)"),
    "response_std_ratio": Threshold("<", 1.0, "He et al. Fig. 7: the residual functions' responses are generally "
                                                "smaller than the plain net's"),
}

SWEEPS = {
    "width": [{"width": w} for w in (4, 8, 16)],
    "depths": [{"depths": d} for d in ((20, 56), (20, 32, 44, 56), (20, 110))],
    "learning_rate": [{"optimizer.learning_rate": lr} for lr in (0.03, 0.1, 0.3)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "photos"
    # the crops are random draws: their seed is a config seed, so --seed-offset reaches it
    c.data_kwargs = ml_collections.ConfigDict({"n_train": 10000, "n_test": 1000, "size": 32, "seed": 0})
    c.depths = (20, 56)
    c.width = PAPER_WIDTH  # filters of the first stage (the paper: 16, then 32 and 64)
    c.norm = "batch"
    c.activation = "relu"
    c.optimizer = ml_collections.ConfigDict({
        "name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
        # the paper divides the rate by 10 at 50% and 75% of training (32k and 48k of 64k iterations)
        "schedule": "step", "decay_steps": (2000, 3000), "decay_factor": 0.1,
    })
    c.batch_size = 128
    c.steps = 4000
    c.eval_every = 400
    c.seeds = (0, 1, 2, 3, 4)
    c.final_fraction = 0.2  # the final training loss: mean over the last 20% of steps
    c.response_examples = 256
    # how the nets run (not what they compute): the convolution of `nnbasics.nn.conv` and whether each
    # stage's repeated blocks are one `nn.scan` (one compiled body; the parameters are stacked, so the
    # initial draws, and with them the trained numbers, differ from the unrolled net's)
    c.conv_impl = "auto"
    c.scan_blocks = True
    # He et al.'s init (False), or each residual branch's last norm starting at scale 0 (True: Goyal et al. 2017,
    # the ResNets only; a plain net has no identity path to start from and keeps its init)
    c.zero_init_residual = False
    # "paper" is the above: the paper's widths (16/32/64), 32x32 images, batch 128 (an accelerator's preset).
    if preset in ("full", "quick"):
        # the CPU scale: 8x8 crops and 4/8/16 filters keep a 56-layer net cheap on a 2-core CPU; the learning
        # rate is the paper's 0.1 at batch 128 scaled to batch 32, divided by 10 at 50% and 75%; unrolled blocks
        # on the patch-matrix conv train ResNet-56 1.7x faster on one CPU core than scanned blocks on "auto"
        # (experiments/benchmarks/README.md)
        c.width = 4
        c.batch_size = 32
        c.optimizer.learning_rate = 0.025
        c.response_examples = 128
        c.conv_impl = "patches"
        c.scan_blocks = False
    if preset == "full":
        # what a 2-core CPU trains within the hour (experiments/benchmarks/README.md, "Residual depth: the scale
        # search (issue 31)"): 8x8 crops of 5-20% of a photo's side (a harder task than quick's 15-50%, so the
        # nets underfit it), 20,000 of them, ten times quick's steps, the whole depth sweep of Fig. 6. With He et
        # al.'s init the deeper ResNet ties the shallower one at this many steps (it pulls ahead from 32,000);
        # with the residual branches starting at zero it is ahead at 8,000 (RESNET_GAP_ZERO_INIT_STEPS), so the
        # full preset's ResNets start so and every claim of Fig. 6 is made. Six seeds: what one core trains within
        # the hour (8 nets x 6 seeds: 44 min at offset 100). The seed-count rule (docs/seed_counts.md), pooled over
        # offsets 0 and 100, asks 7 for ResNet-56 - ResNet-20 and 8 for the ResNet depth slope (8 seeds: ~58 min
        # on one core, the hour's edge); 6 decided both at both offsets, every seed on the paper's side.
        c.data_kwargs = ml_collections.ConfigDict({"n_train": 20000, "n_test": 500, "size": 8, "min_frac": 0.05,
                                                   "max_frac": 0.2, "seed": 0})
        c.depths = (20, 32, 44, 56)
        c.zero_init_residual = True
        c.optimizer.decay_steps = (4000, 6000)
        c.steps = 8000
        c.eval_every = 800
        c.seeds = (0, 1, 2, 3, 4, 5)
    if preset == "quick":
        # Six seeds for 800 steps cost less than two for 3000 and decide the paired comparisons (the seed-count
        # rule, docs/seed_counts.md: the response-ratio claim asks for 6 over offsets 0-700).
        c.data_kwargs = ml_collections.ConfigDict({"n_train": 2000, "n_test": 500, "size": 8, "seed": 0})
        c.optimizer.decay_steps = (400, 600)
        c.steps = 800
        c.eval_every = 80
        c.seeds = (0, 1, 2, 3, 4, 5)
    elif preset == "smoke":
        c.conv_impl = "patches"
        c.scan_blocks = False
        c.data_kwargs = ml_collections.ConfigDict({"n_train": 200, "n_test": 100, "size": 8, "seed": 0})
        c.depths = (8, 14)
        c.width = 2
        c.batch_size = 16
        c.steps = 4
        c.eval_every = 2
        c.optimizer.decay_steps = (2, 3)
        c.seeds = (0, 1)
        c.response_examples = 16
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    depths = list(config.depths)
    if len(depths) < 2 or any(d < 8 or (d - 2) % 6 for d in depths):
        raise ValueError(f"config.depths needs at least two depths of the form 6n + 2 (20, 32, 44, 56, 110), got {depths}")
    if int(config.width) < 1:
        raise ValueError(f"config.width must be a positive integer, got {config.width}")
    if not 0 < float(config.final_fraction) <= 1:
        raise ValueError(f"config.final_fraction must be in (0, 1], got {config.final_fraction}")
    from nnbasics.nn.conv import IMPLEMENTATIONS

    if config.conv_impl not in IMPLEMENTATIONS:
        raise ValueError(f"config.conv_impl must be one of {', '.join(IMPLEMENTATIONS)}, got {config.conv_impl!r}")
    for key in ("scan_blocks", "zero_init_residual"):
        if not isinstance(config.get(key, False), bool):
            raise ValueError(f"config.{key} must be True or False, got {config.get(key)!r}")


def _zero_init(config) -> bool:
    """Whether the ResNets' residual branches start at zero (a config written before the field existed: no)."""
    return bool(config.get("zero_init_residual", False))


def _model(kind: str, depth: int, num_classes: int, config):
    from nnbasics.models.resnet import cifar_resnet

    return cifar_resnet(depth, num_classes=num_classes, residual=(kind == "resnet"), width=int(config.width),
                        norm=config.norm, activation=config.activation, scan_blocks=bool(config.scan_blocks),
                        conv_impl=config.conv_impl, zero_init_residual=_zero_init(config))


def response_apply(model):
    """The compiled forward pass that `layer_response_stds` runs (make it once per model: one compile)."""
    return jax.jit(functools.partial(model.apply, train=True, mutable=["intermediates", "batch_stats"]))


def layer_response_stds(model, variables, x, apply=None) -> np.ndarray:
    """Standard deviation of every 3x3 layer's response (after its norm, before the addition and
    ReLU), in layer order, for the batch x (He et al. Fig. 7). BatchNorm normalizes with the
    statistics of the batch (training mode, statistics discarded), so the numbers do not depend on
    the running averages; a response's std then reflects its layer's learned scales and shifts."""
    _, inter = (apply or response_apply(model))(variables, x)
    inter, stds = inter["intermediates"], []
    for stage in sorted({k.split("_")[0] for k in inter}, key=lambda name: int(name.removeprefix("stage"))):
        blocks = sorted((k for k in inter if k.startswith(f"{stage}_block") and k != f"{stage}_blocks"),
                        key=lambda k: int(k.rsplit("block", 1)[1]))  # unrolled: stageS_block1, _block2, ...
        for name in blocks:
            stds += [float(np.std(np.asarray(r))) for r in inter[name]["response"]]
        scanned = inter.get(f"{stage}_blocks", {}).get("block", {}).get("response", ())
        if scanned:  # nn.scan: stageS_block1, then the stacked rest
            stacked = [np.asarray(r) for r in scanned]  # each (blocks, N, H, W, C)
            for j in range(stacked[0].shape[0]):
                stds += [float(np.std(r[j])) for r in stacked]
    return np.array(stds)


def _train(config, data, workdir) -> tuple[dict, dict]:
    """Every net for every seed: the training results and the per-seed 3x3 layer response stds."""
    train_config = TrainConfig.from_config(config)
    results, responses = {}, {}
    x_resp = data.x_train[: int(config.response_examples)]
    for kind in ("plain", "resnet"):
        for d in sorted(int(d) for d in config.depths):
            name = f"{kind}{d}"
            model = _model(kind, d, data.num_classes, config)
            res = fit(model, data, train_config, workdir=workdir, tag=name)
            results[name] = res
            apply, variables = response_apply(model), jax.device_get(res.state.variables)  # one compile; host slices
            responses[name] = np.stack([layer_response_stds(model, jax.tree.map(lambda a: a[i], variables), x_resp, apply)
                                        for i in range(len(res.members))])  # (seeds, layers)
            workdir.metrics.write({"run": name, "response_std": responses[name].mean(axis=0).tolist()})
    return results, responses


def final_losses(res, fraction: float) -> np.ndarray:
    """Per seed: the mean training loss over the last `fraction` of the eval intervals."""
    steps, losses = res.curve("train_loss")  # (members, eval points): mean loss of each chunk
    k = max(1, round(len(steps) * fraction))
    return np.mean(losses[:, -k:], axis=1)


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data, **config.data_kwargs.to_dict())
    depths = sorted(int(d) for d in config.depths)
    results, responses = _train(config, data, workdir)
    final = {n: final_losses(r, float(config.final_fraction)) for n, r in results.items()}
    out = _claims(config, final, responses, depths[0], depths[-1])
    if len(depths) >= 3:
        out += depth_order_claims(final, depths,
                                  " (residual branches starting at zero, Goyal et al. 2017)" * _zero_init(config))
    for o in out:
        o["measured"]["train_seconds"] = float(sum(r.seconds for r in results.values()))
    _figures(results, final, depths, workdir)
    _response_figure(responses, workdir)
    return out


def _claims(config, final, responses, shallow: int, deep: int) -> list[dict]:
    p_s, p_d, r_s, r_d = final[f"plain{shallow}"], final[f"plain{deep}"], final[f"resnet{shallow}"], final[f"resnet{deep}"]
    plain_gap, resnet_gap = p_d - p_s, r_d - r_s
    paper_width = int(config.width) >= PAPER_WIDTH
    # ResNet-56 below ResNet-20 is claimed at the paper's widths, and at the narrow CPU scale from the number of
    # steps at which the scale search found it (RESNET_GAP_CPU_STEPS with He et al.'s init,
    # RESNET_GAP_ZERO_INIT_STEPS with the branches starting at zero); below that the deeper ResNet ties or trails
    zero_init = _zero_init(config)
    deep_enough = paper_width or int(config.steps) >= (RESNET_GAP_ZERO_INIT_STEPS if zero_init else RESNET_GAP_CPU_STEPS)
    w = int(config.width)
    narrow = "" if paper_width else f" (narrowed: {w}/{2 * w}/{4 * w} filters)"
    if zero_init:
        narrow += "; the ResNets' residual branches start at zero (Goyal et al. 2017)"
    losses = {f"train_loss_{k}{d}": final[f"{k}{d}"] for k in ("plain", "resnet") for d in (shallow, deep)}
    out = [
        claim(
            "plain_degrades",
            f"The deeper plain net has a higher training loss: plain-{deep} above plain-{shallow}{narrow}",
            SOURCE + ", Fig. 1 and Fig. 6 left",
            f"per-seed train loss plain-{deep} - plain-{shallow} " "{plain_gap} (95% interval of the mean)",
            {**losses, "plain_gap": plain_gap},
            checks=[check("plain_gap", plain_gap, THRESHOLDS["plain_gap"], statistic=f"plain{deep} - plain{shallow}")],
        ),
        claim(
            "shortcuts_reduce_degradation",
            f"Shortcuts reduce the degradation: the ResNets' {deep}-minus-{shallow} gap in training loss is smaller "
            f"than the plain nets', and ResNet-{deep} trains below plain-{deep}{narrow}"
            + ("" if deep_enough else f". The paper's stronger ResNet-{deep} <= ResNet-{shallow} is not shown at this "
               f"scale (narrow nets, {config.steps} steps: in the measurements of experiments/benchmarks/README.md "
               f"the deeper ResNet trails or ties the shallower one below {RESNET_GAP_CPU_STEPS} steps with He et "
               f"al.'s init, below {RESNET_GAP_ZERO_INIT_STEPS} with the residual branches starting at zero); it is "
               f"checked from {RESNET_GAP_ZERO_INIT_STEPS} steps with --config.zero_init_residual=True (the full "
               f"preset), from {RESNET_GAP_CPU_STEPS} with He et al.'s init (--config.steps={RESNET_GAP_CPU_STEPS} "
               f"--config.optimizer.decay_steps='({RESNET_GAP_CPU_STEPS // 2},{3 * RESNET_GAP_CPU_STEPS // 4})') and "
               "at the paper preset"),
            SOURCE + ", Fig. 6",
            "per seed: (plain gap) - (ResNet gap) {gap_reduction} and ResNet-deep - plain-deep {resnet_minus_plain}",
            {**losses, "plain_gap": plain_gap, "resnet_gap": resnet_gap},
            checks=[check("gap_reduction", plain_gap - resnet_gap, THRESHOLDS["gap_reduction"],
                          statistic="plain gap - ResNet gap"),
                    check("resnet_minus_plain", r_d - p_d, THRESHOLDS["resnet_minus_plain"],
                          statistic=f"resnet{deep} - plain{deep}")],
        ),
    ]
    if deep_enough:
        out.append(claim(
            "resnet_does_not_degrade",
            f"The deeper ResNet does not degrade: ResNet-{deep} at or below ResNet-{shallow}{narrow}",
            SOURCE + ", Fig. 6 right",
            f"per-seed train loss ResNet-{deep} - ResNet-{shallow} " "{resnet_gap} (95% interval of the mean)",
            {**losses, "resnet_gap": resnet_gap},
            checks=[check("resnet_gap", resnet_gap, THRESHOLDS["resnet_gap"], statistic=f"resnet{deep} - resnet{shallow}")],
        ))
    # the median over layers: "generally smaller" (a few large layers would dominate a mean)
    s_plain, s_res = np.median(responses[f"plain{deep}"], axis=1), np.median(responses[f"resnet{deep}"], axis=1)
    out.append(claim(
        "residual_responses_smaller",
        f"Residual functions respond less than plain layers: the median std of the 3x3 layer responses of "
        f"ResNet-{deep} is below plain-{deep}'s",
        SOURCE + ", Fig. 7 (responses after BN, before the addition and ReLU; here with the batch's statistics, "
        "on training crops)",
        f"per seed: median response std ResNet-{deep} / plain-{deep} " "{response_std_ratio} (95% interval of the mean)",
        {f"response_std_resnet{deep}": s_res, f"response_std_plain{deep}": s_plain, "ratio": s_res / s_plain},
        checks=[check("response_std_ratio", s_res / s_plain, THRESHOLDS["response_std_ratio"],
                      statistic=f"median std resnet{deep} / plain{deep}")],
    ))
    return out


def depth_slopes(final: dict, kind: str, depths) -> np.ndarray:
    """Per seed: the least-squares slope of the final training loss against depth (per layer), over `depths`."""
    d = np.asarray(depths, float)
    losses = np.stack([final[f"{kind}{int(k)}"] for k in depths], axis=1)  # (seeds, depths)
    dc = d - d.mean()
    return (losses - losses.mean(axis=1, keepdims=True)) @ dc / float(dc @ dc)


def depth_order_claims(final: dict, depths, resnet_note: str = "") -> list[dict]:
    """The ordering over the whole depth sweep (He et al. Fig. 6), one claim per family: the slope of the
    final training loss against depth, per seed, with its 95% interval (positive for the plain nets,
    negative for the ResNets). `resnet_note` is appended to the ResNets' claim (how they were initialized)."""
    names = "/".join(str(int(d)) for d in depths)
    out = []
    for kind, label, word, sign in (("plain", "plain", "rises", ">"), ("resnet", "ResNet", "falls", "<")):
        slope = depth_slopes(final, kind, depths)
        out.append(claim(
            f"{kind}_depth_order",
            f"Over the depth sweep {names} the {label} nets' training loss {word} with depth (the slope of the "
            f"final training loss against depth is {'positive' if sign == '>' else 'negative'})"
            + (resnet_note if kind == "resnet" else ""),
            SOURCE + (", Fig. 6 left" if kind == "plain" else ", Fig. 6 right"),
            f"per seed: least-squares slope of the final train loss against depth {{{kind}_depth_slope}} (95% interval "
            "of the mean)",
            {**{f"train_loss_{kind}{int(d)}": final[f"{kind}{int(d)}"] for d in depths}, "slope_per_layer": slope},
            checks=[check(f"{kind}_depth_slope", slope, THRESHOLDS[f"{kind}_depth_slope"],
                          statistic=f"d(final loss)/d(depth), {label} {names}")],
        ))
    return out


def _figures(results, final, depths, workdir) -> None:
    """He et al. Fig. 6's two panels (plain, ResNet) and the deep-minus-shallow gap of each, per seed."""
    from matplotlib.ticker import ScalarFormatter

    fig, axes = subplots(1, 4, size=(4.3, 3.6), gridspec_kw={"wspace": 0.4})
    shallow, deep = depths[0], depths[-1]
    for ax, kind, title in ((axes[0], "plain", "plain nets"), (axes[1], "resnet", "ResNets")):
        for d in depths:
            steps, losses = results[f"{kind}{d}"].curve("train_loss")
            band(ax, steps, losses, label=f"{kind}-{d}: {np.mean(final[f'{kind}{d}']):.3f}", lw=2 if d == deep else 1.2)
        ax.set(xlabel="training step", title=title, yscale="log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(title="final loss (mean of seeds)", fontsize=8, title_fontsize=8)
    lo = min(a.get_ylim()[0] for a in axes[:2])
    hi = max(a.get_ylim()[1] for a in axes[:2])
    for a in axes[:2]:
        a.set_ylim(lo, hi)
    axes[0].set_ylabel("training loss (mean over each eval interval)")
    ax = axes[2]
    for i, kind in enumerate(("plain", "resnet")):
        gap = final[f"{kind}{deep}"] - final[f"{kind}{shallow}"]
        ci = _ci(gap)
        ax.bar(i, np.mean(gap), color=("C3", "C0")[i], alpha=0.6)
        ax.errorbar(i, np.mean(gap), yerr=[[np.mean(gap) - ci[0]], [ci[1] - np.mean(gap)]], color="k", capsize=6)
        ax.plot(np.full(len(gap), i) + np.linspace(-0.15, 0.15, len(gap)), gap, "k.", ms=5)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xticks=[0, 1], xticklabels=["plain", "ResNet"], ylabel=f"final loss: {deep} layers - {shallow} layers",
           title="degradation: deep - shallow")
    ax.text(0.98, 0.97, "bar: mean; error bar: 95% interval;\ndots: seeds", transform=ax.transAxes, ha="right",
            va="top", fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    _depth_panel(axes[3], final, depths)
    fig.suptitle(f"Training loss, {len(final[f'plain{deep}'])} seeds (band: min-max) (He et al. 2016 Fig. 6 layout)", y=1.02)
    workdir.save_figure(fig, "training_loss")


def _ci(values) -> list[float]:
    """The 95% interval of the mean over seeds (the one value itself for a single seed)."""
    return interval(values)["ci"] if len(values) > 1 else [values[0], values[0]]


def _depth_panel(ax, final, depths) -> None:
    """The final training loss against depth, per family (mean over seeds, 95% interval), with He et al.'s
    ordering and Table 6's ResNet test errors written beside it."""
    for kind, color, label in (("plain", "C3", "plain"), ("resnet", "C0", "ResNet")):
        means, lo, hi = [], [], []
        for d in depths:
            v = np.asarray(final[f"{kind}{d}"], float)
            ci = _ci(v)
            means.append(float(np.mean(v)))
            lo.append(means[-1] - ci[0])
            hi.append(ci[1] - means[-1])
        ax.errorbar(depths, means, yerr=[lo, hi], color=color, marker="o", capsize=4, label=label)
    ax.set(xlabel="depth (layers)", xticks=list(depths), ylabel="final training loss",
           title="final loss against depth (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    sweep = (20, 32, 44, 56)
    ax.text(0.0, -0.2, "He et al. 2016 (CIFAR-10, 16/32/64 filters): the plain nets'\ntraining error rises with depth, "
            "the ResNets' falls (Fig. 6);\nResNet-" + "/".join(map(str, sweep)) + " test error "
            + " / ".join(f"{PAPER_RESNET_TEST_ERROR[d]:g}" for d in sweep) + "% (Table 6)", transform=ax.transAxes,
            ha="left", va="top", fontsize=7.5)


def _response_figure(responses, workdir) -> None:
    fig, (ax,) = subplots(size=(7, 3.6))
    for name, stds in responses.items():
        mean = stds.mean(axis=0)
        ax.plot(np.arange(1, len(mean) + 1), mean, marker=".", lw=1, label=name,
                ls="-" if name.startswith("resnet") else "--")
    ax.set(xlabel="3x3 layer index (original order)", ylabel="std of the layer response (mean of seeds)",
           title="Layer responses after BN, before the addition / ReLU (He et al. Fig. 7)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    workdir.save_figure(fig, "response_std")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
