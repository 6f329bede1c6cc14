"""Sigmoid, tanh, ReLU, leaky ReLU and PReLU: vanishing gradients, dead units, speed of training, a learned slope.

The lecture's nonlinearities and their derivatives, then four measurements over seeds: (a) per-layer
gradient norms of a 10-layer MLP on `digits` at initialization, sigmoid against ReLU; (b) the
fraction of dead ReLU units after training with a large and a small learning rate; (c) epochs for
a 4-layer CNN (MNIST-1D's 1-D CNN by default) to reach 25% training error with ReLU against tanh,
each at its best rate of one grid (AlexNet's Figure 1); (d) the slopes a PReLU net learns.

    nnbasics run activations --quick
    nnbasics run activations --quick --config.cnn.init=torch
    nnbasics sweep activations --sweep cnn_data --quick
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics.analysis.gradients import dead_fraction, layer_gradient_norms
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit, steps_to_reach
from nnbasics.models import get_model
from nnbasics.nn.activations import ACTIVATIONS, LECTURE_ACTIVATIONS, PRELU_INIT, derivative, get_activation
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import band, subplots

TOPIC = "basics"
ORDER = 21
ACTS = LECTURE_ACTIVATIONS  # sigmoid, tanh, relu, leaky_relu, prelu
INPUT_SCALES = ("raw_centered", "unit", "standardized")
CNN_DATA = ("mnist1d", "digits", "photos")
CNN_INITS = ("preferred", "torch")  # He / LeCun per activation | PyTorch's default (MNIST-1D CNN only)
# (c) on digits or photos tanh is as fast as ReLU (docs/experiment_notes.md); the `cnn_data` and
# `cnn_recipe` sweeps rerun those set-ups:
_DIGITS_RUN = {"cnn.data": "digits", "cnn.features": (16, 16, 32), "cnn.batch_size": 64, "cnn.steps": 660,
               "cnn.eval_every": 22, "cnn.learning_rates": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)}
ALEXNET_RECIPE = {"cnn.input_scale": "raw_centered", "cnn.init_std": 0.01}  # Sec. 3.1 and 5
DIGITS = {**_DIGITS_RUN, **ALEXNET_RECIPE}
PHOTOS = {**DIGITS, "cnn.data": "photos", "cnn.num_train": 2000, "cnn.steps": 620, "cnn.eval_every": 31}

SWEEPS = {
    "depth": [{"gradients.depth": d} for d in (5, 10, 20)],
    "dead_lr": [{"dead.large_learning_rate": lr} for lr in (0.3, 0.6, 1.0)],
    "cnn_data": [{"cnn.data": "mnist1d"}, DIGITS, PHOTOS],
    "cnn_recipe": [  # the differing keys first: a sweep's run directories are named after their first 80 characters
        {"cnn.init": "preferred", "cnn.data": "mnist1d"},
        {"cnn.init": "torch", "cnn.data": "mnist1d"},
        # digits: AlexNet's recipe, and each activation's preferred init on [0, 1] or standardized inputs
        *({**recipe, **_DIGITS_RUN} for recipe in (
            ALEXNET_RECIPE,
            {"cnn.input_scale": "unit", "cnn.init_std": 0.0},
            {"cnn.input_scale": "standardized", "cnn.init_std": 0.0},
        )),
    ],
}


THRESHOLDS = {
    "log10_grad_ratio_relu_over_sigmoid": Threshold(">=", 2.0, (
        "'orders of magnitude' (two at least) smaller with sigmoid: sigmoid' <= 1/4 shrinks the backpropagated "
        "gradient up to 4x per layer, (1/4)^9 ~ 4e-6 over 9 hidden layers; Glorot & Bengio 2010")),
    "dead_fraction_large_lr": Threshold(">=", 0.25, (
        "a substantial fraction, a quarter, of the units dead after a too large rate (CS231n: 'as much as 40% "
        "of your network can be dead' when the learning rate is set too high)")),
    "dead_fraction_increase": Threshold(">", 0.0, (
        "paired over seeds: more dead units at the large rate than at the small one, the lecture's cause "
        "(a large update pushes a unit into the negative region, where it gets no gradient)")),
    "log_epochs_ratio_tanh_over_relu": Threshold(">", 0.0, (
        "paired per seed: ReLU reaches the training error in fewer epochs than tanh, AlexNet's Figure 1 statement; "
        "its size there (6x, AlexNet's net on CIFAR-10) is shown beside, not required at this scale")),
    "prelu_max_slope_change": Threshold(">=", 0.1, (
        "learned, not fixed: some layer's slope ends at least 0.1 from its 0.25 init (He et al. 2015, Table 1: "
        "learned slopes 0.05-0.7)")),
    "prelu_mean_abs_slope": Threshold(">=", 0.1, (
        "the slopes do not collapse to a ReLU: mean |alpha| over layers at least 0.1 (He et al. 2015, Table 1: "
        "learned slopes 0.05-0.7; a single layer may end near 0)")),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "digits"
    c.activations = ACTS  # compared in (a); (c) is always ReLU against tanh
    # (a) gradient norms per layer at initialization
    c.gradients = ml_collections.ConfigDict({"depth": 10, "width": 64, "batch": 512, "seeds": tuple(range(5))})
    # (b) dead ReLU units after training with a small and a large learning rate (plain SGD)
    c.dead = ml_collections.ConfigDict(
        {
            "hidden": (100, 100, 100),
            "small_learning_rate": 0.05,
            "large_learning_rate": 1.0,
            "steps": 400,
            "batch_size": 64,
            "eval_every": 50,
            "seeds": (0, 1, 2, 3),
        }
    )
    # (c) epochs to a training error: the 4-layer CNN with ReLU vs tanh, each with its best learning rate.
    # Default: MNIST-1D and its 1-D CNN (Greydanus & Kobak 2020), He init for ReLU and LeCun init for tanh,
    # SGD with momentum 0.9, no normalization; digits and photos use the 2-D small_cnn (see the docstring).
    c.cnn = ml_collections.ConfigDict(
        {
            "data": "mnist1d",  # mnist1d (1-D CNN) | digits | photos (2-D small_cnn)
            "init": "preferred",  # mnist1d: preferred (He for ReLU, LeCun for tanh) | torch (PyTorch's default)
            "features": (32, 32, 64),  # small_cnn's channels (digits, photos); the MNIST-1D CNN has 25-25-25
            "conv_impl": "patches",  # the patch-matrix conv: fast on CPU, also when vmapped over learning rates
            "input_scale": "unit",  # unit (as loaded: [0, 1] pixels, standardized MNIST-1D) | raw_centered | standardized
            "init_std": 0.0,  # small_cnn: > 0 every weight from N(0, init_std^2) (AlexNet: 0.01); 0: He / LeCun
            "optimizer": ml_collections.ConfigDict({"name": "momentum", "learning_rate": 0.1, "momentum": 0.9}),
            "learning_rates": (0.035, 0.05, 0.07, 0.1, 0.14, 0.2, 0.28),
            "steps": 800,  # 20 epochs of mnist1d (40 steps each)
            "batch_size": 100,
            "eval_every": 10,  # 1/4 epoch
            "seeds": (0, 1, 2, 3),
            "train_error": 0.25,  # AlexNet's Figure 1 threshold
            "num_train": 0,  # 0: the whole training set (photos: n_train)
            "data_seed": 0,  # the photo crops and a num_train subset (MNIST-1D itself is the published set)
            "photo_size": 32,  # side of the photos crops (16 is 4x cheaper)
        }
    )
    # (d) PReLU slopes learned by an MLP
    c.prelu = ml_collections.ConfigDict(
        {
            "hidden": (100, 100, 100),
            "optimizer": ml_collections.ConfigDict({"name": "momentum", "learning_rate": 0.05, "momentum": 0.9}),
            "steps": 500,
            "batch_size": 64,
            "eval_every": 50,
            "seeds": (0, 1, 2, 3),
        }
    )
    if preset == "quick":
        _quick_preset(c)
    elif preset == "smoke":
        _smoke_preset(c)
    return c


def _quick_preset(c: ml_collections.ConfigDict) -> None:
    """The quick preset: fewer training steps, three learning rates for the CNN."""
    c.dead.seeds = tuple(range(6))  # the seed-count rule over offsets 0 and 700: the dead fraction at lr 1 asks for 6
    c.dead.steps = 300
    c.cnn.learning_rates = (0.05, 0.1, 0.2)  # ReLU is fastest at 0.1-0.2, tanh at 0.1 (full grid: 0.07)
    c.cnn.steps = 480  # 12 epochs; ReLU needs 3-4 at its best rate, tanh 6-10
    c.cnn.seeds = (0, 1, 2, 3)
    c.prelu.seeds = tuple(range(6))  # the seed-count rule over offsets 0 and 700: the slope change asks for 5
    c.prelu.steps = 300


def _smoke_preset(c: ml_collections.ConfigDict) -> None:
    """The smoke preset: two activations, two seeds, tiny nets, 10 training steps."""
    c.activations = ("sigmoid", "relu")
    c.gradients.seeds = (0, 1)
    c.gradients.depth = 4
    c.gradients.batch = 64
    c.dead.seeds = (0, 1)
    c.dead.hidden = (16, 16)
    c.dead.steps = 10
    c.dead.eval_every = 5
    c.cnn.features = (4, 4, 4)
    c.cnn.conv_impl = "xla"  # compiles faster; the run is too short for speed to matter
    c.cnn.num_train = 256
    c.cnn.learning_rates = (0.1,)
    c.cnn.steps = 10
    c.cnn.eval_every = 5
    c.cnn.seeds = (0, 1)
    c.prelu.seeds = (0, 1)
    c.prelu.hidden = (8, 8)
    c.prelu.steps = 10
    c.prelu.eval_every = 5


def validate(config: ml_collections.ConfigDict) -> None:
    if int(config.gradients.depth) < 2:
        raise ValueError(f"config.gradients.depth must be >= 2 (a hidden layer and a read-out), got {config.gradients.depth}")
    if not 0 < float(config.cnn.train_error) < 1:
        raise ValueError(f"config.cnn.train_error must be in (0, 1), got {config.cnn.train_error}")
    if not config.cnn.learning_rates or any(not float(lr) > 0 for lr in config.cnn.learning_rates):
        raise ValueError(f"config.cnn.learning_rates must be positive numbers, got {config.cnn.learning_rates}")
    if not float(config.dead.small_learning_rate) < float(config.dead.large_learning_rate):
        raise ValueError("config.dead.small_learning_rate must be below config.dead.large_learning_rate")
    for a in config.activations:
        ACTIVATIONS.check(a)
    if "sigmoid" not in config.activations or "relu" not in config.activations:
        raise ValueError(f"config.activations must include 'sigmoid' and 'relu' (claim a), got {config.activations}")
    cnn_config = config.cnn
    if cnn_config.data not in CNN_DATA:
        raise ValueError(f"config.cnn.data must be one of {CNN_DATA}, got {cnn_config.data!r}")
    if cnn_config.init not in CNN_INITS:
        raise ValueError(f"config.cnn.init must be one of {CNN_INITS}, got {cnn_config.init!r}")
    if cnn_config.input_scale not in INPUT_SCALES:
        raise ValueError(f"config.cnn.input_scale must be one of {INPUT_SCALES}, got {cnn_config.input_scale!r}")
    if not float(cnn_config.init_std) >= 0:
        raise ValueError(f"config.cnn.init_std must be >= 0 (0: He for ReLU, LeCun for tanh), got {cnn_config.init_std}")
    if cnn_config.data == "mnist1d":
        if cnn_config.input_scale == "raw_centered":
            raise ValueError("config.cnn.input_scale=raw_centered (0-255 pixels) is for digits and photos, not mnist1d")
        if float(cnn_config.init_std) > 0:
            raise ValueError("config.cnn.init_std is small_cnn's (digits, photos); for mnist1d use config.cnn.init")
    elif cnn_config.init == "torch":
        raise ValueError(f"config.cnn.init=torch is the MNIST-1D CNN's; for {cnn_config.data} use config.cnn.init_std")
    if int(cnn_config.eval_every) < 1 or int(cnn_config.steps) < int(cnn_config.eval_every):
        raise ValueError(f"config.cnn.eval_every must be in [1, steps], got {cnn_config.eval_every} (steps {cnn_config.steps})")


def _mlp_init(act: str) -> str:
    return "lecun" if act in ("sigmoid", "tanh") else "he"


# ------------------------------------------------------------------------------------- parts


def plot_functions(workdir) -> None:
    xs = jnp.linspace(-4, 4, 401)
    fig, axes = subplots(1, len(ACTS), size=(3.0, 2.8))
    for ax, name in zip(axes, ACTS):
        ax.plot(xs, get_activation(name)(xs), label="g(y)")
        ax.plot(xs, derivative(name)(xs), label="g'(y)", ls="--")
        extra = {"leaky_relu": " (alpha 0.02)", "prelu": " (alpha 0.25 at init)"}.get(name, "")
        ax.set(title=name + extra, xlabel="y", ylim=(-1.2, 2.2))
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("value")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    workdir.save_figure(fig, "activation_functions")


def gradient_norms(config, data) -> dict[str, np.ndarray]:
    """(seeds, layers) kernel-gradient norms at init of the depth-L MLP, per activation."""
    grad_config = config.gradients
    x = jnp.asarray(data.x_train[: int(grad_config.batch)])
    y = jnp.asarray(data.y_train[: int(grad_config.batch)])
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in grad_config.seeds])
    names = [f"hidden_{i}" for i in range(int(grad_config.depth) - 1)] + ["head"]
    models = {
        act: get_model("mlp", num_classes=data.num_classes, hidden=(int(grad_config.width),) * (int(grad_config.depth) - 1),
                       activation=act, init_scheme=_mlp_init(act))
        for act in config.activations
    }

    @jax.jit  # every activation in one compiled program
    def all_norms(keys):
        def one(model, kd):
            v = model.init(jax.random.wrap_key_data(kd), x[:1])
            norms = layer_gradient_norms(model.apply, v, x, y)
            return jnp.stack([norms[n] for n in names])

        return {act: jax.vmap(lambda kd, m=m: one(m, kd))(keys) for act, m in models.items()}

    return {act: np.asarray(v, np.float64) for act, v in all_norms(keys).items()}


def dead_units_run(config, data, workdir):
    dead_config = config.dead
    x_all = jnp.asarray(data.x_train)
    model = get_model("mlp", num_classes=data.num_classes, hidden=tuple(dead_config.hidden), activation="relu")
    train_config = TrainConfig(
        steps=int(dead_config.steps), batch_size=int(dead_config.batch_size), eval_every=int(dead_config.eval_every),
        seeds=tuple(dead_config.seeds),
        learning_rates=(float(dead_config.small_learning_rate), float(dead_config.large_learning_rate)),
        optimizer={"name": "sgd", "learning_rate": float(dead_config.small_learning_rate)}, stop_on_nan=False,
    )
    res = fit(model, data, train_config, workdir=workdir, tag="dead_relu",
              eval_fns={"dead_fraction": lambda st: dead_fraction(st.apply_fn, st.variables, x_all)})
    return res


def scale_inputs(data, how: str):
    """The CNN's inputs: `raw_centered` is AlexNet's "(centered) raw RGB values": pixels on the 0-255
    scale minus the training set's mean image, not divided by the std (std ~50-70); `unit` leaves the
    [0, 1] pixels as loaded; `standardized` subtracts the mean image and divides by the global std."""
    if how == "unit":
        return data
    xtr, xte = np.asarray(data.x_train, np.float64), np.asarray(data.x_test, np.float64)
    mean = xtr.mean(0)
    if how == "raw_centered":
        xtr, xte = 255.0 * (xtr - mean), 255.0 * (xte - mean)
    elif how == "standardized":
        sd = (xtr - mean).std()
        xtr, xte = (xtr - mean) / sd, (xte - mean) / sd
    else:
        raise ValueError(f"input scale must be one of {INPUT_SCALES}, got {how!r}")
    return dataclasses.replace(data, x_train=xtr.astype(np.float32), x_test=xte.astype(np.float32))


def cnn_data(config):
    cnn_config = config.cnn
    if cnn_config.data == "photos":
        kw = {"n_train": int(cnn_config.num_train)} if int(cnn_config.num_train) else {}
        data = load_dataset("photos", size=int(cnn_config.photo_size), seed=int(cnn_config.data_seed), **kw)
    else:
        data = load_dataset(cnn_config.data)
        data = data.subset(int(cnn_config.num_train), seed=int(cnn_config.data_seed)) if int(cnn_config.num_train) else data
    return scale_inputs(data, cnn_config.input_scale)


def cnn_model(config, act: str, num_classes: int):
    """The 4-layer CNN of (c): MNIST-1D's 1-D CNN, or the 2-D small_cnn for digits and photos."""
    cnn_config = config.cnn
    if cnn_config.data == "mnist1d":
        return get_model("mnist1d_cnn", num_classes=num_classes, activation=act, init_scheme=cnn_config.init,
                         impl=cnn_config.conv_impl)
    return get_model("small_cnn", num_classes=num_classes, activation=act, features=tuple(cnn_config.features),
                     impl=cnn_config.conv_impl, init_std=float(cnn_config.init_std))


