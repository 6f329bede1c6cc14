"""Properties of convolution: parameter counts, Toeplitz matrix, equivariance, any input size, stride, pooling.

The lecture's five views on convolutional layers, each measured: a fully connected, a locally
connected and a convolutional layer on the same input (parameter counts); convolution as a
(doubly block) Toeplitz matrix; translation equivariance of a conv net (and not of a dense
net); the same weights on 16x16 and 64x64 inputs; strided convolution = convolution followed by
subsampling; max and mean pooling making features stable to 1-pixel shifts (on crops of real
photographs); pooling across channels (max over a bank of rotated edge filters) giving
invariance to the rotation of an edge; and a conv net with pooling changing far less than the
pixels under a small elastic deformation.

    nnbasics run conv_properties --quick
    nnbasics run conv_properties --config.deformation_pixels=2
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics import claims as C
from nnbasics.analysis import conv_matrix as cm
from nnbasics.analysis import equivariance as eq
from nnbasics.data.photos import PHOTOS, photo
from nnbasics.nn.conv import Conv, conv_general
from nnbasics.nn.local import LocallyConnected, param_counts
from nnbasics.nn.pooling import channel_max_pool, global_pool, max_pool, mean_pool
from nnbasics.plotting import subplots

TOPIC = "convolution"
ORDER = 40
LECTURE = "Lecture: convolutional neural networks"


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.layer = ml_collections.ConfigDict({"size": 32, "in_channels": 3, "features": 16, "kernel": 3})
    c.toeplitz_trials = 20
    c.equivariance_size = 32
    c.shifts = ((1, 0), (0, 3), (5, 7), (-4, 2))
    c.pool_sizes = (1, 2, 4, 8)
    c.pool_size = 4  # the claim compares this pooling window with no pooling
    c.n_crops = 64
    c.crop_size = 64
    c.orientations = 8
    c.edge_angles = 72
    c.deformation_pixels = 3.0
    c.deformation_sweep = (1.0, 2.0, 3.0, 4.0)
    c.n_deform = 32
    c.tolerance = 1e-5
    if preset == "quick":
        c.toeplitz_trials = 10
        c.n_crops = 32
        c.n_deform = 24
    elif preset == "smoke":
        c.layer.size = 8
        c.toeplitz_trials = 2
        c.equivariance_size = 16
        c.shifts = ((1, 0),)
        c.pool_sizes = (1, 2, 4)
        c.n_crops = 4
        c.crop_size = 32
        c.edge_angles = 12
        c.deformation_sweep = (3.0,)
        c.n_deform = 4
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if config.pool_size not in config.pool_sizes or 1 not in config.pool_sizes:
        raise ValueError(f"config.pool_sizes {tuple(config.pool_sizes)} must contain 1 and config.pool_size={config.pool_size}")
    if config.crop_size % max(config.pool_sizes):
        raise ValueError(f"config.crop_size ({config.crop_size}) must be a multiple of every pool size")
    if config.orientations < 2 or config.edge_angles < 4:
        raise ValueError("config.orientations must be >= 2 and config.edge_angles >= 4")
    if config.n_deform < 2 or config.n_crops < 1:
        raise ValueError("config.n_deform must be >= 2 and config.n_crops >= 1")
    if config.deformation_pixels <= 0:
        raise ValueError(f"config.deformation_pixels must be > 0, got {config.deformation_pixels}")


# --------------------------------------------------------------------------------- the pieces


def he(rng: np.random.Generator, shape) -> jax.Array:
    """He-normal weights drawn with NumPy (XLA would compile one random kernel per shape)."""
    fan_in = int(np.prod(shape[:-1]))
    return jnp.asarray(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in), jnp.float32)


def param_count_claim(config, workdir) -> dict:
    """Count the parameters of Dense, LocallyConnected and Conv on the same input (shapes only)."""
    lc = config.layer
    n, cin, f, k = lc.size, lc.in_channels, lc.features, lc.kernel
    x = jax.ShapeDtypeStruct((1, n, n, cin), jnp.float32)
    key = jax.random.key(0)

    def count(module, inp):
        shapes = jax.eval_shape(module.init, key, inp)
        return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))

    import flax.linen as nn

    measured = {
        "fully_connected": count(nn.Dense(n * n * f), jax.ShapeDtypeStruct((1, n * n * cin), jnp.float32)),
        "locally_connected": count(LocallyConnected(f, (k, k), padding="SAME"), x),
        "convolutional": count(Conv(f, (k, k), padding="SAME"), x),
    }
    formula = param_counts((n, n), cin, f, (k, k))
    fig, (ax,) = subplots(size=(6, 3.8))
    names = list(measured)
    ax.bar(names, [measured[m] for m in names], color=["C0", "C1", "C2"])
    for i, m in enumerate(names):
        ax.text(i, measured[m], f"{measured[m]:,}", ha="center", va="bottom")
    ax.set(yscale="log", ylabel="parameters (log scale)",
           title=f"{n}x{n}x{cin} -> {n}x{n}x{f}: weight sharing and locality")
    workdir.save_figure(fig, "parameter_counts")
    return C.claim(
        "parameter_counts",
        "A conv layer needs far fewer parameters than a locally connected layer, which needs far fewer than a "
        "fully connected one, on the same input and output (counts match the formulas)",
        LECTURE,
        f"FC = (HWC_in + 1) HWC_out, LC = HW (k^2 C_in + 1) C_out, conv = (k^2 C_in + 1) C_out; "
        f"for {n}x{n}x{cin} -> {f} channels, {k}x{k}: {formula['fully_connected']:,} / "
        f"{formula['locally_connected']:,} / {formula['convolutional']:,}",
        {**{f"params_{m}": v for m, v in measured.items()},
         "fc_over_conv": measured["fully_connected"] / measured["convolutional"],
         "lc_over_conv": measured["locally_connected"] / measured["convolutional"]},
        measured == formula and measured["convolutional"] < measured["locally_connected"] < measured["fully_connected"],
    )


def toeplitz_claim(config, workdir) -> dict:
    """M @ x == lax conv over random shapes, strides, paddings, dilations and channel counts."""
    rng = np.random.default_rng(config.seed)
    errors = []
    for t in range(config.toeplitz_trials):
        nd = 1 + t % 2
        spatial = tuple(int(v) for v in rng.integers(5, 10, nd))
        ks = tuple(int(v) for v in rng.integers(1, 4, nd))
        cin, cout = (int(v) for v in rng.integers(1, 4, 2))
        s, d = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pad = ("SAME", "VALID", 1)[t % 3]
        if pad == "VALID" and any(n < d * (k - 1) + 1 for n, k in zip(spatial, ks)):
            pad = "SAME"
        x = rng.standard_normal((2, *spatial, cin)).astype(np.float32)
        w = rng.standard_normal((*ks, cin, cout)).astype(np.float32)
        ref = np.asarray(conv_general(jnp.asarray(x), jnp.asarray(w), s, pad, d, impl="xla"))
        got = cm.conv_by_matrix(x, w, s, pad, d)
        errors.append(float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12)))
    m1 = cm.toeplitz_matrix([1.0, 2.0, 3.0], 10, "SAME")
    k2 = rng.standard_normal((3, 3, 1, 1))
    m2 = cm.conv_matrix(k2, (5, 5), 1, "SAME")
    structured = cm.is_toeplitz(m1) and cm.is_doubly_block_toeplitz(m2, (5, 5))

    fig, axes = subplots(1, 2, size=(4.2, 4.2))
    axes[0].imshow(m1, cmap="RdBu_r", vmin=-3, vmax=3)
    axes[0].set(title="1-D, kernel (1, 2, 3): Toeplitz", xlabel="input index", ylabel="output index")
    lim = np.abs(m2).max()
    axes[1].imshow(m2, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1].set(title="2-D 3x3 on 5x5: doubly block Toeplitz", xlabel="input pixel", ylabel="output pixel")
    workdir.save_figure(fig, "toeplitz")
    max_err = float(max(errors))
    return C.claim(
        "conv_is_toeplitz_matrix",
        "A convolution is a matrix product with a (doubly block) Toeplitz matrix: M x equals the convolution for "
        "any stride, padding, dilation and channel count",
        LECTURE + " (Toeplitz matrix)",
        f"max relative error <= {config.tolerance:g} over {config.toeplitz_trials} random layers; structure checked",
        {"max_relative_error": max_err, "trials": len(errors), "toeplitz_structure": float(structured),
         "nonzero_fraction_2d": cm.band_fraction(m2)},
        C.at_most(max_err, config.tolerance) and structured,
    )


def circular_conv_net(params, x):
    """Three 3x3 conv + ReLU layers with circular padding: exactly translation-equivariant."""
    for w in params:
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        x = jax.nn.relu(conv_general(x, w, 1, "VALID"))
    return x


def zero_pad_conv_net(params, x):
    """The same layers with zero ('SAME') padding: runs on any input size."""
    for w in params:
        x = jax.nn.relu(conv_general(x, w, 1, "SAME"))
    return x


def dense_net(params, x):
    """A two-layer dense net from an image to an image of the same shape."""
    w1, w2 = params
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ w1)
    return (h @ w2).reshape(x.shape[0], x.shape[1], x.shape[2], -1)


def equivariance_claims(config, workdir) -> list[dict]:
    n = config.equivariance_size
    rng = np.random.default_rng(config.seed)
    conv_params = [he(rng, (3, 3, 3, 8)), he(rng, (3, 3, 8, 8)), he(rng, (3, 3, 8, 4))]
    dense_params = [he(rng, (n * n * 3, 256)), he(rng, (256, n * n * 4))]
    w_strided = he(rng, (3, 3, 3, 8))
    x = photo_crops(2, n, config.seed + 3, extra=0, gray=False)
    shifts = [tuple(int(v) for v in s) for s in config.shifts]
    b = 3  # the receptive-field radius of the three 3x3 layers

    @jax.jit
    def outputs(x):
        """Everything the claims compare, in one compiled program."""
        canvas = jnp.zeros((2, 4 * n, 4 * n, 3)).at[:, n:2 * n, n:2 * n].set(x)
        return {
            "conv": circular_conv_net(conv_params, x),
            "dense": dense_net(dense_params, x),
            "conv_shifted": [circular_conv_net(conv_params, eq.translate(x, s)) for s in shifts],
            "dense_shifted": [dense_net(dense_params, eq.translate(x, s)) for s in shifts],
            # Any input size: the same weights on n x n and 4n x 4n; the small image pasted into a
            # big zero canvas gives the same features away from the border of the receptive field.
            "small": zero_pad_conv_net(conv_params, x),
            "big": zero_pad_conv_net(conv_params, canvas),
            # Strided convolution = convolution followed by subsampling (explicit symmetric padding).
            "strided": conv_general(x, w_strided, 2, 1),
            "subsampled": conv_general(x, w_strided, 1, 1)[:, ::2, ::2],
        }

    o = jax.tree.map(np.asarray, outputs(jnp.asarray(x)))
    conv_err = [eq.relative_difference(o["conv_shifted"][i], eq.translate(o["conv"], s)) for i, s in enumerate(shifts)]
    dense_err = [eq.relative_difference(o["dense_shifted"][i], eq.translate(o["dense"], s)) for i, s in enumerate(shifts)]
    small, big = o["small"], o["big"]
    size_err = eq.relative_difference(big[:, n + b:2 * n - b, n + b:2 * n - b], small[:, b:-b, b:-b])
    try:
        jax.eval_shape(lambda z: dense_net(dense_params, z), jax.ShapeDtypeStruct((2, 4 * n, 4 * n, 3), jnp.float32))
        dense_any_size = 1.0
    except (TypeError, ValueError):
        dense_any_size = 0.0
    strided, subsampled = o["strided"], o["subsampled"]
    stride_err = eq.relative_difference(strided, subsampled)

    shift = shifts[-1]
    fx, fsx = o["conv"], o["conv_shifted"][-1]
    ch = int(np.argmax(fx[0].reshape(-1, fx.shape[-1]).std(axis=0)))  # the most varied output channel
    panels = [
        (x[0], f"input x (a photo crop), shift {tuple(shift)}"),
        (fx[0, ..., ch], f"conv net: f(x), channel {ch}"),
        (fsx[0, ..., ch], "conv net: f(translate(x))"),
        (np.abs(eq.translate(fx, shift) - fsx)[0, ..., ch], "conv: |translate(f(x)) - f(translate(x))|"),
        (np.abs(eq.translate(o["dense"], shift) - o["dense_shifted"][-1])[0, ..., ch],
         "dense: |translate(f(x)) - f(translate(x))|"),
    ]
    fig, axes = subplots(1, len(panels), size=(3.6, 3.6))
    vmax = float(np.max(np.abs(fx[0, ..., ch]))) or 1.0
    for i, (ax, (m, title)) in enumerate(zip(axes, panels)):
        m = np.asarray(m)
        if m.ndim == 3:
            ax.imshow(np.clip(m, 0, 1))
        else:
            ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax if i < 4 else None)
        ax.set_title(title, fontsize=8)
        ax.set(xticks=[], yticks=[])
    fig.suptitle("Translation equivariance: a conv net commutes with shifts (difference exactly 0), a dense net does not")
    workdir.save_figure(fig, "equivariance")
    tol = config.tolerance
    return [
        C.claim(
            "translation_equivariance",
            "A conv net (circular padding) is translation-equivariant, f(translate(x)) = translate(f(x)), "
            "while a dense net is not",
            LECTURE + " (five views: equivariant with translation)",
            f"conv net relative error <= {tol:g}; dense net >= 0.1",
            {"conv_net_error_max": max(conv_err), "dense_net_error_min": min(dense_err), "shifts": len(conv_err)},
            C.at_most(max(conv_err), tol) and C.at_least(min(dense_err), 0.1),
        ),
        C.claim(
            "any_input_size",
            f"The same conv weights run on {n}x{n} and {4 * n}x{4 * n} inputs and compute the same features "
            "(a dense layer's weights fix its input size)",
            LECTURE + " (conv layers can be applied to arbitrarily-sized inputs)",
            f"interior features equal to relative error <= {tol:g}; the dense net rejects the larger input",
            {"relative_error": size_err, "out_height_small": small.shape[1], "out_height_large": big.shape[1],
             "dense_net_runs_on_larger_input": dense_any_size},
            C.at_most(size_err, tol) and small.shape[1] == n and big.shape[1] == 4 * n and dense_any_size == 0.0,
        ),
        C.claim(
            "strided_conv_is_subsampled_conv",
            "A strided convolution equals the convolution followed by subsampling (at 1/stride^2 of the cost)",
            LECTURE + " (strided convolution)",
            f"relative error <= {tol:g}",
            {"relative_error": stride_err, "outputs_strided": float(np.prod(strided.shape)),
             "outputs_full": float(np.prod(subsampled.shape) * 4)},
            C.at_most(stride_err, tol),
        ),
    ]


def photo_crops(n: int, size: int, seed: int, extra: int = 1, gray: bool = True) -> np.ndarray:
    """n crops (n, size + extra, size + extra[, 3]) of the scikit-image photographs (grey or RGB)."""
    rng = np.random.default_rng(seed)
    imgs = [photo(name).mean(-1) if gray else photo(name) for name in PHOTOS]
    out = np.empty((n, size + extra, size + extra, *imgs[0].shape[2:]), np.float32)
    for i in range(n):
        img = imgs[i % len(imgs)]
        y = rng.integers(0, img.shape[0] - size - extra + 1)
        x = rng.integers(0, img.shape[1] - size - extra + 1)
        out[i] = img[y:y + size + extra, x:x + size + extra]
    return out


def pooling_claim(config, workdir, crops) -> dict:
    """Relative change of conv features under 1-pixel shifts, with max/mean pooling of each size."""
    s = config.crop_size
    x0 = jnp.asarray(crops[:, :s, :s, None])
    shifted = [jnp.asarray(crops[:, 1:s + 1, :s, None]), jnp.asarray(crops[:, :s, 1:s + 1, None])]
    w = np.random.default_rng(config.seed + 1).standard_normal((5, 5, 1, 16))
    w = jnp.asarray(w - w.mean(axis=(0, 1), keepdims=True), jnp.float32)  # zero-mean (edge-like) filters

    @jax.jit
    def features(x):
        y = jax.nn.relu(conv_general(x, w, 1, "VALID"))
        return {(kind, k): (max_pool if kind == "max" else mean_pool)(y, k) if k > 1 else y
                for kind in ("max", "mean") for k in config.pool_sizes}

    base = jax.tree.map(np.asarray, features(x0))
    moved = [jax.tree.map(np.asarray, features(xs)) for xs in shifted]
    change = {key: float(np.mean([eq.relative_difference(m[key], base[key]) for m in moved])) for key in base}
    fig, (ax,) = subplots(size=(6, 4))
    for kind in ("max", "mean"):
        ax.plot(config.pool_sizes, [change[(kind, k)] for k in config.pool_sizes], "o-", label=f"{kind} pooling")
    ax.set(xscale="log", xlabel="pooling window (pixels, stride = window)",
           ylabel="relative change of features", title="Features under a 1-pixel shift of a photograph")
    ax.set_xticks(list(config.pool_sizes), [str(k) for k in config.pool_sizes])
    ax.minorticks_off()
    ax.legend()
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "pooling_shift_stability")
    none, pooled = change[("max", 1)], change[("max", config.pool_size)]
    k = config.pool_size
    return C.claim(
        "max_pooling_shift_stability",
        f"Max pooling ({k}x{k}) makes conv features of real photographs change much less under a 1-pixel shift "
        "than without pooling",
        LECTURE + " (pooling: stability w.r.t. small translations)",
        "relative change with pooling <= 0.6 x without",
        {"change_no_pooling": none, f"change_max_pool_{k}": pooled, f"change_mean_pool_{k}": change[("mean", k)],
         "ratio": pooled / none, "crops": crops.shape[0]},
        C.at_most(pooled / none, 0.6),
    )


def edge_filter_bank(orientations: int, size: int = 9, sigma: float = 1.5) -> np.ndarray:
    """Derivative-of-Gaussian edge filters at `orientations` angles over 360 degrees: (size, size, 1, n)."""
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    out = []
    for t in np.arange(orientations) * 2 * np.pi / orientations:
        f = (xx * np.cos(t) + yy * np.sin(t)) * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        out.append(f / np.abs(f).sum())
    return np.stack(out, -1)[:, :, None, :].astype(np.float32)


def edge_images(angles: np.ndarray, size: int = 9) -> np.ndarray:
    """Soft step edges through the centre whose normal points at each angle: (n, size, size, 1)."""
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    return np.stack([1 / (1 + np.exp(-(xx * np.cos(a) + yy * np.sin(a)) / 0.5)) for a in angles])[..., None].astype(np.float32)


def channel_pooling_claim(config, workdir) -> dict:
    angles = np.linspace(0, 2 * np.pi, config.edge_angles, endpoint=False)
    bank = jnp.asarray(edge_filter_bank(config.orientations))
    @jax.jit
    def responses(edges):
        r = jax.nn.relu(conv_general(edges, bank, 1, "VALID"))[:, 0, 0, :]
        return r, channel_max_pool(r, config.orientations)[:, 0]

    resp, pooled = (np.asarray(a) for a in responses(jnp.asarray(edge_images(angles))))
    single = resp[:, 0]
    cv_single = float(single.std() / max(single.mean(), 1e-12))
    cv_pooled = float(pooled.std() / max(pooled.mean(), 1e-12))
    fig, (ax,) = subplots(size=(6.5, 4))
    deg = np.degrees(angles)
    for i in range(min(3, config.orientations)):
        ax.plot(deg, resp[:, i], lw=1, alpha=0.7, label=f"filter at {360 * i / config.orientations:.0f} deg")
    ax.plot(deg, pooled, "k", lw=2.5, label=f"max over the {config.orientations} filters")
    ax.set(xlabel="edge orientation (degrees)", ylabel="response at the centre (after ReLU)",
           title="Pooling across channels: invariance to edge rotation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "channel_pooling_rotation")
    return C.claim(
        "channel_pooling_rotation_invariance",
        f"Max pooling across a bank of {config.orientations} rotated edge filters responds to an edge at any "
        "orientation almost equally, while one filter does not",
        LECTURE + " (pooling across feature channels can achieve other kinds of invariances)",
        "coefficient of variation over orientations: pooled <= 0.1, single filter >= 0.5",
        {"cv_single_filter": cv_single, "cv_channel_max": cv_pooled, "orientations": config.orientations},
        C.at_most(cv_pooled, 0.1) and C.at_least(cv_single, 0.5),
    )


def pooled_net(params, x, pool: bool):
    for w in params:
        x = jax.nn.relu(conv_general(x, w, 1, "SAME"))
        if pool:
            x = max_pool(x, 2)
    return global_pool(x) if pool else x


def deformation_claim(config, workdir, crops) -> dict:
    s = config.crop_size
    x = jnp.asarray(crops[: config.n_deform, :s, :s, None])
    rng = np.random.default_rng(config.seed + 2)
    params = [he(rng, (5, 5, 1, 16)), he(rng, (3, 3, 16, 32)), he(rng, (3, 3, 32, 64))]
    nets = {"with pooling": jax.jit(lambda z: pooled_net(params, z, True)),
            "no pooling": jax.jit(lambda z: pooled_net(params, z, False))}
    sweep = sorted(set(config.deformation_sweep) | {float(config.deformation_pixels)})
    results = {}
    for px in sweep:
        d = eq.smooth_displacement(config.seed + 3, (s, s), px)
        xw = eq.warp(x, d)
        results[px] = {name: eq.deformation_stability(f, x, xw) for name, f in nets.items()}
        if px == float(config.deformation_pixels):
            example = (np.asarray(x[0, ..., 0]), np.asarray(xw[0, ..., 0]), np.asarray(d))
    fig, axes = subplots(1, 3, size=(4, 3.6))
    axes[0].imshow(example[0], cmap="gray")
    axes[0].set(title="photograph crop", xticks=[], yticks=[])
    axes[1].imshow(example[1], cmap="gray")
    step = max(1, s // 12)
    yy, xx = np.mgrid[0:s:step, 0:s:step]
    axes[1].quiver(xx, yy, example[2][::step, ::step, 1], -example[2][::step, ::step, 0], color="r", scale=1,
                   scale_units="xy", angles="xy")
    axes[1].set(title=f"elastic warp (max {config.deformation_pixels:g} px)", xticks=[], yticks=[])
    ax = axes[2]
    ax.plot(sweep, [results[p]["with pooling"]["pixel_change"] for p in sweep], "k--o", label="pixels")
    for name in nets:
        ax.plot(sweep, [results[p][name]["feature_change"] for p in sweep], "o-", label=f"features, {name}")
    ax.set(xlabel="largest displacement (pixels)", ylabel="change / distance between images",
           title="Stability to small deformations")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "deformation_stability")
    r = results[float(config.deformation_pixels)]
    ratio, ratio_none = r["with pooling"]["ratio"], r["no pooling"]["ratio"]
    return C.claim(
        "deformation_stability",
        f"Under an elastic warp of up to {config.deformation_pixels:g} pixels, the features of a conv net with "
        "pooling change far less than the pixels do (each relative to the distance between different images)",
        LECTURE + " (CNNs are stable w.r.t. diffeomorphisms)",
        "feature change / pixel change <= 0.5 with pooling (and below the same net without pooling)",
        {"ratio_with_pooling": ratio, "ratio_no_pooling": ratio_none,
         "pixel_change": r["with pooling"]["pixel_change"], "feature_change": r["with pooling"]["feature_change"],
         "images": x.shape[0]},
        C.at_most(ratio, 0.5) and ratio < ratio_none,
    )


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    out = [param_count_claim(config, workdir)]
    # Exact identities: full float32 convolutions (GPUs default to TF32 and TPUs to bfloat16 passes).
    with jax.default_matmul_precision("highest"):
        out.append(toeplitz_claim(config, workdir))
        out += equivariance_claims(config, workdir)
    crops = photo_crops(max(config.n_crops, config.n_deform), config.crop_size, config.seed)
    out.append(pooling_claim(config, workdir, crops[: config.n_crops]))
    out.append(channel_pooling_claim(config, workdir))
    out.append(deformation_claim(config, workdir, crops))
    return out


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
