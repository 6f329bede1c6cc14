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

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics.analysis import conv_matrix
from nnbasics.analysis.equivariance import deformation_stability, relative_difference, smooth_displacement, translate, warp
from nnbasics.data.photos import PHOTOS, photo
from nnbasics.nn.conv import Conv, conv_general
from nnbasics.nn.local import LocallyConnected, param_counts
from nnbasics.nn.pooling import channel_max_pool, global_pool, max_pool, mean_pool
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "convolution"
ORDER = 40
LECTURE = "Lecture: convolutional neural networks"

_EXACT = "an exact identity computed in float32 (highest matmul precision): rounding is ~1e-7 relative"
THRESHOLDS = {
    "toeplitz_error": Threshold("<=", 1e-5, _EXACT),
    "conv_equivariance_error": Threshold("<=", 1e-5, _EXACT),
    "dense_equivariance_error": Threshold(">=", 0.1, "a dense net has no weight sharing: the error of "
                                          "translate(f(x)) against f(translate(x)) is of order 1, not rounding"),
    "any_size_error": Threshold("<=", 1e-5, _EXACT),
    "strided_error": Threshold("<=", 1e-5, _EXACT),
    "max_pool_shift_ratio": Threshold("<=", 0.6, "lecture: pooling gives stability to small translations; 'much "
                                      "less' read as at most 0.6 of the change without pooling"),
    "channel_pool_cv": Threshold("<=", 0.1, "lecture: pooling across rotated filters gives rotation invariance; "
                                 "'almost equal' read as a coefficient of variation of at most 10%"),
    "single_filter_cv": Threshold(">=", 0.5, "one oriented filter responds to a narrow range of orientations: its "
                                  "response varies by the order of its mean"),
    "deformation_ratio": Threshold("<=", 0.5, "lecture (Bruna & Mallat; Zhang et al. 2018): CNN features are stable "
                                   "to small diffeomorphisms; 'far less than the pixels' read as at most half"),
    "deformation_pooling_gain": Threshold("<", 0.0, "pooling is what brings the stability: the paired difference "
                                          "ratio(with pooling) - ratio(without) is negative"),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # the exact identities (random layers and inputs; any draw gives the same verdict)
    c.seeds = tuple(range(64))  # the deformation claim: one random net, warp and set of crops per seed
    c.n_paired = 6  # the first seeds: the pooling-shift claim and the deformation claim's no-pooling comparison
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
    if preset == "quick":
        c.toeplitz_trials = 10
        c.n_crops = 32
        c.n_deform = 16
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
        c.seeds = (0, 1, 2)
        c.n_paired = 3
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if config.pool_size not in config.pool_sizes or 1 not in config.pool_sizes:
        raise ValueError(f"config.pool_sizes {tuple(config.pool_sizes)} must contain 1 and config.pool_size={config.pool_size}")
    if config.crop_size % max(config.pool_sizes):
        raise ValueError(f"config.crop_size ({config.crop_size}) must be a multiple of every pool size")
    if config.orientations < 2 or config.edge_angles < 4:
        raise ValueError("config.orientations must be >= 2 and config.edge_angles >= 4")
    if not 2 <= config.n_paired <= len(config.seeds):
        raise ValueError(f"config.n_paired must be in [2, len(config.seeds)], got {config.n_paired}")
    if len(config.seeds) < 2:
        raise ValueError("config.seeds needs at least two seeds (the pooling and deformation claims take intervals)")
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
    key = jax.random.key(0)  # shapes only (eval_shape): no value is drawn

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
    return claim(
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
        got = conv_matrix.conv_by_matrix(x, w, s, pad, d)
        errors.append(float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12)))
    m1 = conv_matrix.toeplitz_matrix([1.0, 2.0, 3.0], 10, "SAME")
    k2 = rng.standard_normal((3, 3, 1, 1))
    m2 = conv_matrix.conv_matrix(k2, (5, 5), 1, "SAME")
    structured = conv_matrix.is_toeplitz(m1) and conv_matrix.is_doubly_block_toeplitz(m2, (5, 5))

    fig, axes = subplots(1, 2, size=(4.2, 4.2))
    fig.colorbar(axes[0].imshow(m1, cmap="RdBu_r", vmin=-3, vmax=3), ax=axes[0], fraction=0.046, pad=0.04)
    axes[0].set(title="1-D, kernel (1, 2, 3): Toeplitz", xlabel="input index", ylabel="output index")
    lim = np.abs(m2).max()
    fig.colorbar(axes[1].imshow(m2, cmap="RdBu_r", vmin=-lim, vmax=lim), ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set(title="2-D 3x3 on 5x5: doubly block Toeplitz", xlabel="input pixel", ylabel="output pixel")
    workdir.save_figure(fig, "toeplitz")
    max_err = float(max(errors))
    return claim(
        "conv_is_toeplitz_matrix",
        "A convolution is a matrix product with a (doubly block) Toeplitz matrix: M x equals the convolution for "
        "any stride, padding, dilation and channel count",
        LECTURE + " (Toeplitz matrix)",
        f"max relative error <= {THRESHOLDS['toeplitz_error'].value:g} over {config.toeplitz_trials} random layers; "
        "structure checked",
        {"max_relative_error": max_err, "trials": len(errors), "toeplitz_structure": float(structured),
         "nonzero_fraction_2d": conv_matrix.band_fraction(m2)},
        structured, checks=[check("toeplitz_error", max_err, THRESHOLDS["toeplitz_error"], random=False)],
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


RF_RADIUS = 3  # the receptive-field radius of the three 3x3 layers of circular_conv_net / zero_pad_conv_net


def _equivariance_inputs(config) -> tuple[dict, np.ndarray]:
    """He-scaled random weights of the conv net, the dense net and one strided conv, and two photo crops."""
    n = config.equivariance_size
    rng = np.random.default_rng(config.seed)
    weights = {
        "conv": [he(rng, (3, 3, 3, 8)), he(rng, (3, 3, 8, 8)), he(rng, (3, 3, 8, 4))],
        "dense": [he(rng, (n * n * 3, 256)), he(rng, (256, n * n * 4))],
        "strided": he(rng, (3, 3, 3, 8)),
    }
    return weights, photo_crops(2, n, config.seed + 3, extra=0, gray=False)


def _equivariance_outputs(weights: dict, x: np.ndarray, shifts: list[tuple], n: int) -> dict:
    """Everything the claims compare, computed in one compiled program."""
    conv_params, dense_params, w_strided = weights["conv"], weights["dense"], weights["strided"]

    @jax.jit
    def outputs(x):
        canvas = jnp.zeros((2, 4 * n, 4 * n, 3)).at[:, n:2 * n, n:2 * n].set(x)
        return {
            "conv": circular_conv_net(conv_params, x),
            "dense": dense_net(dense_params, x),
            "conv_shifted": [circular_conv_net(conv_params, translate(x, s)) for s in shifts],
            "dense_shifted": [dense_net(dense_params, translate(x, s)) for s in shifts],
            # Any input size: the same weights on n x n and 4n x 4n; the small image pasted into a
            # big zero canvas gives the same features away from the border of the receptive field.
            "small": zero_pad_conv_net(conv_params, x),
            "big": zero_pad_conv_net(conv_params, canvas),
            # Strided convolution = convolution followed by subsampling (explicit symmetric padding).
            "strided": conv_general(x, w_strided, 2, 1),
            "subsampled": conv_general(x, w_strided, 1, 1)[:, ::2, ::2],
        }

    return jax.tree.map(np.asarray, outputs(jnp.asarray(x)))


def _dense_net_runs_on(dense_params, shape) -> float:
    """1.0 if the dense net accepts inputs of `shape`, 0.0 if its weights fix another input size."""
    try:
        jax.eval_shape(lambda z: dense_net(dense_params, z), jax.ShapeDtypeStruct(shape, jnp.float32))
        return 1.0
    except (TypeError, ValueError):
        return 0.0


def _equivariance_errors(o: dict, shifts: list[tuple], n: int, dense_params) -> dict:
    """Relative errors of the three identities (per shift for equivariance)."""
    b = RF_RADIUS
    small, big = o["small"], o["big"]
    return {
        "conv": [relative_difference(o["conv_shifted"][i], translate(o["conv"], s)) for i, s in enumerate(shifts)],
        "dense": [relative_difference(o["dense_shifted"][i], translate(o["dense"], s)) for i, s in enumerate(shifts)],
        "size": relative_difference(big[:, n + b:2 * n - b, n + b:2 * n - b], small[:, b:-b, b:-b]),
        "dense_any_size": _dense_net_runs_on(dense_params, (2, 4 * n, 4 * n, 3)),
        "stride": relative_difference(o["strided"], o["subsampled"]),
    }


def _equivariance_figure(workdir, x: np.ndarray, o: dict, shift: tuple) -> None:
    """The input, f(x) and f(translate(x)) of the conv net, and both nets' equivariance differences."""
    fx, fsx = o["conv"], o["conv_shifted"][-1]
    ch = int(np.argmax(fx[0].reshape(-1, fx.shape[-1]).std(axis=0)))  # the most varied output channel
    panels = [
        (x[0], f"input x (a photo crop), shift {tuple(shift)}"),
        (fx[0, ..., ch], f"conv net: f(x), channel {ch}"),
        (fsx[0, ..., ch], "conv net: f(translate(x))"),
        (np.abs(translate(fx, shift) - fsx)[0, ..., ch], "conv: |translate(f(x)) - f(translate(x))|"),
        (np.abs(translate(o["dense"], shift) - o["dense_shifted"][-1])[0, ..., ch],
         "dense: |translate(f(x)) - f(translate(x))|"),
    ]
    fig, axes = subplots(1, len(panels), size=(3.6, 3.6))
    vmax = float(np.max(np.abs(fx[0, ..., ch]))) or 1.0
    for i, (ax, (m, title)) in enumerate(zip(axes, panels)):
        m = np.asarray(m)
        if m.ndim == 3:
            ax.imshow(np.clip(m, 0, 1))
        else:
            im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax if i < 4 else None)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=8)
        ax.set(xticks=[], yticks=[])
    fig.suptitle("Translation equivariance: a conv net commutes with shifts (difference exactly 0), a dense net does not")
    workdir.save_figure(fig, "equivariance")


