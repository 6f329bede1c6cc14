"""Backpropagation by hand: layer-by-layer chain rule for an MLP and a conv net equals jax.grad.

An L-layer MLP and a small conv net (3x3 convs, stride 1 and 2, PReLU slopes per channel) on a
batch of 8x8 `digits`, with a hand-written forward pass that stores each layer's input and a
hand-written backward pass (`nnbasics.analysis.backprop`), for sigmoid, tanh, ReLU, leaky ReLU
(alpha 0.02) and PReLU. The gradients are compared with `jax.grad` of the same network built from
the library's ops (`lax.conv` convolution, optax cross-entropy); one SGD step with each is
compared with `optax.sgd`, and a short full-batch training run with each is compared step by step.

    nnbasics run backprop --quick
    nnbasics run backprop --config.mlp_sizes='(64, 16, 16, 16, 16, 16, 16, 16, 16, 16, 10)'
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nnbasics.analysis.backprop import (
    ACTIVATION_NAMES,
    conv_layers,
    init_params,
    loss_and_gradients,
    max_abs_difference,
    max_relative_error,
    mlp_layers,
    reference_loss,
    relative_errors,
    sgd_step,
)
from nnbasics.analysis.momentum_theory import float64
from nnbasics.data import load_dataset
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "basics"
ORDER = 32
SOURCE = "lecture slides 'Backpropagation' (forward pass, backward pass, chain rule per layer)"

# Deterministic identities (the same arithmetic in another order): decided by their values.
THRESHOLDS = {
    "gradient_rel_error": Threshold("<=", 1e-5, "float32 rounding: eps 1.2e-7 accumulated over a few layers' sums "
                                    "(the hand and autodiff passes differ only in the order of operations); a wrong "
                                    "derivative gives errors of order 1"),
    "sgd_step_abs_diff": Threshold("<=", 1e-6, "float32 rounding of parameters of order 0.1-1 (eps 1.2e-7) after "
                                   "one step"),
    "train_rel_loss_diff": Threshold("<=", 1e-10, "float64 (eps 2.2e-16): rounding differences stay ~1e-14 along "
                                     "the run (in float32 they grow to ~1e-4 after 300 steps)"),
    "train_loss_ratio": Threshold("<=", 0.5, "the run must train for the step-by-step comparison to mean "
                                  "something: the loss at least halves"),
}

SWEEPS = {
    "depth": [{"mlp_sizes": (64,) + (32,) * d + (10,)} for d in (1, 4, 9)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "digits"
    c.batch = 64  # examples in the gradient check
    c.activations = ACTIVATION_NAMES
    c.mlp_sizes = (64, 32, 32, 32, 32, 32, 10)  # L = 6 dense layers
    c.conv_channels = (8, 16)
    c.conv_strides = (1, 2)
    c.seed = 0
    c.learning_rate = 0.1
    c.train_examples = 512
    c.train_steps = 300
    c.train_activation = "relu"
    c.train_learning_rate = 0.05  # the training comparison runs in float64 (see THRESHOLDS)
    if preset == "smoke":
        c.activations = ("sigmoid", "prelu")
        c.mlp_sizes = (64, 16, 16, 10)
        c.conv_channels = (4,)
        c.conv_strides = (2,)
        c.train_steps = 10
        c.train_examples = 128
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    for a in config.activations:
        if a not in ACTIVATION_NAMES:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.activations: " + unknown_name_message("activation", a, list(ACTIVATION_NAMES)))
    if config.train_activation not in ACTIVATION_NAMES:
        raise ValueError(f"config.train_activation must be one of {', '.join(ACTIVATION_NAMES)}")
    if len(config.mlp_sizes) < 2 or config.mlp_sizes[0] != 64:
        raise ValueError(
            f"config.mlp_sizes must start with the 64 digit pixels and have >= 2 entries, got {config.mlp_sizes}"
        )
    if len(config.conv_channels) != len(config.conv_strides) or not config.conv_channels:
        raise ValueError("config.conv_channels and config.conv_strides must be non-empty and of equal length")
    if any(s not in (1, 2) for s in config.conv_strides):
        raise ValueError(f"config.conv_strides must be 1 or 2, got {config.conv_strides}")
    if not 0 < config.batch <= 1000 or not 0 < config.train_examples <= 1400:
        raise ValueError("config.batch must be in 1..1000 and config.train_examples in 1..1400")


def _check(cases: dict, y, lr):
    """For every case {key: (layers, params, x)}: hand and autodiff gradients, and one SGD step with
    each (the hand step written out, the autodiff step through optax.sgd). One compiled program for
    all cases (XLA compiles that faster than one program per case)."""
    tx = optax.sgd(lr)

    def one(layers, params, x):
        loss, gh = loss_and_gradients(layers, params, x, y)
        ref_loss, ga = jax.value_and_grad(reference_loss)(params, layers, x, y)
        upd, _ = tx.update(ga, tx.init(params), params)
        return loss, ref_loss, gh, ga, sgd_step(params, gh, lr), optax.apply_updates(params, upd)

    @jax.jit
    def go(params, xs):
        return {k: one(cases[k][0], params[k], xs[k]) for k in cases}

    return jax.device_get(go({k: c[1] for k, c in cases.items()}, {k: c[2] for k, c in cases.items()}))


def _train(layers, params, x, y, lr, steps):
    """Full-batch gradient descent with the hand-written backward pass and with jax.grad + optax."""
    tx = optax.sgd(lr)

    @jax.jit
    def go(params, x, y):
        def hand(p, _):
            loss, g = loss_and_gradients(layers, p, x, y)
            return sgd_step(p, g, lr), loss

        def auto(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(reference_loss)(p, layers, x, y)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        _, lh = jax.lax.scan(hand, params, None, length=steps)
        _, la = jax.lax.scan(auto, (params, tx.init(params)), None, length=steps)
        return lh, la

    return [np.asarray(v, np.float64) for v in go(params, x, y)]


def _gradient_cases(config: ml_collections.ConfigDict, data) -> tuple[dict, jax.Array]:
    """{(net, activation): (layers, params, x)} for the MLP and the conv net, in config order, and the labels."""
    n = int(config.batch)
    x_img = jnp.asarray(data.x_train[:n])
    y = jnp.asarray(data.y_train[:n])
    x_flat = x_img.reshape(n, -1)
    nets = {
        "mlp": (lambda act: mlp_layers(config.mlp_sizes, act), x_flat, (x_flat.shape[1],)),
        "conv": (lambda act: conv_layers(config.conv_channels, config.conv_strides, data.num_classes, act),
                 x_img, x_img.shape[1:]),
    }
    cases = {}
    for net, (build, x, shape) in nets.items():
        for act in config.activations:
            layers = build(act)
            cases[(net, act)] = (layers, init_params(layers, int(config.seed), tuple(shape)), x)
    return cases, y


def _gradient_results(cases: dict, y, lr: float) -> dict[str, dict[str, dict]]:
    """Per net and activation: the largest relative gradient error, the SGD-step difference, the loss
    difference, the per-layer gradient norms (hand, autodiff) and the PReLU slopes' error."""
    checked = _check(cases, y, lr)
    results: dict[str, dict[str, dict]] = {net: {} for net, _ in cases}
    for net, act in cases:  # in config order (the pytree came back with sorted keys)
        loss, ref_loss, gh, ga, p_hand, p_auto = checked[(net, act)]
        results[net][act] = {
            "rel": max_relative_error(gh, ga),
            "step": max_abs_difference(p_hand, p_auto),
            "loss_diff": abs(float(loss) - float(ref_loss)),
            "layer_norms": [(float(np.linalg.norm(g["W"])), float(np.linalg.norm(r["W"])))
                            for g, r in zip(gh, ga) if "W" in r],
            "prelu_rel": max((e["alpha"] for e in relative_errors(gh, ga) if "alpha" in e), default=0.0),
        }
    return results


