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
The NF prediction is tested with the zero-padding factor of each stage (see `padded_prediction`).
Every network is measured over several seeds (initialization and input drawn per seed, one compiled
program called per seed) and every claim is decided by a 95% interval over the seeds.

    nnbasics run signal_propagation --quick
    nnbasics run signal_propagation --config.depth=602 --config.alpha=0.4
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from nnbasics.analysis.signal_propagation import (
    COLLECTION,
    METRICS,
    collect,
    nf_predicted_variance,
    unit_gaussian,
)
from nnbasics.engine import PRNG_IMPL
from nnbasics.models import get_model
from nnbasics.models.nf_resnet import depth_to_stages
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "normalization"
ORDER = 62
SOURCE = "Brock, De & Smith 2021, Characterizing signal propagation..., Figures 1-2"
MODELS = {  # name -> (registered model, keyword arguments, label)
    "bn_relu": ("bn_relu_resnet", {}, "BN-ReLU ResNet"),
    "unnormalized": ("unnorm_resnet", {}, "unnormalized ResNet x + f(x), He init"),
    "nf_he": ("nf_resnet", {"scaled_ws": False}, "NF skeleton, He init (no WS)"),
    "nf": ("nf_resnet", {}, "NF-ResNet (Scaled WS)"),
}

THRESHOLDS = {
    "log10_mean_explosion": Threshold(">=", 6.0, "Brock et al. Fig. 1: x + f(x) with He init doubles the squared mean "
                                      "every block (2^k); a factor 1e6 is 20 doublings, far fewer than the blocks"),
    "bn_min_stage_reset": Threshold(">=", 4.0, "De & Smith 2020 / Brock et al. Fig. 1: BN-ReLU variance grows by ~1 "
                                    "per block and falls back to ~1 at a stage's first block; 4 is a stage of >= 4 blocks"),
    "nf_variance_ratio_low": Threshold(">=", 0.9, "the prediction 1 + k rho alpha^2 (Brock et al. Sec. 4, with "
                                       "the zero-padding factor rho) is an expectation that ignores finite width and "
                                       "spatial correlation: the seed mean of measured / predicted within 10%"),
    "nf_variance_ratio_high": Threshold("<=", 1.1, "as nf_variance_ratio_low, the upper side of the 10% band"),
    "nf_max_mean_ratio": Threshold("<=", 0.05, "Brock et al. Fig. 2: with Scaled WS the squared channel means stay "
                                   "near zero, two orders below the variance"),
    "nf_he_mean_shift_ratio": Threshold(">=", 0.5, "Brock et al. Sec. 4.1: without WS ReLU's mean shift makes the "
                                        "squared channel means grow to the size of the variance"),
}

SWEEPS = {"alpha": [{"alpha": a} for a in (0.1, 0.2, 0.4)], "depth": [{"depth": d} for d in (56, 206, 602)]}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = tuple(MODELS)
    c.depth = 206  # 6n + 2 layers: 3 stages of 34 blocks = 102 residual blocks
    c.width = 16
    c.alpha = 0.2
    c.input_shape = (4, 64, 64, 3)  # (N, H, W, C) unit Gaussian; 64 px keeps zero-padding effects small
    c.seeds = tuple(range(16))  # one initialization and one input batch per seed (8 left the NF band close: 0.904 at +100)
    if preset == "quick":
        c.input_shape = (2, 64, 64, 3)
    elif preset == "smoke":
        c.models = ("bn_relu", "nf")
        c.depth = 8
        c.width = 8
        c.input_shape = (2, 16, 16, 3)
        c.seeds = (0, 1, 2)
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


