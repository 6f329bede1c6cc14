"""The perceptron learns AND and OR but not XOR; a two-layer MLP learns XOR; linear regression is a one-layer net.

A perceptron g(x^T w + b) with the step activation, trained by the perceptron learning rule
(Rosenblatt 1958), on the truth tables of AND, OR and XOR, from several random initializations
(one vmapped, compiled program). XOR is not linearly separable (Minsky & Papert 1969), so no
line classifies more than 3 of its 4 points. A two-layer MLP trained by full-batch gradient
descent separates XOR. Linear regression as a network (one linear layer, squared error) trained
by gradient descent reaches the closed-form least-squares weights.

    nnbasics run perceptron_xor --quick
    nnbasics run perceptron_xor --config.mlp.hidden='(2,)' --config.mlp.seeds='(0,1,2,3,4,5,6,7)'
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics.data import ArrayDataset, load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.models.perceptron import least_squares, perceptron_init, perceptron_predict, perceptron_train
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "basics"
ORDER = 20
GATES = ("and", "or", "xor")

# Claims over initializations and seeds. The perceptron claims hold for every initialization by
# theorem (convergence on separable data; no line separates XOR), so the worst case over the
# initializations is checked deterministically; the MLP's accuracy is a random quantity per seed.
THRESHOLDS = {
    "and_or_min_accuracy": Threshold(">=", 100.0, "perceptron convergence theorem (Novikoff 1962): separable data "
                                     "are classified without error after finitely many updates, from any start"),
    "and_or_last_epoch_mistakes": Threshold("<=", 0, "after convergence the rule makes no more updates"),
    "xor_best_accuracy": Threshold("<=", 75.0, "Minsky & Papert 1969: no line separates XOR; the best line gets "
                                   "3 of 4 points"),
    "xor_last_epoch_mistakes": Threshold(">=", 1, "a perceptron that misclassifies a point updates in every epoch"),
    "mlp_xor_accuracy": Threshold(">", 75.0, "75%: the best any linear classifier can do on XOR (3 of 4)"),
    "linear_regression_distance": Threshold("<=", 1e-4, "gradient descent on a convex quadratic converges to its "
                                            "unique minimum; float32 rounding of the closed form is ~1e-6"),
}

SWEEPS = {
    "mlp_hidden": [{"mlp.hidden": (h,)} for h in (2, 3, 4, 8)],
    "perceptron_lr": [{"perceptron.learning_rate": lr} for lr in (0.1, 1.0)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.perceptron = ml_collections.ConfigDict(
        {"epochs": 50, "learning_rate": 1.0, "init_scale": 0.1, "seeds": tuple(range(20))}
    )
    c.mlp = ml_collections.ConfigDict(
        {
            "hidden": (8,),
            "activation": "tanh",
            "optimizer": ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.5}),
            "steps": 1000,
            "batch_size": 4,  # the whole truth table: plain gradient descent
            "eval_every": 100,
            "seeds": tuple(range(10)),
        }
    )
    c.linear_regression = ml_collections.ConfigDict(
        {
            "num_train": 200,
            "true_weights": (1.5, -2.0, 0.5),
            "true_bias": 0.7,
            "noise": 0.1,
            "optimizer": ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.2}),
            "steps": 300,
            "eval_every": 10,
            "seed": 0,  # the data draw and the init (the claim holds for any draw: see THRESHOLDS)
        }
    )
    if preset == "quick":
        c.perceptron.seeds = tuple(range(10))
        c.mlp.seeds = tuple(range(5))
    elif preset == "smoke":
        c.perceptron.seeds = (0, 1)
        c.perceptron.epochs = 20  # 4 points: epochs are nearly free, and AND needs up to ~10
        c.mlp.seeds = (0, 1)
        c.mlp.steps = 20
        c.mlp.eval_every = 10
        c.linear_regression.steps = 20
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    p = config.perceptron
    if int(p.epochs) <= 0:
        raise ValueError(f"config.perceptron.epochs must be a positive integer, got {p.epochs}")
    if not float(p.learning_rate) > 0:
        raise ValueError(f"config.perceptron.learning_rate must be > 0, got {p.learning_rate}")
    if float(p.init_scale) < 0:
        raise ValueError(f"config.perceptron.init_scale must be >= 0, got {p.init_scale}")
    if not config.mlp.hidden or any(int(h) <= 0 for h in config.mlp.hidden):
        raise ValueError(f"config.mlp.hidden must list positive layer widths, got {config.mlp.hidden}")
    lr = config.linear_regression
    if len(lr.true_weights) == 0:
        raise ValueError("config.linear_regression.true_weights must hold at least one weight")
    if int(lr.num_train) <= len(lr.true_weights):
        raise ValueError("config.linear_regression.num_train must exceed the number of weights")


def plot_decision_regions(
    ax, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, title: str,
    lim: tuple[float, float] = (-0.5, 1.5), n: int = 200,
) -> None:
    """Colour the plane by predict(points) -> class (0/1/...) and draw the labelled points on top."""
    g = np.linspace(lim[0], lim[1], n)
    xx, yy = np.meshgrid(g, g)
    z = np.asarray(predict(np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32))).reshape(xx.shape)
    k = int(max(z.max(), y.max())) + 1
    ax.contourf(xx, yy, z, levels=np.arange(k + 1) - 0.5, cmap="coolwarm", alpha=0.35)
    for c, (m, col) in enumerate(zip("os^D", ("tab:blue", "tab:red", "tab:green", "tab:purple"))):
        sel = y == c
        if not sel.any():
            continue
        ax.scatter(x[sel, 0], x[sel, 1], marker=m, c=col, s=60 if len(x) < 50 else 6, edgecolors="k",
                   linewidths=0.5 if len(x) < 50 else 0, label=f"class {c}")
    ax.set(xlim=lim, ylim=lim, xlabel="$x_1$", ylabel="$x_2$", title=title)
    ax.set_aspect("equal")


def linear_data(cfg: ml_collections.ConfigDict, seed: int = 0) -> ArrayDataset:
    """y = x^T w + b + noise with standard normal inputs (train = test: we compare weights)."""
    rng = np.random.default_rng(seed)
    w = np.asarray(cfg.true_weights, np.float32)[:, None]
    x = rng.standard_normal((int(cfg.num_train), len(w))).astype(np.float32)
    y = (x @ w + cfg.true_bias + cfg.noise * rng.standard_normal((len(x), 1))).astype(np.float32)
    return ArrayDataset("linear", x, y, x, y, num_classes=0, task="regression")


def _perceptron_runs(config: ml_collections.ConfigDict) -> dict:
    """The perceptron rule on AND, OR, XOR: gates x seeds in one vmapped program. Returns the inputs,
    labels (gates, 4), parameters and per-epoch accuracy and mistakes, each (gates, seeds, epochs)."""
    perceptron_config = config.perceptron
    tables = [load_dataset("logic_gates", gate=g) for g in GATES]
    x = jnp.asarray(tables[0].x_train)
    ys = jnp.stack([jnp.asarray(t.y_train) for t in tables])  # (gates, 4)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in perceptron_config.seeds])

    def train_one(y, key_data):
        key = jax.random.wrap_key_data(key_data)
        k_init, k_order = jax.random.split(key)
        p0 = perceptron_init(k_init, x.shape[1], float(perceptron_config.init_scale))
        return perceptron_train(p0, x, y, k_order, epochs=int(perceptron_config.epochs),
                                lr=float(perceptron_config.learning_rate))

    params, hist = jax.jit(jax.vmap(jax.vmap(train_one, (None, 0)), (0, None)))(ys, keys)
    return {"tables": tables, "x": x, "ys": ys, "params": params,
            "accuracy": np.asarray(hist["accuracy"]), "mistakes": np.asarray(hist["mistakes"])}


def _mlp_run(config: ml_collections.ConfigDict, xor: ArrayDataset, workdir):
    """A two-layer MLP on XOR by gradient descent."""
    mlp_config = config.mlp
    mlp = get_model("mlp", num_classes=2, hidden=tuple(mlp_config.hidden), activation=mlp_config.activation)
    return fit(mlp, xor, TrainConfig.from_config(mlp_config), workdir=workdir, tag="mlp_xor")


def _linear_regression_run(config: ml_collections.ConfigDict, workdir):
    """Linear regression as a one-layer net trained by gradient descent, with its distance to the
    closed-form least-squares weights recorded at every evaluation."""
    linreg_config = config.linear_regression
    lin = linear_data(linreg_config, seed=int(linreg_config.seed))
    w_star, b_star = least_squares(jnp.asarray(lin.x_train, jnp.float32), jnp.asarray(lin.y_train, jnp.float32))
    theta_star = jnp.concatenate([w_star.ravel(), b_star.ravel()])

    def distance(state):
        p = state.params["linear"]
        return jnp.max(jnp.abs(jnp.concatenate([p["kernel"].ravel(), p["bias"].ravel()]) - theta_star))

    ltc = TrainConfig(
        steps=int(linreg_config.steps), batch_size=len(lin.x_train), eval_every=int(linreg_config.eval_every),
        seeds=(int(linreg_config.seed),),
        optimizer=linreg_config.optimizer.to_dict(), loss="mse",
    )
    return fit(get_model("linear_regression", num_classes=1), lin, ltc, workdir=workdir,
               tag="linear_regression", eval_fns={"max_abs_diff_closed_form": distance})


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    perceptron = _perceptron_runs(config)
    mres = _mlp_run(config, perceptron["tables"][GATES.index("xor")], workdir)
    mlp_acc = mres.final("test_accuracy")
    lres = _linear_regression_run(config, workdir)
    lin_diff = float(lres.final("max_abs_diff_closed_form")[0])
    _figures(perceptron, mres, mlp_acc, lres, workdir)
    return _claims(config, perceptron["accuracy"], perceptron["mistakes"], mlp_acc, mres, lin_diff)


def _figures(perceptron: dict, mres, mlp_acc, lres, workdir) -> None:
    fig, axes = subplots(2, 3, size=(4.0, 3.8))
    _decision_region_panels(axes[:4], perceptron, mres, mlp_acc)
    _perceptron_accuracy_panel(axes[4], perceptron["accuracy"])
    _linear_regression_panel(axes[5], lres)
    fig.tight_layout()
    workdir.save_figure(fig, "decision_regions")


def _decision_region_panels(axes, perceptron: dict, mres, mlp_acc) -> None:
    """The first seed's perceptron on each gate, and the first seed's MLP on XOR."""
    x, ys, params, acc = perceptron["x"], perceptron["ys"], perceptron["params"], perceptron["accuracy"]
    for gi, g in enumerate(GATES):
        p0 = jax.tree.map(lambda a, gi=gi: a[gi, 0], params)
        plot_decision_regions(
            axes[gi], lambda pts, p=p0: perceptron_predict(p, jnp.asarray(pts)), np.asarray(x), np.asarray(ys[gi]),
            f"perceptron on {g.upper()}: {100 * acc[gi, 0, -1]:.0f}% correct",
        )
    st = mres.member_state(0)
    plot_decision_regions(
        axes[3], lambda pts: np.argmax(np.asarray(st.apply_fn({"params": st.params}, jnp.asarray(pts))), -1),
        np.asarray(x), np.asarray(ys[2]), f"2-layer MLP on XOR: {100 * mlp_acc[0]:.0f}% correct",
    )
    axes[0].legend(loc="upper left", fontsize=7)


def _perceptron_accuracy_panel(ax, acc: np.ndarray) -> None:
    """Training accuracy per epoch of the perceptron rule on each gate (mean and range over inits)."""
    epochs = np.arange(1, acc.shape[-1] + 1)
    # AND and OR both end at 100%: a wide pale line under a dashed one, and markers, keep both visible
    styles = {"and": {"lw": 5, "alpha": 0.45, "marker": "o", "ms": 5},
              "or": {"lw": 1.5, "ls": "--", "marker": "s", "ms": 3}, "xor": {"lw": 1.5, "marker": "^", "ms": 3}}
    for gi, g in enumerate(GATES):
        (line,) = ax.plot(epochs, 100 * acc[gi].mean(0), label=f"{g.upper()} (mean, min-max of {acc.shape[1]} inits)",
                          **styles[g])
        ax.fill_between(epochs, 100 * acc[gi].min(0), 100 * acc[gi].max(0), color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(75, color="k", ls=":", lw=1, label="best any line can do on XOR")
    ax.set_xscale("log")
    ax.set(xlabel="epoch", ylabel="training accuracy (%)", title="perceptron learning rule", ylim=(0, 105))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)


def _linear_regression_panel(ax, lres) -> None:
    """Distance of the gradient-descent weights to the closed form, per step."""
    steps, d = lres.curve("max_abs_diff_closed_form")
    ax.semilogy(steps, d[0], label="gradient descent")
    tol = THRESHOLDS["linear_regression_distance"].value
    ax.axhline(tol, color="k", ls=":", lw=1, label=f"tolerance {tol:g}")
    ax.set(xlabel="gradient descent step", ylabel="max |theta - theta_closed_form|",
           title="linear regression net vs least squares")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _claims(config, acc, mistakes, mlp_acc, mres, lin_diff) -> list[dict]:
    perceptron_config, mlp_config, linreg_config = config.perceptron, config.mlp, config.linear_regression
    and_or = [GATES.index("and"), GATES.index("or")]
    final_and_or = acc[and_or, :, -1]
    last_mistakes_and_or = mistakes[and_or, :, -1]
    xi = GATES.index("xor")
    xor_best = float(acc[xi].max())
    xor_last_mistakes = float(mistakes[xi, :, -1].min())
    n_seeds = len(perceptron_config.seeds)
    mlp_pct = 100 * np.asarray(mlp_acc, np.float64)
    return [
        claim(
            "perceptron_and_or",
            "The perceptron learning rule separates AND and OR (linearly separable): 100% training accuracy "
            "and an error-free last epoch from every initialization",
            "Rosenblatt 1958; perceptron convergence theorem (Novikoff 1962); lecture 'linear classification "
            "with a perceptron'",
            "accuracy {and_or_min_accuracy}% on AND and OR " f"for all {n_seeds} initializations (the worst one checked: "
            "the theorem holds for every start), mistakes in the last epoch {and_or_last_epoch_mistakes}",
            {
                "accuracy_and_min": float(final_and_or[0].min()) * 100,
                "accuracy_or_min": float(final_and_or[1].min()) * 100,
                "last_epoch_mistakes_max": float(last_mistakes_and_or.max()),
                "initializations": n_seeds,
                "epochs": int(perceptron_config.epochs),
            },
            checks=[check("and_or_min_accuracy", 100 * float(final_and_or.min()), THRESHOLDS["and_or_min_accuracy"],
                          random=False, statistic="accuracy_and_or_min"),
                    check("and_or_last_epoch_mistakes", float(last_mistakes_and_or.max()),
                          THRESHOLDS["and_or_last_epoch_mistakes"], random=False, statistic="last_epoch_mistakes_max")],
        ),
        claim(
            "perceptron_xor_fails",
            "The perceptron cannot separate XOR: its training accuracy never exceeds 75% (3 of 4 points) "
            "and it keeps making mistakes",
            "Minsky & Papert 1969 (the 'XOR affair' in the lecture)",
            f"best accuracy over all epochs and {n_seeds} initializations " "{xor_best_accuracy}% (no line can do better, "
            "whatever the start), mistakes in every last epoch {xor_last_epoch_mistakes}",
            {
                "accuracy_xor_best": xor_best * 100,
                "accuracy_xor_final_mean": float(acc[xi, :, -1].mean()) * 100,
                "last_epoch_mistakes_min": xor_last_mistakes,
            },
            checks=[check("xor_best_accuracy", xor_best * 100, THRESHOLDS["xor_best_accuracy"], random=False,
                          statistic="accuracy_xor_best"),
                    check("xor_last_epoch_mistakes", xor_last_mistakes, THRESHOLDS["xor_last_epoch_mistakes"],
                          random=False, statistic="last_epoch_mistakes_min")],
        ),
        claim(
            "mlp_solves_xor",
            f"A two-layer MLP (hidden {tuple(mlp_config.hidden)}, {mlp_config.activation}) trained by gradient descent separates "
            f"XOR, which no line can: {int(np.sum(mlp_pct >= 100))} of {len(mlp_pct)} seeds classify all four points",
            "Lecture: '2+ layers can represent any function'; Rumelhart, Hinton & Williams 1986",
            "mean accuracy over seeds {mlp_xor_accuracy}% (the best of any linear classifier)",
            {
                "accuracy_mlp_xor": mlp_pct,
                "accuracy_mlp_xor_min": float(mlp_pct.min()),
                "loss_mlp_xor_max": float(mres.final("test_loss").max()),
                "seeds": len(mlp_pct),
            },
            checks=[check("mlp_xor_accuracy", mlp_pct, THRESHOLDS["mlp_xor_accuracy"], statistic="accuracy_mlp_xor")],
        ),
        claim(
            "linear_regression_closed_form",
            "Linear regression as a one-layer network trained by gradient descent on the squared error "
            "reaches the closed-form least-squares weights",
            "Lecture: 'linear regression with a neural net'; normal equations",
            f"max |w - w*| over weights and bias <= {THRESHOLDS['linear_regression_distance'].value:g} (a convex "
            "problem: the same minimum for any data draw and start)",
            {"max_abs_diff_closed_form": lin_diff, "steps": int(linreg_config.steps)},
            checks=[check("linear_regression_distance", lin_diff, THRESHOLDS["linear_regression_distance"],
                          random=False, statistic="max_abs_diff_closed_form")],
        ),
    ]


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
