"""Receptive fields: dilated convolutions (3, 7, 15), two 3x3 = one 5x5, and the registry models.

Every receptive field is computed twice: analytically from the layers' kernel, stride, dilation
and padding (`nnbasics.analysis.receptive_field`), and measured as the support of the gradient
of one output unit with respect to the input (`jax.grad`). Dilated 3x3 convolutions with
dilation 1, 2, 4 reach 3, 7 and 15 pixels while the parameter count grows linearly (Yu & Koltun
2016); two stacked 3x3 convolutions see 5x5 with 18 instead of 25 weights (three see 7x7 with 27
instead of 49; Simonyan & Zisserman 2015), and the degrees of freedom of the composite kernel are
measured as the rank of its Jacobian; the receptive fields of the architectures in the model
registry (AlexNet, VGG, ResNet, ... whichever are registered) are tabulated and checked.

    nnbasics run receptive_fields --quick
    nnbasics run receptive_fields --config.models='("resnet50", "resnet152")'
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics.analysis import receptive_field as rfa
from nnbasics.analysis.conv_matrix import compose_kernels
from nnbasics.models import get_model, model_info, model_names
from nnbasics.nn.conv import conv_general
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "convolution"
ORDER = 42
YU_KOLTUN = "Yu & Koltun 2016, Multi-scale context aggregation by dilated convolutions, Fig. 1"
VGG = "Simonyan & Zisserman 2015, Sec. 2.3; lecture: chaining convolutions"
ARAUJO = "Araujo, Norris & Sim 2019, Computing receptive fields of CNNs (Distill)"

# Every claim here is an exact identity or a count (random weights; any draw gives the same verdict):
# deterministic checks (random=False).
THRESHOLDS = {
    "composite_error": Threshold("<=", 1e-5, "an exact identity (two linear convs = one conv with the composed "
                                 "kernel) in float32 at highest precision: rounding is ~1e-7 relative"),
    "dof_two_3x3": Threshold("<=", 18, "Simonyan & Zisserman 2015 Sec. 2.3: two 3x3 kernels have 18 weights"),
    "dof_three_3x3": Threshold("<=", 27, "Simonyan & Zisserman 2015 Sec. 2.3: three 3x3 kernels have 27 weights"),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dilations = (1, 2, 4, 8)
    c.channels = 8
    c.num_inputs = 2
    c.models = (
        "fcn", "resnet20", "resnet56", "resnet110", "alexnet", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34",
        "resnet50", "resnet101", "resnet152", "plain50",
    )
    if preset == "quick":
        c.dilations = (1, 2, 4)
        c.models = ("fcn", "resnet20", "alexnet", "vgg16", "resnet50")
    elif preset == "smoke":
        c.dilations = (1, 2)
        c.channels = 2
        c.models = ("fcn",)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.dilations or any(int(d) < 1 for d in config.dilations):
        raise ValueError(f"config.dilations must be positive integers, got {tuple(config.dilations)}")
    if config.channels < 1 or config.num_inputs < 1:
        raise ValueError("config.channels and config.num_inputs must be >= 1")


def model_layers(name: str) -> list[rfa.Layer] | None:
    """The layer chain (up to the last convolution) of a registry model, or None if unknown."""
    if name == "fcn":  # the registry default: four 3x3 VALID convs and a 1x1 classifier
        return [rfa.Layer(3, 1, 1, 0, f"conv{i + 1}") for i in range(4)] + [rfa.Layer(1, 1, 1, 0, "classifier")]
    base = name.removesuffix("_bn")
    if base.startswith("plain"):
        base = "resnet" + base[len("plain"):]
    family = model_info(name).get("family", "") if name in model_names() else ""
    if family == "resnet-cifar" and base.startswith("resnet"):
        return rfa.cifar_resnet_layers(int(base[len("resnet"):]))
    return rfa.architecture_layers(base)


def normal(rng: np.random.Generator, shape) -> jax.Array:
    """Standard normal weights drawn with NumPy (XLA compiles a random kernel per shape: slow)."""
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def stack_fn(weights, dilations):
    """x -> ReLU(conv) layers with the given 3x3 kernels and dilations ('SAME' padding)."""

    def f(x):
        for i, (w, d) in enumerate(zip(weights, dilations)):
            x = conv_general(x, w, 1, "SAME", d)
            if i < len(weights) - 1:
                x = jax.nn.relu(x)
        return x

    return f


def dilation_claim(config, workdir, maps) -> dict:
    dil = tuple(int(d) for d in config.dilations)
    c = int(config.channels)
    rng = np.random.default_rng(config.seed)
    weights = [normal(rng, (3, 3, 1, c))] + [normal(rng, (3, 3, c, c)) for _ in dil[1:]]
    analytic, measured, params = [], [], []
    expected = [2 ** (i + 2) - 1 for i in range(len(dil))]
    for n in range(1, len(dil) + 1):
        layers = [rfa.Layer(3, 1, d, "SAME") for d in dil[:n]]
        a = rfa.receptive_field(layers).size[0]
        size = 2 * a + 1
        m = rfa.empirical_receptive_field(stack_fn(weights[:n], dil[:n]), (size, size, 1), num_inputs=config.num_inputs)
        analytic.append(a)
        measured.append(m.size[0])
        params.append(sum(9 * c * c + c for _ in range(n)))  # C -> C layers with bias (Yu & Koltun's F_i)
        maps["dilations " + ", ".join(str(d) for d in dil[:n])] = (m.grad_map, a, m)
    per_layer = np.diff([0] + params)
    linear = bool(np.all(per_layer == per_layer[0]))
    return claim(
        "dilated_receptive_fields",
        f"3x3 convolutions with dilations {dil} reach receptive fields {tuple(expected)} (exponential growth) while "
        "the parameter count grows linearly",
        YU_KOLTUN,
        f"analytic = measured = {tuple(expected)}; the same number of parameters per layer",
        {"rf_analytic": analytic, "rf_measured": measured, "params_cumulative": params,
         "params_per_layer": float(per_layer[0])},
        analytic == expected and measured == expected and linear,
    )


def jacobian_rank(f, n_params: int, seed: int) -> int:
    p = normal(np.random.default_rng(seed), (n_params,))
    return int(np.linalg.matrix_rank(np.asarray(jax.jit(jax.jacobian(f))(p), np.float64), tol=1e-4))


def stacked_3x3_claim(config, workdir, maps) -> dict:
    """Two (three) stacked 3x3 convs: receptive field 5 (7), 18 (27) weights instead of 25 (49)."""
    c = int(config.channels)
    rng = np.random.default_rng(config.seed + 1)
    ws = [normal(rng, (3, 3, 1, c)), normal(rng, (3, 3, c, c)), normal(rng, (3, 3, c, c))]
    analytic, measured = [], []
    for n in (2, 3):
        a = rfa.receptive_field([rfa.Layer(3, 1, 1, 1)] * n).size[0]
        m = rfa.empirical_receptive_field(stack_fn(ws[:n], (1,) * n), (2 * a + 1, 2 * a + 1, 1), num_inputs=config.num_inputs)
        analytic.append(a)
        measured.append(m.size[0])
        if n == 2:
            maps["two 3x3 convs"] = (m.grad_map, a, m)
    # Linear (no ReLU) stacks are one bigger conv: check it on an image.
    x = normal(rng, (2, 16, 16, c))
    k1, k2 = ws[1], ws[2]
    with jax.default_matmul_precision("highest"):  # an identity: full float32 on GPU/TPU too
        two, one = jax.jit(lambda x, k1, k2: (conv_general(conv_general(x, k1, 1, "VALID"), k2, 1, "VALID"),
                                              conv_general(x, compose_kernels(k1, k2), 1, "VALID")))(x, k1, k2)
    compose_err = float(jnp.linalg.norm(two - one) / jnp.linalg.norm(two))
    # Degrees of freedom of the composite kernels (single channel): the rank of the Jacobian of
    # the map from the stacked kernels to the composite kernel.
    def comp(*shapes):
        def f(p):
            ks, i = [], 0
            for s in shapes:
                n = int(np.prod(s))
                ks.append(p[i:i + n].reshape(*s, 1, 1))
                i += n
            return compose_kernels(*ks).ravel()
        return f

    dof5 = jacobian_rank(comp((3, 3), (3, 3)), 18, config.seed)
    dof7 = jacobian_rank(comp((3, 3), (3, 3), (3, 3)), 27, config.seed)
    dof_sep = jacobian_rank(comp((3, 1), (1, 3)), 6, config.seed)
    sep = np.asarray(jax.jit(comp((3, 1), (1, 3)))(normal(np.random.default_rng(config.seed), (6,)))).reshape(3, 3)
    sep_rank = int(np.linalg.matrix_rank(sep, tol=1e-5 * np.abs(sep).max()))
    ok = analytic == [5, 7] and measured == [5, 7] and sep_rank == 1
    return claim(
        "stacked_3x3_convs",
        "Two stacked 3x3 convs see a 5x5 receptive field with 18 instead of 25 weights (three: 7x7 with 27 instead of "
        "49); the composite 5x5 kernel has at most 18 degrees of freedom (measured: the Jacobian rank, 17 = 18 minus "
        "the scale shared between the two kernels); a 3x1 then 1x3 conv is a separable (rank-1) 3x3 filter",
        VGG,
        "RF 5 and 7 (analytic = measured); composite kernel equals the stack (relative error {composite_error}); "
        "dof of two 3x3 {dof_two_3x3} < 25 and of three 3x3 {dof_three_3x3} < 49; "
        "separable filter of matrix rank 1",
        {"rf_analytic": analytic, "rf_measured": measured, "weights_two_3x3": 18, "weights_one_5x5": 25,
         "weights_three_3x3": 27, "weights_one_7x7": 49, "dof_two_3x3": dof5, "dof_three_3x3": dof7,
         "dof_separable_3x3": dof_sep, "separable_matrix_rank": sep_rank, "composite_relative_error": compose_err,
         "weights_per_channel_pair_ratio": 18 / 25},
        ok,
        checks=[check("composite_error", compose_err, THRESHOLDS["composite_error"], random=False),
                check("dof_two_3x3", dof5, THRESHOLDS["dof_two_3x3"], random=False),
                check("dof_three_3x3", dof7, THRESHOLDS["dof_three_3x3"], random=False)],
    )


def registry_claim(config, workdir, maps) -> dict:
    registered = set(model_names())
    table = []
    for name in sorted(registered):
        layers = model_layers(name)
        if layers is None or len(model_info(name).get("input_shape", (0, 0, 0))) != 3:
            continue
        rf = rfa.receptive_field(layers)
        table.append({"model": name, "rf_analytic": rf.size[0], "jump": rf.jump[0], "measured": None})
    rows = {r["model"]: r for r in table}
    measured_names = [m for m in config.models if m in rows]
    skipped = [m for m in config.models if m not in rows]
    all_ok = True
    for name in measured_names:
        layers = model_layers(name)
        rf = rfa.receptive_field(layers)
        j, size = rf.jump[0], rf.size[0]
        h = j * int(np.ceil(size / j + 2))
        w = max(2 * j, 8)  # thin: the field is measured along the height (square layers: the same across)
        while True:
            try:
                rfa.receptive_field(layers, (h, w))
                break
            except ValueError:  # VALID layers would leave no output column: widen
                w *= 2
        kw = {"pad_input": False} if name == "fcn" else {}
        cin = model_info(name).get("input_shape", (0, 0, 3))[-1]
        f = rfa.last_conv_fn(get_model(name, num_classes=10, **kw), (h, w, cin), seed=config.seed)
        m = rfa.empirical_receptive_field(f, (h, w, cin), num_inputs=config.num_inputs, seed=config.seed)
        first = rf.span(m.unit)[0][0]
        ok = m.size[0] == size and m.start[0] == first and m.fill == 1.0
        all_ok &= ok
        rows[name].update(measured=m.size[0], start_analytic=first, start_measured=m.start[0], fill=m.fill,
                          input=f"{h}x{w}", agree=ok)
        maps[name] = (m.grad_map, size, m)
    workdir.write_json("receptive_fields.json", table)
    _table_figure(workdir, table)
    measured = {}
    for name in measured_names:
        r = rows[name]
        measured[f"{name}_analytic"] = r["rf_analytic"]
        measured[f"{name}_measured"] = r["measured"]
    measured["models_measured"] = len(measured_names)
    measured["models_tabulated"] = len(table)
    note = f" (not registered, skipped: {', '.join(skipped)})" if skipped else ""
    return claim(
        "registry_receptive_fields",
        "The analytic receptive field of every registry model measured (up to its last convolution, before any pooling "
        "after it; `nnbasics models` reports the last feature map's, after that pooling: AlexNet 195 px) equals the "
        f"support of the gradient of its centre unit: {', '.join(measured_names)}{note}",
        ARAUJO + "; reference values: AlexNet conv5 163, VGG-16 conv5_3 196, ResNet-50 427, ResNet-18 435",
        "analytic size and first pixel = measured, gradient support a solid rectangle",
        measured,
        all_ok and len(measured_names) > 0,
    )


def _table_figure(workdir, table) -> None:
    fig, (ax,) = subplots(size=(8, 0.6 + 0.28 * max(len(table), 1)))
    ax.axis("off")
    cells = [[r["model"], str(r["rf_analytic"]), str(r["jump"]), "-" if r["measured"] is None else str(r["measured"])]
             for r in table]
    if cells:
        tab = ax.table(cellText=cells, colLabels=["model", "receptive field (analytic)", "jump (total stride)",
                                                  "measured (gradient)"], loc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(8)
    ax.set_title("Receptive fields of the registry models, up to the last convolution\n(before pooling; "
                 "`nnbasics models` counts the last feature map, after it: AlexNet 195 instead of 163)", fontsize=9)
    workdir.save_figure(fig, "registry_table")


def _maps_figure(workdir, maps) -> None:
    """Row 1: the dilated and stacked 3x3 demos; row 2: the registry models (tall, thin inputs)."""
    import matplotlib.patches as mpatches

    demos = [n for n in maps if maps[n][0].shape[0] <= 2 * maps[n][0].shape[1]]
    models = [n for n in maps if n not in demos]
    rows = [r for r in (demos, models) if r]
    ncols = max(len(r) for r in rows)
    fig, axes = subplots(len(rows), ncols, size=(3.0, 3.5), layout="constrained")
    axes = axes.reshape(len(rows), ncols)
    for r, names in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(names):
                ax.axis("off")
                continue
            g, size, m = maps[names[c]]
            img = np.where(g > 0, np.log10(np.where(g > 0, g, 1.0)), np.nan)
            im = ax.imshow(img, cmap="magma", aspect="auto" if names is models else "equal",
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label="log10 |gradient|")
            ax.add_patch(mpatches.Rectangle((m.start[1] - 0.5, m.start[0] - 0.5), m.size[1], m.size[0],
                                            fill=False, ec="c", lw=1.2))
            ax.set_title(f"{names[c]}\nRF {size} analytic, {m.size[0]} measured", fontsize=8)
            ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
    fig.suptitle("log10 |d unit / d input|: the measured receptive fields (cyan: support; blank: zero gradient)")
    workdir.save_figure(fig, "gradient_receptive_fields")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    maps: dict = {}
    out = [dilation_claim(config, workdir, maps), stacked_3x3_claim(config, workdir, maps),
           registry_claim(config, workdir, maps)]
    _maps_figure(workdir, maps)
    return out


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