def cnn_description(config) -> tuple[str, str]:
    """(model, init) in words, for the claim and the figure."""
    cnn_config = config.cnn
    if cnn_config.data == "mnist1d":
        model = "the 4-layer 1-D CNN of Greydanus & Kobak 2020 (3 convs of 25 channels, stride 2, linear read-out)"
        init = ("He normal init for ReLU, LeCun normal for tanh" if cnn_config.init == "preferred"
                else "PyTorch's default init for both")
    else:
        model = f"a 4-layer CNN (3x3 convs of {'-'.join(str(int(f)) for f in cnn_config.features)} channels, max pooling, linear)"
        init = (f"every weight from N(0, {float(cnn_config.init_std):g}^2) as in AlexNet" if float(cnn_config.init_std) > 0
                else "He init for ReLU, LeCun init for tanh")
    scale = {"unit": "inputs as loaded" + (" (standardized)" if cnn_config.data == "mnist1d" else " ([0, 1])"),
             "raw_centered": "inputs raw centered (0-255 minus the mean image)",
             "standardized": "inputs standardized"}[cnn_config.input_scale]
    return model, f"{scale}, {init}"


def relu_vs_tanh(config, data, workdir) -> dict[str, dict]:
    """Per activation: epochs to the training-error threshold for every learning rate (mean over
    seeds; inf if a seed never gets there), the best rate, and its training-error curve."""
    cnn_config = config.cnn
    steps_per_epoch = data.num_train // int(cnn_config.batch_size)
    train_config = TrainConfig(
        steps=int(cnn_config.steps), batch_size=int(cnn_config.batch_size), eval_every=int(cnn_config.eval_every),
        seeds=tuple(cnn_config.seeds), learning_rates=tuple(float(v) for v in cnn_config.learning_rates),
        optimizer=cnn_config.optimizer.to_dict(), eval_train=True,
        stop_on_nan=False,  # the grid goes past the rates that train: a diverged member never gets there (inf)
    )
    out = {}
    for act in ("relu", "tanh"):
        model = cnn_model(config, act, data.num_classes)
        res = fit(model, data, train_config, workdir=workdir, tag=f"cnn_{act}")
        steps, acc = res.curve("train_full_accuracy")
        err = 1 - acc  # (members, evals)
        epochs = steps / steps_per_epoch
        lrs = [float(v) for v in cnn_config.learning_rates]
        seeds = [int(v) for v in cnn_config.seeds]
        hits = np.full((len(lrs), len(seeds)), math.inf)  # epochs to the threshold per (rate, seed)
        for i, m in enumerate(res.members):
            hits[lrs.index(m["learning_rate"]), seeds.index(m["seed"])] = steps_to_reach(
                epochs, err[i], float(cnn_config.train_error))
        per_lr = [float(v) for v in hits.mean(1)]  # the same rule for both activations: best mean over seeds
        best = int(np.argmin(per_lr))
        rows = [i for i, m in enumerate(res.members) if m["learning_rate"] == lrs[best]]
        out[act] = {"epochs_per_lr": per_lr, "best_lr": lrs[best], "epochs": per_lr[best], "hits": hits,
                    "per_seed": [float(v) for v in hits[best]], "curve": (epochs, err[rows])}
    return out


