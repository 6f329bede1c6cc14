"""Signal propagation plots (Brock, De & Smith 2021): BN-ReLU, unnormalized and NF-ResNets at init.

Deep pre-activation ResNets (CIFAR layout, three stages, 100+ blocks) at initialization, on a
batch of unit Gaussian images: per residual block, the average channel squared mean, the average
channel variance and the variance of the residual branch's output (`nnbasics.analysis.
signal_propagation`). Four networks: the BN-ReLU ResNet (the variance grows by about one per
block and is reset at each stage's first block, whose shortcut sees the normalized input), the
unnormalized ResNet x + f(x) with He init (variance and squared mean double every block), the NF
skeleton x + alpha f(x / beta) with plain He-initialized convs (variance controlled, but ReLU's
mean shift makes the squared channel means grow to the size of the variance), and the NF-ResNet
with Scaled Weight Standardization (variance 1 + k alpha^2 after the k-th block of a stage, means
near zero). Blocks after the first of each stage run as one `nn.scan`, so depth costs no compile time.

    nnbasics run signal_propagation --quick
    nnbasics run signal_propagation --config.depth=602 --config.alpha=0.4
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from nnbasics import claims as C
from nnbasics.analysis.signal_propagation import (
    METRICS,
    nf_predicted_variance,
    signal_propagation_at_init,
    unit_gaussian,
)
from nnbasics.models import get_model
from nnbasics.models.nf_resnet import depth_to_stages
from nnbasics.plotting import subplots
from nnbasics.train import PRNG_IMPL

TOPIC = "normalization"
ORDER = 62
SOURCE = "Brock, De & Smith 2021, Characterizing signal propagation..., Figures 1-2"
MODELS = {  # name -> (registered model, keyword arguments, label)
    "bn_relu": ("bn_relu_resnet", {}, "BN-ReLU ResNet"),
    "unnormalized": ("unnorm_resnet", {}, "unnormalized ResNet x + f(x), He init"),
    "nf_he": ("nf_resnet", {"scaled_ws": False}, "NF skeleton, He init (no WS)"),
    "nf": ("nf_resnet", {}, "NF-ResNet (Scaled WS)"),
}

SWEEPS = {"alpha": [{"alpha": a} for a in (0.1, 0.2, 0.4)], "depth": [{"depth": d} for d in (56, 206, 602)]}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = tuple(MODELS)
    c.depth = 206  # 6n + 2 layers: 3 stages of 34 blocks = 102 residual blocks
    c.width = 16
    c.alpha = 0.2
    c.input_shape = (4, 64, 64, 3)  # (N, H, W, C) unit Gaussian; 64 px keeps zero-padding effects small
    c.seed = 0
    c.min_mean_explosion = 1e6  # unnormalized: squared mean at the last block / at the first block
    c.max_prediction_error = 0.15  # NF: |measured / (1 + k alpha^2) - 1| at every block
    c.max_nf_mean_ratio = 0.05  # NF: average squared channel mean / average channel variance
    c.min_mean_shift_ratio = 0.5  # NF without WS: the same ratio at the last block at least this
    c.min_stage_reset = 4.0  # BN: variance at a stage's last block / at the next stage's first block
    if preset == "quick":
        c.input_shape = (2, 64, 64, 3)
    elif preset == "smoke":
        c.models = ("bn_relu", "nf")
        c.depth = 8
        c.width = 8
        c.input_shape = (2, 16, 16, 3)
        c.max_prediction_error = 0.5
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    depth_to_stages(int(config.depth))
    for m in config.models:
        if m not in MODELS:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.models: " + unknown_name_message("SPP model", m, list(MODELS)))
    if len(config.input_shape) != 4:
        raise ValueError(f"config.input_shape must be (N, H, W, C), got {config.input_shape}")
    if not float(config.alpha) > 0:
        raise ValueError(f"config.alpha must be > 0, got {config.alpha}")


def measure(name: str, config: ml_collections.ConfigDict) -> dict:
    """The SPP of one network at initialization."""
    registered, kw, _ = MODELS[name]
    if registered == "nf_resnet":
        kw = {**kw, "alpha": float(config.alpha)}
    model = get_model(registered, depth=int(config.depth), width=int(config.width), scan=True, **kw)
    x = unit_gaussian(tuple(int(s) for s in config.input_shape), seed=int(config.seed))
    return signal_propagation_at_init(model, x, jax.random.key(int(config.seed), impl=PRNG_IMPL), train=True)


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    stages = depth_to_stages(int(config.depth))
    spp = {}
    for name in config.models:
        spp[name] = measure(name, config)
        workdir.metrics.write({"model": name, **{m: spp[name][m].tolist() for m in METRICS}})
    predicted = nf_predicted_variance(stages, float(config.alpha))
    _figure(workdir, spp, predicted, stages, config)
    return _claims(spp, predicted, stages, config)


def _claims(spp, predicted, stages, config) -> list[dict]:
    out = []
    starts = np.cumsum((0,) + tuple(stages))[:-1]  # index of each stage's first block
    ends = np.cumsum(stages) - 1
    if "unnormalized" in spp:
        m = spp["unnormalized"]["avg_sq_mean"]
        growth = float(m[-1] / m[0])
        out.append(C.claim(
            "unnormalized_mean_explodes",
            "Without normalization (x + f(x), He init) the average channel squared mean explodes with depth",
            SOURCE, f"squared mean at the last block / at the first >= {config.min_mean_explosion:g}",
            {"first_block": float(m[0]), "last_block": float(m[-1]), "growth": growth},
            C.at_least(growth, config.min_mean_explosion),
        ))
    if "bn_relu" in spp:
        v = spp["bn_relu"]["avg_var"]
        within = [float(v[e] / v[s]) for s, e in zip(starts, ends)]
        resets = [float(v[e] / v[s2]) for e, s2 in zip(ends[:-1], starts[1:])]
        out.append(C.claim(
            "bn_variance_resets_each_stage",
            "With BatchNorm the variance grows within a stage and is reset at the start of each stage",
            SOURCE, f"var(stage's last block) / var(next stage's first block) >= {config.min_stage_reset:g}",
            {"growth_within_stages": within, "drop_at_stage_start": resets, "variance_last_block": float(v[-1])},
            min(resets) >= config.min_stage_reset and min(within) >= config.min_stage_reset,
        ))
    if "nf" in spp:
        v, m, r = spp["nf"]["avg_var"], spp["nf"]["avg_sq_mean"], spp["nf"]["residual_var"]
        err = float(np.max(np.abs(v / predicted - 1)))
        out.append(C.claim(
            "nf_variance_follows_prediction",
            "The NF-ResNet's variance grows as 1 + k alpha^2 within a stage (reset at each stage)",
            SOURCE, f"max over blocks of |measured / (1 + k alpha^2) - 1| <= {config.max_prediction_error:g}",
            {"max_relative_error": err, "alpha": float(config.alpha),
             "measured_last_block_of_stages": [float(v[e]) for e in ends],
             "predicted_last_block_of_stages": [float(predicted[e]) for e in ends],
             "mean_residual_branch_variance": float(np.mean(r))},
            C.at_most(err, config.max_prediction_error),
        ))
        ratio = float(np.max(m / v))
        out.append(C.claim(
            "nf_mean_near_zero",
            "Scaled WS keeps the NF-ResNet's channel means near zero at every depth",
            SOURCE, f"max over blocks of avg squared mean / avg variance <= {config.max_nf_mean_ratio:g}",
            {"max_mean_to_variance": ratio, "last_block_sq_mean": float(m[-1])},
            C.at_most(ratio, config.max_nf_mean_ratio),
        ))
    if "nf_he" in spp:
        v, m = spp["nf_he"]["avg_var"], spp["nf_he"]["avg_sq_mean"]
        ratio = float(m[-1] / v[-1])
        out.append(C.claim(
            "mean_shift_without_ws",
            "Without Scaled WS, ReLU's mean shift makes the squared channel means grow to the variance's size",
            SOURCE, f"avg squared mean / avg variance at the last block >= {config.min_mean_shift_ratio:g}",
            {"mean_to_variance_last_block": ratio, "mean_to_variance_first_block": float(m[0] / v[0])},
            C.at_least(ratio, config.min_mean_shift_ratio),
        ))
    return out


def _figure(workdir, spp, predicted, stages, config) -> None:
    """Top row: every network, log scale. Bottom row: without the exploding one, linear scale."""
    titles = {"avg_sq_mean": "average channel squared mean", "avg_var": "average channel variance",
              "residual_var": "residual branch output variance"}
    fig, axes = subplots(2, 3, size=(5.2, 3.6))
    blocks = np.arange(1, sum(stages) + 1)
    colors = {name: f"C{i}" for i, name in enumerate(MODELS)}
    for row, (log, names) in enumerate([(True, list(spp)), (False, [n for n in spp if n != "unnormalized"])]):
        for ax, metric in zip(axes[3 * row:3 * row + 3], METRICS):
            for name in names:
                ax.plot(blocks, spp[name][metric], label=MODELS[name][2], lw=1.5, color=colors[name])
            if metric == "avg_var" and "nf" in spp:
                ax.plot(blocks, predicted, "k:", lw=1.2, label="NF prediction 1 + k alpha^2")
            for b in np.cumsum(stages)[:-1]:
                ax.axvline(b + 0.5, color="gray", lw=0.6, ls="--")
            if log:
                ax.set_yscale("log")
            ax.set(xlabel="residual block", title=titles[metric] + (" (log)" if log else ""))
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[4].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Signal propagation at initialization: depth {config.depth} ({sum(stages)} blocks), "
                 f"unit Gaussian input {tuple(config.input_shape)}, alpha = {config.alpha:g}", fontsize=10)
    fig.tight_layout()
    workdir.save_figure(fig, "signal_propagation")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
