"""Why momentum really works (Goh 2017): optimal step, momentum and rates on a quadratic, measured.

On a convex quadratic with condition number kappa (eigenvalues log-spaced in [1, kappa], random
rotation), gradient descent with the optimal step converges at (kappa-1)/(kappa+1) per step and
heavy-ball momentum with the optimal step and momentum at (sqrt(kappa)-1)/(sqrt(kappa)+1). The
optimizers are the library's own (`nnbasics.engine.optim`, i.e. optax), run in float64 with `lax.scan`;
the measured rate is exp(slope) of log ||w_k - w*||. The lecture's step 0.02 with momentum 0.99 is
shown oscillating, and momentum is shown stable at a step where gradient descent diverges.

    nnbasics run momentum --quick
    nnbasics run momentum --config.kappas='(10, 100, 1000, 10000)'
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from nnbasics.analysis import momentum_theory
from nnbasics.engine.optim import make_optimizer
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "optimization"
ORDER = 31
SOURCE = "Goh 2017, Why Momentum Really Works (Distill); lecture slide 'Why Momentum Really Works'"

# Deterministic (float64 runs on a fixed quadratic): every check is decided by its value.
THRESHOLDS = {
    "slope_rel_error": Threshold("<=", 0.02, "Goh 2017: the rates are exact asymptotically; a fit over 150 decades of "
                                 "error leaves the start-up transient (and the k r^k term at the optimal momentum's "
                                 "double root) well below 2% of the slope"),
    "sign_changes_momentum": Threshold(">=", 4, "Goh 2017: beta 0.99 gives complex roots, an oscillation with period "
                                       "2 pi / angle: several sign changes within the drawn steps"),
    "sign_changes_gd": Threshold("<=", 0, "gradient descent at a step below 1/lmax contracts every mode without "
                                 "sign flips"),
    "rate_gd_big_step": Threshold(">", 1.0, "gradient descent diverges beyond step 2/lmax (rate > 1)"),
    "rate_momentum_big_step": Threshold("<", 1.0, "momentum beta converges up to step 2(1+beta)/lmax (rate < 1)"),
}

SWEEPS = {
    "dim": [{"dim": d} for d in (2, 20, 100)],
    "lecture_beta": [{"lecture_beta": b} for b in (0.5, 0.9, 0.99)],
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.kappas = (10, 100, 1000)
    c.dim = 20  # dimension of the quadratic
    c.seed = 0  # rotation of the quadratic and start point
    c.decades = 150.0  # run each optimizer until its error has fallen by this many powers of ten
    c.lecture_alpha = 0.02  # the lecture's (and Goh's first figure's) step size
    c.lecture_beta = 0.99  # ... and momentum
    c.lecture_eigenvalues = (0.1, 10.0)  # a 2-D valley to show it on
    c.lecture_steps = 600  # steps drawn in the oscillation figure
    c.big_step_factor = 3.0  # step = factor / lmax: GD diverges beyond 2, momentum 0.9 is stable to 3.8
    c.big_step_beta = 0.9
    if preset == "smoke":
        c.kappas = (10, 100)
        c.dim = 5
        c.decades = 20.0
        c.lecture_steps = 100
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if 100 not in tuple(config.kappas):
        raise ValueError(f"config.kappas must include 100 (the claims report kappa=100), got {config.kappas}")
    if any(not float(k) > 1 for k in config.kappas):
        raise ValueError(f"every kappa must be > 1, got {config.kappas}")
    if int(config.dim) < 2:
        raise ValueError(f"config.dim must be >= 2, got {config.dim}")
    if not 0 <= float(config.lecture_beta) < 1 or not 0 <= float(config.big_step_beta) < 1:
        raise ValueError("config.lecture_beta and config.big_step_beta must be in [0, 1)")
    if len(config.lecture_eigenvalues) != 2 or min(config.lecture_eigenvalues) <= 0:
        raise ValueError(f"config.lecture_eigenvalues must be two positive numbers, got {config.lecture_eigenvalues}")
    if float(config.decades) < 5 or float(config.decades) > 250:
        raise ValueError(f"config.decades must be in [5, 250] (float64 range), got {config.decades}")


def _errors(quad: momentum_theory.Quadratic, opt: dict, w0: np.ndarray, steps: int) -> np.ndarray:
    return np.linalg.norm(momentum_theory.run_on_quadratic(quad, make_optimizer(opt), w0, steps), axis=1)


def _slope_error(measured: float, theory: float) -> float:
    """Relative error of the measured log rate (the slope of log error) against theory."""
    return abs(math.log(measured) / math.log(theory) - 1.0)


def _slope_check(measured: float, theory: float, statistic: str) -> dict:
    return check("slope_rel_error", _slope_error(measured, theory), THRESHOLDS["slope_rel_error"], random=False,
                 statistic=statistic)


def _optimal_runs(config: ml_collections.ConfigDict, kappas: list[float]) -> dict[float, dict]:
    """Per kappa: gradient descent and momentum, each with its optimal step (and momentum), on a
    random quadratic; their error curves, measured rates and the theory's."""
    res: dict[float, dict] = {}
    for kappa in kappas:
        quad = momentum_theory.make_quadratic(kappa, int(config.dim), seed=int(config.seed))
        w0 = momentum_theory.start_point(quad, seed=int(config.seed) + 1)
        a_gd, r_gd = momentum_theory.gd_optimal(quad.lmin, quad.lmax)
        a_m, b_m, r_m = momentum_theory.momentum_optimal(quad.lmin, quad.lmax)
        e_gd = _errors(quad, {"name": "sgd", "learning_rate": a_gd}, w0, momentum_theory.steps_for(r_gd, config.decades))
        e_m = _errors(
            quad, {"name": "momentum", "learning_rate": a_m, "momentum": b_m}, w0, momentum_theory.steps_for(r_m, config.decades)
        )
        res[kappa] = {
            "quad": quad, "e_gd": e_gd, "e_m": e_m, "theory_gd": r_gd, "theory_m": r_m,
            "alpha_gd": a_gd, "alpha_m": a_m, "beta_m": b_m,
            "rate_gd": momentum_theory.measured_rate(e_gd), "rate_m": momentum_theory.measured_rate(e_m),
        }
    return res


