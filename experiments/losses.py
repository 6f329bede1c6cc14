"""Loss functions: cross-entropy is the negative log-likelihood; its gradient does not vanish when a wrong output saturates.

The lecture's softmax classifier is trained by maximizing the likelihood of the labels, i.e.
minimizing the cross-entropy -log softmax(z)[y], whose gradient in the logits is p - y. The squared
error of the softmax outputs, sum_c (p_c - y_c)^2, passes through the softmax's derivative, which
goes to zero when an output saturates: a confidently wrong network gets almost no gradient and
learns slowly (Golik, Doetsch & Ney 2013). Measured: the identity and both gradients against the
margin of a wrong output, and an MLP on the digits trained with each loss from an ordinary and from
a saturated start (logits scaled up, so the initial outputs are confident and mostly wrong; the
learning rate divided by the scale squared, so a step moves the logits as far as from the ordinary
start). Label
smoothing is a loss with a parameter (epsilon): it keeps the network from becoming over-confident
(Szegedy et al. 2016, Sec. 7; Mueller, Kornblith & Hinton 2019).

    nnbasics run losses --quick
    nnbasics run losses --config.logit_scale=20 --config.epsilon=0.2
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit
from nnbasics.engine.state import forward
from nnbasics.models import get_model
from nnbasics.nn.losses import CrossEntropy, LabelSmoothing, SoftmaxSquaredError
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import band, subplots

TOPIC = "basics"
ORDER = 22.5  # lecture part 4 (loss), between depth (capacity) and regularization
LECTURE = "Lecture: loss functions (softmax classifier, cross-entropy as the negative log-likelihood)"
GOLIK = "Golik, Doetsch & Ney 2013, 'Cross-entropy vs. squared error training', Interspeech, Sec. 2-4"
SMOOTHING = "Szegedy et al. 2016, Sec. 7 (label smoothing); Mueller, Kornblith & Hinton 2019, Sec. 2-3"
LOSS_NAMES = ("cross_entropy", "squared_error", "label_smoothing")

THRESHOLDS = {
    "nll_identity_error": Threshold("<=", 1e-5, "an exact identity computed in float32: rounding is ~1e-7 relative"),
    "gradient_identity_error": Threshold("<=", 1e-5, "the gradient of cross-entropy in the logits is exactly p - y "
                                         "(float32 rounding)"),
    "saturated_gradient_ratio": Threshold("<=", 0.01, "Golik et al. 2013 Sec. 2: the squared error's gradient carries "
                                          "the factor p(1 - p) of the saturated softmax, cross-entropy's does not; "
                                          "'vanishes' read as two orders of magnitude smaller"),
    "saturated_accuracy_gain": Threshold(">", 0.0, "Golik et al. 2013 Sec. 4: from a random start squared-error "
                                         "training converges more slowly (to a worse result) than cross-entropy; "
                                         "paired per seed, test accuracy points"),
    "smoothing_confidence_drop": Threshold(">", 0.0, "Mueller et al. 2019 Sec. 3 / Szegedy et al. 2016 Sec. 7: label "
                                           "smoothing lowers the confidence of the predictions (paired per seed)"),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = "digits"
    c.hidden = (64,)
    c.seeds = tuple(range(8))
    c.steps = 600
    c.batch_size = 64
    c.eval_every = 50
    c.optimizer = ml_collections.ConfigDict({"name": "momentum", "learning_rate": 0.05, "momentum": 0.9})
    c.logit_scale = 10.0  # the saturated start: the network's logits times this (1 = the ordinary start)
    c.epsilon = 0.1  # label smoothing
    c.wrong_logit = 8.0  # the wrong class's logit above the label's where the gradients are compared
    c.classes = 10
    if preset == "quick":
        c.seeds = tuple(range(5))
        c.steps = 300
    elif preset == "smoke":
        c.seeds = (0, 1, 2)
        c.steps = 40
        c.eval_every = 20
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.logit_scale > 1:
        raise ValueError(f"config.logit_scale must be > 1 (a saturated start), got {config.logit_scale}")
    if not 0 < config.epsilon < 1:
        raise ValueError(f"config.epsilon must be in (0, 1), got {config.epsilon}")
    if config.wrong_logit <= 0 or config.classes < 2:
        raise ValueError("config.wrong_logit must be > 0 and config.classes >= 2")


class ScaledLogits(nn.Module):
    """A classifier whose logits are multiplied by `scale` (a call argument, so the ordinary and the
    saturated start train side by side as members of one program)."""

    inner: nn.Module

    @nn.compact
    def __call__(self, x, train: bool = False, scale=1.0):
        return scale * self.inner(x, train=train)


# ------------------------------------------------------------------------- the identities


def identity_errors(seed: int, classes: int) -> dict[str, float]:
    """Cross-entropy against -log softmax(z)[y] and its gradient against p - y, on random logits."""
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(0, 3, (256, classes)), jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, 256))
    ce = CrossEntropy()
    nll = -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]
    grad = jax.grad(lambda v: ce(v, y) * z.shape[0])(z)
    p_minus_y = jax.nn.softmax(z) - jax.nn.one_hot(y, classes)
    return {"nll": float(jnp.max(jnp.abs(ce.per_example(z, y) - nll)) / jnp.max(jnp.abs(nll))),
            "gradient": float(jnp.max(jnp.abs(grad - p_minus_y)))}


def gradient_norms(margins: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    """The norm of each loss's gradient in the logits for a wrong output: the label's logit 0, one
    wrong class's logit `margin`, the others 0."""
    z = np.zeros((len(margins), classes), np.float32)
    z[:, 1] = margins
    z, y = jnp.asarray(z), jnp.zeros(len(margins), jnp.int32)
    out = {}
    for name, loss in (("cross_entropy", CrossEntropy()), ("squared_error", SoftmaxSquaredError())):
        g = jax.vmap(jax.grad(lambda v, t, f=loss: f(v[None], t[None])))(z, y)
        out[name] = np.asarray(jnp.linalg.norm(g, axis=1), np.float64)
    return out


