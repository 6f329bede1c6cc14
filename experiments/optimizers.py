"""Optimizers compared: GD, SGD by batch size, momentum, Nesterov, RMSProp, Adam; 0th/1st/2nd order.

(a) Paths of every optimizer on three 2-D test functions (Rosenbrock's narrow valley, Beale's
function, a saddle between two minima), each at its best learning rate from a grid, drawn on the
contours; (b) the MNIST-1D MLP trained from one initialization with SGD at batch sizes 1 / 32 /
full (4000: gradient descent) and with every optimizer, all curves in one figure; (c) the variance
of the minibatch gradient against the batch size (log-log slope, expected -1); (d) random search
(values only), gradient descent (gradients) and Newton (Hessian) on one quadratic. The optimizers
are `nnbasics.engine.optim.make_optimizer` by name (optax); every learning-rate grid is vmapped.
The MLP trains through the engine's `fit`, one call per optimizer and batch size, every (rate, seed)
a member; its metrics rows go to the run's metrics.jsonl (runs `sgd_batch32`, ..., `sgd_full_batch`).

    nnbasics run optimizers --quick
    nnbasics run optimizers --config.optimizers.momentum.momentum=0.95 --config.epochs=10
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nnbasics.analysis import momentum_theory as M
from nnbasics.analysis import test_functions as T
from nnbasics.analysis import zeroth_second_order as Z
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit, optim
from nnbasics.engine.optim import make_optimizer
from nnbasics.models import get_model
from nnbasics.runs import claims as C
from nnbasics.runs.plotting import band, subplots

TOPIC = "optimization"
ORDER = 30
LECTURE = "lecture slides 'Gradient descent', 'Stochastic gradient descent (SGD)', 'Momentum', 'Optimization'"
RUDER = "Ruder 2016, An overview of gradient descent optimization algorithms (lecture: comparison of variants)"
NAMES = ("sgd", "momentum", "nesterov", "rmsprop", "adam")
# Definitions that are part of the claims (not tuning knobs): "converged" and "escaped".
FN_TOLERANCE = 1e-3  # 2-D test functions: converged once f - f_min stays below this
SADDLE_ESCAPE = 0.05  # the saddle: escaped once f is within this of the minimum -1/4
ORDER_TOLERANCE = 1e-8  # quadratic: converged once f - f* <= this x (f(w0) - f*)
_MB = "the MNIST-1D MLP; per-seed (init and batch order) log-ratio, paired over seeds"
THRESHOLDS = {
    # (a) deterministic 2-D problems: fixed starts, no randomness
    "steps_ratio_vs_gd": C.Threshold("<", 1.0, "lecture/Ruder: momentum converges in fewer steps than GD (ratio < 1)"),
    "escape_ratio_gd": C.Threshold(">=", 2.0, "GD's escape time grows as log(1/y0): offsets 1e-2 -> 1e-6 give "
                                   "log ratio 3 less the common descent time; 2 = clearly growing"),
    "escape_ratio_adaptive": C.Threshold("<=", 1.2, "RMSProp/Adam rescale each coordinate: escape time independent of "
                                         "y0 (ratio 1), 20% for the first steps' running averages"),
    "escape_steps_vs_gd": C.Threshold("<", 1.0, "Ruder 2016: adaptive methods leave the saddle sooner (ratio < 1)"),
    # (b), (c) the MNIST-1D MLP: random (init, batch order), one value per seed
    "full_over_minibatch_log_loss": C.Threshold(">", 0.0, f"lecture: SGD is faster per epoch; {_MB}"),
    "sgd_over_momentum_log_loss": C.Threshold(">", 0.0, f"lecture: momentum makes faster progress; {_MB}"),
    "variance_slope_min": C.Threshold(">=", -1.1, "Var(g_B) = Var(g_1) / B (sampling without replacement: x (N-B)/"
                                      "(N-1), slope -0.99 over B = 1..256): slope -1 +- 0.1"),
    "variance_slope_max": C.Threshold("<=", -0.9, "as variance_slope_min"),
    # (d) quadratic: GD and Newton deterministic, random search random (one value per search seed)
    "newton_iterations": C.Threshold("<=", 1, "Newton's step is exact on a quadratic: one iteration"),
    "gd_over_newton_iterations": C.Threshold(">", 1.0, "lecture: first order needs more iterations than second order"),
    "search_over_gd_log_iterations": C.Threshold(">", 0.0, "lecture: values only (random search) need more iterations "
                                                 "than gradients; log-ratio per search seed"),
}

SWEEPS = {
    "momentum": [{"optimizers.momentum.momentum": b, "optimizers.nesterov.momentum": b} for b in (0.5, 0.9, 0.99)],
    "epochs": [{"epochs": e} for e in (2, 5, 20)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1, 2, 3, 4)  # MNIST-1D MLP: init and batch order; every seed trains side by side
    # Every optimizer is make_optimizer(spec with learning_rate=lr); the rates come from grids.
    c.optimizers = ml_collections.ConfigDict({
        "sgd": {"name": "sgd"},
        "momentum": {"name": "momentum", "momentum": 0.9},
        "nesterov": {"name": "nesterov", "momentum": 0.9},
        "rmsprop": {"name": "rmsprop", "decay": 0.9},
        "adam": {"name": "adam", "b1": 0.9, "b2": 0.999},
    })
    # (a) 2-D test functions.
    c.functions = ("valley", "beale", "saddle")
    c.fn_steps = 2000
    c.fn_lr_min, c.fn_lr_max, c.fn_lr_count = 1e-4, 1.0, 17
    c.saddle_offsets = (1e-2, 1e-4, 1e-6)  # start (1, offset): distance from the saddle's ridge
    c.saddle_learning_rate = 0.1
    # (b) MNIST-1D MLP.
    c.data = "mnist1d"
    c.model = "mnist1d_mlp"
    c.epochs = 10  # the batch-size comparison is at an equal number of epochs
    c.small_batch = 32
    c.evals_per_epoch = 5
    c.gd_steps = 60  # full-batch steps (= epochs) run for the figure; the first `epochs` are compared
    c.lr_grid_bs1 = (1e-3, 3e-3, 1e-2, 3e-2)
    c.lr_grid_full = (0.3, 1.0, 3.0)
    c.learning_rates = ml_collections.ConfigDict({  # at batch small_batch
        "sgd": (0.01, 0.03, 0.1, 0.3, 1.0),
        "momentum": (0.003, 0.01, 0.03, 0.1, 0.3),
        "nesterov": (0.003, 0.01, 0.03, 0.1, 0.3),
        "rmsprop": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
        "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    })
    c.same_learning_rate = 0.01  # momentum against plain SGD at one shared rate
    # (c) gradient variance.
    c.variance_batch_sizes = (1, 4, 16, 64, 256)
    c.variance_batches = 100
    # (d) zeroth / first / second order on a quadratic.
    c.order_dim = 10
    c.order_kappa = 10.0
    c.order_steps = 20000  # random-search budget
    c.quadratic_seed = 0  # rotation of the quadratic and start point
    c.search_seeds = (0, 1, 2, 3, 4)  # random-search noise
    if preset == "quick":
        c.seeds = (0, 1, 2, 3)  # the seed-count rule over offsets 0 and 700: the gradient-variance slope asks for 4
        c.epochs = 5
        c.gd_steps = 40
        c.variance_batches = 64
    elif preset == "smoke":
        c.functions = ("valley", "saddle")
        c.fn_steps = 60
        c.fn_lr_count = 5
        c.epochs = 1
        c.gd_steps = 2
        c.lr_grid_bs1 = (1e-2,)
        c.lr_grid_full = (1.0,)
        c.learning_rates = ml_collections.ConfigDict({k: (1e-2,) for k in NAMES})
        c.variance_batch_sizes = (1, 4, 16)
        c.variance_batches = 8
        c.order_steps = 500
        c.seeds = (0, 1)
        c.search_seeds = (0, 1)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    for name in NAMES:
        if name not in config.optimizers:
            raise ValueError(f"config.optimizers must define {', '.join(NAMES)}; missing {name!r}")
        if name not in config.learning_rates or not len(config.learning_rates[name]):
            raise ValueError(f"config.learning_rates.{name} must be a non-empty list of learning rates")
    for name, spec in config.optimizers.items():
        spec = spec.to_dict()
        if "learning_rate" in spec:
            raise ValueError(f"config.optimizers.{name}: learning rates come from the grids, not from the spec")
        try:
            optim.validate({**spec, "learning_rate": 1.0})
        except (ValueError, KeyError) as e:
            raise ValueError(f"config.optimizers.{name}: {e}") from e
    grids = [config.lr_grid_bs1, config.lr_grid_full, *config.learning_rates.values()]
    if any(not float(lr) > 0 for g in grids for lr in g):
        raise ValueError("every learning rate must be > 0")
    if not 0 < float(config.fn_lr_min) < float(config.fn_lr_max) or int(config.fn_lr_count) < 1:
        raise ValueError("need 0 < config.fn_lr_min < config.fn_lr_max and config.fn_lr_count >= 1")
    for f in config.functions:
        T.TEST_FUNCTIONS.check(f)
    if "saddle" not in config.functions:
        raise ValueError("config.functions must include 'saddle' (the escape claim)")
    for bs in (1, int(config.small_batch)):
        per_epoch = 4000 // bs
        if per_epoch % int(config.evals_per_epoch):
            raise ValueError(f"config.evals_per_epoch={config.evals_per_epoch} must divide the {per_epoch} steps per "
                             f"epoch at batch size {bs}")
    if int(config.gd_steps) < int(config.epochs):
        raise ValueError(f"config.gd_steps ({config.gd_steps}) must be >= config.epochs ({config.epochs})")
    same = float(config.same_learning_rate)
    for name in ("sgd", "momentum", "nesterov"):
        if not any(math.isclose(same, float(v)) for v in config.learning_rates[name]):
            raise ValueError(f"config.same_learning_rate={same:g} must be in config.learning_rates.{name}")
    if len(config.variance_batch_sizes) < 2 or max(config.variance_batch_sizes) > 4000:
        raise ValueError("config.variance_batch_sizes needs >= 2 sizes, each <= 4000")


# ------------------------------------------------------------------------------- (a) 2-D paths


def _unit_optimizers(config) -> dict[str, optax.GradientTransformation]:
    """The optimizers at learning rate 1 for the 2-D paths (`T.optimizer_paths` scales the updates by
    each rate of its vmapped grid; exact for these optimizers, tested)."""
    return {k: make_optimizer({**config.optimizers[k].to_dict(), "learning_rate": 1.0}) for k in NAMES}


def _test_functions(config) -> dict:
    lrs = np.geomspace(float(config.fn_lr_min), float(config.fn_lr_max), int(config.fn_lr_count))
    txs = _unit_optimizers(config)
    out = {}
    tol = FN_TOLERANCE
    for fname in config.functions:
        if fname == "saddle":
            continue
        tf = T.get_test_function(fname)
        runs = T.optimizer_paths(tf.fn, txs, tf.start, lrs, int(config.fn_steps))
        res = {}
        for k, (paths, values) in runs.items():
            b = T.best_member(values, tf.f_min, tol)
            res[k] = {"lr": float(lrs[b]), "path": paths[b], "values": values[b],
                          "steps": T.steps_to_converge(values[b], tf.f_min, tol),
                          "gap": float(values[b, -1] - tf.f_min)}
        out[fname] = res
    # The saddle: one shared learning rate, several distances from the ridge.
    tf = T.get_test_function("saddle")
    offsets = np.asarray(config.saddle_offsets, np.float64)
    starts = np.stack([np.full_like(offsets, tf.start[0]), offsets], -1)
    lr = np.full(len(offsets), float(config.saddle_learning_rate))
    runs = T.optimizer_paths(tf.fn, txs, starts, lr, int(config.fn_steps))
    out["saddle"] = {
        k: {"lr": float(lr[0]), "paths": paths, "values": values,
                "escape": [T.steps_to_tolerance(v, tf.f_min, SADDLE_ESCAPE) for v in values]}
        for k, (paths, values) in runs.items()
    }
    return out


# --------------------------------------------------------------------------- (b) MNIST-1D MLP


def _grid(model, data, workdir, tag: str, spec: dict, lrs, batch_size: int, steps: int, evals: int,
          seeds: list[int]) -> dict:
    """Train one optimizer at one batch size through the engine's `fit`, every (learning rate, seed)
    a vmapped member: batches without replacement per epoch and seed, the same for every rate; the
    full training-set loss at step 0 and at `evals` points, the test accuracy at the end. A rate
    that diverges keeps training (NaN) and is never a seed's best. -> `_best_per_seed`'s dict."""
    lrs = [float(v) for v in lrs]
    tc = TrainConfig(steps=steps, batch_size=batch_size, eval_every=steps // evals, seeds=tuple(seeds),
                     learning_rates=tuple(lrs), optimizer=dict(spec), eval_train=True, eval_at_start=True,
                     stop_on_nan=False)
    res = fit(model, data, tc, workdir=workdir, tag=tag)
    order = [(m["learning_rate"], m["seed"]) for m in res.members]
    if order != [(lr, s) for lr in lrs for s in seeds]:  # the reshape below needs rates outermost, then seeds
        raise RuntimeError(f"{tag}: fit returned its members in an unexpected order: {order}")
    points, losses = res.curve("train_full_loss")
    losses = losses.reshape(len(lrs), len(seeds), -1).transpose(1, 0, 2)  # -> (seeds, rates, points)
    acc = res.final("test_accuracy").reshape(len(lrs), len(seeds)).T
    return _best_per_seed(losses, acc, lrs, points)


def _best_per_seed(losses, acc, lrs, points, at: int = -1) -> dict:
    """losses (seeds, rates, points), acc (seeds, rates): each seed's best rate by the loss at point `at`."""
    losses, acc = np.asarray(losses, np.float64), np.asarray(acc, np.float64)
    final = np.where(np.isfinite(losses[:, :, at]), losses[:, :, at], np.inf)
    b = np.argmin(final, axis=1)
    s = np.arange(len(b))
    lrs = [float(v) for v in lrs]
    return {"points": points, "losses": losses, "acc": acc, "best": b, "lrs": lrs,
            "best_lr": np.asarray(lrs)[b], "best_loss": losses[s, b, at], "best_acc": acc[s, b],
            "best_curve": losses[s, b]}


