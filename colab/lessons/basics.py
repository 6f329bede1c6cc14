# %% [markdown]
# ## Before the experiments: the ideas, one at a time
#
# Each section below explains one idea of the lecture, calls the library function that implements it on a tiny
# example, and plots or prints the number the idea predicts. Every cell runs in a second or two on a laptop CPU.
# The experiments at the end of the notebook then test the same ideas at scale, over several seeds.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nnbasics import TrainConfig, fit, get_model, load_dataset
from nnbasics.analysis import backprop
from nnbasics.analysis.ridge import polynomial_features, ridge_path, rms_error
from nnbasics.models.perceptron import (
    PerceptronParams,
    perceptron_accuracy,
    perceptron_predict,
    perceptron_train,
    perceptron_update,
)
from nnbasics.nn.activations import LECTURE_ACTIVATIONS, autodiff_derivative, derivative, get_activation
from nnbasics.nn.losses import cross_entropy

plt.rcParams["figure.figsize"] = (6, 3.2)

# %% [markdown]
# ## 1. The perceptron and its learning rule
#
# A neuron computes a weighted sum of its inputs plus a bias, $y = \mathbf{x}^T\mathbf{w} + b$, and passes it
# through a nonlinearity. Rosenblatt's perceptron uses the step $g(y) = 1$ if $y > 0$, else $0$: the set where
# it answers 1 is a half-plane, bounded by the line $\mathbf{x}^T\mathbf{w} + b = 0$.
#
# The step has derivative zero almost everywhere, so gradient descent cannot train it. The perceptron rule does,
# one example at a time: predict $\hat y = g(\mathbf{x}^T\mathbf{w} + b)$; if it is wrong, move the weights
# towards the example (when $y = 1$) or away from it (when $y = 0$):
#
# $$\mathbf{w} \leftarrow \mathbf{w} + \eta\,(y - \hat y)\,\mathbf{x}, \qquad b \leftarrow b + \eta\,(y - \hat y).$$
#
# Below, `perceptron_update` applies the rule to the four rows of AND's truth table, epoch by epoch, from zero
# weights. Each line is one example: the prediction, and the weights after the update.

# %%
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y_AND = np.array([0, 0, 0, 1], np.float32)
Y_XOR = np.array([0, 1, 1, 0], np.float32)


def step_through(y_table, epochs=10, lr=1.0):
    """Apply the perceptron rule to the four rows in order, printing every step, until an epoch makes no mistake
    (at most `epochs` epochs)
    return the weights after each epoch."""
    p = PerceptronParams(jnp.zeros(2), jnp.zeros(()))
    history = [p]
    for epoch in range(epochs):
        mistakes = 0
        for x, y in zip(X, y_table):
            y_hat = int(perceptron_predict(p, x[None])[0])
            mistakes += y_hat != y
            p = perceptron_update(p, jnp.asarray(x), jnp.asarray(y), lr)
            print(f"epoch {epoch}  x={x.astype(int)}  y={int(y)}  y_hat={y_hat}  ->  w={np.asarray(p.w)}, b={float(p.b):+.0f}")
        history.append(p)
        print(f"  mistakes in epoch {epoch}: {mistakes}")
        if mistakes == 0:
            break
    return history


and_history = step_through(Y_AND)
print("AND accuracy after the rule converged:", float(perceptron_accuracy(and_history[-1], X, Y_AND)))
assert float(perceptron_accuracy(and_history[-1], X, Y_AND)) == 1.0

# %% [markdown]
# The rule stopped changing the weights once an epoch had no mistakes: AND is linearly separable, and for
# separable data the rule is guaranteed to converge. The plot shows the decision line after each epoch.

# %%
def draw(history, y_table, title, ax):
    ax.scatter(X[:, 0], X[:, 1], c=y_table, cmap="bwr", s=120, edgecolors="k", zorder=3)
    xs = np.linspace(-0.5, 1.5, 2)
    for i, p in enumerate(history[1:], 1):
        w, b = np.asarray(p.w), float(p.b)
        if abs(w[1]) > 1e-9:
            ax.plot(xs, -(w[0] * xs + b) / w[1], alpha=0.3 + 0.7 * i / len(history), label=f"epoch {i}")
        elif abs(w[0]) > 1e-9:
            ax.axvline(-b / w[0], alpha=0.3 + 0.7 * i / len(history), label=f"epoch {i}")
    ax.set(xlim=(-0.5, 1.5), ylim=(-0.5, 1.5), title=title, xlabel="$x_1$", ylabel="$x_2$")
    ax.legend(fontsize=7)


fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
draw(and_history, Y_AND, "AND: the rule converges", axes[0])
xor_history = step_through(Y_XOR, epochs=4)
draw(xor_history, Y_XOR, "XOR: no line separates the classes", axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# On XOR the weights keep moving: every line leaves at least one of the four points on the wrong side, so some
# example is always misclassified and updates the weights again. `perceptron_train` runs the same rule as one
# compiled loop (in a random order each epoch); over 200 epochs the mistakes never reach zero and the accuracy
# never exceeds 3 of 4.

# %%
for name, y_table in [("AND", Y_AND), ("XOR", Y_XOR)]:
    p0 = PerceptronParams(jnp.zeros(2), jnp.zeros(()))
    p, hist = perceptron_train(p0, X, y_table, jax.random.key(0), epochs=200)
    mistakes, acc = np.asarray(hist["mistakes"]), np.asarray(hist["accuracy"])
    print(f"{name}: mistakes in the last 5 epochs {mistakes[-5:]}, best accuracy {acc.max():.2f}")
    plt.plot(mistakes, label=name)
plt.xlabel("epoch")
plt.ylabel("mistakes in the epoch")
plt.legend()
plt.show()
assert acc.max() <= 0.75  # XOR: a single perceptron never gets all four right

# %% [markdown]
# **Try this**
# - Replace `Y_AND` by OR (`[0, 1, 1, 1]`) or NAND (`[1, 1, 1, 0]`): both are separable, so the rule converges.
# - Change `lr` in `step_through(Y_AND, lr=0.1)`: from zero weights the learning rate only rescales the line,
#   so the number of mistakes is the same.

# %% [markdown]
# ## 2. Two layers solve XOR
#
# One layer gives one linear boundary. A hidden layer of a few units with a nonlinearity bends the input space
# first: each hidden unit is a half-plane, and the output combines them, so a two-layer network can represent
# XOR (and, with enough units, any continuous function on a bounded set). It is trained by gradient descent,
# so its units use a differentiable nonlinearity (here tanh) and its loss is the cross-entropy of section 4.
# `fit` trains three seeds side by side; the plot shows the learned decision regions of the first.

# %%
xor = load_dataset("xor")
mlp = get_model("mlp", num_classes=2, hidden=(8,), activation="tanh")
result = fit(mlp, xor, TrainConfig(steps=300, batch_size=4, eval_every=300, seeds=(0, 1, 2), data_parallel=False,
                                   optimizer={"name": "adam", "learning_rate": 0.05}))
print("XOR accuracy per seed:", np.round(result.final("test_accuracy"), 2))
grid = np.stack(np.meshgrid(np.linspace(-0.5, 1.5, 101), np.linspace(-0.5, 1.5, 101)), -1).reshape(-1, 2)
prob = jax.nn.softmax(mlp.apply(result.member_state(0).variables, jnp.asarray(grid, jnp.float32)))[:, 1]
plt.contourf(grid[:, 0].reshape(101, 101), grid[:, 1].reshape(101, 101), np.asarray(prob).reshape(101, 101),
             levels=20, cmap="bwr", alpha=0.6)
plt.scatter(X[:, 0], X[:, 1], c=Y_XOR, cmap="bwr", s=120, edgecolors="k")
plt.title("a two-layer MLP on XOR")
plt.gca().set_aspect("equal")
plt.show()

# %% [markdown]
# **Try this**
# - `hidden=(2,)`: two hidden units are enough in principle, but some seeds get stuck; look at the accuracies.
# - `activation="identity"`: without the nonlinearity the two layers collapse to one linear map, and XOR is lost.

# %% [markdown]
# ## 3. Activation functions and their derivatives
#
# Backpropagation multiplies, layer by layer, by the derivative of the activation. That is why its shape
# matters:
# - sigmoid $\sigma(y) = 1/(1+e^{-y})$ has $\sigma' = \sigma(1-\sigma) \le 1/4$: every sigmoid layer shrinks the
#   gradient at least four-fold, and for large $|y|$ the unit *saturates* ($\sigma' \approx 0$);
# - tanh is zero-centred, but $\tanh' = 1 - \tanh^2$ also vanishes for large $|y|$;
# - ReLU $\max(0, y)$ passes the gradient unchanged where $y > 0$ and blocks it where $y < 0$; a unit whose input
#   is negative on every example never learns again (a *dead* ReLU);
# - leaky ReLU ($\max(\alpha y, y)$, $\alpha = 0.02$) and PReLU (a learned $\alpha$, initially 0.25) keep a small
#   gradient on the negative side.
#
# `get_activation(name)` is the function, `derivative(name)` the derivative written by hand; the cell checks each
# against `jax.grad`.

# %%
y = jnp.linspace(-5, 5, 401)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
for name in LECTURE_ACTIVATIONS:
    g, dg = get_activation(name), derivative(name)
    a1.plot(y, g(y), label=name)
    a2.plot(y, dg(y), label=name)
    err = float(jnp.max(jnp.abs(dg(y) - autodiff_derivative(g)(y))))
    print(f"{name:10s} max|g'(y) by hand - jax.grad| = {err:.1e}   g'(-3) = {float(dg(jnp.array(-3.0))):.3f}")
    assert err < 1e-5
a1.set(title="g(y)", ylim=(-1.5, 3))
a2.set(title="g'(y)")
a1.legend(fontsize=8)
plt.show()
print("largest sigmoid derivative:", float(derivative("sigmoid")(y).max()), "-> through 10 sigmoid layers at most",
      0.25**10)

# %% [markdown]
# The last line is the vanishing gradient in one number: ten sigmoid layers scale a gradient by at most
# $0.25^{10} \approx 10^{-6}$. The `activations` experiment below measures it in trained networks, with the dead
# ReLUs and the speed of ReLU against tanh.
#
# **Try this**
# - Add `"gelu"`, `"elu"` or `"softplus"` to the loop (their derivatives come from `jax.grad`).
# - Multiply `derivative("tanh")` at a few random inputs over 20 layers, and compare with ReLU.

# %% [markdown]
# ## 4. The softmax classifier and the cross-entropy loss
#
# For $C$ classes the last layer outputs $C$ scores (logits) $z$. The softmax turns them into probabilities
# $p_c = e^{z_c} / \sum_k e^{z_k}$, and the cross-entropy of the true class $y$ is $-\log p_y$: small when the
# network is confident and right, large when it is confident and wrong. Its gradient with respect to the logits
# is simply $p - \text{onehot}(y)$, which is where backpropagation starts. A batch of $N$ examples is a tensor
# of shape $(N, C)$ and the loss is the mean over its rows.

# %%
logits = jnp.array([[2.0, 1.0, -1.0], [0.5, 0.5, 0.5], [-2.0, 4.0, 0.0]])
labels = jnp.array([0, 2, 1])
p = jax.nn.softmax(logits)
print("softmax rows:\n", np.round(np.asarray(p), 3))
manual = -jnp.mean(jnp.log(p[jnp.arange(3), labels]))
print(f"cross_entropy = {float(cross_entropy(logits, labels)):.4f},  -mean log p_y = {float(manual):.4f}")
grad = jax.grad(cross_entropy)(logits, labels)
expected = (p - jax.nn.one_hot(labels, 3)) / 3
print("max |grad - (p - onehot) / N| =", float(jnp.max(jnp.abs(grad - expected))))
assert jnp.allclose(grad, expected, atol=1e-6)

# %% [markdown]
# **Try this**
# - Add a constant to every logit of a row: the softmax (and the loss) do not change.
# - Scale the logits by 10: the loss of the correct rows goes to 0, the wrong row's grows linearly.
# - Swap in the squared error of the softmax outputs, `nnbasics.nn.losses.SoftmaxSquaredError()`, and scale
#   the logits by 10: the wrong row's gradient all but vanishes (it carries softmax's $p(1-p)$), while
#   cross-entropy's stays $p - y$. The `losses` experiment measures what that costs in training, and label
#   smoothing (`LabelSmoothing(epsilon=0.1)`, a loss with a parameter) against over-confidence.

# %% [markdown]
# ## 5. Backpropagation by hand
#
# The chain rule, applied from the loss back to the input: each layer receives $\partial L/\partial x^{(l)}$ and
# returns $\partial L/\partial x^{(l-1)}$, collecting its weight gradients on the way (for a linear layer
# $x^{(l)} = W x^{(l-1)} + b$: $\partial L/\partial W = \delta\, x^{(l-1)T}$, $\partial L/\partial x^{(l-1)} = W^T\delta$).
# `nnbasics.analysis.backprop` writes every layer's backward pass by hand; below it is compared with `jax.grad`.

# %%
layers = backprop.mlp_layers((4, 16, 16, 3), "relu")
params = backprop.init_params(layers, seed=0, input_shape=(4,))
xb = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), jnp.float32)
yb = jnp.asarray(np.random.default_rng(1).integers(0, 3, 8))
hand = backprop.gradients(layers, params, xb, yb)
auto = backprop.autodiff_gradients(layers, params, xb, yb)
for layer, row in zip(layers, backprop.relative_errors(hand, auto)):
    print(type(layer).__name__, row)