def _ratio(tanh_epochs: float, relu_epochs: float) -> float:
    """epochs(tanh) / epochs(ReLU); inf when only ReLU gets there, nan when ReLU does not."""
    return tanh_epochs / relu_epochs if math.isfinite(relu_epochs) else math.nan


def _or_missing(v: float) -> float:
    """-1 for a rate at which some seed never reaches the threshold (a claim's numbers must be finite)."""
    return float(v) if math.isfinite(v) else -1.0


def prelu_run(config, data, workdir):
    prelu_config = config.prelu
    model = get_model("mlp", num_classes=data.num_classes, hidden=tuple(prelu_config.hidden), activation="prelu")
    fns = {f"alpha_{i}": (lambda st, i=i: st.params[f"PReLU_{i}"]["alpha"]) for i in range(len(prelu_config.hidden))}
    return fit(model, data, TrainConfig.from_config(prelu_config), workdir=workdir, tag="prelu", eval_fns=fns)


# ---------------------------------------------------------------------------------------- run


def plot_gradients(config, norms: dict, workdir) -> None:
    grad_config = config.gradients
    layers = np.arange(1, int(grad_config.depth) + 1)
    fig, axes = subplots(1, 1, size=(6.5, 4.2))
    for act, (marker, ls) in zip(config.activations, [("o", "-"), ("s", "-"), ("^", "--"), ("v", ":"), ("D", "-.")]):
        band(axes[0], layers, norms[act], label=act, marker=marker, ls=ls, ms=4)
    axes[0].set_yscale("log")
    axes[0].set(xlabel="layer (1 = first, next to the input)", ylabel="||dL/dW|| at initialization",
                title=f"{grad_config.depth}-layer MLP on digits: gradient norm per layer "
                      f"(min-max over {len(grad_config.seeds)} seeds)")
    axes[0].legend()
    axes[0].grid(alpha=0.3, which="both")
    workdir.save_figure(fig, "gradient_norms")