def _gradient_variance(model, params, data, sizes, k: int, seeds: list[int]) -> np.ndarray:
    """E ||g_B - g||^2 over k minibatches per size B (drawn without replacement), with g the
    full-batch gradient, per seed (params stacked over seeds, batches drawn with each seed): one
    compiled program, batches padded to the largest size with zero weight. -> (seeds, sizes)"""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n, bmax = len(x), max(sizes)
    idx = np.stack([np.stack([np.stack([rng.permutation(n)[:bmax] for _ in range(k)]) for _ in sizes])
                    for rng in (np.random.default_rng([1, s]) for s in seeds)]).astype(np.int32)
    weights = np.stack([(np.arange(bmax) < b) / b for b in sizes]).astype(np.float32)

    def weighted_loss(p, xb, yb, w):
        per = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb)
        return jnp.sum(per * w)

    def flat(tree):
        return jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])

    def one_seed(params, idx, weights, x, y):
        full = flat(jax.grad(weighted_loss)(params, x, y, jnp.full((n,), 1.0 / n)))

        def per_size(args):
            ix, w = args
            sq = jax.lax.map(lambda i: jnp.sum((flat(jax.grad(weighted_loss)(params, x[i], y[i], w)) - full) ** 2), ix)
            return jnp.mean(sq)

        return jax.lax.map(per_size, (idx, weights))

    @jax.jit
    def go(params, idx, weights, x, y):
        return jax.lax.map(lambda a: one_seed(a[0], a[1], weights, x, y), (params, idx))

    return np.asarray(go(params, jnp.asarray(idx), jnp.asarray(weights), x, y), np.float64)


