"""Optimizers compared: GD, SGD by batch size, momentum, Nesterov, RMSProp, Adam; 0th/1st/2nd order.

(a) Paths of every optimizer on three 2-D test functions (Rosenbrock's narrow valley, Beale's
function, a saddle between two minima), each at its best learning rate from a grid, drawn on the
contours; (b) the MNIST-1D MLP trained from one initialization with SGD at batch sizes 1 / 32 /
full (4000: gradient descent) and with every optimizer, all curves in one figure; (c) the variance
of the minibatch gradient against the batch size (log-log slope, expected -1); (d) random search
(values only), gradient descent (gradients) and Newton (Hessian) on one quadratic. The optimizers
are `nnbasics.optim.make_optimizer` by name (optax); every learning-rate grid is vmapped.

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

from nnbasics import claims as C
from nnbasics import optim
from nnbasics.analysis import momentum_theory as M
from nnbasics.analysis import test_functions as T
from nnbasics.analysis import zeroth_second_order as Z
from nnbasics.data import load_dataset
from nnbasics.models import get_model
from nnbasics.optim import make_optimizer
from nnbasics.plotting import band, subplots
from nnbasics.train import batch_indices

TOPIC = "optimization"
ORDER = 30
LECTURE = "lecture slides 'Gradient descent', 'Stochastic gradient descent (SGD)', 'Momentum', 'Optimization'"
RUDER = "Ruder 2016, An overview of gradient descent optimization algorithms (lecture: comparison of variants)"
NAMES = ("sgd", "momentum", "nesterov", "rmsprop", "adam")

SWEEPS = {
    "momentum": [{"optimizers.momentum.momentum": b, "optimizers.nesterov.momentum": b} for b in (0.5, 0.9, 0.99)],
    "epochs": [{"epochs": e} for e in (2, 5, 20)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
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
    c.fn_tolerance = 1e-3  # "converged": f - f_min stays below this
    c.saddle_offsets = (1e-2, 1e-4, 1e-6)  # start (1, offset): distance from the saddle's ridge
    c.saddle_learning_rate = 0.1
    c.saddle_escape = 0.05  # escaped: f within this of the minimum -1/4
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
    c.order_tolerance = 1e-8  # relative gap f - f* <= tol (f(w0) - f*)
    c.order_steps = 20000  # random-search budget
    c.order_seeds = 5
    if preset == "quick":
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
        c.order_seeds = 2
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
    return {k: make_optimizer({**config.optimizers[k].to_dict(), "learning_rate": 1.0}) for k in NAMES}


def _test_functions(config) -> dict:
    lrs = np.geomspace(float(config.fn_lr_min), float(config.fn_lr_max), int(config.fn_lr_count))
    txs = _unit_optimizers(config)
    out = {}
    tol = float(config.fn_tolerance)
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
                "escape": [T.steps_to_tolerance(v, tf.f_min, float(config.saddle_escape)) for v in values]}
        for k, (paths, values) in runs.items()
    }
    return out


# --------------------------------------------------------------------------- (b) MNIST-1D MLP


def _curves(model, params0, data, groups: dict, seed: int) -> dict:
    """Train from params0; groups = {group: (runs, batch_size, steps, n_evals)} with runs = {name:
    (make_optimizer spec, learning rates)}, every rate a vmapped member. Batches are drawn without
    replacement per epoch like the engine, the same for every run of a group; the full training-set
    loss is recorded at n_evals points. Everything compiles into one program: XLA compiles one
    program of several optimizers in about half the time of one program each."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    txs = {g: {k: make_optimizer({**dict(spec), "learning_rate": 1.0}) for k, (spec, _) in runs.items()}
           for g, (runs, *_) in groups.items()}
    grids = {g: {k: jnp.asarray(lrs, jnp.float32) for k, (_, lrs) in runs.items()} for g, (runs, *_) in groups.items()}
    idx = {g: jnp.asarray(batch_indices([seed], 0, steps, len(x), bs)[0].reshape(ne, steps // ne, bs))
           for g, (_, bs, steps, ne) in groups.items()}

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

    def train(tx, lr, idx, params0, x, y, xt, yt):
        def step(carry, i):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p, x[i], y[i]), s, p)
            return (optax.apply_updates(p, jax.tree.map(lambda a: lr * a, u)), s), None

        def chunk(carry, ix):
            carry, _ = jax.lax.scan(step, carry, ix)
            return carry, loss(carry[0], x, y)

        (p, _), losses = jax.lax.scan(chunk, (params0, tx.init(params0)), idx)
        acc = jnp.mean(jnp.argmax(model.apply({"params": p}, xt), -1) == yt)
        return jnp.concatenate([loss(params0, x, y)[None], losses]), acc

    @jax.jit
    def go(grids, idx, *data):  # data as arguments, not constants folded into the program
        return {g: {k: jax.vmap(lambda lr, tx=tx, g=g: train(tx, lr, idx[g], *data))(grids[g][k])
                    for k, tx in txs[g].items()} for g in txs}

    out = jax.device_get(go(grids, idx, params0, x, y, xt, yt))
    res = {}
    for g, (runs, _, steps, ne) in groups.items():
        points = np.arange(ne + 1) * (steps // ne)
        res[g] = {}
        for k, (losses, acc) in out[g].items():
            losses, acc, lrs = np.asarray(losses, np.float64), np.asarray(acc, np.float64), list(map(float, runs[k][1]))
            final = np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)
            b = int(np.argmin(final))
            res[g][k] = {"points": points, "losses": losses, "acc": acc, "best": b, "lrs": lrs,
                         "best_lr": lrs[b], "best_loss": float(losses[b, -1]), "best_acc": float(acc[b])}
    return res