def _lecture_runs(config: ml_collections.ConfigDict) -> dict:
    """The lecture's alpha = 0.02, beta = 0.99 on a 2-D valley (axis-aligned, so coordinates = modes),
    and gradient descent at the same step: paths, rates and sign changes of the slow coordinate."""
    lam = np.asarray(sorted(config.lecture_eigenvalues), np.float64)
    valley = momentum_theory.Quadratic(A=np.diag(lam), eigenvalues=lam, eigenvectors=np.eye(2))
    la, lb = float(config.lecture_alpha), float(config.lecture_beta)
    w_start = np.array([1.0, 1.0]) / math.sqrt(2.0)
    theory = momentum_theory.momentum_rate(la, lb, lam)
    ws_m = momentum_theory.run_on_quadratic(
        valley, make_optimizer({"name": "momentum", "learning_rate": la, "momentum": lb}), w_start,
        max(int(config.lecture_steps), momentum_theory.steps_for(theory, min(config.decades, 100.0))),
    )
    ws_gd = momentum_theory.run_on_quadratic(valley, make_optimizer({"name": "sgd", "learning_rate": la}), w_start,
                                             len(ws_m) - 1)
    n_show = int(config.lecture_steps)
    return {
        "valley": valley, "alpha": la, "beta": lb, "steps_shown": n_show,
        "ws_m": ws_m[: n_show + 1], "ws_gd": ws_gd[: n_show + 1],
        "rate_m": momentum_theory.measured_rate(np.linalg.norm(ws_m, axis=1)), "theory_m": theory,
        "rate_gd": momentum_theory.measured_rate(np.linalg.norm(ws_gd, axis=1)),
        "theory_gd": momentum_theory.gd_rate(la, lam),
        "sign_changes_m": momentum_theory.sign_changes(ws_m[: n_show + 1, 0]),
        "sign_changes_gd": momentum_theory.sign_changes(ws_gd[: n_show + 1, 0]),
    }