def _init_params(model, data, seeds: list[int]):
    """One initialization per seed, stacked, for the gradient-variance measurement (an 'rbg' key:
    XLA compiles it much faster than threefry). The training runs are initialized by `fit` from the
    same seeds (its own key derivation, so other draws): the measurement only needs a network at init."""
    keys = jnp.stack([jax.random.key_data(jax.random.key(s, impl="rbg")) for s in seeds])
    return jax.jit(jax.vmap(lambda k: model.init(jax.random.wrap_key_data(k, impl="rbg"),
                                                 jnp.zeros((1, *data.input_shape)))["params"]))(keys)


def _mnist1d(config, workdir) -> dict:
    data = load_dataset(config.data)  # the published MNIST-1D set (its own fixed generation seed)
    model = get_model(config.model, num_classes=data.num_classes)
    seeds = [int(s) for s in config.seeds]
    n, e, ev = len(data.x_train), int(config.epochs), int(config.evals_per_epoch)
    sb, sgd = int(config.small_batch), config.optimizers.sgd.to_dict()

    def grid(tag, spec, lrs, batch_size, steps, evals):
        return _grid(model, data, workdir, tag, spec, lrs, batch_size, steps, evals, seeds)

    # Every member of every fit starts from its seed's initialization (the engine's, the same in every call).
    opts = {k: grid(f"{k}_batch{sb}", config.optimizers[k].to_dict(), config.learning_rates[k], sb, e * (n // sb), e * ev)
            for k in NAMES}
    one = grid("sgd_batch1", sgd, config.lr_grid_bs1, 1, e * n, e * ev)
    full = grid("sgd_full_batch", sgd, config.lr_grid_full, n, int(config.gd_steps), int(config.gd_steps))
    # full batch: each seed's rate that is best after `epochs` epochs
    full = _best_per_seed(full["losses"], full["acc"], full["lrs"], full["points"], at=e)
    batch = {"1": one, str(sb): opts["sgd"], "full": full}
    sizes = [int(b) for b in config.variance_batch_sizes]
    var = _gradient_variance(model, _init_params(model, data, seeds), data, sizes, int(config.variance_batches), seeds)
    fits = [np.polyfit(np.log(sizes), np.log(v), 1) for v in var]
    return {"batch": batch, "opts": opts, "sizes": sizes, "var": var, "slopes": np.array([f[0] for f in fits]),
            "intercepts": np.array([f[1] for f in fits])}


# ------------------------------------------------------------------------ (d) 0th/1st/2nd order


def _orders(config) -> dict:
    qs = int(config.quadratic_seed)
    quad = M.make_quadratic(float(config.order_kappa), int(config.order_dim), seed=qs)
    w0 = M.start_point(quad, seed=qs + 1)
    steps = int(config.order_steps)
    noise = np.stack([np.random.default_rng([qs, int(s)]).standard_normal((steps, len(w0)))
                      for s in config.search_seeds])
    alpha, _ = M.gd_optimal(quad.lmin, quad.lmax)
    with M.float64():
        A = jnp.asarray(quad.A, jnp.float64)
        def f(w):
            return 0.5 * w @ (A @ w)

        w0j = jnp.asarray(w0, jnp.float64)
        rs = jax.jit(jax.vmap(lambda z: Z.random_search(f, w0j, z, sigma0=0.1)))(jnp.asarray(noise))
        gd = jax.jit(lambda w: Z.gradient_descent(f, w, alpha, min(steps, 5000)))(w0j)
        nt = jax.jit(lambda w: Z.newton(f, w, 5))(w0j)
        rs, gd, nt = (np.asarray(a, np.float64) for a in (rs, gd, nt))
    tol = ORDER_TOLERANCE
    return {
        "rs": rs, "gd": gd, "newton": nt, "alpha": alpha,
        "it_rs": [Z.iterations_to_tolerance(v, 0.0, tol) for v in rs],
        "it_gd": Z.iterations_to_tolerance(gd, 0.0, tol),
        "it_newton": Z.iterations_to_tolerance(nt, 0.0, tol),
    }


# -------------------------------------------------------------------------------------- run


def _finite(v: float, cap: float) -> float:
    return float(v) if math.isfinite(v) else float(cap)


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    fns = _test_functions(config)
    mn = _mnist1d(config, workdir)
    orders = _orders(config)
    _figures(config, workdir, fns, mn, orders)
    return [*_test_function_claims(config, fns), *_mnist1d_claims(config, mn), _order_claim(config, orders)]


def _test_function_claims(config, fns) -> list[dict]:
    budget = int(config.fn_steps)
    measured, checks = {}, []
    for fname, res in fns.items():
        if fname == "saddle":
            continue
        steps = {k: _finite(res[k]["steps"], budget + 1) for k in NAMES}
        measured.update({f"{fname}_steps_{k}": v for k, v in steps.items()})
        for k in ("sgd", "momentum"):
            measured[f"{fname}_gap_{k}"] = res[k]["gap"]
        checks += [C.check("steps_ratio_vs_gd", steps[k] / steps["sgd"], THRESHOLDS["steps_ratio_vs_gd"], random=False,
                           statistic=f"{fname}_steps_{k}/gd") for k in ("momentum", "nesterov")]
    moment = C.claim(
        "momentum_faster_on_test_functions",
        "Momentum builds up speed: on the narrow valley (and Beale's function) momentum and Nesterov, each at its best "
        "learning rate, converge in fewer steps than gradient descent at its best learning rate",
        f"{LECTURE}; {RUDER}",
        f"steps until f - f* stays <= {FN_TOLERANCE:g}: momentum and Nesterov < GD "
        f"({budget + 1} = not within {budget} steps; deterministic: fixed starts, no randomness)",
        measured, checks=checks,
    )
    sad = fns["saddle"]
    offs = list(config.saddle_offsets)
    esc = {k: [_finite(v, budget + 1) for v in sad[k]["escape"]] for k in NAMES}
    ratio = {k: esc[k][-1] / max(esc[k][0], 1.0) for k in NAMES}
    measured = {f"escape_steps_{k}": esc[k] for k in NAMES}
    measured.update({f"ratio_{k}": ratio[k] for k in ("sgd", "rmsprop", "adam")})
    checks = [C.check("escape_ratio_gd", ratio["sgd"], THRESHOLDS["escape_ratio_gd"], random=False, statistic="ratio_gd")]
    checks += [C.check("escape_ratio_adaptive", ratio[k], THRESHOLDS["escape_ratio_adaptive"], random=False,
                       statistic=f"ratio_{k}") for k in ("rmsprop", "adam")]
    checks += [C.check("escape_steps_vs_gd", esc[k][-1] / esc["sgd"][-1], THRESHOLDS["escape_steps_vs_gd"],
                       random=False, statistic=f"escape_steps_{k}/gd") for k in ("rmsprop", "adam")]
    saddle = C.claim(
        "adaptive_escape_saddle",
        "Near a saddle the gradient is tiny: gradient descent's escape time grows with log(1/distance from the ridge), "
        "while RMSProp and Adam rescale each coordinate's step and escape in the same number of steps from any start",
        RUDER,
        f"at learning rate {config.saddle_learning_rate:g}, starts at offsets {', '.join(f'{o:g}' for o in offs)}: "
        "escape-time ratio (smallest / largest offset) {escape_ratio_gd} for GD, {escape_ratio_adaptive} for RMSProp "
        "and Adam, and both escape from the smallest offset sooner than GD (steps / GD's {escape_steps_vs_gd}; "
        "deterministic: fixed starts)",
        measured, checks=checks, passed=math.isfinite(sad["sgd"]["escape"][-1]),
    )
    return [moment, saddle]


def _mnist1d_claims(config, mn) -> list[dict]:
    e, sb = int(config.epochs), str(int(config.small_batch))
    full = mn["batch"]["full"]
    l1, ls, lf = mn["batch"]["1"]["best_loss"], mn["batch"][sb]["best_loss"], full["best_loss"]
    n = len(lf)
    batch = C.claim(
        "sgd_faster_per_epoch",
        "SGD is faster: in the same number of passes over the data, minibatch SGD (batch 1 and 32) reaches a lower "
        "training loss than full-batch gradient descent (batch 4000), each at its best learning rate",
        LECTURE,
        f"after {e} epochs, per seed ({n} seeds: init and batch order): log(full-batch loss / minibatch loss) "
        "{full_over_minibatch_log_loss} for batch 1 and for batch " + sb,
        {"loss_batch1": l1, f"loss_batch{sb}": ls, "loss_full_batch": lf,
         "lr_batch1": mn["batch"]["1"]["best_lr"], f"lr_batch{sb}": mn["batch"][sb]["best_lr"],
         "lr_full_batch": full["best_lr"], "epochs": e,
         f"loss_full_batch_{config.gd_steps}_epochs": full["best_curve"][:, -1]},
        checks=[C.check("full_over_minibatch_log_loss", np.log(lf / lb), THRESHOLDS["full_over_minibatch_log_loss"],
                        statistic=f"log(loss_full / loss_batch{b})") for b, lb in (("1", l1), (sb, ls))],
    )
    same = float(config.same_learning_rate)

    def at_same(k):
        r = mn["opts"][k]
        return r["losses"][:, [math.isclose(v, same) for v in r["lrs"]].index(True), -1]

    l_sgd, l_m, l_n = at_same("sgd"), at_same("momentum"), at_same("nesterov")
    measured = {"loss_sgd": l_sgd, "loss_momentum": l_m, "loss_nesterov": l_n, "learning_rate": same}
    measured.update({f"best_loss_{k}": mn["opts"][k]["best_loss"] for k in NAMES})
    measured.update({f"best_test_accuracy_{k}": 100 * mn["opts"][k]["best_acc"] for k in NAMES})
    momentum = C.claim(
        "momentum_faster_same_lr",
        "Like a ball rolling downhill, momentum makes faster progress: on the MNIST-1D MLP, momentum and Nesterov "
        "reach a lower training loss than plain SGD at the same learning rate and number of steps",
        LECTURE,
        f"full-train loss after {e} epochs at batch {sb}, learning rate {same:g}, per seed ({n} seeds): "
        "log(SGD loss / momentum loss) {sgd_over_momentum_log_loss}, the same for Nesterov (best-rate losses and test "
        "accuracies of all five "
        "optimizers reported)",
        measured,
        checks=[C.check("sgd_over_momentum_log_loss", np.log(l_sgd / lk), THRESHOLDS["sgd_over_momentum_log_loss"],
                        statistic=f"log(loss_sgd / loss_{k})") for k, lk in (("momentum", l_m), ("nesterov", l_n))],
    )
    variance = C.claim(
        "gradient_variance_slope",
        "The minibatch gradient is noisy: its variance around the full gradient falls as 1 / batch size",
        LECTURE,
        f"log-log slope of E||g_B - g||^2 against B, per seed ({n} seeds: init and batches), "
        "{variance_slope_min} and {variance_slope_max}",
        {"slope": mn["slopes"], "variance": list(mn["var"].mean(axis=0)), "batch_sizes": list(mn["sizes"])},
        checks=[C.check("variance_slope_min", mn["slopes"], THRESHOLDS["variance_slope_min"], statistic="slope"),
                C.check("variance_slope_max", mn["slopes"], THRESHOLDS["variance_slope_max"], statistic="slope")],
    )
    return [batch, momentum, variance]


def _order_claim(config, orders) -> dict:
    cap = int(config.order_steps) + 1
    it_rs = np.array([_finite(v, cap) for v in orders["it_rs"]])
    it_gd = _finite(orders["it_gd"], cap)
    it_nt = _finite(orders["it_newton"], 99)
    return C.claim(
        "order_of_information",
        "The more one knows about J (values; + gradient; + Hessian), the fewer iterations: random search needs more "
        "than gradient descent, which needs more than Newton (one step on a quadratic)",
        LECTURE,
        f"iterations until f - f* <= {ORDER_TOLERANCE:g} (f(w0) - f*) on a {config.order_dim}-D quadratic, "
        f"kappa {config.order_kappa:g}: " "Newton's iterations {newton_iterations}, gradient descent's / Newton's "
        "{gd_over_newton_iterations} (both deterministic), log(random search's / gradient descent's) "
        "{search_over_gd_log_iterations} " f"(per search seed, {len(it_rs)} seeds; {cap} = not within the budget)",
        {"iterations_random_search": it_rs, "iterations_gradient_descent": it_gd, "iterations_newton": it_nt},
        checks=[C.check("newton_iterations", it_nt, THRESHOLDS["newton_iterations"], random=False,
                        statistic="iterations_newton"),
                C.check("gd_over_newton_iterations", it_gd / it_nt, THRESHOLDS["gd_over_newton_iterations"],
                        random=False, statistic="iterations_gd / iterations_newton"),
                C.check("search_over_gd_log_iterations", np.log(it_rs / it_gd),
                        THRESHOLDS["search_over_gd_log_iterations"], statistic="log(iterations_rs / iterations_gd)")],
    )


# ----------------------------------------------------------------------------------- figures


def _figures(config, workdir, fns, mn, orders) -> None:
    colors = {k: f"C{i}" for i, k in enumerate(NAMES)}
    label = {"sgd": "GD", "momentum": "momentum", "nesterov": "Nesterov", "rmsprop": "RMSProp", "adam": "Adam"}
    panels = [f for f in config.functions if f != "saddle"] + ["saddle"]
    fig, axes = subplots(1, len(panels) + 1, size=(4.4, 4), layout="constrained")
    for ax, fname in zip(axes, panels):
        tf = T.get_test_function(fname)
        gx, gy, z = tf.grid(160)
        levels = tf.f_min + np.geomspace(1e-2, max(z.max() - tf.f_min, 1.0), 16)
        if fname == "saddle":
            levels = np.linspace(z.min(), z.max(), 20)
        ax.contour(gx, gy, z, levels=levels, colors="0.7", linewidths=0.6)
        for k in NAMES:
            r = fns[fname][k]
            path = r["path"] if fname != "saddle" else r["paths"][len(r["paths"]) // 2]
            ax.plot(path[:, 0], path[:, 1], "-", color=colors[k], lw=1.2, label=f"{label[k]} (lr {r['lr']:.2g})")
        for m in tf.minima:
            ax.plot(*m, "k*", ms=10)
        ax.plot(*(path[0] if fname == "saddle" else tf.start), "ko", ms=5)
        ax.set(xlim=tf.xlim, ylim=tf.ylim, xlabel="x", ylabel="y", title=f"{fname}: {tf.description}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="lower right" if fname != "beale" else "upper right")
    ax = axes[-1]
    offs = np.asarray(config.saddle_offsets)
    for k in NAMES:
        ax.loglog(offs, [_finite(v, np.nan) for v in fns["saddle"][k]["escape"]], "o-", color=colors[k], label=label[k])
    ax.invert_xaxis()
    ax.set(xlabel="start distance from the saddle's ridge (y0)", ylabel="steps to escape",
           title=f"Escaping the saddle (lr {config.saddle_learning_rate:g})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    workdir.save_figure(fig, "test_function_paths")

    # Loss curves on the test functions.
    named = [f for f in config.functions if f != "saddle"]
    fig, axes = subplots(1, len(named), size=(4.6, 3.6), layout="constrained")
    for ax, fname in zip(axes, named):
        tf = T.get_test_function(fname)
        for k in NAMES:
            v = np.maximum(fns[fname][k]["values"] - tf.f_min, 1e-16)
            ax.semilogy(v, color=colors[k], label=f"{label[k]} (lr {fns[fname][k]['lr']:.2g})")
        ax.axhline(FN_TOLERANCE, color="k", ls=":", lw=1, label="tolerance")
        ax.set(xlabel="step", ylabel="f - f*", title=f"{fname}: best learning rate each")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    workdir.save_figure(fig, "test_function_losses")

    _mnist1d_figure(config, workdir, mn, colors, label)

    # Zeroth / first / second order.
    fig, (ax,) = subplots(size=(6, 4), layout="constrained")
    gap0 = orders["gd"][0]
    floor = 1e-20
    band(ax, np.arange(orders["rs"].shape[1]), np.maximum(orders["rs"] / gap0, floor),
         label=f"random search, values only (mean, min-max of {len(orders['rs'])} seeds; median "
               f"{np.median(orders['it_rs']):.0f} it.)", color="C3")
    ax.plot(np.arange(len(orders["gd"])), np.maximum(orders["gd"] / gap0, floor), color="C0",
            label=f"gradient descent, step {orders['alpha']:.3f} ({orders['it_gd']:.0f} it.)")
    ax.plot(np.arange(len(orders["newton"])), np.maximum(orders["newton"] / gap0, floor), "o-", color="C2",
            label=f"Newton, Hessian ({orders['it_newton']:.0f} it.)")
    ax.axhline(ORDER_TOLERANCE, color="k", ls=":", lw=1, label="tolerance")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="(f - f*) / (f(w0) - f*)", ylim=(floor / 10, 10), xlim=(0, orders["rs"].shape[1]),
           title=f"0th, 1st, 2nd order on a quadratic (dim {config.order_dim}, kappa {config.order_kappa:g})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "orders")


def _lrs(values) -> str:
    """The per-seed best learning rates, e.g. '0.3' or '0.1-0.3'."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _mnist1d_figure(config, workdir, mn, colors, label) -> None:
    """Batch size, optimizers, same learning rate, gradient variance: mean and min-max over seeds."""
    fig, axes = subplots(2, 2, size=(5.4, 4), layout="constrained")
    ns = len(config.seeds)
    ax = axes[0]
    for key, r in mn["batch"].items():
        bs = 4000 if key == "full" else int(key)
        epochs = r["points"] * bs / 4000
        band(ax, epochs[1:], r["best_curve"][:, 1:], label=f"batch {bs} (lr {_lrs(r['best_lr'])})", marker="o", ms=2)
    ax.axvline(int(config.epochs), color="k", ls=":", lw=1, label=f"{config.epochs} epochs (claim)")
    ax.set_xscale("log")
    ax.set(xlabel="epochs (passes over the data)", ylabel="full training loss",
           title=f"SGD by batch size (mean, min-max of {ns} seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for k in NAMES:
        r = mn["opts"][k]
        band(ax, r["points"], r["best_curve"], color=colors[k],
             label=f"{label[k] if k != 'sgd' else 'SGD'} (lr {_lrs(r['best_lr'])}, test {100 * r['best_acc'].mean():.0f}%)")
    ax.set(xlabel=f"step (batch {config.small_batch})", ylabel="full training loss",
           title="Optimizers at their best learning rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    same = float(config.same_learning_rate)
    for k in ("sgd", "momentum", "nesterov"):
        r = mn["opts"][k]
        i = [math.isclose(v, same) for v in r["lrs"]].index(True)
        band(ax, r["points"], r["losses"][:, i], color=colors[k], label=label[k] if k != "sgd" else "SGD")
    ax.set(xlabel=f"step (batch {config.small_batch})", ylabel="full training loss",
           title=f"Same learning rate {same:g}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[3]
    sizes = np.asarray(mn["sizes"], np.float64)
    var, slope = mn["var"].mean(axis=0), float(mn["slopes"].mean())
    ax.loglog(sizes, var, "o", ms=7, label=f"measured E||g_B - g||^2 (mean of {ns} seeds)")
    ax.loglog(sizes, np.exp(mn["intercepts"].mean()) * sizes ** slope, "-", label=f"fit: slope {slope:.3f} (mean)")
    ax.loglog(sizes, var[0] / sizes, "k:", label="1 / B")
    ax.set(xlabel="batch size B", ylabel="gradient variance", title="Minibatch gradient noise (MLP at init)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    workdir.save_figure(fig, "mnist1d")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