def _training_curves(config: ml_collections.ConfigDict, data) -> tuple[np.ndarray, np.ndarray]:
    """Loss curves of a short training run with each backward pass (full batch, the train activation's
    MLP), in float64 so that the comparison is not blurred by float32 rounding accumulating over steps."""
    m = int(config.train_examples)
    layers = mlp_layers(config.mlp_sizes, config.train_activation)
    params = init_params(layers, int(config.seed), (64,))
    with float64():
        xt = jnp.asarray(data.x_train[:m], jnp.float64).reshape(m, -1)
        yt = jnp.asarray(data.y_train[:m])
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        loss_hand, loss_auto = _train(layers, params, xt, yt, float(config.train_learning_rate),
                                      int(config.train_steps))
    return loss_hand, loss_auto


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    data = load_dataset(config.data)
    lr = float(config.learning_rate)
    cases, y = _gradient_cases(config, data)
    results = _gradient_results(cases, y, lr)
    loss_hand, loss_auto = _training_curves(config, data)
    _figures(config, workdir, results, loss_hand, loss_auto)
    return [*_gradient_claims(config, results), _sgd_step_claim(results, lr),
            _training_claim(config, loss_hand, loss_auto)]


def _gradient_claims(config: ml_collections.ConfigDict, results: dict) -> list[dict]:
    """Per net: the hand-written gradients equal jax.grad's for every activation."""
    tol = THRESHOLDS["gradient_rel_error"].value
    out = []
    conv_title = f"conv net ({len(config.conv_channels)} 3x3 convs, strides {tuple(config.conv_strides)})"
    for net, title in (("mlp", f"{len(config.mlp_sizes) - 1}-layer MLP"), ("conv", conv_title)):
        r = results[net]
        worst = max(v["rel"] for v in r.values())
        measured = {f"max_rel_error_{net}": worst}
        measured.update({f"rel_error_{act}": v["rel"] for act, v in r.items()})
        if "prelu" in r:
            measured["rel_error_prelu_slope"] = r["prelu"]["prelu_rel"]
        out.append(claim(
            f"{net}_gradients_match",
            f"Hand-written backprop through a {title} gives jax.grad's gradients for "
            f"{', '.join(config.activations)}",
            SOURCE,
            f"relative error <= {tol:g} for every parameter tensor and activation",
            measured,
            checks=[check("gradient_rel_error", worst, THRESHOLDS["gradient_rel_error"], random=False,
                          statistic=f"max_rel_error_{net}")],
        ))
    return out


