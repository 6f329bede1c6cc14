# %% [markdown]
# ## Before the experiments: the ideas, one at a time
#
# Each section explains one idea of the lecture, calls the library on a tiny example and prints or plots the
# number the idea predicts; the experiments at the end train the networks and test the claims over seeds.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nnbasics.analysis.model_stats import count_params
from nnbasics.analysis.receptive_field import architecture_layers, receptive_field
from nnbasics.models import get_model, model_info
from nnbasics.models.resnet import PAPER_PARAMS, BasicBlock

plt.rcParams["figure.figsize"] = (6, 3.2)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The model zoo, counted
#
# From AlexNet (2012) to ResNet (2015) ImageNet classifiers went from 8 to 152 layers. AlexNet has five conv layers
# with large early kernels (11x11 stride 4) and three huge fully connected layers that hold most of its 61M
# weights. VGG uses only 3x3 convs, stacked (two 3x3 see as far as one 5x5 with fewer weights), and is even larger
# (138M for VGG-16), again mostly in its fully connected head. GoogLeNet's Inception modules run 1x1, 3x3 and 5x5
# convs and a pooling in parallel, with 1x1 convs reducing the channels first, and end in a global average pool
# instead of a big head: 7M weights for 22 layers. ResNets are deep stacks of small blocks with shortcuts.
#
# The library's models are linen modules; `count_params` counts their weights without running them (shapes only),
# and each registered model carries the count of the reference implementation (torchvision for ImageNet models).

# %%
rows = []
for name in ["alexnet", "vgg11", "vgg16", "googlenet", "resnet18", "resnet50"]:
    info = model_info(name)
    n = count_params(get_model(name, num_classes=1000), info["input_shape"])
    rows.append((name, n, info.get("reference_params")))
    print(f"{name:10s} {n / 1e6:7.2f}M parameters; reference {info.get('reference_params', 0) / 1e6:7.2f}M")
    assert n == info["reference_params"]
for name, paper in PAPER_PARAMS.items():
    n = count_params(get_model(name, num_classes=10), (32, 32, 3))
    print(f"CIFAR {name:10s} {n / 1e6:5.3f}M parameters; the paper's table says {paper / 1e6:.2f}M")

# %% [markdown]
# **Try this**: count `vgg19`, `resnet152` or `plain56` (a ResNet-56 without shortcuts: option-A shortcuts have no
# weights, so the count equals ResNet-56's), or count AlexNet with `num_classes=10`: how much of it was the head?

# %% [markdown]
# ## 2. How far they see
#
# Each conv or pooling layer widens the receptive field; strides multiply how fast later layers widen it. The deep
# ImageNet ResNets end with units whose field is larger than the whole 224x224 image (it extends into the padding).

# %%
for name in ["alexnet", "vgg16", "resnet18", "resnet50", "resnet20"]:
    layers = architecture_layers(name)
    rf = receptive_field(layers)
    print(f"{name:9s} {len(layers):3d} conv/pool layers: receptive field {rf.size[0]}x{rf.size[1]}, jump {rf.jump[0]}")

# %% [markdown]
# **Try this**: `receptive_field(architecture_layers("resnet50")[:10])`: the field after the first few layers only.

# %% [markdown]
# ## 3. A residual block against a plain one
#
# A residual block computes $y = \mathrm{ReLU}(x + F(x))$ instead of $y = \mathrm{ReLU}(F(x))$, where $F$ is two
# 3x3 convs (with BatchNorm). If the best thing a block can do is nothing, $F = 0$ is easy to learn, while a plain
# block must learn the identity through its convolutions. In the backward pass the shortcut adds an identity term,
# $\partial y/\partial x = I + \partial F/\partial x$ (before the ReLU), so a gradient reaches the first layers of a
# deep net without passing through every layer's weights.
#
# Below: 20 library `BasicBlock`s at initialization (He init, BatchNorm in training mode), once with shortcuts and
# once without, on a batch of 16 random 8x8 feature maps. The first plot is the forward signal: how much each
# block's output still resembles the network's input (the cosine of the two, centred over the batch). The second is
# the backward signal: the norm of the gradient of a random read-out with respect to each block's input.