def measure(name: str, config: ml_collections.ConfigDict) -> list[dict]:
    """The SPP of one network at initialization, one dict per seed: one compiled program (init and
    forward pass) called once per seed. Seed s initializes the net as `fit` does for seed s (one
    key per member, PRNG_IMPL). Vmapping the seeds instead would draw other weights (an "rbg" key's
    bits differ under vmap) and runs the convs as grouped convs: twice the CPU time of the loop."""
    registered, kw, _ = MODELS[name]
    if registered == "nf_resnet":
        kw = {**kw, "alpha": float(config.alpha)}
    model = get_model(registered, depth=int(config.depth), width=int(config.width), scan=True, **kw)
    shape = tuple(int(s) for s in config.input_shape)

    @jax.jit
    def stats(k, x):
        variables = model.init(jax.random.wrap_key_data(k, impl=PRNG_IMPL), x[:1])
        mutable = [COLLECTION] + (["batch_stats"] if "batch_stats" in variables else [])
        return model.apply(variables, x, train=True, mutable=mutable)[1][COLLECTION]

    out = []
    for s in config.seeds:
        key = jax.random.key_data(jax.random.key(int(s), impl=PRNG_IMPL))
        out.append(collect({COLLECTION: jax.tree.map(np.asarray, stats(key, unit_gaussian(shape, seed=int(s))))}))
    return out


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    stages = depth_to_stages(int(config.depth))
    spp = {}
    for name in config.models:
        per_seed = measure(name, config)
        for seed, d in zip(config.seeds, per_seed):
            workdir.metrics.write({"model": name, "seed": int(seed), **{m: d[m].tolist() for m in METRICS}})
        spp[name] = {m: np.stack([d[m] for d in per_seed]) for m in METRICS}  # (seeds, blocks)
    predicted = padded_prediction(stages, float(config.alpha), int(config.input_shape[1]))
    _figure(workdir, spp, predicted, stages, config)
    return _claims(spp, predicted, stages, config)


def padding_factor(size: int, convs: int = 2) -> float:
    """The expected variance kept by `convs` 3x3 'SAME' convs on a size x size map: at a border pixel
    a tap reads a padded zero, so a kernel with zero-mean i.i.d. weights (Scaled WS) keeps the
    fraction of valid taps, (3 size - 2) / (3 size) per dimension on average."""
    return float(((3 * size - 2) / (3 * size)) ** (2 * convs))