def _big_step_runs(config: ml_collections.ConfigDict, q100: momentum_theory.Quadratic) -> dict:
    """A step beyond gradient descent's stability limit 2 / lmax (kappa = 100 quadratic): measured and
    theoretical rates of gradient descent and of momentum."""
    w0 = momentum_theory.start_point(q100, seed=int(config.seed) + 1)
    a_big = float(config.big_step_factor) / q100.lmax
    bb = float(config.big_step_beta)
    theory_m = momentum_theory.momentum_rate(a_big, bb, q100.eigenvalues)
    e_gd = _errors(q100, {"name": "sgd", "learning_rate": a_big}, w0, 200)
    e_m = _errors(q100, {"name": "momentum", "learning_rate": a_big, "momentum": bb}, w0,
                  momentum_theory.steps_for(theory_m, config.decades))
    return {
        "step": a_big, "beta": bb,
        "rate_gd": momentum_theory.measured_rate(e_gd, 0.2), "theory_gd": momentum_theory.gd_rate(a_big, q100.eigenvalues),
        "rate_m": momentum_theory.measured_rate(e_m), "theory_m": theory_m,
    }


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    kappas = [float(k) for k in config.kappas]
    res = _optimal_runs(config, kappas)
    lecture = _lecture_runs(config)
    big = _big_step_runs(config, res[100.0]["quad"])
    _figures(config, workdir, res, lecture["valley"], lecture["ws_m"], lecture["ws_gd"], lecture["alpha"], lecture["beta"])
    return [*_optimal_rate_claims(res, kappas), _lecture_claim(lecture), _big_step_claim(config, big)]


def _kappa_key(k: float) -> str:
    return f"kappa{int(k)}"


def _optimal_rate_claims(res: dict[float, dict], kappas: list[float]) -> list[dict]:
    """Gradient descent and momentum, each at its optimum, converge at the theory's rate for every kappa."""
    tol = THRESHOLDS["slope_rel_error"].value
    out = []
    for which, name, formula in (
        ("gd", "gradient descent", "(kappa-1)/(kappa+1)"),
        ("m", "momentum", "(sqrt(kappa)-1)/(sqrt(kappa)+1)"),
    ):
        label = "gd" if which == "gd" else "momentum"
        measured, checks = {}, []
        for k in kappas:
            r, t = res[k][f"rate_{which}"], res[k][f"theory_{which}"]
            measured[f"rate_{label}_{_kappa_key(k)}"] = r
            measured[f"theory_{label}_{_kappa_key(k)}"] = t
            measured[f"slope_rel_error_{label}_{_kappa_key(k)}"] = _slope_error(r, t)
            checks.append(_slope_check(r, t, f"slope_rel_error_{label}_{_kappa_key(k)}"))
        if which == "m":
            for k in kappas:  # steps GD needs per step of momentum, for the same error reduction
                measured[f"speedup_{_kappa_key(k)}"] = math.log(res[k]["rate_m"]) / math.log(res[k]["rate_gd"])
        out.append(claim(
            f"{label}_optimal_rate",
            f"With the optimal step{' and momentum' if which == 'm' else ''}, {name} converges at rate {formula}",
            SOURCE,
            f"measured slope of log error within {100 * tol:g}% of log(theory rate), kappa in "
            f"{{{', '.join(str(int(k)) for k in kappas)}}}",
            measured,
            checks=checks,
        ))
    return out