def plot_training(config, dres, cnn: dict, pres, workdir) -> None:
    dead_config, cnn_config = config.dead, config.cnn
    steps, dead = dres.curve("dead_fraction")
    fig, axes = subplots(1, 3, size=(4.6, 3.6))
    ax = axes[0]
    for lr in (dead_config.small_learning_rate, dead_config.large_learning_rate):
        band(ax, steps, 100 * dead[[i for i, m in enumerate(dres.members) if m["learning_rate"] == float(lr)]],
             label=f"learning rate {lr:g}")
    ax.set(xlabel="SGD step", ylabel="dead ReLU units (%)", title="dead units: never positive on the training set")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    thr = float(cnn_config.train_error)
    for act in ("relu", "tanh"):
        ep, err = cnn[act]["curve"]
        band(ax, ep, 100 * err, label=f"{act} (lr {cnn[act]['best_lr']:g}): {cnn[act]['epochs']:.2f} epochs")
    ax.axhline(100 * thr, color="k", ls=":", lw=1, label=f"{100 * thr:.0f}% training error")
    ax.set(xlabel="epoch", ylabel="training error (%)", ylim=(0, 100),
           title=f"{'MNIST-1D CNN' if cnn_config.data == 'mnist1d' else '4-layer CNN on ' + cnn_config.data}: "
                 "ReLU vs tanh, best rate each")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    for i in range(len(config.prelu.hidden)):
        s, a = pres.curve(f"alpha_{i}")
        band(ax, s, a, label=f"PReLU after hidden layer {i + 1}")
    ax.axhline(PRELU_INIT, color="k", ls=":", lw=1, label="initial slope 0.25")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="step", ylabel="learned slope alpha", title="PReLU: learned negative slopes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    workdir.save_figure(fig, "training")


