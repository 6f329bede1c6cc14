# %% [markdown]
# ## Before the experiments: the ideas, one at a time
#
# Each section explains one idea of the lecture, calls the library on a tiny problem and prints or plots the
# number the idea predicts; the experiments at the end measure the same things over seeds and larger problems.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from nnbasics.analysis import momentum_theory as mt
from nnbasics.analysis.test_functions import get_test_function, optimizer_paths
from nnbasics.analysis.zeroth_second_order import gradient_descent, newton, random_search
from nnbasics.engine.optim import make_optimizer

plt.rcParams["figure.figsize"] = (6, 3.2)

# %% [markdown]
# ## 1. Gradient descent and the condition number
#
# Gradient descent steps against the gradient, $w_{k+1} = w_k - \alpha \nabla f(w_k)$. On a quadratic
# $f(w) = \tfrac12 w^T A w$ the error along each eigenvector of $A$ (eigenvalue $\lambda$) is multiplied by
# $1 - \alpha\lambda$ at every step. The step must satisfy $\alpha < 2/\lambda_{\max}$ for the steep directions not to
# blow up, and then the flat directions (small $\lambda$) crawl. The best compromise, $\alpha = 2/(\lambda_{\min} +
# \lambda_{\max})$, converges at the rate $(\kappa - 1)/(\kappa + 1)$ per step, with $\kappa = \lambda_{\max}/\lambda_{\min}$
# the *condition number*: the more elongated the valley, the slower.
#
# `make_quadratic` builds such a problem (20 dimensions, $\kappa = 100$, in a random basis); `run_on_quadratic` runs an
# optax optimizer on it and `measured_rate` fits the slope of $\log\|w_k - w^*\|$.

# %%
quad = mt.make_quadratic(kappa=100.0, dim=20)
w0 = mt.start_point(quad)
alpha_gd, rate_gd = mt.gd_optimal(quad.lmin, quad.lmax)
errors_gd = np.linalg.norm(mt.run_on_quadratic(quad, optax.sgd(alpha_gd), w0, 400), axis=1)
measured_gd = mt.measured_rate(errors_gd)
print(f"GD: optimal step {alpha_gd:.4f}, theory rate {rate_gd:.4f}, measured {measured_gd:.4f}")
assert abs(measured_gd - rate_gd) < 0.01

# %% [markdown]
# **Try this**: a step 10% above the optimum, `optax.sgd(1.1 * alpha_gd)`, then one above $2/\lambda_{\max}$
# (`2.05 / quad.lmax`): compare the measured rates with `mt.gd_rate(alpha, quad.eigenvalues)`.

# %% [markdown]
# ## 2. Momentum
#
# Heavy-ball momentum keeps a running direction, $z_{k+1} = \beta z_k + \nabla f(w_k)$, $w_{k+1} = w_k - \alpha z_{k+1}$
# (`optax.sgd(alpha, momentum=beta)`). Along each eigenvector the error now follows a two-term recursion whose
# rate is the largest root of $t^2 - (1 + \beta - \alpha\lambda)t + \beta$. Goh's "Why Momentum Really Works" (Distill
# 2017) works out the best pair, $\alpha = (2/(\sqrt{\lambda_{\min}} + \sqrt{\lambda_{\max}}))^2$ and
# $\beta = ((\sqrt\kappa - 1)/(\sqrt\kappa + 1))^2$, with the rate $(\sqrt\kappa - 1)/(\sqrt\kappa + 1)$: the condition
# number enters through its square root. For $\kappa = 100$ that is 0.82 per step against GD's 0.98.

# %%
alpha_m, beta_m, rate_m = mt.momentum_optimal(quad.lmin, quad.lmax)
errors_m = np.linalg.norm(mt.run_on_quadratic(quad, optax.sgd(alpha_m, momentum=beta_m), w0, 400), axis=1)
measured_m = mt.measured_rate(errors_m)
print(f"momentum: step {alpha_m:.4f}, beta {beta_m:.4f}, theory rate {rate_m:.4f}, measured {measured_m:.4f}")
steps_gd, steps_m = np.log(1e-6) / np.log(rate_gd), np.log(1e-6) / np.log(rate_m)
print(f"steps to reduce the error a million-fold: GD {steps_gd:.0f}, momentum {steps_m:.0f}")
assert abs(measured_m - rate_m) < 0.02
plt.semilogy(errors_gd, label=f"GD, rate {measured_gd:.3f}")
plt.semilogy(errors_m, label=f"momentum, rate {measured_m:.3f}")
plt.semilogy(rate_gd ** np.arange(400), "k:", lw=1, label="theory")
plt.semilogy(rate_m ** np.arange(400), "k:", lw=1)
plt.ylim(1e-30, 10)
plt.xlabel("step")
plt.ylabel("$\\|w_k - w^*\\|$")
plt.title("kappa = 100")
plt.legend()
plt.show()

