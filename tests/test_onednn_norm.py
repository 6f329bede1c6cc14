"""BatchNorm in training on oneDNN (nnbasics.nn.normalization.onednn_batch_norm, the optional extra) equals
`batch_standardize` followed by the affine map: outputs, batch statistics and the gradients of x, scale and
shift (also through the returned mean and variance), for 4-D, 3-D and 2-D activations, under jit and vmap
(members with their own parameters, shared parameters). The oneDNN switch moves a training-mode
`BatchNorm` onto it above the size rule, with the same running averages; below the rule, in evaluation,
with `fused_backward=False` or with the switch off, the module's program has no oneDNN call.

Skips (with the reason) where the extension cannot be built."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.nn import conv, normalization, onednn
from nnbasics.nn.normalization import BatchNorm, _batch_statistics, onednn_batch_norm


@pytest.fixture(autouse=True)
def switch_back():
    yield
    conv.use_onednn(None)


@pytest.fixture(scope="module")
def built():
    if not onednn.load(warn=False):
        pytest.skip(f"oneDNN extension unavailable: {onednn.error()}")


def reference(x, scale, shift, eps=1e-5):
    xhat, mean, var, _ = _batch_statistics(x, eps)
    return xhat * scale + shift, mean, var


def on_onednn(x, scale, shift, eps=1e-5):
    return onednn_batch_norm(x, scale, shift, eps)


def close(a, b, rtol=2e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    err = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-6)
    assert err <= rtol, f"relative error {err:.2e} > {rtol}"


def loss_all(f):  # uses y, the batch mean and the batch variance
    def loss(x, scale, shift):
        y, mean, var = f(x, scale, shift)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[-1])) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
    return loss


def loss_y(f):  # y only (the cotangents of mean and var are symbolic zeros)
    return lambda x, scale, shift: jnp.sum(jnp.sin(f(x, scale, shift)[0]) * jnp.arange(x.shape[-1]))


def inputs(shape, key=0):
    k = jax.random.split(jax.random.key(key), 3)
    c = shape[-1]
    return (jax.random.normal(k[0], shape) * 3.0 + 0.5, jax.random.normal(k[1], (c,)), jax.random.normal(k[2], (c,)))


SHAPES = [(8, 6, 5, 16), (4, 32, 32, 16), (16, 20, 7), (40, 3), (2, 3, 3, 17)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_values_statistics_and_gradients(built, shape):
    x, scale, shift = inputs(shape)
    got, want = jax.jit(on_onednn)(x, scale, shift), reference(x, scale, shift)
    for a, b in zip(got, want):
        close(a, b)
    for loss in (loss_all, loss_y):
        g = jax.jit(jax.grad(loss(on_onednn), (0, 1, 2)))(x, scale, shift)
        r = jax.grad(loss(reference), (0, 1, 2))(x, scale, shift)
        for a, b in zip(g, r):
            close(a, b, 1e-4)


def test_gradient_matches_finite_differences(built):
    x, scale, shift = inputs((6, 3, 2, 4), key=3)
    x64 = np.asarray(x, np.float64)
    f = jax.jit(lambda x: loss_all(on_onednn)(x, scale, shift))
    g = np.asarray(jax.grad(lambda x: loss_all(on_onednn)(x, scale, shift))(x))
    eps, idx = 1e-2, [(0, 0, 0, 0), (3, 2, 1, 2), (5, 1, 0, 3)]
    for i in idx:
        d = np.zeros_like(x64)
        d[i] = eps
        fd = (float(f(jnp.asarray(x64 + d, jnp.float32))) - float(f(jnp.asarray(x64 - d, jnp.float32)))) / (2 * eps)
        assert abs(fd - g[i]) <= 2e-2 * max(1.0, abs(fd)), (i, fd, g[i])


def test_vmap_members_and_shared_parameters(built):
    xs = jax.random.normal(jax.random.key(5), (3, 8, 4, 4, 16))
    scales = jax.random.normal(jax.random.key(6), (3, 16))
    shifts = jax.random.normal(jax.random.key(7), (3, 16))
    for axes in ((0, 0, 0), (0, None, None), (0, 0, None)):
        sc = scales if axes[1] == 0 else scales[0]
        sh = shifts if axes[2] == 0 else shifts[0]
        got = jax.jit(jax.vmap(jax.value_and_grad(loss_all(on_onednn), (0, 1, 2)), in_axes=axes))(xs, sc, sh)
        want = jax.vmap(jax.value_and_grad(loss_all(reference), (0, 1, 2)), in_axes=axes)(xs, sc, sh)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            close(a, b, 1e-4)


def test_implementation_is_the_jit_kernel_where_it_exists(built):
    assert onednn.batch_norm_implementation("forward", (128, 32, 32, 16))
    assert onednn.batch_norm_implementation("backward", (128, 64, 1, 64))


def _module_jaxpr(module, variables, x):
    def f(v, x):
        return module.apply(v, x, mutable=["batch_stats"])
    return str(jax.make_jaxpr(f)(variables, x))


def test_switch_moves_training_batchnorm_and_keeps_running_averages(built):
    x = jax.random.normal(jax.random.key(1), (16, 4, 4, 8)) * 2 + 1  # 256 rows: above the size rule
    bn = BatchNorm(momentum=0.8)
    variables = bn.init(jax.random.key(0), x)
    variables = {"params": {"scale": jnp.linspace(0.5, 1.5, 8), "bias": jnp.linspace(-1, 1, 8)},
                 "batch_stats": variables["batch_stats"]}
    conv.use_onednn(False)
    y_off, st_off = bn.apply(variables, x, mutable=["batch_stats"])
    assert "batch_norm" not in _module_jaxpr(bn, variables, x)
    g_off = jax.grad(lambda p: jnp.sum(jnp.sin(bn.apply({**variables, "params": p}, x, mutable=["batch_stats"])[0])))(
        variables["params"])
    conv.use_onednn(True)
    assert "nnbasics_onednn_batch_norm_forward" in _module_jaxpr(bn, variables, x)
    y_on, st_on = bn.apply(variables, x, mutable=["batch_stats"])
    g_on = jax.grad(lambda p: jnp.sum(jnp.sin(bn.apply({**variables, "params": p}, x, mutable=["batch_stats"])[0])))(
        variables["params"])
    close(y_on, y_off)
    for a, b in zip(jax.tree.leaves((st_on, g_on)), jax.tree.leaves((st_off, g_off))):
        close(a, b, 1e-4)
    # below the size rule, in evaluation, or with the formula's autodiff: no oneDNN call
    small = x[:4, :2, :2]  # 16 rows: below the size rule (64)
    assert "batch_norm" not in _module_jaxpr(bn, variables, small)
    assert "batch_norm" not in _module_jaxpr(BatchNorm(train=False), variables, x)
    assert "batch_norm" not in _module_jaxpr(BatchNorm(fused_backward=False), variables, x)


def test_without_scale_or_bias(built):
    x = jax.random.normal(jax.random.key(2), (32, 3, 3, 4))
    for kw in ({"use_scale": False}, {"use_bias": False}, {"use_scale": False, "use_bias": False}):
        bn = BatchNorm(**kw)
        variables = bn.init(jax.random.key(0), x)
        conv.use_onednn(False)
        want = bn.apply(variables, x, mutable=["batch_stats"])[0]
        conv.use_onednn(True)
        got = bn.apply(variables, x, mutable=["batch_stats"])[0]
        close(got, want)
        assert set(variables.get("params", {})) == {k for k, on in (("scale", kw.get("use_scale", True)),
                                                                        ("bias", kw.get("use_bias", True))) if on}


def test_extension_absent_keeps_the_formula(monkeypatch):
    monkeypatch.setattr(conv, "onednn_enabled", lambda: False)
    conv.use_onednn(True)
    x = jax.random.normal(jax.random.key(1), (16, 4, 4, 8))
    assert not normalization.onednn_norm_worthwhile(x)
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x)
    assert "batch_norm" not in _module_jaxpr(bn, variables, x)


@pytest.mark.parametrize("shape", [(8, 6, 5, 16), (16, 20, 7), (2, 3, 3, 17)], ids=["4d", "3d", "17ch"])
def test_fused_relu_values_and_gradients(built, shape):
    """relu=True: max(0, batch norm) in oneDNN's pass, its backward through oneDNN's mask, equal to the
    formula followed by jax.nn.relu (gradients also through the batch mean and variance)."""
    x, scale, shift = inputs(shape, key=11)
    fused = lambda x, s, b: onednn_batch_norm(x, s, b, 1e-5, True)  # noqa: E731

    def unfused(x, s, b):
        y, mean, var = reference(x, s, b)
        return jax.nn.relu(y), mean, var

    for a, b in zip(jax.jit(fused)(x, scale, shift), unfused(x, scale, shift)):
        close(a, b)
    assert float(jnp.mean(fused(x, scale, shift)[0] == 0)) > 0.1  # the ReLU does cut (the shifts are random)
    for loss in (loss_all, loss_y):
        g = jax.jit(jax.grad(loss(fused), (0, 1, 2)))(x, scale, shift)
        r = jax.grad(loss(unfused), (0, 1, 2))(x, scale, shift)
        for a, b in zip(g, r):
            close(a, b, 1e-4)
    xs = jnp.stack([x, x * 0.5 - 1, -x])
    g = jax.jit(jax.vmap(jax.grad(loss_all(fused), (0, 1, 2)), in_axes=(0, None, None)))(xs, scale, shift)
    r = jax.vmap(jax.grad(loss_all(unfused), (0, 1, 2)), in_axes=(0, None, None))(xs, scale, shift)
    for a, b in zip(g, r):
        close(a, b, 1e-4)


def test_workspace_is_a_bit_per_value_on_the_jit_kernel(built):
    assert onednn.batch_norm_relu_workspace_bytes((128, 32, 32, 16)) == 128 * 32 * 32 * 16 // 8
    assert onednn.batch_norm_relu_workspace_bytes((2, 3, 3, 17)) >= 1


def test_resnet_fuses_batchnorm_and_relu_with_the_same_numbers(built):
    """ResNet-20 (the registered model): its BatchNorm + ReLU pairs are one `BatchNorm(relu=True)`; with
    the switch on they are fused oneDNN calls, and the loss, its gradient and the running averages equal
    the switch-off program's; collecting the blocks' responses keeps norm and ReLU apart (pre-ReLU
    response, unchanged)."""
    from nnbasics.models import get_model

    model = get_model("resnet20", num_classes=10)
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    y = jnp.arange(8) % 10
    variables = model.init(jax.random.key(1), x, train=False)

    def loss(params):
        logits, new = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y]), new

    conv.use_onednn(False)
    (l_off, st_off), g_off = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    conv.use_onednn(True)
    text = str(jax.make_jaxpr(loss)(variables["params"]))
    assert text.count("nnbasics_onednn_batch_norm_relu_forward") == 10  # the stem and each block's first norm
    assert text.count("nnbasics_onednn_batch_norm_forward") == 9  # each block's second norm (the add comes first)
    (l_on, st_on), g_on = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    close(l_on, l_off, 1e-5)
    for a, b in zip(jax.tree.leaves(st_on), jax.tree.leaves(st_off)):
        close(a, b, 1e-4)
    # The gradient of a freshly initialized ResNet-20 at batch 8 is ill-conditioned: XLA's own moves by 0.7%
    # (whole-gradient norm; 8.6% in the worst leaf) between one and two XLA threads, oneDNN's is within
    # 3e-6 of XLA's on one thread and 0.3% on two (measured). So the whole gradient, not each leaf.
    flat = lambda t: np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(t)])  # noqa: E731
    assert np.linalg.norm(flat(g_on) - flat(g_off)) <= 2e-2 * np.linalg.norm(flat(g_off))
    # responses collected: the pre-ReLU norms are sown, 2 per block, as before
    _, inter = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    leaves = jax.tree.leaves(inter["intermediates"])
    assert len(leaves) == 18 and min(float(jnp.min(r)) for r in leaves) < 0