def vanishing_claim(config, norms: dict) -> dict:
    grad_config = config.gradients
    orders = np.log10(norms["relu"][:, 0] / norms["sigmoid"][:, 0])  # per seed, the first layer
    return claim(
        "vanishing_gradients_sigmoid",
        f"In a {grad_config.depth}-layer MLP at initialization the gradient reaching the first layer is orders of "
        "magnitude smaller with sigmoid than with ReLU (sigmoid' <= 1/4 shrinks it at every layer)",
        "Lecture: sigmoid 'saturation ... gradients go to zero'; Glorot & Bengio 2010",
        "log10(first-layer gradient norm ReLU / sigmoid) {log10_grad_ratio_relu_over_sigmoid}, paired per seed "
        f"(95% interval over {len(grad_config.seeds)} seeds)",
        {
            "orders_of_magnitude_relu_over_sigmoid": orders,
            **{f"grad_norm_first_{a}": norms[a][:, 0] for a in config.activations},
            "first_over_last_hidden_sigmoid": norms["sigmoid"][:, 0] / norms["sigmoid"][:, -2],
            "first_over_last_hidden_relu": norms["relu"][:, 0] / norms["relu"][:, -2],
        },
        checks=[check("log10_grad_ratio_relu_over_sigmoid", orders, THRESHOLDS["log10_grad_ratio_relu_over_sigmoid"])],
    )