# ------------------------------------------------------------------------------ training


def confidence_fn(x_test: np.ndarray):
    """Mean over the test set of the largest softmax probability (the prediction's confidence)."""
    x = jnp.asarray(x_test, jnp.float32)

    def f(state):
        out, _ = forward(state, state.params, x, train=False)
        return jnp.mean(jnp.max(jax.nn.softmax(out), axis=-1))

    return f


def train(config, workdir) -> dict:
    """One fit per loss; members: (ordinary start, saturated start) x seeds."""
    data = load_dataset(config.data)
    model = ScaledLogits(get_model("mlp", num_classes=data.num_classes, hidden=tuple(config.hidden)))
    # the saturated start's learning rate / scale^2: the same step in logit space as the ordinary start's
    s, lr = float(config.logit_scale), float(config.optimizer.learning_rate)
    members = [{"model": {"scale": 1.0}, "learning_rate": lr}, {"model": {"scale": s}, "learning_rate": lr / s**2}]
    tc = TrainConfig(steps=int(config.steps), batch_size=int(config.batch_size), eval_every=int(config.eval_every),
                     seeds=tuple(config.seeds), members=members, optimizer=config.optimizer.to_dict())
    losses = {"cross_entropy": CrossEntropy(), "squared_error": SoftmaxSquaredError(),
              "label_smoothing": LabelSmoothing(float(config.epsilon))}
    n = len(config.seeds)
    out = {}
    for name, loss in losses.items():
        res = fit(model, data, tc, loss=loss, workdir=workdir, tag=name,
                  eval_fns={"test_confidence": confidence_fn(data.x_test)})
        steps, acc = res.curve("test_accuracy")
        _, conf = res.curve("test_confidence")
        out[name] = {"steps": steps, "ordinary": 100 * acc[:n], "saturated": 100 * acc[n:],
                     "confidence_ordinary": conf[:n], "confidence_saturated": conf[n:]}
    return out