print("largest relative error, hand-written against jax.grad:", backprop.max_relative_error(hand, auto))
assert backprop.max_relative_error(hand, auto) < 1e-4

# %% [markdown]
# **Try this**
# - Change `"relu"` to `"sigmoid"` or `"prelu"` (PReLU also gets a gradient for its slope).
# - `backprop.conv_layers((4, 8), (1, 2), 3, "relu")` with `input_shape=(8, 8, 1)` builds a small conv net.

# %% [markdown]
# ## 6. Regularization: ridge regression and dropout
#
# A degree-9 polynomial through 10 noisy points fits them exactly and oscillates wildly in between
# (overfitting). Ridge (Tikhonov) regression adds $\lambda\|\theta\|^2$ to the squared error,
# $\theta^*(\lambda) = (\Phi^T\Phi + \lambda I)^{-1}\Phi^T y$, which pulls the weights towards zero; in a network the
# same penalty is *weight decay*.

# %%
poly = load_dataset("polynomial", n_train=10)
phi_train = polynomial_features(poly.x_train[:, 0], 9)
phi_test = polynomial_features(poly.x_test[:, 0], 9)
lams = [0.0, 1e-8, 1e-3, 1.0]
thetas = ridge_path(phi_train, poly.y_train[:, 0], lams)
for lam, theta, tr, te in zip(lams, thetas, rms_error(phi_train, poly.y_train, thetas), rms_error(phi_test, poly.y_test, thetas)):
    print(f"lambda={lam:<6g} train RMS {tr:.3f}  test RMS {te:.3f}  |theta| {np.linalg.norm(theta):.3g}")
    plt.plot(poly.x_test[:, 0], phi_test @ theta, label=f"$\\lambda$={lam:g}")