def dead_claim(config, dres) -> dict:
    dead_config = config.dead
    _, dead = dres.curve("dead_fraction")
    acc = dres.final("test_accuracy")
    rows = {lr: [i for i, m in enumerate(dres.members) if m["learning_rate"] == float(lr)]  # seed order
            for lr in (dead_config.small_learning_rate, dead_config.large_learning_rate)}
    small, large = dead[rows[dead_config.small_learning_rate], -1], dead[rows[dead_config.large_learning_rate], -1]
    return claim(
        "dead_relu_units",
        "Training a ReLU MLP with a large learning rate kills units: their pre-activation is <= 0 on every "
        "training example, so they output 0 and get no gradient",
        "Lecture: 'if strongly in negative region, unit is dead forever (no gradient)'; CS231n notes",
        f"dead fraction at lr {dead_config.large_learning_rate:g} " "{dead_fraction_large_lr}, and above the fraction at lr "
        f"{dead_config.small_learning_rate:g} paired per seed (95% intervals over {len(dead_config.seeds)} seeds)",
        {
            "dead_fraction_large_lr": large,
            "dead_fraction_small_lr": small,
            "test_accuracy_large_lr": 100 * acc[rows[dead_config.large_learning_rate]],
            "test_accuracy_small_lr": 100 * acc[rows[dead_config.small_learning_rate]],
        },
        checks=[check("dead_fraction_large_lr", large, THRESHOLDS["dead_fraction_large_lr"]),
                check("dead_fraction_increase", large - small, THRESHOLDS["dead_fraction_increase"])],
    )


