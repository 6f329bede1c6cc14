"""Normalizers against batch size (Wu & He 2018, Fig. 1): BatchNorm degrades at batch 2, GroupNorm does not.

The same CNN (norm_cnn on the 8x8 digits: four conv-norm-ReLU stages of 16/32/64/64 channels,
2x2 max pooling between them, so the last stage sees 1x1 maps) is trained with no normalizer,
BatchNorm, LayerNorm, InstanceNorm, GroupNorm and GroupNorm + Weight Standardization, at batch
sizes from 32 down to 2, as in the paper: SGD with momentum, the learning rate scaled linearly
with the batch size, the same number of epochs at every batch size. All normalizers of a batch
size train in one compiled program (`SelectedNorm`: each normalizer is a choice of averaging
over examples and channels, so the choice can be data). The lecture's figure of which axes each
normalizer averages over is drawn from the layers' own gradients (`statistics_mask`).

BatchNorm averages over the b x H x W values of a channel in the batch: on the last stage's
1x1 maps that is b values, so at batch 2 each channel is normalized against one other image in
training but against running averages at test time. InstanceNorm averages over H x W only, a
single value on 1x1 maps, so there it outputs a constant (like BatchNorm at batch 1).

    nnbasics run normalizers --quick
    nnbasics run normalizers --config.batch_sizes='(32, 16, 8, 4, 2)' --config.seeds='(0, 1, 2)'
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nnbasics import claims as C
from nnbasics.data import load_dataset
from nnbasics.models import get_model
from nnbasics.nn.normalization import KINDS, NORM_AXES, statistics_mask
from nnbasics.plotting import subplots
from nnbasics.train import PRNG_IMPL, batch_indices

TOPIC = "normalization"
ORDER = 60
SOURCE = "Wu & He 2018, Group Normalization, Figure 1"
VARIANTS = {  # name -> (normalizer, weight standardization)
    "none": ("none", False),
    "batch": ("batch", False),
    "layer": ("layer", False),
    "instance": ("instance", False),
    "group": ("group", False),
    "group+ws": ("group", True),
}
LABELS = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm", "instance": "InstanceNorm",
          "group": "GroupNorm", "group+ws": "GroupNorm + WS"}

SWEEPS = {
    "epochs": [{"epochs": e} for e in (2, 4, 8)],
    "learning_rate": [{"learning_rate": lr} for lr in (0.02, 0.05, 0.1)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "digits"
    c.widths = (16, 32, 64, 64)
    c.convs_per_stage = 1
    c.num_groups = 4
    c.variants = tuple(VARIANTS)
    c.batch_sizes = (32, 16, 8, 4, 2)
    c.every_variant_at_every_batch = True  # False: only BatchNorm and GroupNorm below the largest batch
    c.epochs = 8.0
    c.learning_rate = 0.05  # at the largest batch; scaled linearly with the batch size
    c.momentum = 0.9
    c.seeds = (0, 1, 2)
    c.conv_impl = "patches"
    c.min_bn_rise = 5.0  # error points BatchNorm must lose from the largest batch to the smallest
    c.gn_band = 3.0  # GroupNorm's error may vary by at most this many points over the batch sizes
    c.bn_tolerance = 1.0  # at the largest batch BatchNorm within this many points of the best other
    if preset == "quick":
        c.batch_sizes = (32, 8, 2)
        c.every_variant_at_every_batch = False
        c.epochs = 8.0
        c.seeds = (0, 1)
    elif preset == "smoke":
        c.batch_sizes = (32, 4)
        c.every_variant_at_every_batch = False
        c.variants = ("batch", "group", "group+ws")
        c.widths = (4, 8)
        c.epochs = 0.5
        c.seeds = (0,)
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
    if not 0 <= float(config.momentum) < 1:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum}")
    for w in config.widths:
        if int(w) % int(config.num_groups):
            raise ValueError(f"config.num_groups={config.num_groups} must divide every width, got {config.widths}")


def _train_program(model, lr: float, momentum: float):
    """A compiled function: (x, y, and per member params, stats, kind, ws, batch indices) -> trained
    params, stats and the loss of every step.

    Members run one after another (lax.map: a vmapped conv would become a grouped conv)."""
    tx = optax.sgd(lr, momentum=momentum)

    def member(x, y, args):
        params, stats, kind, ws, idx = args

        def step(carry, ix):
            p, s, opt = carry

            def loss_fn(pp):
                out, new = model.apply({"params": pp, "batch_stats": s}, x[ix], train=True, kind=kind, ws=ws,
                                       mutable=["batch_stats"])
                return optax.softmax_cross_entropy_with_integer_labels(out, y[ix]).mean(), new["batch_stats"]

            (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
            upd, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, upd), s, opt), loss

        (params, stats, _), losses = jax.lax.scan(step, (params, stats, tx.init(params)), idx)
        return params, stats, losses

    return jax.jit(lambda x, y, *a: jax.lax.map(functools.partial(member, x, y), a))


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)
    model = get_model("norm_cnn", num_classes=data.num_classes, norm="selected", widths=tuple(config.widths),
                      convs_per_stage=int(config.convs_per_stage), num_groups=int(config.num_groups),
                      conv_impl=config.conv_impl)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    seeds = [int(s) for s in config.seeds]
    sizes = sorted({int(b) for b in config.batch_sizes}, reverse=True)
    largest = sizes[0]

    # one initialization per seed, shared by every normalizer and batch size (same starting weights)
    @jax.jit
    def init(key_data):
        key = jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)
        return model.init(key, x[:1], train=False, kind=0, ws=False)

    inits = [init(jax.random.key_data(jax.random.key(s, impl=PRNG_IMPL))) for s in seeds]

    @jax.jit
    def member_error(xt, yt, params, stats, kind, ws):  # one member: compiled once for all batch sizes
        out = model.apply({"params": params, "batch_stats": stats}, xt, train=False, kind=kind, ws=ws)
        return 100.0 * (1.0 - jnp.mean(jnp.argmax(out, -1) == yt))

    def test_error(params, stats, kinds, wss):
        def member(i):
            return jax.tree.map(lambda a: a[i], (params, stats, kinds, wss))

        return [float(member_error(xt, yt, *member(i))) for i in range(len(kinds))]

    errors: dict[tuple[str, int], np.ndarray] = {}
    for b in sizes:
        names = [v for v in config.variants if config.every_variant_at_every_batch or b == largest
                 or v in ("batch", "group")]
        members = [(v, si) for v in names for si in range(len(seeds))]
        stack = functools.partial(jax.tree.map, lambda *a: jnp.stack(a))
        params = stack(*[inits[si]["params"] for _, si in members])
        stats = stack(*[inits[si]["batch_stats"] for _, si in members])
        kinds = jnp.asarray([KINDS.index(VARIANTS[v][0]) for v, _ in members])
        wss = jnp.asarray([VARIANTS[v][1] for v, _ in members])
        steps = max(1, round(float(config.epochs) * len(x) / b))
        idx = jnp.asarray(batch_indices([seeds[si] for _, si in members], 0, steps, len(x), b))
        lr = float(config.learning_rate) * b / largest
        program = _train_program(model, lr, float(config.momentum))
        params, stats, losses = program(x, y, params, stats, kinds, wss, idx)
        err = np.asarray(test_error(params, stats, kinds, wss), np.float64)
        losses = np.asarray(losses, np.float64)
        for v in names:
            rows = [i for i, (vv, _) in enumerate(members) if vv == v]
            errors[(v, b)] = err[rows]
            workdir.metrics.write({
                "variant": v, "batch_size": b, "steps": steps, "learning_rate": lr, "seed": seeds,
                "test_error": err[rows].tolist(),
                "final_train_loss": losses[rows, -max(1, steps // 10):].mean(axis=1).tolist(),
            })

    _error_figure(workdir, errors, config, sizes)
    _axes_figure(workdir)
    return _claims(errors, sizes, config)


def _claims(errors, sizes, config) -> list[dict]:
    largest, smallest = sizes[0], sizes[-1]
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    bn = [mean[("batch", b)] for b in sizes]
    gn = [mean[("group", b)] for b in sizes]
    rise = mean[("batch", smallest)] - mean[("batch", largest)]
    band = max(gn) - min(gn)
    others = {v: mean[(v, largest)] for v in config.variants if v != "batch"}
    best_other = min(others, key=others.get)
    sizes_f = [float(b) for b in sizes]
    out = [
        C.claim(
            "bn_error_rises_at_small_batch",
            f"BatchNorm's error rises as the batch shrinks from {largest} to {smallest}",
            SOURCE, f"error(batch {smallest}) - error(batch {largest}) >= {config.min_bn_rise:g} points",
            {"batch_sizes": sizes_f, "bn_error": bn, "bn_rise": rise}, C.at_least(rise, config.min_bn_rise),
        ),
        C.claim(
            "gn_error_stable_across_batch",
            f"GroupNorm's error stays within a small band from batch {largest} to {smallest}",
            SOURCE, f"max - min of GroupNorm's error over batch sizes <= {config.gn_band:g} points",
            {"batch_sizes": sizes_f, "gn_error": gn, "gn_band": band}, C.at_most(band, config.gn_band),
        ),
        C.claim(
            "gn_beats_bn_at_smallest_batch",
            f"At batch {smallest} GroupNorm is better than BatchNorm",
            SOURCE, "error(GN) < error(BN) at the smallest batch",
            {"gn_error": mean[("group", smallest)], "bn_error": mean[("batch", smallest)]},
            mean[("group", smallest)] < mean[("batch", smallest)],
        ),
        C.claim(
            "bn_at_least_as_good_at_large_batch",
            f"At batch {largest} BatchNorm is at least as good as the other normalizers",
            SOURCE, f"error(BN) <= min error(others) + {config.bn_tolerance:g} points at batch {largest}",
            {"bn_error": mean[("batch", largest)], "best_other_error": others[best_other],
             **{f"{v}_error": e for v, e in others.items()}},
            C.at_most(mean[("batch", largest)], others[best_other] + config.bn_tolerance),
            best_other=best_other,
        ),
    ]
    return out


def _error_figure(workdir, errors, config, sizes) -> None:
    fig, (ax,) = subplots(size=(6.4, 4.4))
    for v in config.variants:
        bs = [b for b in sizes if (v, b) in errors]
        vals = np.array([errors[(v, b)] for b in bs])  # (batch sizes, seeds)
        style = {"marker": "o", "lw": 2 if v in ("batch", "group") else 1}
        (line,) = ax.plot(bs, vals.mean(axis=1), label=LABELS[v], **style)
        if vals.shape[1] > 1:
            ax.fill_between(bs, vals.min(axis=1), vals.max(axis=1), color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.invert_xaxis()
    ax.set_yscale("log")
    ax.set(xlabel="batch size (images per step)", ylabel="test error (%)",
           title=f"{config.data}: error vs batch size (mean, min-max over {len(config.seeds)} seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
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