plt.scatter(poly.x_train[:, 0], poly.y_train[:, 0], c="k", zorder=3)
plt.ylim(-2, 2)
plt.legend(fontsize=8)
plt.title("degree-9 polynomial, ridge")
plt.show()

# %% [markdown]
# *Dropout* zeroes each hidden unit with probability $p$ during training and scales the survivors by $1/(1-p)$,
# so the expected activation is unchanged; at evaluation it does nothing. Every training step draws a fresh mask
# (a fresh key of the `dropout` rng stream), so the network cannot rely on any single unit. Below: the library's
# MLP with `dropout=0.5`, the same input through 2000 masks; their average is the evaluation output.

# %%
net = get_model("mlp", num_classes=3, hidden=(64,), dropout=0.5)
xd = jnp.ones((1, 5))
variables = net.init(jax.random.key(0), xd)
eval_out = net.apply(variables, xd, train=False)
keys = jax.random.split(jax.random.key(1), 2000)
train_outs = jax.vmap(lambda k: net.apply(variables, xd, train=True, rngs={"dropout": k}))(keys)[:, 0]
np.set_printoptions(precision=3, suppress=True)
print("two training passes:", np.asarray(train_outs[0]), np.asarray(train_outs[1]))
print("mean of 2000 passes:", np.asarray(train_outs.mean(0)))
print("evaluation output:  ", np.asarray(eval_out[0]))
assert float(jnp.max(jnp.abs(train_outs.mean(0) - eval_out[0]))) < 0.1 * float(jnp.max(jnp.abs(eval_out))) + 0.05

# %% [markdown]
# **Try this**
# - Ridge: move $\lambda$ between `1e-8` and `1`; the test error is smallest in between (the `regularization`
#   experiment finds that minimum).
# - Dropout: `dropout=0.9`; the average over masks still matches, but each single pass is much noisier.