def speed_claim(config, cnn: dict, num_train: int) -> dict:
    cnn_config = config.cnn
    thr = float(cnn_config.train_error)
    relu, tanh = np.array(cnn["relu"]["per_seed"]), np.array(cnn["tanh"]["per_seed"])
    with np.errstate(divide="ignore", invalid="ignore"):  # inf/nan (a failing check) if one never got there
        log_ratio = np.log(tanh / relu)  # per seed, each activation at its own best rate
    ratio = float(np.exp(np.mean(log_ratio)))
    same_lr = _ratio(float(cnn["tanh"]["hits"][cnn_config.learning_rates.index(cnn["relu"]["best_lr"])].mean()),
                     cnn["relu"]["epochs"])  # at ReLU's best rate instead of each activation's own
    model_text, recipe = cnn_description(config)
    epochs_run = int(cnn_config.steps) / (num_train // int(cnn_config.batch_size))
    return claim(
        "relu_faster_than_tanh",
        f"A 4-layer CNN with ReLU reaches {100 * thr:.0f}% training error faster (in epochs) than the same CNN "
        f"with tanh: {model_text} on {cnn_config.data}, {recipe}, SGD momentum 0.9, batch {int(cnn_config.batch_size)}, "
        f"{epochs_run:g} epochs; each activation at the rate of {tuple(float(v) for v in cnn_config.learning_rates)} with "
        f"the best mean epochs over seeds {tuple(int(v) for v in cnn_config.seeds)} (the same rule for both). AlexNet "
        f"measured 6x on CIFAR-10; here the ratio is {ratio:.2f} (geometric mean over seeds): the direction "
        "reproduces, the size is not claimed at this scale. Epochs per rate are means over seeds; -1: some seed "
        "never got there.",
        "Krizhevsky, Sutskever & Hinton 2012, Figure 1; lecture 'see 6x speedup vs tanh'",
        "log(epochs tanh / epochs ReLU) {log_epochs_ratio_tanh_over_relu}, paired per seed "
        f"(95% interval over {len(cnn_config.seeds)} seeds); "
        "published ratio: 6",
        {
            "epochs_ratio_tanh_over_relu": ratio,
            "epochs_ratio_per_seed": np.exp(log_ratio),
            "epochs_ratio_at_relu_best_lr": _or_missing(same_lr),
            "epochs_relu": relu,
            "epochs_tanh": tanh,
            "best_lr_relu": cnn["relu"]["best_lr"],
            "best_lr_tanh": cnn["tanh"]["best_lr"],
            "epochs_relu_per_lr": [_or_missing(v) for v in cnn["relu"]["epochs_per_lr"]],
            "epochs_tanh_per_lr": [_or_missing(v) for v in cnn["tanh"]["epochs_per_lr"]],
            "epochs_run": epochs_run,
            "published_ratio": 6.0,
        },
        checks=[check("log_epochs_ratio_tanh_over_relu", log_ratio, THRESHOLDS["log_epochs_ratio_tanh_over_relu"])],
    )


def prelu_claim(config, pres) -> dict:
    prelu_config = config.prelu
    alphas = np.stack([pres.final(f"alpha_{i}") for i in range(len(prelu_config.hidden))], 1)  # (seeds, layers)
    change, mean_abs = np.abs(alphas - PRELU_INIT).max(1), np.abs(alphas).mean(1)
    return claim(
        "prelu_learns_slope",
        "PReLU learns its negative slope: the slopes move away from their initial 0.25 and end clearly "
        "non-zero on average over layers (per-layer values reported; a layer may also learn a slope near 0)",
        "He et al. 2015, 'Delving deep into rectifiers', Sec. 2.1 and Table 1 (learned slopes 0.05-0.7)",
        f"per seed, max over layers |alpha - {PRELU_INIT:g}| " "{prelu_max_slope_change} and mean over layers |alpha| "
        "{prelu_mean_abs_slope} (95% intervals over "
        f"{len(prelu_config.seeds)} seeds)",
        {
            **{f"alpha_layer{i + 1}": alphas[:, i] for i in range(alphas.shape[1])},
            "max_change_from_init": change,
            "mean_abs_alpha": mean_abs,
            "test_accuracy_prelu": 100 * pres.final("test_accuracy"),
        },
        checks=[check("prelu_max_slope_change", change, THRESHOLDS["prelu_max_slope_change"]),
                check("prelu_mean_abs_slope", mean_abs, THRESHOLDS["prelu_mean_abs_slope"])],
    )


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)  # digits: a fixed published set
    plot_functions(workdir)
    norms = gradient_norms(config, data)  # (a)
    plot_gradients(config, norms, workdir)
    dres = dead_units_run(config, data, workdir)  # (b)
    cdata = cnn_data(config)  # (c)
    cnn = relu_vs_tanh(config, cdata, workdir)
    pres = prelu_run(config, data, workdir)  # (d)
    plot_training(config, dres, cnn, pres, workdir)
    return [vanishing_claim(config, norms), dead_claim(config, dres), speed_claim(config, cnn, cdata.num_train),
            prelu_claim(config, pres)]


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