def _sgd_step_claim(results: dict, lr: float) -> dict:
    stol = THRESHOLDS["sgd_step_abs_diff"].value
    steps = {f"max_abs_param_diff_{net}": max(v["step"] for v in results[net].values()) for net in results}
    return claim(
        "sgd_step_matches",
        "One SGD step with the hand-written gradients gives the same parameters as jax.grad + optax.sgd",
        SOURCE,
        f"max |difference| <= {stol:g} over all parameters, activations and both nets (learning rate {lr:g})",
        {**steps, "learning_rate": lr},
        checks=[check("sgd_step_abs_diff", v, THRESHOLDS["sgd_step_abs_diff"], random=False, statistic=k)
                for k, v in steps.items()],
    )


def _training_claim(config: ml_collections.ConfigDict, loss_hand: np.ndarray, loss_auto: np.ndarray) -> dict:
    train_rel = float(np.max(np.abs(loss_hand - loss_auto) / np.abs(loss_auto)))
    return claim(
        "training_matches",
        f"Training the MLP ({config.train_activation}) with hand-written backprop follows the jax.grad run "
        "step by step",
        SOURCE,
        f"float64 loss curves within {THRESHOLDS['train_rel_loss_diff'].value:g} relative at every one of "
        f"{config.train_steps} full-batch steps; the loss at least halves",
        {"max_rel_loss_diff": train_rel, "loss_start": loss_auto[0], "loss_end_hand": loss_hand[-1],
         "loss_end_autodiff": loss_auto[-1], "learning_rate": float(config.train_learning_rate)},
        checks=[check("train_rel_loss_diff", train_rel, THRESHOLDS["train_rel_loss_diff"], random=False,
                      statistic="max_rel_loss_diff"),
                check("train_loss_ratio", loss_hand[-1] / loss_hand[0], THRESHOLDS["train_loss_ratio"], random=False,
                      statistic="loss_end / loss_start")],
    )


def _figures(config, workdir, results, loss_hand, loss_auto) -> None:
    fig, axes = subplots(1, 3, size=(4.6, 3.8), layout="constrained")
    ax = axes[0]
    for i, (act, v) in enumerate(results["mlp"].items()):
        hand = [h for h, _ in v["layer_norms"]]
        ref = [r for _, r in v["layer_norms"]]
        layers = np.arange(1, len(ref) + 1)
        ax.semilogy(layers, ref, "-", color=f"C{i}", label=f"{act} (jax.grad)")
        ax.semilogy(layers, hand, "o", color=f"C{i}", mfc="none", ms=7)
    ax.plot([], [], "ko", mfc="none", label="hand-written (circles)")
    ax.set(xlabel="layer l (1 = input side)", ylabel="||dL/dW^(l)||", title="MLP gradient norm per layer at init")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[1]
    acts = list(results["mlp"])
    xs = np.arange(len(acts))
    for j, net in enumerate(results):
        vals = [max(results[net][a]["rel"], 1e-12) for a in acts]
        ax.bar(xs + (j - 0.5) * 0.38, vals, width=0.38, label=net)
    tol = THRESHOLDS["gradient_rel_error"].value
    ax.axhline(tol, color="r", ls="--", label=f"tolerance {tol:g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-9, 1e-3)
    ax.set_xticks(xs, acts, rotation=30)
    ax.set(ylabel="max relative error vs jax.grad", title="Hand-written vs autodiff gradients")
    ax.legend(fontsize=8)

    ax = axes[2]
    steps = np.arange(1, len(loss_hand) + 1)
    ax.plot(steps, loss_auto, "-", lw=3, alpha=0.5, label="jax.grad + optax.sgd")
    ax.plot(steps, loss_hand, "k--", lw=1, label="hand-written backprop")
    ax.set(xlabel="full-batch step", ylabel="training loss (cross-entropy)",
           title=f"Training the MLP ({config.train_activation}, float64)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "backprop")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