def equivariance_claims(config, workdir) -> list[dict]:
    n = config.equivariance_size
    shifts = [tuple(int(v) for v in s) for s in config.shifts]
    weights, x = _equivariance_inputs(config)
    o = _equivariance_outputs(weights, x, shifts, n)
    errors = _equivariance_errors(o, shifts, n, weights["dense"])
    _equivariance_figure(workdir, x, o, shifts[-1])
    return [
        _translation_equivariance_claim(errors),
        _any_input_size_claim(n, errors, o["small"], o["big"]),
        _strided_conv_claim(errors, o["strided"], o["subsampled"]),
    ]


def _translation_equivariance_claim(errors: dict) -> dict:
    th = THRESHOLDS
    conv_err, dense_err = errors["conv"], errors["dense"]
    return claim(
        "translation_equivariance",
        "A conv net (circular padding) is translation-equivariant, f(translate(x)) = translate(f(x)), "
        "while a dense net is not",
        LECTURE + " (five views: equivariant with translation)",
        "conv net relative error {conv_equivariance_error}; dense net {dense_equivariance_error}",
        {"conv_net_error_max": max(conv_err), "dense_net_error_min": min(dense_err), "shifts": len(conv_err)},
        checks=[check("conv_equivariance_error", max(conv_err), th["conv_equivariance_error"], random=False),
                check("dense_equivariance_error", min(dense_err), th["dense_equivariance_error"], random=False)],
    )


