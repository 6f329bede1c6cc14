"""Ridge (Tikhonov) regression's U-shaped test error, and weight decay and dropout improving an over-parameterized MLP.

(1) Bishop's example (PRML Sec. 1.1): 10 noisy samples of sin(2 pi x) fitted by a degree-9
polynomial, theta* = (Phi^T Phi + lam I)^{-1} Phi^T y in closed form, for lam from 0 to 100, over
20 draws of the data: lam = 0 interpolates the noise (overfits), a large lam underfits.
(2) A 2x256 ReLU MLP trained on 1000 MNIST-1D examples (it reaches ~100% training accuracy)
with plain L2 weight decay or with dropout (p = 0.5 after each hidden layer), against the same
net without either, from the same initializations. MNIST-1D rather than the 8x8 `digits`:
on 100 digits the same comparison moved test accuracy by only +0.2 points (within seed noise).
(3) Dropout is off at evaluation and draws a fresh mask every training step.

    nnbasics run regularization --quick
    nnbasics run regularization --config.mlp.data=digits --config.mlp.num_train=100
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics import claims as C
from nnbasics import optim
from nnbasics.analysis.ridge import polynomial_features, ridge_path, rms_error
from nnbasics.data import load_dataset
from nnbasics.models import get_model
from nnbasics.plotting import band, subplots
from nnbasics.train import TrainConfig, create_state, fit, forward

TOPIC = "basics"
ORDER = 23

SWEEPS = {
    "degree": [{"ridge.degree": k} for k in (3, 6, 9)],
    "weight_decay": [{"mlp.weight_decay": wd} for wd in (1e-3, 3e-3, 1e-2)],
    "dropout": [{"mlp.dropout": p} for p in (0.2, 0.5, 0.7)],
    "num_train": [{"mlp.num_train": n} for n in (500, 1000, 2000)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.ridge = ml_collections.ConfigDict(
        {
            "degree": 9,
            "num_train": 10,
            "noise": 0.3,
            "data_seeds": tuple(range(20)),
            "log10_lambda_min": -12.0,
            "log10_lambda_max": 2.0,
            "num_lambdas": 29,
            "min_overfit_ratio": 2.0,  # test RMSE at lam=0 / best test RMSE
            "min_underfit_ratio": 1.5,  # test RMSE at the largest lam / best test RMSE
        }
    )
    c.mlp = ml_collections.ConfigDict(
        {
            "data": "mnist1d",
            "num_train": 1000,
            "hidden": (256, 256),
            "optimizer": ml_collections.ConfigDict({"name": "momentum", "learning_rate": 0.05, "momentum": 0.9}),
            "weight_decay": 3e-3,
            "dropout": 0.5,
            "steps": 2000,
            "batch_size": 50,
            "eval_every": 250,
            "seeds": (0, 1, 2, 3, 4),
            "min_gain": 1.0,  # test-accuracy points each regularizer must add
        }
    )
    if preset == "quick":
        c.mlp.seeds = (0, 1, 2)
        c.mlp.steps = 1500
    elif preset == "smoke":
        c.ridge.data_seeds = (0, 1)
        c.ridge.num_lambdas = 5
        c.mlp.num_train = 200
        c.mlp.hidden = (16, 16)
        c.mlp.seeds = (0,)
        c.mlp.steps = 10
        c.mlp.eval_every = 5
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    r = config.ridge
    if int(r.degree) < 0:
        raise ValueError(f"config.ridge.degree must be >= 0, got {r.degree}")
    if int(r.num_lambdas) < 3:
        raise ValueError(f"config.ridge.num_lambdas must be >= 3 to show a U shape, got {r.num_lambdas}")
    if not float(r.log10_lambda_min) < float(r.log10_lambda_max):
        raise ValueError("config.ridge.log10_lambda_min must be below config.ridge.log10_lambda_max")
    if not r.data_seeds:
        raise ValueError("config.ridge.data_seeds must list at least one seed")
    m = config.mlp
    if not 0 < float(m.dropout) < 1:
        raise ValueError(f"config.mlp.dropout must be in (0, 1), got {m.dropout}")
    if not float(m.weight_decay) > 0:
        raise ValueError(f"config.mlp.weight_decay must be > 0, got {m.weight_decay}")
    if float(m.optimizer.get("weight_decay", 0.0)):
        raise ValueError("set config.mlp.weight_decay, not config.mlp.optimizer.weight_decay (the baseline has none)")


# ------------------------------------------------------------------------------------- parts


def ridge_curves(config) -> dict[str, np.ndarray]:
    """Train and test RMSE (data seeds, lambdas) for lam = 0 followed by the log-spaced grid."""
    rc = config.ridge
    lams = np.concatenate([[0.0], np.logspace(rc.log10_lambda_min, rc.log10_lambda_max, int(rc.num_lambdas))])
    train, test, fits = [], [], []
    for seed in rc.data_seeds:
        d = load_dataset("polynomial", n_train=int(rc.num_train), noise=float(rc.noise), seed=int(seed))
        ptr, pte = polynomial_features(d.x_train, int(rc.degree)), polynomial_features(d.x_test, int(rc.degree))
        thetas = ridge_path(ptr, d.y_train, lams)
        train.append(rms_error(ptr, d.y_train, thetas))
        test.append(rms_error(pte, d.y_test, thetas))
        fits.append((d, thetas))
    return {"lams": lams, "train": np.array(train), "test": np.array(test), "example": fits[0]}


def regularized_mlps(config, workdir) -> dict[str, object]:
    mc = config.mlp
    data = load_dataset(mc.data).subset(int(mc.num_train), seed=0)
    base_opt = mc.optimizer.to_dict()
    tc = TrainConfig(steps=int(mc.steps), batch_size=int(mc.batch_size), eval_every=int(mc.eval_every),
                     seeds=tuple(mc.seeds), optimizer=base_opt, eval_train=True)
    variants = {
        "no regularization": (base_opt, 0.0),
        f"weight decay {mc.weight_decay:g}": ({**base_opt, "weight_decay": float(mc.weight_decay)}, 0.0),
        f"dropout {mc.dropout:g}": (base_opt, float(mc.dropout)),
    }
    out = {}
    for label, (opt, p) in variants.items():
        model = get_model("mlp", num_classes=data.num_classes, hidden=tuple(mc.hidden), dropout=p)
        out[label] = fit(model, data, dataclasses.replace(tc, optimizer=opt), metrics_writer=workdir.metrics, tag=label)
    return out


def dropout_checks(config) -> dict[str, float]:
    """Evaluation ignores dropout; training masks are fresh every step and reproducible per step."""
    mc = config.mlp
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(32, 40)), jnp.float32)
    drop = get_model("mlp", num_classes=10, hidden=tuple(mc.hidden), dropout=float(mc.dropout))
    plain = get_model("mlp", num_classes=10, hidden=tuple(mc.hidden))
    tx = optim.make_optimizer(mc.optimizer.to_dict())

    @jax.jit
    def outputs(key):  # one compiled program (eager init dispatches hundreds of tiny ops)
        st = create_state(drop, tx, key, x[:1])
        eval_out, _ = forward(st, st.params, x, train=False)
        plain_out = plain.apply({"params": st.params}, x, train=False)
        a, _ = forward(st, st.params, x, train=True)
        a_again, _ = forward(st, st.params, x, train=True)
        b, _ = forward(st.replace(step=st.step + 1), st.params, x, train=True)
        return eval_out, plain_out, a, a_again, b

    eval_out, plain_out, a, a_again, b = outputs(jax.random.key(1))
    return {
        "eval_max_abs_diff_vs_no_dropout": float(jnp.max(jnp.abs(eval_out - plain_out))),
        "train_outputs_changed_between_steps": float(jnp.mean(a != b)),
        "same_step_max_abs_diff": float(jnp.max(jnp.abs(a - a_again))),
        "train_max_abs_diff_vs_eval": float(jnp.max(jnp.abs(a - eval_out))),
    }


# ---------------------------------------------------------------------------------------- run


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    rc, mc = config.ridge, config.mlp
    rr = ridge_curves(config)
    lams, test_med, train_med = rr["lams"], np.median(rr["test"], 0), np.median(rr["train"], 0)
    best = int(np.argmin(test_med))
    mres = regularized_mlps(config, workdir)
    checks = dropout_checks(config)

    fig, axes = subplots(2, 2, size=(5.4, 3.9))
    ax = axes[0]
    x_plot = lams.copy()
    x_plot[0] = lams[1] / 10  # lam = 0 drawn one decade left of the grid
    ax.loglog(x_plot[1:], test_med[1:], "o-", ms=3, label="test (median of data draws)")
    ax.loglog(x_plot[1:], train_med[1:], "s-", ms=3, label="train")
    ax.loglog([x_plot[0]], [test_med[0]], "o", color=ax.lines[0].get_color(), mfc="none", ms=8, label="test at lambda = 0")
    ax.axvline(lams[best], color="k", ls=":", lw=1, label=f"best lambda {lams[best]:.0e}")
    ax.set(xlabel="lambda (lambda = 0 at far left)", ylabel="RMS error",
           title=f"ridge regression, degree {rc.degree}, {rc.num_train} points")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    d, thetas = rr["example"]
    xs = np.linspace(0, 1, 400)
    phi = polynomial_features(xs, int(rc.degree))
    ax.plot(xs, np.sin(2 * np.pi * xs), "k--", lw=1, label="sin(2 pi x), the truth")
    for i, lab in [(0, "lambda = 0"), (best, f"lambda = {lams[best]:.0e}"), (len(lams) - 1, f"lambda = {lams[-1]:g}")]:
        ax.plot(xs, phi @ thetas[i], label=lab)
    ax.plot(d.x_train[:, 0], d.y_train[:, 0], "ko", mfc="none", label="training data")
    ax.set(xlabel="x", ylabel="y", ylim=(-1.8, 1.8), title="fits to one draw (PRML Fig. 1.7)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[2]
    for label, res in mres.items():
        steps, acc = res.curve("test_accuracy")
        band(ax, steps, 100 * acc, label=label)
    ax.set(xlabel="SGD step", ylabel="test accuracy (%)", title=f"MLP {tuple(mc.hidden)} on {mc.num_train} {mc.data} examples")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[3]
    labels = list(mres)
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, [100 * mres[lab].final("train_full_accuracy").mean() for lab in labels], 0.4, label="train")
    ax.bar(pos + 0.2, [100 * mres[lab].final("test_accuracy").mean() for lab in labels], 0.4, label="test")
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 105), title=f"final accuracy (mean of {len(mc.seeds)} seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    workdir.save_figure(fig, "regularization")

    base_label, wd_label, do_label = labels
    base_acc = 100 * mres[base_label].final("test_accuracy")
    wd_acc = 100 * mres[wd_label].final("test_accuracy")
    do_acc = 100 * mres[do_label].final("test_accuracy")
    wd_gain, do_gain = float((wd_acc - base_acc).mean()), float((do_acc - base_acc).mean())
    overfit = test_med[0] / test_med[best]
    underfit = test_med[-1] / test_med[best]
    interior = 0 < best < len(lams) - 1
    return [
        C.claim(
            "ridge_u_shape",
            f"Ridge regression on a degree-{rc.degree} polynomial basis: the test error against lambda is U-shaped; "
            "lambda = 0 overfits and a large lambda underfits, while the training error only grows with lambda",
            "Lecture 'regularized least squares' (ridge / Tikhonov); Bishop, PRML Sec. 1.1, Fig. 1.8",
            f"best lambda interior; test RMSE(lambda=0) >= {rc.min_overfit_ratio:g}x and "
            f"test RMSE(lambda={lams[-1]:g}) >= {rc.min_underfit_ratio:g}x the best (medians over "
            f"{len(rc.data_seeds)} draws); training RMSE non-decreasing",
            {
                "test_rmse_lambda0": float(test_med[0]),
                "test_rmse_best": float(test_med[best]),
                "best_lambda": float(lams[best]),
                "test_rmse_largest_lambda": float(test_med[-1]),
                "train_rmse_lambda0": float(train_med[0]),
                "overfit_ratio": float(overfit),
                "underfit_ratio": float(underfit),
            },
            interior
            and C.at_least(overfit, float(rc.min_overfit_ratio))
            and C.at_least(underfit, float(rc.min_underfit_ratio))
            and bool(np.all(np.diff(train_med) >= -1e-9)),
        ),
        C.claim(
            "weight_decay_and_dropout_help",
            f"Weight decay ({mc.weight_decay:g}) and dropout ({mc.dropout:g}) each improve the test accuracy of an "
            f"over-parameterized MLP trained on {mc.num_train} {mc.data} examples",
            "Lecture 'regularizing deep nets': weight decay, dropout; Srivastava et al. 2014",
            f"mean paired gain (same initializations) >= {mc.min_gain:g} accuracy points for each",
            {
                "test_accuracy_baseline": float(base_acc.mean()),
                "test_accuracy_weight_decay": float(wd_acc.mean()),
                "test_accuracy_dropout": float(do_acc.mean()),
                "gain_weight_decay": wd_gain,
                "gain_dropout": do_gain,
                "train_accuracy_baseline": 100 * float(mres[base_label].final("train_full_accuracy").mean()),
                "seeds": len(mc.seeds),
            },
            C.at_least(wd_gain, float(mc.min_gain)) and C.at_least(do_gain, float(mc.min_gain)),
        ),
        C.claim(
            "dropout_eval_and_fresh_masks",
            "Dropout is off at evaluation (the output equals the same network without dropout) and draws a "
            "fresh mask at every training step (reproducibly: the same step gives the same mask)",
            "Srivastava et al. 2014 (inverted dropout); known defect: a dropout key fixed once (d2l #2405)",
            "eval difference = 0, same-step difference = 0, outputs changed between steps > 0",
            checks,
            C.at_most(checks["eval_max_abs_diff_vs_no_dropout"], 0.0)
            and C.at_most(checks["same_step_max_abs_diff"], 0.0)
            and C.at_least(checks["train_outputs_changed_between_steps"], 1e-9),
        ),
    ]


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
