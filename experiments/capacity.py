"""One layer draws a line and fails on spirals; two or more layers fit them; narrow-deep beats wide-shallow at equal parameters.

Softmax regression (one linear layer) against MLPs with 1, 2 and 4 hidden ReLU layers whose
widths are chosen so that all three have the same number of parameters (about 900), trained
with Adam on two interleaved spirals (2.5 turns), the learning rate picked per model from a grid
by training accuracy. The lecture: "1 layer? Linear decision surface. 2+ layers? In theory, can
represent any function. But issue is efficiency: very wide two layers vs narrow deep model? In
practice, more layers helps." Deep against wide is paired over the same seeds.

    nnbasics run capacity --quick
    nnbasics run capacity --config.turns=1.5 --config.budget=3000
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.perceptron_xor import plot_decision_regions
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.models import get_model
from nnbasics.models.mlp import count_params
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import band, subplots

TOPIC = "basics"
ORDER = 22

THRESHOLDS = {
    "linear_test_accuracy": Threshold("<=", 75.0, (
        "halfway between chance (50%) and a fit (100%): the two arms are mirror images through the centre "
        "(x -> -x swaps the classes), so a line through the centre is at chance and an offset line gains only "
        "from the uneven density; the lecture: '1 layer? Linear decision surface'")),
    "fit_train_accuracy": Threshold(">=", 90.0, (
        "'fits': at most 10% training error for every model with a hidden layer; the position noise makes the "
        "arms overlap near the centre, so a few percent of the points are ambiguous for any model")),
    "deep_minus_wide_test_accuracy": Threshold(">", 0.0, (
        "paired over seeds: the lecture says only 'in practice, more layers helps', with no size")),
    "param_count_spread": Threshold("<=", 0.02, (
        "equal parameter counts: integer widths match a ~900 budget to within 1%; 2% leaves room for other budgets")),
}

SWEEPS = {
    "turns": [{"turns": t} for t in (1.0, 1.5, 2.0, 2.5, 3.0)],
    "budget": [{"budget": b} for b in (300, 900, 3000)],
}
TAIL = 0.2  # accuracies: the mean over the evaluations in the last 20% of training


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "spirals"
    c.turns = 2.5
    c.noise = 0.05
    c.budget = 900  # parameters of every hidden-layer model (widths solved for)
    c.depths = (1, 2, 4)  # hidden layers: 1 = wide-shallow (a 2-layer net), 4 = narrow-deep
    c.activation = "relu"
    c.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 0.01})
    c.learning_rates = (0.003, 0.01, 0.03)
    c.steps = 3000
    c.batch_size = 100
    c.eval_every = 250
    c.seeds = tuple(range(10))
    c.data_seed = 0  # the draw of the spirals
    if preset == "quick":
        c.seeds = tuple(range(8))
    elif preset == "smoke":
        c.seeds = (0, 1)
        c.depths = (1, 2)
        c.learning_rates = (0.01,)
        c.steps = 20
        c.eval_every = 10
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.depths or any(int(d) < 1 for d in config.depths):
        raise ValueError(f"config.depths must list hidden-layer counts >= 1, got {config.depths}")
    if 1 not in config.depths or len(config.depths) < 2:
        raise ValueError("config.depths must include 1 (wide-shallow) and at least one deeper net")
    if int(config.budget) < 50:
        raise ValueError(f"config.budget must be at least 50 parameters, got {config.budget}")
    if not float(config.turns) > 0:
        raise ValueError(f"config.turns must be > 0, got {config.turns}")


def mlp_param_count(inputs: int, hidden: tuple[int, ...], outputs: int) -> int:
    """Weights and biases of Dense layers inputs -> hidden... -> outputs."""
    sizes = [inputs, *hidden, outputs]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def width_for_budget(inputs: int, outputs: int, depth: int, budget: int) -> int:
    """The width w whose MLP with `depth` hidden layers of w units has the parameter count
    closest to `budget`."""
    best, best_gap = 1, float("inf")
    for w in range(1, budget + 1):
        gap = abs(mlp_param_count(inputs, (w,) * depth, outputs) - budget)
        if gap < best_gap:
            best, best_gap = w, gap
        elif mlp_param_count(inputs, (w,) * depth, outputs) > budget:
            break
    return best


def hidden_for_budget(inputs: int, outputs: int, depth: int, budget: int) -> tuple[int, ...]:
    """Hidden widths for `depth` layers whose parameter count is closest to `budget`: equal widths
    (`width_for_budget`) when they come within 1% of it, else equal widths but the last, which is
    solved for (at small budgets one unit more in every layer of a deep net adds more than 2%)."""
    w = width_for_budget(inputs, outputs, depth, budget)
    best = (w,) * depth
    if depth == 1 or abs(mlp_param_count(inputs, best, outputs) - budget) <= 0.01 * budget:
        return best
    for base in (w - 1, w, w + 1):
        if base < 1:
            continue
        for last in range(1, 4 * (w + 1)):
            hidden = (base,) * (depth - 1) + (last,)
            if abs(mlp_param_count(inputs, hidden, outputs) - budget) < abs(mlp_param_count(inputs, best, outputs) - budget):
                best = hidden
    return best


def hidden_label(hidden: tuple[int, ...]) -> str:
    """'4x16' for equal widths, '9, 9, 9, 12' otherwise."""
    return f"{len(hidden)}x{hidden[0]}" if len(set(hidden)) == 1 else ", ".join(map(str, hidden))


def tail_mean(res, key: str) -> np.ndarray:
    """Per member: `key` (%) averaged over the evaluations in the last `TAIL` of training."""
    steps, vals = res.curve(key)
    last = steps >= steps[-1] * (1 - TAIL)
    last[-1] = True
    return 100 * vals[:, last].mean(1)


def train_models(config, data, workdir) -> dict[str, dict]:
    """Per model: its best learning rate (by mean training accuracy over seeds) and, at that rate,
    per-seed training and test accuracy (seed order)."""
    d_in, k = data.input_shape[0], data.num_classes
    train_config = TrainConfig.from_config(config)
    train_config.eval_train = True
    models = {"1 layer (linear)": ()}
    for depth in config.depths:
        hidden = hidden_for_budget(d_in, k, int(depth), int(config.budget))
        models[f"{int(depth) + 1} layers ({hidden_label(hidden)})"] = hidden
    results = {}
    for label, hidden in models.items():
        model = get_model("mlp", num_classes=k, hidden=hidden, activation=config.activation)
        res = fit(model, data, train_config, workdir=workdir, tag=label)
        lrs = [m["learning_rate"] for m in res.members]
        uniq = sorted(set(lrs))
        train, test = tail_mean(res, "train_full_accuracy"), tail_mean(res, "test_accuracy")
        best = uniq[int(np.argmax([train[[i for i, v in enumerate(lrs) if v == lr]].mean() for lr in uniq]))]
        rows = [i for i, v in enumerate(lrs) if v == best]
        results[label] = {
            "hidden": hidden, "res": res, "rows": rows, "lr": best, "train_seeds": train[rows], "test_seeds": test[rows],
            "train": float(train[rows].mean()), "test": float(test[rows].mean()),
            "params": count_params(res.member_state(rows[0]).params),
        }
    return results


def plot(config, data, results: dict, workdir) -> None:
    labels = list(results)
    ncols = 3
    nrows = -(-(len(labels) + 2) // ncols)
    fig, axes = subplots(nrows, ncols, size=(3.8, 3.7))
    for ax, label in zip(axes[: len(labels)], labels):
        r = results[label]
        st = r["res"].member_state(r["rows"][0])

        def predict(pts, st=st):
            return np.argmax(np.asarray(st.apply_fn({"params": st.params}, jnp.asarray(pts))), -1)

        plot_decision_regions(ax, predict, data.x_test, data.y_test,
                              f"{label}: {r['params']} params\ntest accuracy {r['test']:.1f}% (seed mean)",
                              lim=(-1.2, 1.2), n=150)
    axes[0].legend(loc="lower left", fontsize=7)
    ax = axes[len(labels)]
    for label in labels:
        r = results[label]
        steps, acc = r["res"].curve("train_full_accuracy")
        band(ax, steps, 100 * acc[r["rows"]], label=f"{label}, lr {r['lr']:g}")
    ax.set(xlabel="Adam step", ylabel="training accuracy (%)", title="training accuracy (best rate each)", ylim=(40, 101))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    ax = axes[len(labels) + 1]
    pos = np.arange(len(labels))
    for off, key, name in ((-0.2, "train_seeds", "train"), (0.2, "test_seeds", "test")):
        vals = [results[lab][key] for lab in labels]
        ax.bar(pos + off, [v.mean() for v in vals], 0.4, label=name,
               yerr=[[v.mean() - v.min() for v in vals], [v.max() - v.mean() for v in vals]], capsize=2)
    ax.set_xticks(pos, [lab.split(" (")[0] + "\n(" + lab.split(" (")[1] for lab in labels], fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(40, 101),
           title=f"accuracy, last {TAIL:.0%} of training\n(mean and min-max of {len(config.seeds)} seeds)")
    ax.axhline(50, color="k", ls=":", lw=1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    for a in axes[len(labels) + 2:]:
        a.axis("off")
    fig.tight_layout()
    workdir.save_figure(fig, "decision_surfaces")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data, turns=float(config.turns), noise=float(config.noise), seed=int(config.data_seed))
    results = train_models(config, data, workdir)
    plot(config, data, results, workdir)
    labels = list(results)
    lin = results[labels[0]]
    hidden_labels = labels[1:]
    shallow = results[hidden_labels[0]]
    deep_label = max(hidden_labels, key=lambda lab: len(results[lab]["hidden"]))
    deep = results[deep_label]
    params = [results[lab]["params"] for lab in hidden_labels]
    param_spread = (max(params) - min(params)) / max(params)
    stat = f"mean of the last {TAIL:.0%} of training, 95% interval over {len(config.seeds)} seeds"
    return [
        claim(
            "one_layer_fails",
            "One linear layer draws a linear decision boundary and fails on two interleaved spirals",
            "Lecture: 'Representational power: 1 layer? Linear decision surface'",
            "test accuracy {linear_test_accuracy}% " f"(chance is 50%; {stat})",
            {"test_accuracy_linear": lin["test_seeds"], "train_accuracy_linear": lin["train_seeds"]},
            checks=[check("linear_test_accuracy", lin["test_seeds"], THRESHOLDS["linear_test_accuracy"],
                          statistic="linear test accuracy (%)")],
        ),
        claim(
            "two_plus_layers_fit",
            "Networks with a hidden layer (2 or more layers) fit the spirals",
            "Lecture: '2+ layers? In theory, can represent any function'; Cybenko 1989, Hornik 1991",
            "training accuracy {fit_train_accuracy}% for every model with a hidden layer " f"({stat})",
            {f"train_accuracy_{len(results[lab]['hidden']) + 1}_layers": results[lab]["train_seeds"] for lab in hidden_labels},
            checks=[check("fit_train_accuracy", results[lab]["train_seeds"], THRESHOLDS["fit_train_accuracy"],
                          statistic=f"train accuracy {lab.split(' (')[0]} (%)") for lab in hidden_labels],
        ),
        claim(
            "deep_beats_wide",
            f"At an equal parameter count (~{config.budget}), a narrow-deep net ({deep_label}) reaches a higher "
            f"test accuracy than a wide-shallow one ({hidden_labels[0]})",
            "Lecture: 'very wide two layers vs narrow deep model? In practice, more layers helps'",
            "paired per-seed test accuracy deep - wide-shallow {deep_minus_wide_test_accuracy} " f"({stat}); "
            "parameter counts' relative spread {param_count_spread}",
            {
                "test_accuracy_wide_shallow": shallow["test_seeds"],
                "test_accuracy_narrow_deep": deep["test_seeds"],
                "train_accuracy_wide_shallow": shallow["train_seeds"],
                "train_accuracy_narrow_deep": deep["train_seeds"],
                "params_wide_shallow": shallow["params"],
                "params_narrow_deep": deep["params"],
            },
            checks=[check("deep_minus_wide_test_accuracy", deep["test_seeds"] - shallow["test_seeds"],
                          THRESHOLDS["deep_minus_wide_test_accuracy"], statistic="test accuracy deep - wide (points)"),
                    check("param_count_spread", param_spread, THRESHOLDS["param_count_spread"], random=False)],
        ),
    ]


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