def _gradient_variance(model, params, data, sizes, k: int, seed: int) -> np.ndarray:
    """E ||g_B - g||^2 over k minibatches per size B (drawn without replacement), with g the
    full-batch gradient: one compiled program, batches padded to the largest size with zero weight."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n, bmax = len(x), max(sizes)
    rng = np.random.default_rng(seed)
    idx = np.stack([np.stack([rng.permutation(n)[:bmax] for _ in range(k)]) for _ in sizes]).astype(np.int32)
    weights = np.stack([(np.arange(bmax) < b) / b for b in sizes]).astype(np.float32)

    def weighted_loss(p, xb, yb, w):
        per = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb)
        return jnp.sum(per * w)

    def flat(tree):
        return jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])

    @jax.jit
    def go(idx, weights, params, x, y):
        full = flat(jax.grad(weighted_loss)(params, x, y, jnp.full((n,), 1.0 / n)))

        def per_size(args):
            ix, w = args
            sq = jax.lax.map(lambda i: jnp.sum((flat(jax.grad(weighted_loss)(params, x[i], y[i], w)) - full) ** 2), ix)
            return jnp.mean(sq)

        return jax.lax.map(per_size, (idx, weights))

    return np.asarray(go(jnp.asarray(idx), jnp.asarray(weights), params, x, y), np.float64)


def _mnist1d(config) -> dict:
    data = load_dataset(config.data)
    model = get_model(config.model, num_classes=data.num_classes)
    # One initialization shared by every run (an 'rbg' key: XLA compiles it much faster than threefry).
    params0 = jax.jit(lambda k: model.init(k, jnp.zeros((1, *data.input_shape))))(
        jax.random.key(int(config.seed), impl="rbg"))["params"]
    n, seed, e, ev = len(data.x_train), int(config.seed), int(config.epochs), int(config.evals_per_epoch)
    sgd = config.optimizers.sgd.to_dict()
    sb = int(config.small_batch)
    res = _curves(model, params0, data, {
        "small": ({k: (config.optimizers[k].to_dict(), config.learning_rates[k]) for k in NAMES},
                  sb, e * (n // sb), e * ev),
        "one": ({"sgd": (sgd, config.lr_grid_bs1)}, 1, e * n, e * ev),
        "full": ({"sgd": (sgd, config.lr_grid_full)}, n, int(config.gd_steps), int(config.gd_steps)),
    }, seed)
    opts = res["small"]
    batch = {"1": res["one"]["sgd"], str(sb): opts["sgd"], "full": res["full"]["sgd"]}
    at_e = batch["full"]["losses"][:, e]  # full batch: the rate that is best after `epochs` epochs
    full_best = int(np.argmin(np.where(np.isfinite(at_e), at_e, np.inf)))
    sizes = [int(b) for b in config.variance_batch_sizes]
    var = _gradient_variance(model, params0, data, sizes, int(config.variance_batches), seed)
    slope, intercept = np.polyfit(np.log(sizes), np.log(var), 1)
    return {"batch": batch, "opts": opts, "sizes": sizes, "var": var, "slope": float(slope),
            "intercept": float(intercept), "full_best": full_best}


# ------------------------------------------------------------------------ (d) 0th/1st/2nd order


def _orders(config) -> dict:
    quad = M.make_quadratic(float(config.order_kappa), int(config.order_dim), seed=int(config.seed))
    w0 = M.start_point(quad, seed=int(config.seed) + 1)
    steps = int(config.order_steps)
    noise = np.stack([np.random.default_rng([int(config.seed), s]).standard_normal((steps, len(w0)))
                      for s in range(int(config.order_seeds))])
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
    tol = float(config.order_tolerance)
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
    mn = _mnist1d(config)
    orders = _orders(config)
    _figures(config, workdir, fns, mn, orders)

    out = []
    budget = int(config.fn_steps)
    # (a) Momentum along the valley (and on Beale).
    measured, ok = {}, True
    for fname, res in fns.items():
        if fname == "saddle":
            continue
        for k in NAMES:
            measured[f"{fname}_steps_{k}"] = _finite(res[k]["steps"], budget + 1)
        for k in ("sgd", "momentum"):
            measured[f"{fname}_gap_{k}"] = res[k]["gap"]
        ok = ok and all(math.isfinite(res[k]["steps"]) and res[k]["steps"] < res["sgd"]["steps"]
                        for k in ("momentum", "nesterov"))
    out.append(C.claim(
        "momentum_faster_on_test_functions",
        "Momentum builds up speed: on the narrow valley (and Beale's function) momentum and Nesterov, each at its best "
        "learning rate, converge in fewer steps than gradient descent at its best learning rate",
        f"{LECTURE}; {RUDER}",
        f"steps until f - f* stays <= {config.fn_tolerance:g}: momentum and Nesterov < GD "
        f"({budget + 1} = not within {budget} steps)",
        measured,
        ok,
    ))
    # (a) The saddle.
    sad = fns["saddle"]
    offs = list(config.saddle_offsets)
    ratio = {k: _finite(sad[k]["escape"][-1], budget + 1) / max(_finite(sad[k]["escape"][0], budget + 1), 1.0)
             for k in NAMES}
    measured = {f"escape_steps_{k}": [_finite(v, budget + 1) for v in sad[k]["escape"]] for k in NAMES}
    measured.update({f"ratio_{k}": ratio[k] for k in ("sgd", "rmsprop", "adam")})
    esc = {k: _finite(sad[k]["escape"][-1], budget + 1) for k in NAMES}
    out.append(C.claim(
        "adaptive_escape_saddle",
        "Near a saddle the gradient is tiny: gradient descent's escape time grows with log(1/distance from the ridge), "
        "while RMSProp and Adam rescale each coordinate's step and escape in the same number of steps from any start",
        RUDER,
        f"at learning rate {config.saddle_learning_rate:g}, starts at offsets {', '.join(f'{o:g}' for o in offs)}: "
        "escape-time ratio (smallest / largest offset) >= 2 for GD, <= 1.2 for RMSProp and Adam, and both escape "
        "from the smallest offset sooner than GD",
        measured,
        C.at_least(ratio["sgd"], 2.0) and C.at_most(ratio["rmsprop"], 1.2) and C.at_most(ratio["adam"], 1.2)
        and esc["rmsprop"] < esc["sgd"] and esc["adam"] < esc["sgd"] and math.isfinite(sad["sgd"]["escape"][-1]),
    ))
    # (b) Batch size at equal epochs.
    e, sb = int(config.epochs), str(int(config.small_batch))
    full, full_best = mn["batch"]["full"], mn["full_best"]
    l1, ls, lf = mn["batch"]["1"]["best_loss"], mn["batch"][sb]["best_loss"], float(full["losses"][full_best, e])
    out.append(C.claim(
        "sgd_faster_per_epoch",
        "SGD is faster: in the same number of passes over the data, minibatch SGD (batch 1 and 32) reaches a lower "
        "training loss than full-batch gradient descent (batch 4000), each at its best learning rate",
        LECTURE,
        f"after {e} epochs: full-train loss at batch 1 and {sb} < at batch 4000",
        {"loss_batch1": l1, f"loss_batch{sb}": ls, "loss_full_batch": lf,
         "lr_batch1": mn["batch"]["1"]["best_lr"], f"lr_batch{sb}": mn["batch"][sb]["best_lr"],
         "lr_full_batch": full["lrs"][full_best], "epochs": e,
         f"loss_full_batch_{config.gd_steps}_epochs": float(full["losses"][full_best, -1])},
        C.at_most(l1, lf) and C.at_most(ls, lf) and l1 < lf and ls < lf,
    ))
    # (b) Momentum at the same learning rate.
    same = float(config.same_learning_rate)

    def at_same(k):
        r = mn["opts"][k]
        return float(r["losses"][[math.isclose(v, same) for v in r["lrs"]].index(True), -1])

    l_sgd, l_m, l_n = at_same("sgd"), at_same("momentum"), at_same("nesterov")
    measured = {"loss_sgd": l_sgd, "loss_momentum": l_m, "loss_nesterov": l_n, "learning_rate": same}
    measured.update({f"best_loss_{k}": mn["opts"][k]["best_loss"] for k in NAMES})
    measured.update({f"best_test_accuracy_{k}": 100 * mn["opts"][k]["best_acc"] for k in NAMES})
    out.append(C.claim(
        "momentum_faster_same_lr",
        "Like a ball rolling downhill, momentum makes faster progress: on the MNIST-1D MLP, momentum and Nesterov "
        "reach a lower training loss than plain SGD at the same learning rate and number of steps",
        LECTURE,
        f"full-train loss after {e} epochs at batch {sb}, learning rate {same:g}: momentum and Nesterov < SGD "
        "(best-rate losses and test accuracies of all five optimizers reported)",
        measured,
        C.at_most(l_m, l_sgd) and C.at_most(l_n, l_sgd) and l_m < l_sgd and l_n < l_sgd,
    ))
    # (c) Gradient variance.
    out.append(C.claim(
        "gradient_variance_slope",
        "The minibatch gradient is noisy: its variance around the full gradient falls as 1 / batch size",
        LECTURE,
        "log-log slope of E||g_B - g||^2 against B in [-1.1, -0.9]",
        {"slope": mn["slope"], "variance": list(mn["var"]), "batch_sizes": list(mn["sizes"])},
        C.within(mn["slope"], -1.0, 0.1),
    ))
    # (d) Zeroth, first, second order.
    it_rs = float(np.median([_finite(v, int(config.order_steps) + 1) for v in orders["it_rs"]]))
    it_gd = _finite(orders["it_gd"], int(config.order_steps) + 1)
    it_nt = _finite(orders["it_newton"], 99)
    out.append(C.claim(
        "order_of_information",
        "The more one knows about J (values; + gradient; + Hessian), the fewer iterations: random search needs more "
        "than gradient descent, which needs more than Newton (one step on a quadratic)",
        LECTURE,
        f"iterations until f - f* <= {config.order_tolerance:g} (f(w0) - f*) on a {config.order_dim}-D quadratic, "
        f"kappa {config.order_kappa:g}: Newton = 1 < gradient descent < random search (median of "
        f"{config.order_seeds} seeds)",
        {"iterations_random_search": it_rs, "iterations_gradient_descent": it_gd, "iterations_newton": it_nt},
        C.at_most(it_nt, 1) and it_nt < it_gd < it_rs and it_rs <= int(config.order_steps),
    ))
    return out


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
        ax.axhline(float(config.fn_tolerance), color="k", ls=":", lw=1, label="tolerance")
        ax.set(xlabel="step", ylabel="f - f*", title=f"{fname}: best learning rate each")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    workdir.save_figure(fig, "test_function_losses")

    # MNIST-1D: batch size, optimizers, same learning rate, gradient variance.
    fig, axes = subplots(2, 2, size=(5.4, 4), layout="constrained")
    ax = axes[0]
    n = 4000
    for key, r in mn["batch"].items():
        bs = n if key == "full" else int(key)
        epochs = r["points"] * bs / n
        i = mn["full_best"] if key == "full" else r["best"]
        ax.plot(epochs[1:], r["losses"][i][1:], "-o", ms=2, label=f"batch {bs} (lr {r['lrs'][i]:g})")
    ax.axvline(int(config.epochs), color="k", ls=":", lw=1, label=f"{config.epochs} epochs (claim)")
    ax.set_xscale("log")
    ax.set(xlabel="epochs (passes over the data)", ylabel="full training loss",
           title="SGD by batch size: loss per epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for k in NAMES:
        r = mn["opts"][k]
        ax.plot(r["points"], r["losses"][r["best"]], color=colors[k],
                label=f"{label[k] if k != 'sgd' else 'SGD'} (lr {r['best_lr']:g}, test {100 * r['best_acc']:.0f}%)")
    ax.set(xlabel=f"step (batch {config.small_batch})", ylabel="full training loss",
           title="Optimizers at their best learning rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    same = float(config.same_learning_rate)
    for k in ("sgd", "momentum", "nesterov"):
        r = mn["opts"][k]
        i = [math.isclose(v, same) for v in r["lrs"]].index(True)
        ax.plot(r["points"], r["losses"][i], color=colors[k], label=label[k] if k != "sgd" else "SGD")
    ax.set(xlabel=f"step (batch {config.small_batch})", ylabel="full training loss",
           title=f"Same learning rate {same:g}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[3]
    sizes = np.asarray(mn["sizes"], np.float64)
    ax.loglog(sizes, mn["var"], "o", ms=7, label="measured E||g_B - g||^2")
    ax.loglog(sizes, np.exp(mn["intercept"]) * sizes ** mn["slope"], "-", label=f"fit: slope {mn['slope']:.3f}")
    ax.loglog(sizes, mn["var"][0] / sizes, "k:", label="1 / B")
    ax.set(xlabel="batch size B", ylabel="gradient variance", title="Minibatch gradient noise (MLP at init)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    workdir.save_figure(fig, "mnist1d")

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
    ax.axhline(float(config.order_tolerance), color="k", ls=":", lw=1, label="tolerance")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="(f - f*) / (f(w0) - f*)", ylim=(floor / 10, 10), xlim=(0, orders["rs"].shape[1]),
           title=f"0th, 1st, 2nd order on a quadratic (dim {config.order_dim}, kappa {config.order_kappa:g})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "orders")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