def _figure(config, workdir, margins, norms, runs) -> None:
    fig, axes = subplots(1, 3, size=(4.4, 3.6))
    ax = axes[0]
    for name, label in (("cross_entropy", "cross-entropy: p - y"), ("squared_error", "squared error of softmax")):
        ax.plot(margins, norms[name], label=label)
    ax.set(yscale="log", xlabel="margin of the wrong class (logits)", ylabel="|gradient| in the logits",
           title="A confidently wrong output")
    ax.axvline(float(config.wrong_logit), color="k", ls=":", lw=1)
    ax.legend(fontsize=8)
    for ax, start in zip(axes[1:], ("ordinary", "saturated")):
        for name in LOSS_NAMES:
            band(ax, runs[name]["steps"], runs[name][start], label=name.replace("_", " "))
        scale = 1 if start == "ordinary" else config.logit_scale
        ax.set(xlabel="step", ylabel="test accuracy (%)", title=f"{start} start (logits x {scale:g})", ylim=(0, 100))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    workdir.save_figure(fig, "losses")


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    err = identity_errors(int(config.seeds[0]), int(config.classes))
    margins = np.linspace(0.0, 12.0, 49)
    norms = gradient_norms(np.append(margins, float(config.wrong_logit)), int(config.classes))
    ratio = float(norms["squared_error"][-1] / norms["cross_entropy"][-1])
    runs = train(config, workdir)
    _figure(config, workdir, margins, {k: v[:-1] for k, v in norms.items()}, runs)
    ce, se, ls = runs["cross_entropy"], runs["squared_error"], runs["label_smoothing"]
    gain = ce["saturated"][:, -1] - se["saturated"][:, -1]
    drop = ce["confidence_ordinary"][:, -1] - ls["confidence_ordinary"][:, -1]
    n = len(config.seeds)
    return [
        claim("cross_entropy_is_nll",
              "Cross-entropy of the softmax classifier is the negative log-likelihood of the label, -log p(y | x), "
              "and its gradient in the logits is p - y",
              LECTURE, "relative difference from -log softmax(z)[y] {nll_identity_error}; max |gradient - (p - y)| "
              "{gradient_identity_error} (256 random logit vectors)",
              {"nll_relative_error": err["nll"], "gradient_max_error": err["gradient"]},
              checks=[check("nll_identity_error", err["nll"], THRESHOLDS["nll_identity_error"], random=False),
                      check("gradient_identity_error", err["gradient"], THRESHOLDS["gradient_identity_error"],
                            random=False)]),
        claim("squared_error_gradient_vanishes",
              f"When a wrong class wins by a margin of {config.wrong_logit:g} logits, the squared error of the softmax "
              "outputs has almost no gradient, while cross-entropy's stays of order one",
              GOLIK, f"|gradient| squared error / cross-entropy at margin {config.wrong_logit:g} "
              "{saturated_gradient_ratio} (exact, no randomness)",
              {"gradient_norm_cross_entropy": norms["cross_entropy"][-1],
               "gradient_norm_squared_error": norms["squared_error"][-1], "ratio": ratio},
              checks=[check("saturated_gradient_ratio", ratio, THRESHOLDS["saturated_gradient_ratio"], random=False)]),
        claim("cross_entropy_learns_from_a_saturated_start",
              f"From a saturated start (logits x {config.logit_scale:g}: confident, mostly wrong outputs) an MLP on "
              f"the digits learns faster with cross-entropy than with the squared error of its softmax outputs "
              f"({config.steps} steps; from the ordinary start both learn, see the figure)",
              GOLIK, "test accuracy cross-entropy - squared error after training " "{saturated_accuracy_gain} "
              f"points, paired per seed (95% interval over {n} seeds)",
              {"accuracy_cross_entropy_saturated": ce["saturated"][:, -1],
               "accuracy_squared_error_saturated": se["saturated"][:, -1],
               "accuracy_cross_entropy_ordinary": ce["ordinary"][:, -1],
               "accuracy_squared_error_ordinary": se["ordinary"][:, -1], "gain": gain},
              checks=[check("saturated_accuracy_gain", gain, THRESHOLDS["saturated_accuracy_gain"],
                            statistic="accuracy CE - SE (points)")]),
        claim("label_smoothing_lowers_confidence",
              f"Label smoothing (a loss with a parameter, epsilon {config.epsilon:g}) keeps the network from "
              "becoming over-confident: its predictions' mean top probability on the test set is lower than with "
              "plain cross-entropy",
              SMOOTHING, "mean top softmax probability, cross-entropy - label smoothing "
              "{smoothing_confidence_drop}, " f"paired per seed (95% interval over {n} seeds; ordinary start)",
              {"confidence_cross_entropy": ce["confidence_ordinary"][:, -1],
               "confidence_label_smoothing": ls["confidence_ordinary"][:, -1],
               "accuracy_label_smoothing": ls["ordinary"][:, -1], "drop": drop},
              checks=[check("smoothing_confidence_drop", drop, THRESHOLDS["smoothing_confidence_drop"],
                            statistic="confidence CE - LS")]),
    ]