def _any_input_size_claim(n: int, errors: dict, small: np.ndarray, big: np.ndarray) -> dict:
    size_err, dense_any_size = errors["size"], errors["dense_any_size"]
    return claim(
        "any_input_size",
        f"The same conv weights run on {n}x{n} and {4 * n}x{4 * n} inputs and compute the same features "
        "(a dense layer's weights fix its input size)",
        LECTURE + " (conv layers can be applied to arbitrarily-sized inputs)",
        "interior features equal to relative error {any_size_error}; the dense net rejects the larger input",
        {"relative_error": size_err, "out_height_small": small.shape[1], "out_height_large": big.shape[1],
         "dense_net_runs_on_larger_input": dense_any_size},
        small.shape[1] == n and big.shape[1] == 4 * n and dense_any_size == 0.0,
        checks=[check("any_size_error", size_err, THRESHOLDS["any_size_error"], random=False)],
    )


def _strided_conv_claim(errors: dict, strided: np.ndarray, subsampled: np.ndarray) -> dict:
    return claim(
        "strided_conv_is_subsampled_conv",
        "A strided convolution equals the convolution followed by subsampling (at 1/stride^2 of the cost)",
        LECTURE + " (strided convolution)",
        "relative error {strided_error}",
        {"relative_error": errors["stride"], "outputs_strided": float(np.prod(strided.shape)),
         "outputs_full": float(np.prod(subsampled.shape) * 4)},
        checks=[check("strided_error", errors["stride"], THRESHOLDS["strided_error"], random=False)],
    )


