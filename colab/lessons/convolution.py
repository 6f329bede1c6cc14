# %% [markdown]
# ## Before the experiments: the ideas, one at a time
#
# Each section explains one idea of the lecture, calls the library on a tiny example and prints or plots the
# number the idea predicts; the experiments at the end test the same ideas with trained networks. Images are
# NHWC: (batch, height, width, channels), kernels (kh, kw, in channels, out channels).

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nnbasics.analysis.conv_matrix import (
    band_fraction,
    compose_kernels,
    conv_by_matrix,
    conv_matrix,
    is_doubly_block_toeplitz,
    is_toeplitz,
    toeplitz_matrix,
)
from nnbasics.analysis.equivariance import equivariance_error, shift_sensitivity
from nnbasics.analysis.receptive_field import Layer, empirical_receptive_field, receptive_field_table
from nnbasics.data.photos import photo
from nnbasics.nn.conv import conv_general
from nnbasics.nn.local import param_counts
from nnbasics.nn.pooling import max_pool, mean_pool

plt.rcParams["figure.figsize"] = (6, 3.2)
rng = np.random.default_rng(0)
camera = photo("camera")[::4, ::4, :1]  # a 128 x 128 grey photograph shipped with scikit-image
print("image", camera.shape)

# %% [markdown]
# ## 1. Locality and weight sharing
#
# A fully connected layer from an $H \times W$ image to an $H \times W$ feature map connects every output to every
# pixel. Two assumptions about images cut that down. *Locality*: an output depends only on a small window of the
# input around it (a locally connected layer, one $k \times k$ filter per output position). *Weight sharing*: the
# same filter is used at every position, which is a convolution. `param_counts` counts the three.

