"""Loss landscapes with and without skip connections (Li et al. 2018): the shortcut-free net's surface is less convex.

A ResNet and the same net without shortcuts (the CIFAR nets of He et al. 2016, trained on the
embedded `photos` crops) are trained, then their training loss is evaluated on a 2-D grid
around the trained weights, along two random filter-normalized directions (every filter of a
direction rescaled to the norm of the same filter of the weights; biases and BatchNorm
parameters zeroed; BatchNorm normalizing with the statistics of the evaluation batch, so that the
loss is invariant to the scale of each filter, the premise of filter normalization). The grid is
evaluated by one compiled program per net (`lax.map` over the points, the seeds vmapped). Convexity is measured as the
fraction of grid points near the minimum where the 2-D surface's finite-difference Hessian has a
negative eigenvalue (Li et al. map |lambda_min / lambda_max|; here of the 2-D slice); the number
of local minima in the grid is reported too. Each seed trains both nets (vmapped) and draws its own
pair of directions; the claim compares the two nets' non-convex fractions paired over the seeds.
Every preset keeps the paper's depth (56). The `paper` preset is the paper's scale (16/32/64
filters, 32x32 crops, 4000 steps at batch 128, 3 seeds, a 31x31 grid on 1024 examples; for an
accelerator, ~111 h on a CPU). The quick and full presets narrow the nets (4/8/16 filters) and
the images (8x8 crops) to run on a 2-core CPU: quick trains 1000 steps and maps a 21x21 grid on
256 examples with 3 seeds (about 5 minutes); full trains 2000 steps and maps a 31x31 grid on 512
examples with 6 seeds (about half an hour on one core; experiments/benchmarks/README.md, "Loss
landscape: the full preset's scale").

    nnbasics run loss_landscape --quick
    nnbasics run loss_landscape            # full: about half an hour on one CPU core
    nnbasics run loss_landscape --paper    # the paper's scale, for an accelerator
    nnbasics run loss_landscape --config.depth=110 --config.grid_points=41
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np
import optax

from nnbasics.analysis import loss_landscape as LL
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models.resnet import cifar_resnet
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "architectures"
ORDER = 52
SOURCE = "Li, Xu, Taylor, Studer & Goldstein 2018, Visualizing the Loss Landscape of Neural Nets, Fig. 5 and Fig. 8"

THRESHOLDS = {
    "nonconvex_gap": Threshold(">", 0.0, "Li et al. 2018 Fig. 5: without skip connections the surface around the "
                                          "minimum is chaotic and non-convex where the ResNet's is convex (an "
                                          "ordering; the paper gives no size)"),
}

SWEEPS = {
    "depth": [{"depth": d} for d in (20, 56, 110)],
    "width": [{"width": w} for w in (4, 8, 16)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "photos"
    # the crops are random draws: their seed is a config seed, so --seed-offset reaches it
    c.data_kwargs = ml_collections.ConfigDict({"n_train": 10000, "n_test": 1000, "size": 32, "seed": 0})
    c.depth = 56
    c.width = 16
    c.optimizer = ml_collections.ConfigDict(
        {"name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    )
    c.batch_size = 128
    c.steps = 4000
    c.eval_every = 1000
    c.seeds = (0, 1, 2)  # one landscape per net and seed; each seed draws its own directions
    c.grid_points = 31  # per axis
    c.grid_radius = 1.0  # alpha, beta in [-radius, radius]
    c.landscape_examples = 1024  # training examples the loss is evaluated on
    c.points_per_batch = 1  # grid points vmapped together inside the compiled map (the seeds always are)
    # the convolution of the grid's forward passes (nnbasics.nn.conv): "patches" is the fastest on a CPU for
    # the quick preset's 8x8 maps with the seeds vmapped (see experiments/benchmarks/README.md)
    c.landscape_conv_impl = "auto"
    # the training nets: their convolution and whether each stage's repeated blocks are one nn.scan (stacked
    # parameters: other initial draws than the unrolled net's); the grid evaluates the same structure
    c.conv_impl = "auto"
    c.scan_blocks = True
    c.direction_seed = 0  # the directions of training seed s come from key(direction_seed) folded with s
    # train: BatchNorm with the statistics of the evaluation batch, which keeps the scale invariance that
    # filter normalization assumes | eval: the running statistics (fixed: a bigger filter is a bigger signal)
    c.bn_mode = "train"
    c.radius = 0.5  # the claim counts the grid points within this distance of the trained weights
    # "paper" is the above: the paper's widths (16/32/64), 32x32 images, batch 128 (an accelerator's preset).
    if preset in ("full", "quick"):
        # the CPU scale: ResNet-56 and plain-56 at 4/8/16 filters on 8x8 crops, the rate of batch 128 scaled to 32,
        # unrolled blocks on the patch-matrix conv (ResNet-56 trains 1.7x faster on one core than scanned "auto")
        c.data_kwargs = ml_collections.ConfigDict({"n_train": 2000, "n_test": 500, "size": 8, "seed": 0})
        c.width = 4
        c.batch_size = 32
        c.optimizer.learning_rate = 0.025  # 0.1 at batch 128, scaled to batch 32
        c.eval_every = 500
        c.landscape_conv_impl = "patches"
        c.conv_impl = "patches"
        c.scan_blocks = False
        if preset == "quick":
            c.steps = 1000
            c.grid_points = 21
            c.landscape_examples = 256
        else:
            # what one CPU core runs in about half an hour (experiments/benchmarks/README.md, "Loss landscape:
            # the full preset's scale"): twice quick's training, six seeds instead of three, a 31x31 grid (the
            # paper's is 51x51) on 512 examples; the grid costs most of it (961 forward passes of 512 examples
            # per net and seed)
            c.steps = 2000
            c.seeds = (0, 1, 2, 3, 4, 5)
            c.grid_points = 31
            c.landscape_examples = 512
    elif preset == "smoke":
        c.conv_impl = "patches"
        c.scan_blocks = False
        c.data_kwargs = ml_collections.ConfigDict({"n_train": 200, "n_test": 100, "size": 8, "seed": 0})
        c.depth = 8
        c.width = 2
        c.batch_size = 16
        c.steps = 4
        c.eval_every = 2
        c.grid_points = 5
        c.landscape_examples = 16
        c.landscape_conv_impl = "patches"
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if int(config.depth) < 8 or (int(config.depth) - 2) % 6:
        raise ValueError(f"config.depth must be of the form 6n + 2 (20, 32, 44, 56, 110), got {config.depth}")
    if int(config.grid_points) < 5:
        raise ValueError(f"config.grid_points must be at least 5, got {config.grid_points}")
    if not float(config.grid_radius) > 0:
        raise ValueError(f"config.grid_radius must be > 0, got {config.grid_radius}")
    if not float(config.radius) > 0:
        raise ValueError(f"config.radius must be > 0, got {config.radius}")
    from nnbasics.nn.conv import IMPLEMENTATIONS

    for key in ("conv_impl", "landscape_conv_impl"):
        if config[key] not in IMPLEMENTATIONS:
            raise ValueError(f"config.{key} must be one of {', '.join(IMPLEMENTATIONS)}, got {config[key]!r}")
    if not isinstance(config.scan_blocks, bool):
        raise ValueError(f"config.scan_blocks must be True or False, got {config.scan_blocks!r}")
    if config.bn_mode not in ("eval", "train"):
        raise ValueError(f"config.bn_mode must be 'eval' or 'train', got {config.bn_mode!r}")
    if len(config.seeds) < 1:
        raise ValueError("config.seeds must hold at least one seed (one landscape per net and seed)")


def _loss_fn(model, x, y, config):
    """The training loss of one net's (params, batch_stats) on (x, y), BatchNorm as config.bn_mode says."""
    train = config.bn_mode == "train"

    def loss_fn(p, stats):
        variables = {"params": p, "batch_stats": stats} if stats else {"params": p}
        if train and stats:
            logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        else:
            logits = model.apply(variables, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss_fn


def _directions(config, params, seed: int):
    """The two filter-normalized directions of training seed `seed`: key(config.direction_seed) folded with it."""
    k1, k2 = jax.random.split(jax.random.fold_in(jax.random.key(int(config.direction_seed)), int(seed)))
    return LL.random_direction(k1, params), LL.random_direction(k2, params)


def _axis(config) -> np.ndarray:
    r = float(config.grid_radius)
    return np.linspace(-r, r, int(config.grid_points))


def landscape(model, state, x, y, config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The loss surface around the trained state along two filter-normalized directions, drawn from
    key(config.direction_seed) folded with the training seed `seed`."""
    params, stats = state.params, state.batch_stats
    d1, d2 = _directions(config, params, seed)
    loss_fn = _loss_fn(model, x, y, config)
    axis = _axis(config)
    surface = LL.loss_surface(lambda p: loss_fn(p, stats), params, d1, d2, axis, axis,
                              batch_size=int(config.points_per_batch))
    return axis, surface


def landscapes(model, state, x, y, config, seeds) -> tuple[np.ndarray, np.ndarray]:
    """`landscape` of every member of a stacked state (member i trained with seed seeds[i]) in one
    compiled program: the members are vmapped at every grid point, so the net compiles once and its
    many small operations run once for all members. Shape (members, points, points)."""
    host = jax.device_get({"params": state.params, "stats": state.batch_stats})  # per-member slices on the host
    dirs = [_directions(config, jax.tree.map(lambda a: a[i], host["params"]), s) for i, s in enumerate(seeds)]
    d1, d2 = (jax.tree.map(lambda *a: jax.numpy.stack(a), *[d[j] for d in dirs]) for j in (0, 1))
    axis = _axis(config)
    loss = LL.stacked_loss(_loss_fn(model, x, y, config), host["stats"])
    surfaces = LL.loss_surface(loss, host["params"], d1, d2, axis, axis, batch_size=int(config.points_per_batch))
    return axis, np.moveaxis(surfaces, -1, 0)


def _surface_stats(surface, axis, radius: float) -> dict[str, float]:
    return {
        "nonconvex_fraction": LL.nonconvex_fraction(surface, axis, axis, radius=radius),
        "nonconvex_fraction_grid": LL.nonconvex_fraction(surface, axis, axis),
        "local_minima": LL.local_minima(surface),
        "center_loss": float(surface[len(axis) // 2, len(axis) // 2]),
        "max_loss": float(np.max(surface)),
    }


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data, **config.data_kwargs.to_dict())
    train_config = TrainConfig.from_config(config)
    n = int(config.landscape_examples)
    x, y = jax.numpy.asarray(data.x_train[:n]), jax.numpy.asarray(data.y_train[:n])
    depth, seeds = int(config.depth), [int(s) for s in config.seeds]
    surfaces, stats, seconds = {}, {}, 0.0
    for residual in (True, False):
        name = f"{'resnet' if residual else 'plain'}{depth}"
        net = functools.partial(cifar_resnet, depth, data.num_classes, residual=residual, width=int(config.width),
                                scan_blocks=bool(config.scan_blocks))
        res = fit(net(conv_impl=config.conv_impl), data, train_config, workdir=workdir, tag=name)
        seconds += res.seconds
        # the same net with the evaluation's convolution (the parameters do not depend on it)
        evaluated = net(conv_impl=config.landscape_conv_impl)
        axis, stacked = landscapes(evaluated, res.state, x, y, config, seeds)
        surfaces[name], rows = list(stacked), []
        for seed, surface in zip(seeds, stacked):
            rows.append(_surface_stats(surface, axis, float(config.radius)))
            workdir.metrics.write({"run": name, "seed": seed, "landscape": rows[-1]})
        stats[name] = {k: np.array([r[k] for r in rows]) for k in rows[0]}  # per seed
    np.savez(workdir / "surfaces.npz", axis=axis, seeds=np.array(seeds), **{k: np.stack(v) for k, v in surfaces.items()})
    out = [_claim(config, stats, depth, seconds)]
    _figure(axis, {k: v[0] for k, v in surfaces.items()}, stats, float(config.radius), seeds[0], workdir)
    return out


def _claim(config, stats, depth: int, seconds: float) -> dict:
    res_name, plain_name = f"resnet{depth}", f"plain{depth}"
    fr, fp = stats[res_name]["nonconvex_fraction"], stats[plain_name]["nonconvex_fraction"]
    narrow = "" if int(config.width) == 16 else f", narrowed to {config.width}/{2 * config.width}/{4 * config.width} filters"
    measured = {f"{k}_{name}": stats[name][k] for k in ("nonconvex_fraction", "nonconvex_fraction_grid", "local_minima",
                                                       "center_loss") for name in (plain_name, res_name)}
    return claim(
        "no_shortcut_less_convex",
        f"Without skip connections the loss surface around the minimum is less convex "
        f"(plain-{depth} vs ResNet-{depth}{narrow}; one trained net per kind and seed, each with its own directions)",
        SOURCE,
        f"per seed: non-convex fraction of the grid points within {config.radius:g} of the minimum "
        f"({config.grid_points}x{config.grid_points} grid), " "plain minus ResNet {nonconvex_gap} (95% interval of the mean)",
        {**measured, "train_seconds": seconds},
        checks=[check("nonconvex_gap", fp - fr, THRESHOLDS["nonconvex_gap"],
                      statistic=f"nonconvex fraction plain{depth} - resnet{depth}")],
    )


def _figure(axis, surfaces, stats, radius, seed, workdir) -> None:
    """The surfaces of training seed `seed` (the first); the titles give every seed's non-convex fraction."""
    fig, axes = subplots(1, len(surfaces), size=(4.6, 4.2))
    names = sorted(surfaces, key=lambda n: n.startswith("resnet"))  # no shortcuts left, as the lecture
    for i, (ax, name) in enumerate(zip(axes, names)):
        z = surfaces[name]
        lo = float(np.min(z))
        levels = lo + (np.geomspace(0.02, 10.0, 25) if np.isfinite(z).all() else np.linspace(0, 1, 5))
        cs = ax.contour(axis, axis, z.T, levels=levels, cmap="viridis", linewidths=0.9)
        ax.clabel(cs, cs.levels[::6], fontsize=6, fmt="%.2f")
        h = LL.eigen_ratio_map(z, axis, axis)
        aa, bb = np.meshgrid(axis[1:-1], axis[1:-1], indexing="ij")
        bad = h > 0
        ax.scatter(aa[bad], bb[bad], s=6, color="red", label="non-convex point")
        ax.plot([0], [0], "k+", ms=10)
        t = np.linspace(0, 2 * np.pi, 100)
        ax.plot(radius * np.cos(t), radius * np.sin(t), "k:", lw=1, label=f"radius {radius:g}")
        ax.set(xlabel="direction 1 (filter-normalized)", ylabel="direction 2" if i == 0 else None, aspect="equal",
               title=f"{name}: non-convex within {radius:g}\n"
                     + ", ".join(f"{v:.0%}" for v in stats[name]["nonconvex_fraction"]) + " (seeds)")
        ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"Training-loss contours around the trained weights, seed {seed} (Li et al. 2018 Fig. 5)", y=1.06)
    workdir.save_figure(fig, "loss_landscape")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