@functools.lru_cache(maxsize=2)
def _photos(gray: bool) -> list[np.ndarray]:
    return [photo(name).mean(-1) if gray else photo(name) for name in PHOTOS]


def photo_crops(n: int, size: int, seed: int, extra: int = 1, gray: bool = True) -> np.ndarray:
    """n crops (n, size + extra, size + extra[, 3]) of the scikit-image photographs (grey or RGB)."""
    rng = np.random.default_rng(seed)
    imgs = _photos(gray)
    out = np.empty((n, size + extra, size + extra, *imgs[0].shape[2:]), np.float32)
    for i in range(n):
        img = imgs[i % len(imgs)]
        y = rng.integers(0, img.shape[0] - size - extra + 1)
        x = rng.integers(0, img.shape[1] - size - extra + 1)
        out[i] = img[y:y + size + extra, x:x + size + extra]
    return out


def _pooled_features(x, w, pool_sizes):
    y = jax.nn.relu(conv_general(x, w, 1, "VALID"))
    return {f"{kind}{k}": (max_pool if kind == "max" else mean_pool)(y, k) if k > 1 else y
            for kind in ("max", "mean") for k in pool_sizes}


_pooled_features_jit = jax.jit(_pooled_features, static_argnums=2)


def pooling_changes(config, crops, seed: int) -> dict:
    """Relative change of conv features (random zero-mean 5x5 filters drawn from `seed`) under
    1-pixel shifts of `crops`, with max/mean pooling of each size: {"max4": change, ...}."""
    s = config.crop_size
    x0 = jnp.asarray(crops[:, :s, :s, None])
    shifted = [jnp.asarray(crops[:, 1:s + 1, :s, None]), jnp.asarray(crops[:, :s, 1:s + 1, None])]
    w = np.random.default_rng([seed, 1]).standard_normal((5, 5, 1, 16))
    w = jnp.asarray(w - w.mean(axis=(0, 1), keepdims=True), jnp.float32)  # zero-mean (edge-like) filters
    features = _pooled_features_jit
    sizes = tuple(int(k) for k in config.pool_sizes)
    base = jax.tree.map(np.asarray, features(x0, w, sizes))
    moved = [jax.tree.map(np.asarray, features(xs, w, sizes)) for xs in shifted]
    return {key: float(np.mean([relative_difference(m[key], base[key]) for m in moved])) for key in base}


