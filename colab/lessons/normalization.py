# %% [markdown]
# ## Before the experiments: the ideas, one at a time
#
# Each section explains one idea of the lecture, calls the library on a tiny example and prints or plots the
# number the idea predicts; the experiments at the end test the same ideas with trained networks.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from nnbasics.analysis.signal_propagation import nf_predicted_variance, signal_propagation, unit_gaussian
from nnbasics.engine.agc import clip_unitwise, unitwise_norm
from nnbasics.models import get_model
from nnbasics.nn.normalization import NORM_AXES, make_norm, standardize_kernel, statistics_mask

plt.rcParams["figure.figsize"] = (6, 3.2)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. BatchNorm, LayerNorm, InstanceNorm, GroupNorm: which axes each averages over
#
# Every normalization layer computes $\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}$ and then $y = \gamma \hat x + \beta$
# with a learned scale and shift per channel. They differ only in *which activations* $\mu$ and $\sigma^2$ are taken
# over, for an activation tensor of shape $(N, H, W, C)$ (Wu & He 2018, Figure 2):
#
# | layer | statistics over | so each output depends on |
# | --- | --- | --- |
# | BatchNorm | $N, H, W$ | the whole batch, one channel |
# | LayerNorm | $H, W, C$ | one example, all channels |
# | InstanceNorm | $H, W$ | one example, one channel |
# | GroupNorm | $H, W$ and a group of $C/G$ channels | one example, one group |
#
# `statistics_mask` finds the set from the layer itself: the activations that the output at position
# (0, 0, 0, 0) depends on, through the gradient. The plot collapses $H$ and $W$ (the set always covers all of them)
# and shows it as an $N \times C$ grid, as in Wu & He's figure.

# %%
shape = (6, 4, 4, 8)  # N, H, W, C
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for ax, norm in zip(axes, ["batch", "layer", "instance", "group"]):
    kw = {"num_groups": 4} if norm == "group" else {}
    mask = statistics_mask(norm, shape, **kw)
    print(f"{norm:8s} axes {NORM_AXES[norm]}: the statistics of x[0,0,0,0] pool {mask.sum():3d} activations")
    ax.imshow(mask.any(axis=(1, 2)), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"{norm} norm", xlabel="channel C", ylabel="example N")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same batch through the library's layers: after each one, the mean is 0 and the variance 1 over exactly its
# own axes (the affine part starts at $\gamma = 1$, $\beta = 0$).

# %%
x = jnp.asarray(3.0 + 2.0 * rng.standard_normal(shape), jnp.float32)
axes_of = {"batch": (0, 1, 2), "layer": (1, 2, 3), "instance": (1, 2)}
for norm in ["batch", "layer", "instance", "group"]:
    layer = make_norm(norm, train=True, **({"num_groups": 4} if norm == "group" else {}))
    variables = layer.init(jax.random.key(0), x)
    y = layer.apply(variables, x, mutable=["batch_stats"])[0] if norm == "batch" else layer.apply(variables, x)
    if norm == "group":  # statistics per example and group of 2 channels
        y, ax = y.reshape(*shape[:3], 4, 2), (1, 2, 4)
    else:
        ax = axes_of[norm]
    mean, var = jnp.mean(y, axis=ax), jnp.var(y, axis=ax)
    print(f"{norm:8s} over axes {ax}: max |mean| = {float(jnp.abs(mean).max()):.1e}, "
          f"variance in [{float(var.min()):.4f}, {float(var.max()):.4f}]")
    assert float(jnp.abs(mean).max()) < 1e-4

# %% [markdown]
# **Try this**
# - `num_groups=1` or `num_groups=8` for GroupNorm: compare its mask with LayerNorm's and InstanceNorm's.
# - `statistics_mask("batch", shape, index=(3, 1, 2, 5))`: another activation, the same kind of set.

# %% [markdown]
# ## 2. BatchNorm depends on the batch; GroupNorm does not
#
# In training, BatchNorm normalizes an example with statistics of the other examples in its batch. With large
# batches those statistics are stable; with 2 or 4 examples they are noisy, so the same image gets a different
# output depending on its batch-mates (and at test time, running averages replace them, which do not match the
# noisy training ones). GroupNorm's statistics come from the example itself. Below: one example, put into 30
# batches of random companions; the spread of its normalized output over those batches, per batch size.