# %%
for size in (8, 32, 224):
    counts = param_counts((size, size), cin=3, features=16, kernel_size=(3, 3))
    print(f"{size:3d}x{size:<3d}x3 -> {size}x{size}x16: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

# %% [markdown]
# The convolution's count does not depend on the image size at all: the same 3x3x3x16 filters (and 16 biases)
# apply to an image of any size.
#
# **Try this**: a 5x5 kernel, or 64 input channels: which count grows by how much?

# %% [markdown]
# ## 2. A convolution is a Toeplitz matrix
#
# A convolution is linear, so it is a matrix $M$ with $M\,\mathrm{vec}(x) = \mathrm{vec}(\mathrm{conv}(x))$. In 1-D
# with one channel, row $i$ of $M$ holds the kernel at columns $i \dots i+k-1$: every diagonal is constant (a
# *Toeplitz* matrix). Weight sharing makes the diagonals constant; locality makes the matrix banded (mostly
# zeros). In 2-D the matrix is block Toeplitz with Toeplitz blocks.

# %%
T = toeplitz_matrix([1.0, 2.0, 3.0], n=8)  # the kernel (a, b, c) on a signal of length 8, no padding
print(T.astype(int))
print("Toeplitz:", is_toeplitz(T), "| nonzero fraction:", round(band_fraction(T), 3))
signal = rng.standard_normal(8)
lib = conv_general(jnp.asarray(signal, jnp.float32)[None, :, None], jnp.asarray([1.0, 2.0, 3.0]).reshape(3, 1, 1),
                   padding="VALID")
print("max |T x - conv(x)| =", float(np.max(np.abs(T @ signal - np.asarray(lib)[0, :, 0]))))

# %% [markdown]
# Now a real layer: a 3x3 kernel with 2 input and 4 output channels, stride 1, zero padding "SAME", on a 6x6
# image. `conv_matrix` builds its (6*6*4) x (6*6*2) matrix; the product equals the library's convolution
# (`nnbasics.nn.conv.conv_general`, the op every model uses), to float32 rounding.

# %%
kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
M = conv_matrix(kernel, (6, 6), strides=1, padding="SAME")
by_matrix = conv_by_matrix(x, kernel, padding="SAME")
by_conv = np.asarray(conv_general(jnp.asarray(x), jnp.asarray(kernel), padding="SAME"))
err = float(np.max(np.abs(by_matrix - by_conv)))
print("matrix", M.shape, "| max |M x - conv(x)| =", err, "| nonzero fraction", round(band_fraction(M), 3))
assert err < 1e-5
single = conv_matrix(kernel[..., :1, :1], (6, 6), padding="SAME")  # one channel in, one out
print("single channel: doubly block Toeplitz with 6x6 blocks:", is_doubly_block_toeplitz(single, (6, 6)))
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
axes[0].imshow(single, cmap="RdBu")
axes[0].set_title("1 -> 1 channel, 36 x 36")
axes[1].imshow(M, cmap="RdBu")
axes[1].set_title("2 -> 4 channels, 144 x 72")
plt.show()

# %% [markdown]
# **Try this**
# - `strides=2, padding="VALID"` in `conv_matrix`, against the stride-1 `padding="VALID"` matrix: it keeps only the
#   rows of every other output position (a strided convolution is a convolution followed by subsampling).
# - `padding="VALID"`: the rows whose window falls off the image disappear.

# %% [markdown]
# ## 3. Translation equivariance, and pooling for small shifts
#
# Because the same filter is applied at every position, shifting the input shifts the output:
# $\mathrm{conv}(\mathrm{shift}(x)) = \mathrm{shift}(\mathrm{conv}(x))$ (exactly for circular shifts and a circular
# conv; away from the border, where the zero padding enters, for ordinary shifts).
# Pooling then summarizes a window (its max or mean), so after pooling the output changes
# less when the input moves by a pixel or two, which is the stability to small shifts the lecture asks for.

# %%
edge = jnp.asarray([[1, 0, -1], [2, 0, -2], [1, 0, -1]], jnp.float32).reshape(3, 3, 1, 1)  # a Sobel filter


def conv(img):
    return conv_general(img, edge, padding="SAME")


img = jnp.asarray(camera[None])
err = equivariance_error(conv, img, (5, 7), circular=False, border=8)
print("||conv(shift x) - shift(conv x)|| / ||conv x||, shift (5, 7), 8-pixel border cropped:", err)
assert err < 1e-6
shifts = [(0, 1), (1, 0), (1, 1), (0, 2)]
for name, f in [("conv", conv), ("conv + 4x4 max pool", lambda v: max_pool(jnp.abs(conv(v)), 4)),
                ("conv + 4x4 mean pool", lambda v: mean_pool(jnp.abs(conv(v)), 4))]:
    print(f"{name:22s} relative change under 1-2 pixel shifts: {shift_sensitivity(f, img, shifts):.3f}")
fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
for ax, im, title in zip(axes, [camera[..., 0], np.asarray(conv(img))[0, ..., 0],
                                np.asarray(max_pool(jnp.abs(conv(img)), 4))[0, ..., 0]],
                         ["input", "conv (vertical edges)", "|conv|, 4x4 max pool"]):
    ax.imshow(im, cmap="gray")
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# **Try this**: a larger pooling window (8), or larger shifts (`(0, 4)`, `(4, 4)`) in `shifts`: how does the gap
# between the pooled and the unpooled outputs change?

# %% [markdown]
# ## 4. Receptive fields, and dilation
#
# The *receptive field* of a unit is the set of input pixels it depends on. A stack of stride-1 $k \times k$ convs
# grows it linearly: $1 + L(k-1)$ after $L$ layers. A *dilated* conv with dilation $d$ spreads its $k$ taps $d$
# pixels apart, so its effective size is $d(k-1)+1$ at the same number of weights. Dilations 1, 2, 4 (Yu & Koltun
# 2016) give $3\times3$, $7\times7$, $15\times15$: exponential growth with linear parameters, and no loss of
# resolution. `receptive_field_table` computes it from the layer sizes; `empirical_receptive_field` measures it as
# the support of the gradient of one output unit with respect to the input.

# %%
dilations = (1, 2, 4)
table = receptive_field_table([Layer(3, dilation=d, padding="SAME") for d in dilations])
print("analytic:", [(name, rf.size[0]) for name, rf in table])
kernels = [jnp.asarray(rng.standard_normal((3, 3, 1, 1)), jnp.float32) for _ in dilations]
fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
for n in range(1, 4):
    def stack(v, n=n):
        for k, d in zip(kernels[:n], dilations[:n]):
            v = jnp.tanh(conv_general(v, k, padding="SAME", dilation=d))  # tanh' > 0: no path is blocked
        return v

    measured = empirical_receptive_field(stack, (31, 31, 1))
    print(f"{n} layer(s), dilations {dilations[:n]}: measured {measured.size}, analytic {table[n][1].size}")
    assert measured.size == table[n][1].size
    axes[n - 1].imshow(measured.grad_map > 0, cmap="Greys")
    axes[n - 1].set_title(f"dilations {dilations[:n]}: {measured.size[0]}x{measured.size[1]}")
plt.show()

# %% [markdown]
# **Try this**
# - Dilations `(1, 1, 1)`: 3, 5, 7, a linear growth. Dilations `(1, 2, 4, 8)`: 31 (make the input at least 31x31).
# - Add a stride: `Layer(3, stride=2)` doubles the *jump* between neighbouring units, and every later layer grows
#   the field twice as fast.

# %% [markdown]
# ## 5. Two 3x3 convs see as far as one 5x5
#
# Stacking two 3x3 convs (no nonlinearity between them) gives one linear map with a 5x5 receptive field; its
# kernel is the convolution of the two kernels (`compose_kernels`). It has $2 \cdot 9 = 18$ weights per channel
# pair instead of 25, and with a nonlinearity between the layers it is also more expressive: the reason VGG uses
# only 3x3 convs.

# %%
k1 = rng.standard_normal((3, 3, 1, 1)).astype(np.float32)
k2 = rng.standard_normal((3, 3, 1, 1)).astype(np.float32)
k5 = np.asarray(compose_kernels(k1, k2))
two = conv_general(conv_general(img, jnp.asarray(k1), padding="VALID"), jnp.asarray(k2), padding="VALID")
one = conv_general(img, jnp.asarray(k5), padding="VALID")
print("composed kernel", k5.shape[:2], "| max |two 3x3 - one 5x5| =", float(jnp.max(jnp.abs(two - one))))
assert float(jnp.max(jnp.abs(two - one))) < 1e-3
print("weights: two 3x3 =", k1.size + k2.size, " one 5x5 =", k5.size)

# %% [markdown]
# **Try this**: compose three 3x3 kernels (7x7 with 27 weights against 49) or a 3x3 with a 5x5.