def padded_prediction(stages, alpha: float, size: int) -> np.ndarray:
    """Brock et al.'s 1 + k alpha^2 with each block's residual branch (two 3x3 convs) scaled by the
    padding factor of its stage's map (size, size/2, size/4, ...): 1 + k rho alpha^2."""
    rho = [padding_factor(max(1, size // 2**i)) for i in range(len(stages))]
    return np.concatenate([1.0 + r * alpha**2 * np.arange(1, n + 1) for r, n in zip(rho, stages)])


def _claims(spp, predicted, stages, config) -> list[dict]:
    """Every statistic has one value per seed (rows of spp[name][metric])."""
    out = []
    starts = np.cumsum((0,) + tuple(stages))[:-1]  # index of each stage's first block
    ends = np.cumsum(stages) - 1
    th = THRESHOLDS
    if "unnormalized" in spp:
        m = spp["unnormalized"]["avg_sq_mean"]
        growth = np.log10(m[:, -1] / m[:, 0])
        out.append(claim(
            "unnormalized_mean_explodes",
            "Without normalization (x + f(x), He init) the average channel squared mean explodes with depth",
            SOURCE, "log10(squared mean at the last block / at the first), mean over seeds {log10_mean_explosion}",
            {"log10_growth": growth, "first_block": m[:, 0], "last_block": m[:, -1]},
            checks=[check("log10_mean_explosion", growth, th["log10_mean_explosion"])],
        ))
    if "bn_relu" in spp and len(stages) > 1:
        v = spp["bn_relu"]["avg_var"]
        within = np.min(v[:, ends] / v[:, starts], axis=1)
        resets = np.min(v[:, ends[:-1]] / v[:, starts[1:]], axis=1)
        out.append(claim(
            "bn_variance_resets_each_stage",
            "With BatchNorm the variance grows within a stage and is reset at the start of each stage",
            SOURCE, "per seed, the smallest var(stage's last block) / var(next stage's first block) and the smallest "
            "var(stage's last block) / var(its first block): means over seeds {bn_min_stage_reset}",
            {"min_drop_at_stage_start": resets, "min_growth_within_stage": within, "variance_last_block": v[:, -1]},
            checks=[check("bn_min_stage_reset", resets, th["bn_min_stage_reset"], statistic="min drop at stage start"),
                    check("bn_min_stage_reset", within, th["bn_min_stage_reset"], statistic="min growth within stage")],
        ))
    if "nf" in spp:
        out += _nf_claims(spp["nf"], predicted, nf_predicted_variance(stages, float(config.alpha)), ends)
    if "nf_he" in spp:
        v, m = spp["nf_he"]["avg_var"], spp["nf_he"]["avg_sq_mean"]
        ratio = m[:, -1] / v[:, -1]
        out.append(claim(
            "mean_shift_without_ws",
            "Without Scaled WS, ReLU's mean shift makes the squared channel means grow to the variance's size",
            SOURCE, "avg squared mean / avg variance at the last block, mean over seeds {nf_he_mean_shift_ratio}",
            {"mean_to_variance_last_block": ratio, "mean_to_variance_first_block": m[:, 0] / v[:, 0]},
            checks=[check("nf_he_mean_shift_ratio", ratio, th["nf_he_mean_shift_ratio"])],
        ))
    return out


def _nf_claims(nf, predicted, unpadded, ends) -> list[dict]:
    v, m, r = nf["avg_var"], nf["avg_sq_mean"], nf["residual_var"]
    ratio = np.mean(v / predicted, axis=1)  # per seed: measured / (1 + k rho alpha^2), averaged over the blocks
    mean_ratio = np.max(m / v, axis=1)
    th = THRESHOLDS
    return [
        claim(
            "nf_variance_follows_prediction",
            "The NF-ResNet's variance grows as 1 + k alpha^2 within a stage (reset at each stage). Zero padding "
            "makes each 3x3 conv keep only the valid taps' share of the variance (rho = ((3H-2)/3H)^4 per block on "
            "an HxH map: 0.96, 0.92, 0.84 at 64, 32, 16 px), which the paper's large images make negligible: "
            "1 + k rho alpha^2 is tested. The prediction is an expectation over initializations, so the mean over "
            "seeds of measured / predicted is tested",
            SOURCE, "mean over seeds of (measured / (1 + k rho alpha^2), averaged over blocks) {nf_variance_ratio_low} and "
            "{nf_variance_ratio_high}",
            {"measured_over_predicted": ratio,
             "measured_over_unpadded_prediction": np.mean(v / unpadded, axis=1),
             "max_relative_error": np.max(np.abs(v / predicted - 1), axis=1),
             "measured_last_block_of_stages": np.mean(v[:, ends], axis=0),
             "predicted_last_block_of_stages": predicted[ends],
             "unpadded_prediction_last_block_of_stages": unpadded[ends],
             "mean_residual_branch_variance": np.mean(r, axis=1)},
            checks=[check("nf_variance_ratio_low", ratio, th["nf_variance_ratio_low"], statistic="measured/predicted"),
                    check("nf_variance_ratio_high", ratio, th["nf_variance_ratio_high"],
                          statistic="measured/predicted")],
        ),
        claim(
            "nf_mean_near_zero",
            "Scaled WS keeps the NF-ResNet's channel means near zero at every depth",
            SOURCE, "max over blocks of avg squared mean / avg variance, mean over seeds {nf_max_mean_ratio}",
            {"max_mean_to_variance": mean_ratio, "last_block_sq_mean": m[:, -1]},
            checks=[check("nf_max_mean_ratio", mean_ratio, th["nf_max_mean_ratio"])],
        ),
    ]


def _figure(workdir, spp, predicted, stages, config) -> None:
    """Top row: every network, log scale. Bottom row: without the exploding one, linear scale. Lines: the
    mean over seeds; shaded: the range over seeds."""
    titles = {"avg_sq_mean": "average channel squared mean", "avg_var": "average channel variance",
              "residual_var": "residual branch output variance"}
    fig, axes = subplots(2, 3, size=(5.2, 3.6))
    blocks = np.arange(1, sum(stages) + 1)
    colors = {name: f"C{i}" for i, name in enumerate(MODELS)}
    for row, (log, names) in enumerate([(True, list(spp)), (False, [n for n in spp if n != "unnormalized"])]):
        for ax, metric in zip(axes[3 * row:3 * row + 3], METRICS):
            for name in names:
                a = spp[name][metric]
                ax.plot(blocks, a.mean(axis=0), label=MODELS[name][2], lw=1.5, color=colors[name])
                ax.fill_between(blocks, a.min(axis=0), a.max(axis=0), color=colors[name], alpha=0.25, lw=0)
            if metric == "avg_var" and "nf" in spp:
                ax.plot(blocks, nf_predicted_variance(stages, float(config.alpha)), "k:", lw=1.2,
                        label="NF prediction 1 + k alpha^2")
                ax.plot(blocks, predicted, "k--", lw=1.0, label="with zero padding, 1 + k rho alpha^2")
            for b in np.cumsum(stages)[:-1]:
                ax.axvline(b + 0.5, color="gray", lw=0.6, ls="--")
            if log:
                ax.set_yscale("log")
            ax.set(xlabel="residual block", title=titles[metric] + (" (log)" if log else ""))
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[4].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Signal propagation at initialization: depth {config.depth} ({sum(stages)} blocks), "
                 f"unit Gaussian input {tuple(config.input_shape)}, alpha = {config.alpha:g}; "
                 f"mean and range over {len(config.seeds)} seeds", fontsize=10)
    fig.tight_layout()
    workdir.save_figure(fig, "signal_propagation")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