# %%
example = jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.float32)
bn, gn = make_norm("batch", train=True), make_norm("group", train=True, num_groups=4)
bn_vars, gn_vars = bn.init(jax.random.key(0), example), gn.init(jax.random.key(0), example)
sizes = [2, 4, 8, 16, 32]
spread = {"batch": [], "group": []}
for n in sizes:
    outs = {"batch": [], "group": []}
    for _ in range(30):
        batch = jnp.concatenate([example, jnp.asarray(rng.standard_normal((n - 1, 4, 4, 8)), jnp.float32)])
        outs["batch"].append(bn.apply(bn_vars, batch, mutable=["batch_stats"])[0][0])
        outs["group"].append(gn.apply(gn_vars, batch)[0])
    for k in spread:
        spread[k].append(float(jnp.std(jnp.stack(outs[k]), axis=0).mean()))
print("spread of the example's output over batches:", {k: np.round(v, 4).tolist() for k, v in spread.items()})
plt.plot(sizes, spread["batch"], "o-", label="BatchNorm")
plt.plot(sizes, spread["group"], "s-", label="GroupNorm")
plt.xscale("log", base=2)
plt.xlabel("batch size")
plt.ylabel("std of the same example's output")
plt.legend()
plt.show()
assert max(spread["group"]) < 1e-5 and spread["batch"][0] > spread["batch"][-1]

# %% [markdown]
# **Try this**: use `make_norm("layer", True)` or `"instance"` in place of GroupNorm, or companions drawn from a
# different distribution (`3 + rng.standard_normal(...)`): BatchNorm's output moves with them.

# %% [markdown]
# **What the noise costs, measured**: the experiment `normalizers` trains the same CNN with every normalizer at
# batch sizes 32 down to 2 with Wu & He's protocol (rate proportional to the batch, equal epochs, BatchNorm
# evaluated with its running averages) on MNIST-1D. BatchNorm's training loss and test error rise at batch 2
# while GroupNorm's do not, as in Wu & He's Figure 1 (their ResNet-50 on ImageNet: 23.6% -> 34.7% for BatchNorm,
# 24.1% -> 24.1% for GroupNorm). `nnbasics run normalizers --quick` (a few minutes on a laptop CPU) draws the
# figure beside the paper's numbers; `nnbasics run normalizers` adds every normalizer and the batch sizes
# between. On an easy task such as the 8x8 digits the lost fit costs no test error: the effect needs a task the
# network has to work for.

# %% [markdown]
# ## 3. Weight Standardization
#
# Instead of the activations, normalize the *weights*: each output unit's kernel is standardized over its fan-in,
# $\hat W = (W - \mathrm{mean}(W)) / \mathrm{std}(W)$ (Qiao et al. 2019). It needs no batch and costs nothing at
# inference. The *scaled* version of NF-ResNets divides by $\mathrm{std}(W)\sqrt{\text{fan-in}}$, so that
# $\sum_i \hat W_i^2 = 1$ and a unit-variance input gives a unit-variance output.

# %%
kernel = jnp.asarray(0.5 + 3.0 * rng.standard_normal((3, 3, 16, 4)), jnp.float32)
ws = standardize_kernel(kernel)
sws = standardize_kernel(kernel, scaled=True)
print("WS: per-unit mean", np.round(np.asarray(ws.mean(axis=(0, 1, 2))), 5), "std",
      np.round(np.asarray(ws.std(axis=(0, 1, 2))), 4))
print("scaled WS: per-unit sum of squares", np.round(np.asarray((sws**2).sum(axis=(0, 1, 2))), 4))
inp = jnp.asarray(rng.standard_normal((4096, 3 * 3 * 16)), jnp.float32)
print("variance of (unit-variance input) @ scaled-WS kernel:", float(jnp.var(inp @ sws.reshape(-1, 4))))

# %% [markdown]
# **Try this**: `standardize_kernel(jnp.ones((3, 3, 16, 4)))`, a kernel with zero variance: epsilon keeps the
# result finite (all zeros). Compare `scaled=True` with and without.