def pooling_claim(config, workdir, crops_per_seed) -> dict:
    """Per seed (filters and crops): the change with k x k max pooling over the change without."""
    changes = [pooling_changes(config, crops[: config.n_crops], seed) for seed, crops in zip(config.seeds, crops_per_seed)]
    # (zip stops at the config.n_paired crop sets passed in)
    mean = {key: float(np.mean([c[key] for c in changes])) for key in changes[0]}
    fig, (ax,) = subplots(size=(6, 4))
    for kind in ("max", "mean"):
        ax.plot(config.pool_sizes, [mean[f"{kind}{k}"] for k in config.pool_sizes], "o-", label=f"{kind} pooling")
    ax.set(xscale="log", xlabel="pooling window (pixels, stride = window)",
           ylabel="relative change of features",
           title=f"Features under a 1-pixel shift of a photograph (mean over {len(changes)} seeds)")
    ax.set_xticks(list(config.pool_sizes), [str(k) for k in config.pool_sizes])
    ax.minorticks_off()
    ax.legend()
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "pooling_shift_stability")
    k = config.pool_size
    ratio = [c[f"max{k}"] / c["max1"] for c in changes]
    return claim(
        "max_pooling_shift_stability",
        f"Max pooling ({k}x{k}) makes conv features of real photographs change much less under a 1-pixel shift "
        "than without pooling",
        LECTURE + " (pooling: stability w.r.t. small translations)",
        "relative change with pooling / without, mean over seeds (filters and crops) {max_pool_shift_ratio}",
        {"change_no_pooling": [c["max1"] for c in changes], f"change_max_pool_{k}": [c[f"max{k}"] for c in changes],
         f"change_mean_pool_{k}": [c[f"mean{k}"] for c in changes], "ratio": ratio,
         "crops": crops_per_seed[0][: config.n_crops].shape[0]},
        checks=[check("max_pool_shift_ratio", ratio, THRESHOLDS["max_pool_shift_ratio"])],
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
    return claim(
        "channel_pooling_rotation_invariance",
        f"Max pooling across a bank of {config.orientations} rotated edge filters responds to an edge at any "
        "orientation almost equally, while one filter does not",
        LECTURE + " (pooling across feature channels can achieve other kinds of invariances)",
        "coefficient of variation over orientations: pooled {channel_pool_cv}, single filter {single_filter_cv} "
        "(no randomness: fixed "
        "filters and edges)",
        {"cv_single_filter": cv_single, "cv_channel_max": cv_pooled, "orientations": config.orientations},
        checks=[check("channel_pool_cv", cv_pooled, THRESHOLDS["channel_pool_cv"], random=False),
                check("single_filter_cv", cv_single, THRESHOLDS["single_filter_cv"], random=False)],
    )


def pooled_net(params, x, pool: bool):
    for w in params:
        x = jax.nn.relu(conv_general(x, w, 1, "SAME"))
        if pool:
            x = max_pool(x, 2)
    return global_pool(x) if pool else x


def deformation_changes(config, crops, seed: int, sweep: list[float]) -> tuple[dict, tuple]:
    """{px: {"with pooling"/"no pooling": deformation_stability}} for a net and a warp drawn from
    `seed` over the largest displacements `sweep`, and an example (image, warped, field)."""
    s = config.crop_size
    x = jnp.asarray(crops[: config.n_deform, :s, :s, None])
    rng = np.random.default_rng([seed, 2])
    params = [he(rng, (5, 5, 1, 16)), he(rng, (3, 3, 16, 32)), he(rng, (3, 3, 32, 64))]
    nets = {"with pooling": lambda z: _pooled_jit(params, z, True), "no pooling": lambda z: _pooled_jit(params, z, False)}
    field_seed = int(rng.integers(2**31))
    results, example = {}, None
    for px in sweep:
        d = smooth_displacement(field_seed, (s, s), px)
        xw = warp(x, d)
        results[px] = {name: deformation_stability(f, x, xw) for name, f in nets.items()}
        if px == float(config.deformation_pixels):
            example = (np.asarray(x[0, ..., 0]), np.asarray(xw[0, ..., 0]), np.asarray(d))
    return results, example


_pooled_jit = jax.jit(pooled_net, static_argnums=2)


def _sweep(config) -> list[float]:
    return sorted(set(float(p) for p in config.deformation_sweep) | {float(config.deformation_pixels)})


def deformation_ratios(config, crops_per_seed, seeds, pool: bool) -> dict:
    """Per seed (net, warp of config.deformation_pixels, crops): the changes of deformation_stability,
    every seed's net in one vmapped program."""
    s, px = config.crop_size, float(config.deformation_pixels)
    params, xs, xws = [], [], []
    for seed, crops in zip(seeds, crops_per_seed):
        rng = np.random.default_rng([seed, 2])  # the same draws as deformation_changes
        params.append([he(rng, (5, 5, 1, 16)), he(rng, (3, 3, 16, 32)), he(rng, (3, 3, 32, 64))])
        x = jnp.asarray(crops[: config.n_deform, :s, :s, None])
        xs.append(x)
        xws.append(warp(x, smooth_displacement(int(rng.integers(2**31)), (s, s), px)))
    params = jax.tree.map(lambda *a: jnp.stack(a), *params)
    net = jax.jit(jax.vmap(lambda p, z: pooled_net(p, z, pool)))
    fx, fxw = np.asarray(net(params, jnp.stack(xs))), np.asarray(net(params, jnp.stack(xws)))
    out = {"pixel_change": [], "feature_change": []}
    for i in range(len(xs)):
        out["pixel_change"].append(deformation_stability(lambda z: z, xs[i], xws[i])["pixel_change"])
        out["feature_change"].append(deformation_stability(lambda z: z, fx[i], fxw[i])["pixel_change"])
    out["ratio"] = np.array(out["feature_change"]) / np.array(out["pixel_change"])
    return out


def deformation_claim(config, workdir, crops_per_seed) -> dict:
    """The net with pooling over every seed (cheap); the paired comparison with the same nets
    without pooling over the first config.n_paired seeds; the figure's sweep for the first seed."""
    figure_runs = [deformation_changes(config, crops_per_seed[0], config.seeds[0], _sweep(config))]
    _deformation_figure(config, workdir, [r for r, _ in figure_runs], figure_runs[0][1])
    pooled = deformation_ratios(config, crops_per_seed, config.seeds, True)
    n = int(config.n_paired)
    none = deformation_ratios(config, crops_per_seed[:n], config.seeds[:n], False)
    ratio, ratio_none = pooled["ratio"], none["ratio"]
    return claim(
        "deformation_stability",
        f"Under an elastic warp of up to {config.deformation_pixels:g} pixels, the features of a conv net with "
        "pooling change far less than the pixels do (each relative to the distance between different images)",
        LECTURE + " (CNNs are stable w.r.t. diffeomorphisms)",
        f"feature change / pixel change, mean over {len(ratio)} seeds (net, warp, crops) " "{deformation_ratio} with "
        "pooling; paired difference with the same nets without pooling {deformation_pooling_gain} " f"(first {n} seeds)",
        {"ratio_with_pooling": ratio, "ratio_no_pooling": ratio_none, "pixel_change": pooled["pixel_change"],
         "feature_change": pooled["feature_change"], "images": config.n_deform},
        checks=[check("deformation_ratio", ratio, THRESHOLDS["deformation_ratio"]),
                check("deformation_pooling_gain", ratio[:n] - ratio_none, THRESHOLDS["deformation_pooling_gain"],
                      statistic="ratio(pooling) - ratio(no pooling)")],
    )


def _deformation_figure(config, workdir, results, example) -> None:
    s = config.crop_size
    sweep = _sweep(config)
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

    def stat(name, key):
        return np.mean([[res[p][name][key] for p in sweep] for res in results], axis=0)

    ax.plot(sweep, stat("with pooling", "pixel_change"), "k--o", label="pixels")
    for name in ("with pooling", "no pooling"):
        ax.plot(sweep, stat(name, "feature_change"), "o-", label=f"features, {name}")
    ax.set(xlabel="largest displacement (pixels)", ylabel="change / distance between images",
           title="Stability to small deformations\n(first seed's net and warp; the claim: every seed)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "deformation_stability")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    out = [param_count_claim(config, workdir)]
    # Exact identities: full float32 convolutions (GPUs default to TF32 and TPUs to bfloat16 passes).
    with jax.default_matmul_precision("highest"):
        out.append(toeplitz_claim(config, workdir))
        out += equivariance_claims(config, workdir)
    # The crop positions in the (fixed, published) photographs are random draws: one set per seed.
    crops = [photo_crops(max(config.n_crops, config.n_deform), config.crop_size, seed) for seed in config.seeds]
    out.append(pooling_claim(config, workdir, crops[: config.n_paired]))
    out.append(channel_pooling_claim(config, workdir))
    out.append(deformation_claim(config, workdir, crops))
    return out


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