def _lecture_claim(lecture: dict) -> dict:
    tol = THRESHOLDS["slope_rel_error"].value
    la, lb = lecture["alpha"], lecture["beta"]
    rate, theory = lecture["rate_m"], lecture["theory_m"]
    osc_m, osc_gd = lecture["sign_changes_m"], lecture["sign_changes_gd"]
    return claim(
        "lecture_step_oscillates",
        f"With the lecture's step {la:g} and momentum {lb:g} the iterates oscillate (complex roots) and converge "
        "at rate sqrt(beta), whatever the curvature; plain gradient descent at the same step does not oscillate",
        SOURCE,
        f"rate within {100 * tol:g}% (slope) of {theory:.5f}; " "sign changes of the slow coordinate in "
        f"{lecture['steps_shown']} steps " "{sign_changes_momentum} for momentum, {sign_changes_gd} for gradient descent",
        {
            "rate_momentum_lecture": rate, "theory_momentum_lecture": theory,
            "slope_rel_error": _slope_error(rate, theory), "sign_changes_momentum": osc_m, "sign_changes_gd": osc_gd,
            "rate_gd_lecture": lecture["rate_gd"], "theory_gd_lecture": lecture["theory_gd"],
        },
        checks=[_slope_check(rate, theory, "slope_rel_error"),
                check("sign_changes_momentum", osc_m, THRESHOLDS["sign_changes_momentum"], random=False),
                check("sign_changes_gd", osc_gd, THRESHOLDS["sign_changes_gd"], random=False)],
    )


def _big_step_claim(config: ml_collections.ConfigDict, big: dict) -> dict:
    tol = THRESHOLDS["slope_rel_error"].value
    return claim(
        "momentum_allows_larger_steps",
        f"Momentum allows a larger range of step sizes: at step {config.big_step_factor:g}/lmax gradient descent "
        f"diverges while momentum {big['beta']:g} converges (stable up to 2(1+beta)/lmax)",
        SOURCE,
        "measured gradient-descent rate {rate_gd_big_step} and momentum rate {rate_momentum_big_step}, each within "
        f"{100 * tol:g}% (slope) of theory",
        {
            "step": big["step"], "rate_gd": big["rate_gd"], "theory_gd": big["theory_gd"],
            "rate_momentum": big["rate_m"], "theory_momentum": big["theory_m"],
        },
        checks=[check("rate_gd_big_step", big["rate_gd"], THRESHOLDS["rate_gd_big_step"], random=False,
                      statistic="rate_gd"),
                check("rate_momentum_big_step", big["rate_m"], THRESHOLDS["rate_momentum_big_step"], random=False,
                      statistic="rate_momentum"),
                _slope_check(big["rate_gd"], big["theory_gd"], "slope_rel_error_gd"),
                _slope_check(big["rate_m"], big["theory_m"], "slope_rel_error_momentum")],
    )