# %% [markdown]
# ## 4. Signal propagation without normalization
#
# Why normalize at all? In a residual net $x_{l+1} = x_l + f_l(x_l)$ the variances add up block after block, and
# without normalization the signal explodes with depth. BatchNorm inside each branch keeps the branch's output at
# unit variance, so the variance grows only linearly. Brock, De & Smith (2021) plot these statistics at
# initialization on Gaussian input (*signal propagation plots*) and build NF-ResNets that behave like that without
# any normalization layer: each block computes $x_{l+1} = x_l + \alpha f_l(x_l/\beta_l)$, with $\beta_l$ the expected
# standard deviation of $x_l$ and Scaled WS convs, so the variance is predicted to be $1 + k\alpha^2$ after the
# $k$-th block of a stage. `signal_propagation` records the average channel variance after every block.

# %%
xg = unit_gaussian((8, 16, 16, 3))
fig, ax = plt.subplots()
for name in ["nf_resnet", "bn_relu_resnet", "unnorm_resnet"]:
    model = get_model(name, num_classes=10, stage_sizes=(3, 3, 3), width=16)
    variables = model.init(jax.random.key(0), xg[:1])
    stats = signal_propagation(model, variables, xg)
    ax.plot(stats["avg_var"], "o-", label=name)
    print(f"{name:15s} average channel variance per block: {np.round(stats['avg_var'], 2)}")
predicted = nf_predicted_variance((3, 3, 3), alpha=0.2)
ax.plot(predicted, "k--", label="NF prediction 1 + k alpha^2")
ax.set(yscale="log", xlabel="residual block", ylabel="average channel variance")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The NF-ResNet stays near its prediction (to the noise of 8 random images) without any normalization layer; the
# unnormalized ResNet's variance grows block after block; the BN-ReLU net's grows within a stage and resets at the
# start of the next (where the shortcut is a normalized projection).
#
# **Try this**: `alpha=0.5` for the NF-ResNet (pass it to `get_model`, and to `nf_predicted_variance`), or deeper
# stages `(6, 6, 6)`.

# %% [markdown]
# ## 5. Adaptive gradient clipping (AGC)
#
# Without BatchNorm, large batches and learning rates make NF-ResNets unstable. NFNets clip each unit's gradient
# *relative to its weights*: for unit $i$ (the weights of one output channel),
#
# $$G_i \leftarrow \lambda\,\frac{\max(\|W_i\|, \epsilon)}{\|G_i\|}\,G_i
# \quad \text{if} \quad \frac{\|G_i\|}{\max(\|W_i\|, \epsilon)} > \lambda,$$
#
# so no step changes a unit's weights by more than a fraction $\lambda$ of their norm (times the learning rate).
# Below: a layer of 6 units with made-up gradients, before and after `clip_unitwise` with $\lambda = 0.1$; the
# library's result equals optax's `adaptive_grad_clip`.

# %%
W = jnp.asarray(rng.standard_normal((3, 3, 8, 6)), jnp.float32)
G = jnp.asarray(rng.standard_normal((3, 3, 8, 6)), jnp.float32) * jnp.asarray([0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
clipped = clip_unitwise(G, W, 0.1)
ratio = lambda g: np.asarray(unitwise_norm(g)[0, 0, 0] / unitwise_norm(W)[0, 0, 0])  # noqa: E731
print("||G_i|| / ||W_i|| before:", np.round(ratio(G), 3))
print("||G_i|| / ||W_i|| after: ", np.round(ratio(clipped), 3))
ref = optax.adaptive_grad_clip(0.1).update({"w": G}, optax.EmptyState(), {"w": W})[0]["w"]
print("max |clip_unitwise - optax.adaptive_grad_clip| =", float(jnp.max(jnp.abs(clipped - ref))))
assert float(jnp.max(jnp.abs(clipped - ref))) < 1e-5
plt.bar(np.arange(6) - 0.2, ratio(G), 0.4, label="before")
plt.bar(np.arange(6) + 0.2, ratio(clipped), 0.4, label="after AGC")
plt.axhline(0.1, color="k", ls="--", label="$\\lambda$")
plt.yscale("log")
plt.xlabel("unit")
plt.ylabel("$\\|G_i\\| / \\|W_i\\|$")
plt.legend()
plt.show()

# %% [markdown]
# Units whose ratio is below $\lambda$ keep their gradient; the others are scaled down to exactly $\lambda$, and the
# direction of every unit's gradient is kept.
#
# **Try this**: $\lambda = 0.01$ (the paper's value for large batches), or a unit with zero weights
# (`W = W.at[..., 0].set(0)`): then $\epsilon = 10^{-3}$ decides how much it may move.