# %% [markdown]
# Momentum also *allows larger steps*: GD diverges for $\alpha > 2/\lambda_{\max}$, momentum only for
# $\alpha > 2(1+\beta)/\lambda_{\max}$. The map below is the rate for every $(\alpha, \beta)$ on this quadratic
# (`momentum_rate_grid`, Goh's figure); $\beta = 0$ is gradient descent, and the dashed line is GD's limit.

# %%
alphas = np.linspace(0.001, 4.0 / quad.lmax, 200)
betas = np.linspace(0.0, 0.99, 100)
grid = mt.momentum_rate_grid(alphas, betas, quad.lmin, quad.lmax)
plt.pcolormesh(alphas * quad.lmax, betas, np.minimum(grid, 1.0), cmap="viridis_r", shading="auto")
plt.colorbar(label="rate (1 = no convergence)")
plt.axvline(2.0, color="w", ls="--")
plt.plot(alpha_m * quad.lmax, beta_m, "r*", ms=12)
plt.xlabel("$\\alpha \\lambda_{max}$")
plt.ylabel("$\\beta$")
plt.show()
for beta in (0.0, 0.5, 0.9):
    big = 2.5 / quad.lmax  # beyond GD's limit
    print(f"alpha = 2.5 / lambda_max, beta = {beta}: rate {mt.momentum_rate(big, beta, quad.eigenvalues):.3f}")

# %% [markdown]
# **Try this**
# - `kappa=1000`: GD's rate goes to 0.998, momentum's to 0.94; count the steps each needs.
# - Run momentum with $\beta = 0.99$ and the GD step: it converges, but oscillates (`mt.sign_changes` counts it).

# %% [markdown]
# ## 3. Optimizers on two-dimensional landscapes
#
# Neural network losses are not quadratics. The lecture's 2-D test functions show the optimizers' habits:
# Rosenbrock's curved valley (steep walls, a flat floor), Beale's plateaus, and a saddle point. SGD follows the
# steepest direction and zig-zags across the valley; momentum and Nesterov build up speed along the floor; RMSProp
# and Adam divide each coordinate's step by a running average of its squared gradient, so steep and flat
# directions move at similar speeds. `optimizer_paths` runs them all in one compiled program.

# %%
valley = get_test_function("valley")
settings = {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 1e-2, "adam": 5e-2}
gx, gy, gz = valley.grid(120)
plt.figure(figsize=(7, 4.5))
plt.contour(gx, gy, np.log1p(gz), levels=25, cmap="Greys")
for name, lr in settings.items():
    tx = make_optimizer({"name": name, "learning_rate": 1.0})
    paths, values = optimizer_paths(valley.fn, {name: tx}, valley.start, [lr], steps=300)[name]
    plt.plot(paths[0, :, 0], paths[0, :, 1], ".-", ms=2, lw=1, label=f"{name} (lr {lr:g}): f = {values[0, -1]:.3g}")
    print(f"{name:9s} lr {lr:<6g} f after 300 steps: {values[0, -1]:.3g}  at {np.round(paths[0, -1], 3)}")
plt.plot(*valley.minima[0], "r*", ms=12)
plt.xlim(valley.xlim)
plt.ylim(valley.ylim)
plt.legend(fontsize=7)
plt.title(valley.description + ", 300 steps")
plt.show()

# %% [markdown]
# **Try this**: `get_test_function("saddle")` or `"beale"`, other learning rates, or more steps. Which optimizers
# leave the saddle point, and how fast?

# %% [markdown]
# ## 4. Zeroth, first and second order
#
# What we know about the loss decides the method: only its values (zeroth order: try a random step, keep it if it
# is better), its gradient (first order: gradient descent), or also its Hessian (second order: Newton's method,
# $w \leftarrow w - H^{-1}\nabla f$, exact in one step on a quadratic but $O(n^3)$ per step for $n$ weights, out of
# reach for a network). On a 10-dimensional quadratic with $\kappa = 10$:

# %%
q10 = mt.make_quadratic(kappa=10.0, dim=10)
start = jnp.asarray(mt.start_point(q10), jnp.float32)
f = jax.jit(lambda w: q10.value(w))
plt.figure()
values = {
    "random search (values)": random_search(f, start, jnp.asarray(np.random.default_rng(0).standard_normal((200, 10)),
                                                                  jnp.float32)),
    "gradient descent (gradients)": gradient_descent(f, start, mt.gd_optimal(q10.lmin, q10.lmax)[0], 200),
    "Newton (Hessian)": newton(f, start, 200),
}
for name, v in values.items():
    v = np.asarray(v)
    plt.semilogy(np.maximum(v, 1e-12), label=name)
    print(f"{name:30s} f after 1, 10, 200 iterations: {v[1]:.2e} {v[10]:.2e} {v[200]:.2e}")
plt.xlabel("iteration")
plt.ylabel("f(w)")
plt.legend()
plt.show()

# %% [markdown]
# **Try this**: `dim=100`: random search needs many more evaluations per unit of progress, gradient descent does not
# care about the dimension (only about $\kappa$), and Newton still takes one step.