def _figures(config, workdir, res, valley, ws_m, ws_gd, la, lb) -> None:
    kappas = sorted(res)
    # 1. 1 - rate against kappa: theory lines and measured points.
    fig, axes = subplots(1, 2, size=(5.2, 4), layout="constrained")
    ks = np.logspace(0.3, 4.2, 200)
    ax = axes[0]
    ax.loglog(ks, 1 - (ks - 1) / (ks + 1), color="C0", label="gradient descent, theory 1-(k-1)/(k+1)")
    ax.loglog(ks, 1 - (np.sqrt(ks) - 1) / (np.sqrt(ks) + 1), color="C1", label="momentum, theory")
    ax.loglog(kappas, [1 - res[k]["rate_gd"] for k in kappas], "o", color="C0", ms=8,
              label="gradient descent, measured")
    ax.loglog(kappas, [1 - res[k]["rate_m"] for k in kappas], "s", color="C1", ms=8, label="momentum, measured")
    ax.set(xlabel="condition number kappa", ylabel="1 - rate (error reduction per step)",
           title="Optimal rates on a quadratic")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    # 2. error curves at kappa = 100.
    ax = axes[1]
    r = res[100.0]
    n = min(len(r["e_gd"]), 4 * len(r["e_m"]))
    ax.semilogy(np.arange(n), r["e_gd"][:n], color="C0", label=f"GD, step {r['alpha_gd']:.4f}")
    ax.semilogy(np.arange(len(r["e_m"])), r["e_m"], color="C1",
                label=f"momentum, step {r['alpha_m']:.4f}, beta {r['beta_m']:.3f}")
    k = np.arange(n)
    ax.semilogy(k, r["e_gd"][0] * r["theory_gd"] ** k, "k:", lw=1, label="theory rate^k")
    ax.semilogy(k[: len(r["e_m"])], r["e_m"][0] * r["theory_m"] ** k[: len(r["e_m"])], "k:", lw=1)
    ax.set(xlabel="iteration k", ylabel="||w_k - w*||", title="kappa = 100: error per iteration (float64)",
           xlim=(0, n))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "rates")

    # 3. the lecture's alpha, beta on a 2-D valley: paths and the slow coordinate.
    fig, axes = subplots(1, 2, size=(5.2, 4), layout="constrained")
    ax = axes[0]
    lim = 1.1 * np.abs(np.concatenate([ws_m, ws_gd])).max(axis=0)
    gx, gy = np.meshgrid(np.linspace(-lim[0], lim[0], 200), np.linspace(-lim[1], lim[1], 200))
    z = 0.5 * (valley.eigenvalues[0] * gx**2 + valley.eigenvalues[1] * gy**2)
    ax.contour(gx, gy, z, levels=np.geomspace(z.max() * 1e-3, z.max(), 10), colors="0.55", linewidths=0.8)
    ax.plot(ws_gd[:, 0], ws_gd[:, 1], ".-", color="C0", ms=2, lw=0.8, label=f"gradient descent, step {la:g}")
    ax.plot(ws_m[:, 0], ws_m[:, 1], ".-", color="C1", ms=2, lw=0.8, label=f"momentum {lb:g}, step {la:g}")
    ax.plot([0], [0], "k*", ms=10, label="minimum")
    ax.set(xlabel=f"w1 (curvature {valley.eigenvalues[0]:g})", ylabel=f"w2 (curvature {valley.eigenvalues[1]:g})",
           title="Lecture's step and momentum: paths")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    k = np.arange(len(ws_m))
    ax.plot(k, ws_gd[:, 0], color="C0", label="gradient descent: w1")
    ax.plot(k, ws_m[:, 0], color="C1", label="momentum: w1 (oscillates)")
    ax.plot(k, ws_m[0, 0] * np.sqrt(lb) ** k, "k:", lw=1, label="+- sqrt(beta)^k envelope")
    ax.plot(k, -ws_m[0, 0] * np.sqrt(lb) ** k, "k:", lw=1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="iteration k", ylabel="w1 (low-curvature direction)", title="Momentum creates its own oscillations")
    ax.legend(fontsize=8)
    workdir.save_figure(fig, "lecture_oscillation")

    # 4. Goh's map of the rate over (step, momentum) for kappa = 100.
    q = res[100.0]["quad"]
    alphas = np.linspace(1e-4, 2 * 2 / q.lmax, 160)
    betas = np.linspace(0.0, 0.999, 120)
    rates = momentum_theory.momentum_rate_grid(alphas, betas, q.lmin, q.lmax)
    fig, (ax,) = subplots(size=(6, 4.2), layout="constrained")
    im = ax.pcolormesh(alphas * q.lmax, betas, np.minimum(rates, 1.2), cmap="viridis_r", shading="auto")
    fig.colorbar(im, ax=ax, label="convergence rate (>= 1: diverges; clipped at 1.2)")
    ax.contour(alphas * q.lmax, betas, rates, levels=[1.0], colors="w", linewidths=1)
    r = res[100.0]
    ax.plot([r["alpha_m"] * q.lmax], [r["beta_m"]], "r*", ms=12, label=f"optimum, rate {r['theory_m']:.3f}")
    ax.plot([r["alpha_gd"] * q.lmax], [0.0], "o", color="orange", ms=8,
            label=f"GD optimum (beta 0), rate {r['theory_gd']:.3f}")
    # room below beta = 0, where gradient descent's optimum sits, so that its marker is drawn whole
    ax.set(xlabel="step size x lmax", ylabel="momentum beta", ylim=(-0.06, 1.0),
           title="kappa = 100: rate of momentum (white: stability edge)")
    ax.legend(fontsize=8, loc="upper left")
    workdir.save_figure(fig, "rate_map")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