# %%
depth, width = 20, 16
x0 = jnp.asarray(rng.standard_normal((16, 8, 8, width)), jnp.float32)
readout = jnp.asarray(rng.standard_normal((16, 8, 8, width)), jnp.float32)
signal = {}
for residual in (True, False):
    block = BasicBlock(width, residual=residual, norm="batch")
    keys = jax.random.split(jax.random.key(0), depth)
    params = [block.init(k, x0, True) for k in keys]

    def net(taps, params=params, block=block):
        xs, x = [], x0
        for p, tap in zip(params, taps):
            x = block.apply(p, x + tap, True, mutable=["batch_stats", "intermediates"])[0]
            xs.append(x)
        return jnp.sum(x * readout) / x.size**0.5, xs

    taps = [jnp.zeros_like(x0)] * depth
    grads, xs = jax.jit(jax.grad(net, has_aux=True))(taps)
    centred = x0 - x0.mean(0)
    cos = [float(jnp.sum((x - x.mean(0)) * centred) / (jnp.linalg.norm(x - x.mean(0)) * jnp.linalg.norm(centred)))
           for x in xs]
    gnorm = [float(jnp.linalg.norm(g)) for g in grads]
    signal["residual" if residual else "plain"] = (cos, gnorm)
    print(f"{'residual' if residual else 'plain':8s}: cosine with the input after blocks 1, 10, 20: "
          f"{cos[0]:.2f} {cos[9]:.2f} {cos[-1]:.2f}; "
          f"|gradient| at block 1 / at block {depth} = {gnorm[0] / gnorm[-1]:.3g}")
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
for name, (cos, gnorm) in signal.items():
    a1.plot(range(1, depth + 1), cos, label=name)
    a2.semilogy(range(1, depth + 1), gnorm, label=name)
a1.set(xlabel="block", ylabel="cosine(block output, input)", title="forward")
a2.set(xlabel="block", ylabel="|dL / d input of block|", title="backward")
a1.legend()
plt.tight_layout()
plt.show()
ratio = {k: g[0] / g[-1] for k, (_, g) in signal.items()}
assert ratio["plain"] > ratio["residual"]

# %% [markdown]
# Through the shortcuts, the residual net's output still carries its input many blocks later; the plain net's
# output is unrelated to its input after the first block. Backwards, the gradient's size changes across the depth
# of both nets (BatchNorm nets amplify gradients on the way to the input), but by a far larger factor in the plain
# net: its first layers get gradients of a very different scale from its last, which is one face of why deep plain
# nets are hard to train.

# %% [markdown]
# ### Starting every block as the identity
#
# If the last BatchNorm of each residual branch starts with scale 0 (Goyal et al. 2017; `zero_init_residual=True`),
# then $F(x) = 0$ at initialization and a block passes its (post-ReLU, so non-negative) input on unchanged: a
# 56-layer ResNet starts as a very shallow net, and depth costs nothing at the start. Fixup, SkipInit and the
# NF-ResNets (the normalization notebook) start their residual branches at zero for the same reason; a plain block
# has no identity path, so there is nothing to start from.
#
# It matters at the lecture's depth comparison. On the CPU scale of the experiment `residual` (4/8/16 filters, 8x8
# crops, 8,000 steps), with He et al.'s init ResNet-56 only *ties* ResNet-20 (+0.014 [-0.006, +0.034] in final
# training loss); with the branches starting at zero it trains below it (-0.033 [-0.055, -0.011], every seed), and
# 20 > 32 > 44 > 56 orders as in He et al.'s Fig. 6. The full preset (`nnbasics run residual`) trains its ResNets so.
# The price at that budget: both ResNets train slower than with He et al.'s init (ResNet-20 0.27 against 0.225), the
# shallow one more. With He et al.'s init the deeper net pulls ahead too, from 32,000 steps.

# %%
block = BasicBlock(width, residual=True, norm="batch", zero_init_residual=True)
x = jax.nn.relu(x0)  # a block's input is the previous block's ReLU output
p = block.init(jax.random.key(1), x, True)
y = block.apply(p, x, True, mutable=["batch_stats", "intermediates"])[0]
he = BasicBlock(width, residual=True, norm="batch")
y_he = he.apply(he.init(jax.random.key(1), x, True), x, True, mutable=["batch_stats", "intermediates"])[0]
print(f"max |block(x) - x| at initialization: zero-initialized branch {float(jnp.abs(y - x).max()):.2g}, "
      f"He init {float(jnp.abs(y_he - x).max()):.2g}")
assert float(jnp.abs(y - x).max()) < 1e-6 < float(jnp.abs(y_he - x).max())

# %% [markdown]
# **Try this**
# - `depth = 40`, or `norm="none"` (no BatchNorm, and the residual net's signal grows block after block): how do the
#   two nets' curves change?
# - The degradation experiment below trains plain and residual nets of growing depth: the deeper plain net ends with
#   a *higher training error*, which is not overfitting but an optimization difficulty the shortcuts remove.
# - Rerun the forward/backward plot with `BasicBlock(width, residual=residual, norm="batch", zero_init_residual=True)`:
#   the residual net's cosine stays where the first block's ReLU puts it, block after block.
