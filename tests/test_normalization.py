"""Hand-written normalizers against flax.linen (outputs and gradients, compiled and eager), BatchNorm's two modes,
the axis masks of the lecture's figure, SelectedNorm, Weight Standardization and the norm CNN."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax import lax

from nnbasics.nn import normalization
from nnbasics.registry import UnknownNameError

RNG = np.random.default_rng(0)  # NumPy test data: no per-shape XLA random-number compiles
X = jnp.asarray(RNG.standard_normal((4, 5, 5, 8)) * 3.0 + 1.0, jnp.float32)


def normal(*shape: int) -> jax.Array:
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)
PAIRS = {
    "layer": (normalization.LayerNorm(), nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), feature_axes=-1)),
    "instance": (normalization.InstanceNorm(), nn.InstanceNorm(epsilon=1e-5)),
    "group": (normalization.GroupNorm(num_groups=4), nn.GroupNorm(num_groups=4, epsilon=1e-5)),
    # flax averages the biased batch variance into its running variance: our option for that convention
    "batch": (normalization.BatchNorm(train=True, momentum=0.9, unbiased_running_var=False),
              nn.BatchNorm(use_running_average=False, momentum=0.9)),
}


class EqualsFlaxTest(chex.TestCase):
    """Each hand-written normalizer against its flax.linen counterpart, under jit and op by op."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in PAIRS))
    def test_outputs_and_gradients(self, name):
        mine, ref = PAIRS[name]
        vm, vr = mine.init(jax.random.key(1), X), ref.init(jax.random.key(1), X)
        chex.assert_trees_all_equal_shapes(vm, vr)
        # non-trivial scale and bias, the same in both
        params = {"scale": jnp.linspace(0.5, 2.0, 8), "bias": jnp.linspace(-1.0, 1.0, 8)}
        vm = {**vm, "params": params}
        vr = {**vr, "params": params}
        w = normal(*X.shape)

        def outputs_and_grads(module, v):
            def loss(p, x):
                y, _ = module.apply({**v, "params": p}, x, mutable=["batch_stats"])
                return jnp.sum(w * jnp.tanh(y))

            return module.apply(v, X, mutable=["batch_stats"]), jax.grad(loss, argnums=(0, 1))(params, X)

        (ym, sm), gm = self.variant(lambda v: outputs_and_grads(mine, v))(vm)
        (yr, sr), gr = self.variant(lambda v: outputs_and_grads(ref, v))(vr)
        chex.assert_trees_all_close(ym, yr, atol=2e-5)
        chex.assert_trees_all_close(sm, sr, atol=1e-5)  # BatchNorm: running averages updated the same way
        chex.assert_trees_all_close(gm, gr, atol=2e-4, rtol=1e-4)


def test_batchnorm_train_and_eval_modes():
    bn = normalization.BatchNorm(train=True, momentum=0.9)
    v = bn.init(jax.random.key(0), X)
    np.testing.assert_array_equal(v["batch_stats"]["mean"], 0.0)  # init does not update
    y, new = bn.apply(v, X, mutable=["batch_stats"])
    # training: this batch's statistics -> per-channel zero mean, unit variance
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * X.mean(axis=(0, 1, 2)), rtol=1e-5)
    # the running variance takes in the unbiased m / (m - 1) estimate, m = N*H*W (Ioffe & Szegedy, PyTorch)
    np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 + 0.1 * np.var(np.asarray(X), axis=(0, 1, 2), ddof=1),
                               rtol=1e-5)
    # evaluation: the running averages, so the output differs and does not depend on the batch
    ev = normalization.BatchNorm(train=False)
    v2 = {**v, **new}
    y_eval = ev.apply(v2, X)
    expect = (X - new["batch_stats"]["mean"]) / jnp.sqrt(new["batch_stats"]["var"] + 1e-5)
    np.testing.assert_allclose(y_eval, expect, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(y_eval - y).max()) > 0.1
    np.testing.assert_allclose(ev.apply(v2, X[:1]), y_eval[:1], rtol=1e-6)  # batch-independent
    assert float(jnp.abs(bn.apply(v, X[:2], mutable=["batch_stats"])[0] - y[:2]).max()) > 1e-2


def test_group_norm_limits_and_bad_groups():
    v = normalization.GroupNorm(num_groups=1).init(jax.random.key(0), X)
    np.testing.assert_allclose(normalization.GroupNorm(num_groups=1).apply(v, X), normalization.LayerNorm().apply(v, X),
                               atol=1e-5)
    np.testing.assert_allclose(normalization.GroupNorm(num_groups=8).apply(v, X), normalization.InstanceNorm().apply(v, X),
                               atol=1e-5)
    np.testing.assert_allclose(normalization.GroupNorm(num_groups=None, group_size=2).apply(v, X),
                               normalization.GroupNorm(num_groups=4).apply(v, X), atol=1e-6)
    with pytest.raises(ValueError, match="does not divide"):
        normalization.GroupNorm(num_groups=3).init(jax.random.key(0), X)
    # by name without a group count: 32 groups where wide enough, else >= 2 channels per group
    assert [normalization.auto_groups(c) for c in (16, 64, 256, 3, 48)] == [8, 32, 32, 1, 24]
    assert normalization.make_norm("group", train=True).apply({"params": v["params"]}, X).shape == X.shape


def test_registry_and_statistics_masks():
    assert normalization.norm_names() == ["batch", "group", "instance", "layer", "none"]
    with pytest.raises(UnknownNameError, match="did you mean 'batch'"):
        normalization.make_norm("bacth", train=True)
    shape, idx = (4, 3, 2, 6), (1, 2, 1, 3)
    m = {k: normalization.statistics_mask(k, shape, idx, **({"num_groups": 3} if k == "group" else {}))
         for k in normalization.NORM_AXES}
    n_, h, w, c = shape
    assert m["none"].sum() == 1
    assert m["batch"].sum() == n_ * h * w and m["batch"][:, :, :, 3].all()
    assert m["layer"].sum() == h * w * c and m["layer"][1].all()
    assert m["instance"].sum() == h * w and m["instance"][1, :, :, 3].all()
    assert m["group"].sum() == h * w * 2 and m["group"][1, :, :, 2:4].all()
    make = normalization.get_norm("group", train=True)
    assert isinstance(make(name="n", num_groups=2), normalization.GroupNorm)


def _two_steps(module, x1, x2, **kw):
    """Running statistics after two training steps, from an initialized module."""
    v = module.init(jax.random.key(0), x1, **kw)
    _, s1 = module.apply(v, x1, mutable=["batch_stats"], **kw)
    _, s2 = module.apply({**v, **s1}, x2, mutable=["batch_stats"], **kw)
    return s1["batch_stats"], s2["batch_stats"]


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_batchnorm_running_variance_is_unbiased_by_default(momentum):
    """Ioffe & Szegedy's Alg. 2 and PyTorch: the running variance averages m/(m-1) * biased variance."""
    x1, x2 = np.asarray(X), np.asarray(normal(2, 3, 3, 8) * 0.5 - 2.0)  # m = 100 and m = 18 values per channel
    s1, s2 = _two_steps(normalization.BatchNorm(train=True, momentum=momentum), jnp.asarray(x1), jnp.asarray(x2))
    mu = momentum
    var1 = mu * 1.0 + (1 - mu) * x1.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(s1["var"], var1, rtol=1e-5)
    np.testing.assert_allclose(s2["var"], mu * var1 + (1 - mu) * x2.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)
    np.testing.assert_allclose(s2["mean"], mu * (1 - mu) * x1.mean(axis=(0, 1, 2)) + (1 - mu) * x2.mean(axis=(0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    # the option off: exactly flax.linen.BatchNorm's batch_stats
    b1, b2 = _two_steps(normalization.BatchNorm(train=True, momentum=momentum, unbiased_running_var=False), jnp.asarray(x1),
                        jnp.asarray(x2))
    f1, f2 = _two_steps(nn.BatchNorm(use_running_average=False, momentum=momentum), jnp.asarray(x1), jnp.asarray(x2))
    for ours, ref in ((b1, f1), (b2, f2)):
        np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours["var"], ref["var"], rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(s1["var"] - f1["var"]).max()) > 1e-3  # the two conventions differ
    # SelectedNorm keeps the same running statistics in both conventions
    for unbiased, (r1, r2) in ((True, (s1, s2)), (False, (b1, b2))):
        sel = normalization.SelectedNorm(num_groups=4, momentum=momentum, unbiased_running_var=unbiased)
        kind = normalization.KINDS.index("batch")
        v = sel.init(jax.random.key(0), X, kind, True)
        _, t1 = sel.apply(v, jnp.asarray(x1), kind, True, mutable=["batch_stats"])
        _, t2 = sel.apply({**v, **t1}, jnp.asarray(x2), kind, True, mutable=["batch_stats"])
        np.testing.assert_allclose(t1["batch_stats"]["var"], r1["var"], rtol=1e-5)
        np.testing.assert_allclose(t2["batch_stats"]["var"], r2["var"], rtol=1e-5)
        np.testing.assert_allclose(t2["batch_stats"]["mean"], r2["mean"], rtol=1e-5, atol=1e-6)


def test_batchnorm_running_statistics_equal_torch():
    torch = pytest.importorskip("torch")
    x1, x2 = np.asarray(X), np.asarray(normal(2, 3, 3, 8) * 0.5 - 2.0)
    bn = torch.nn.BatchNorm2d(8, momentum=0.1)  # PyTorch's momentum is our 1 - momentum
    bn.train()
    outs = []
    with torch.no_grad():
        for x in (x1, x2):
            outs.append(bn(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy())
    _, s2 = _two_steps(normalization.BatchNorm(train=True, momentum=0.9), jnp.asarray(x1), jnp.asarray(x2))
    np.testing.assert_allclose(s2["var"], bn.running_var.numpy(), rtol=1e-5)
    np.testing.assert_allclose(s2["mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    bn_train = normalization.BatchNorm(train=True)
    y1 = bn_train.apply(bn_train.init(jax.random.key(0), X), X, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(y1, outs[0], atol=2e-5)  # training normalizes with the biased variance in both


@pytest.mark.parametrize("kind", normalization.KINDS)
def test_selected_norm_equals_each_named_layer(kind):
    sel = normalization.SelectedNorm(num_groups=4)
    vs = sel.init(jax.random.key(1), X, 0, True)
    ref = normalization.make_norm(kind, train=True, **({"num_groups": 4} if kind == "group" else {}))
    vr = ref.init(jax.random.key(1), X)
    ys, ss = sel.apply(vs, X, normalization.KINDS.index(kind), True, mutable=["batch_stats"])
    yr, sr = ref.apply(vr, X, mutable=["batch_stats"])
    np.testing.assert_allclose(ys, yr, atol=2e-5)
    if kind == "batch":
        for k in ("mean", "var"):
            np.testing.assert_allclose(ss["batch_stats"][k], sr["batch_stats"][k], atol=1e-5)
        ye = sel.apply({**vs, **ss}, X, normalization.KINDS.index(kind), False)
        np.testing.assert_allclose(ye, normalization.BatchNorm(train=False).apply({**vr, **sr}, X), atol=2e-5)


def test_weight_standardization():
    k = normal(3, 3, 4, 6) * 2 + 0.5
    ws = normalization.standardize_kernel(k)
    np.testing.assert_allclose(ws.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ws.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    sws = normalization.standardize_kernel(k, scaled=True)
    np.testing.assert_allclose(jnp.sum(sws**2, axis=(0, 1, 2)), 1.0, atol=1e-4)  # N Var = 1
    x = normal(2, 7, 7, 4)
    layer = normalization.WSConv(6, (3, 3), scaled=True, gamma=1.7)
    v = {"params": {"kernel": k, "bias": normal(6), "gain": jnp.ones(6)}}
    assert jax.tree.map(jnp.shape, jax.eval_shape(lambda: layer.init(jax.random.key(0), x))) == jax.tree.map(
        jnp.shape, v)
    expect = lax.conv_general_dilated(x, 1.7 * normalization.standardize_kernel(k, scaled=True), (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]
    np.testing.assert_allclose(layer.apply(v, x), expect, atol=1e-5)
    # Scaled WS preserves variance: a unit-variance input gives a unit-variance output (interior)
    big = normal(8, 16, 16, 32)
    vb = {"params": {"kernel": normal(3, 3, 32, 32) + 0.3, "bias": jnp.zeros(32), "gain": jnp.ones(32)}}
    out = normalization.WSConv(32, (3, 3), scaled=True).apply(vb, big)[:, 1:-1, 1:-1]
    assert 0.9 < float(out.var()) < 1.1


def _named_output(kind: str, ws: bool, selected_params: dict, x: jax.Array) -> jax.Array:
    """The named-normalizer CNN's training-mode output with its parameters taken from the selected one."""
    from nnbasics.models import get_model

    named = get_model("norm_cnn", norm=kind, widths=(8, 16), convs_per_stage=1, num_groups=4, weight_standardization=ws)
    shapes = jax.eval_shape(lambda: named.init(jax.random.key(0), x, train=True))  # shapes only

    def take(path, _):
        node = selected_params
        for p in path:
            node = node[p.key]
        return node

    variables = {"params": jax.tree_util.tree_map_with_path(take, shapes["params"])}
    if "batch_stats" in shapes:
        variables["batch_stats"] = jax.tree.map(lambda a: jnp.zeros(a.shape), shapes["batch_stats"])
    return jax.jit(lambda v: named.apply(v, x, train=True, mutable=["batch_stats"])[0])(variables)


def test_norm_cnn_selected_equals_named():
    from nnbasics.models import get_model

    x = normal(4, 8, 8, 1)
    sel = get_model("norm_cnn", norm="selected", widths=(8, 16), convs_per_stage=1, num_groups=4)
    key = jax.random.key(1, impl="rbg")  # rbg: XLA's RngBitGenerator compiles far faster than threefry on CPU
    vs = jax.jit(lambda k: sel.init(k, x, kind=0, ws=False))(key)
    apply_sel = jax.jit(lambda v, kind, ws: sel.apply(v, x, train=True, kind=kind, ws=ws, mutable=["batch_stats"])[0])
    for kind, ws in (("batch", False), ("group", True), ("none", True)):
        params = vs["params"]
        if kind != "none":  # the named CNN has no conv bias under a normalizer: zero the selected one's
            params = {k: ({**v, "bias": jnp.zeros_like(v["bias"])} if k.startswith("conv") else v)
                      for k, v in params.items()}
        ys = apply_sel({**vs, "params": params}, normalization.KINDS.index(kind), ws)
        yn = _named_output(kind, ws, params, x)
        np.testing.assert_allclose(ys, yn, atol=2e-4, rtol=1e-3, err_msg=f"{kind} ws={ws}")


def _standardize_by_formula(x, epsilon=1e-5):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return (x - mean) * lax.rsqrt(var + epsilon), mean, var


@pytest.mark.parametrize("shape", [(6, 5, 5, 8), (32, 3), (3, 7, 16)])
def test_batch_standardize_backward_equals_autodiff_of_the_formula(shape):
    """The hand-written backward pass against jax.grad of the formula: a loss that uses the
    standardized values and the batch mean and variance (so every cotangent is nonzero), under jit,
    under vmap over members, and differentiated twice (reverse over reverse)."""
    x = normal(*shape) * 2.5 + 0.7
    w, a, b = normal(*shape), normal(shape[-1]), normal(shape[-1])

    def loss(f):
        def value(x):
            y, mean, var = f(x)
            return jnp.sum(jnp.tanh(y) * w) + jnp.sum(a * mean) + jnp.sum(b * jnp.sqrt(var))
        return value

    fused = loss(lambda x: normalization.batch_standardize(x, 1e-5))
    formula = loss(_standardize_by_formula)
    np.testing.assert_allclose(jax.jit(fused)(x), formula(x), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(fused))(x), jax.grad(formula)(x), rtol=1e-4, atol=1e-5)
    xs = jnp.stack([x, 0.5 * x + 1.0, -x])
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(fused)))(xs), jax.vmap(jax.grad(formula))(xs),
                               rtol=1e-4, atol=1e-5)

    def grad_norm(f):
        return lambda x: jnp.sum(jnp.square(jax.grad(f)(x)))

    np.testing.assert_allclose(jax.jit(jax.grad(grad_norm(fused)))(x), jax.grad(grad_norm(formula))(x),
                               rtol=1e-3, atol=1e-4)


def test_batchnorm_fused_backward_equals_the_formula_and_forward_mode_needs_it_off():
    """BatchNorm in training: outputs, running statistics and parameter/input gradients with the
    hand-written backward equal those of the differentiated formula (fused_backward=False); forward
    mode works with the formula and is refused with a clear JAX error by the custom VJP."""
    x = normal(8, 4, 4, 6) * 2.0 + 1.0
    fused, plain = normalization.BatchNorm(train=True), normalization.BatchNorm(train=True, fused_backward=False)
    variables = fused.init(jax.random.key(0), x)
    variables = {**variables, "params": {"scale": normal(6) + 1.0, "bias": normal(6)}}

    def run(layer):
        def f(params, x):
            y, upd = layer.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(jnp.square(jax.nn.relu(y)) * jnp.arange(6.0)), (y, upd)
        return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))(variables["params"], x)

    (l1, (y1, s1)), g1 = run(fused)
    (l2, (y2, s2)), g2 = run(plain)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))  # the same forward formula
    chex.assert_trees_all_close(s1, s2, rtol=1e-6)
    chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)

    def forward(layer):
        return lambda x: layer.apply(variables, x, mutable=["batch_stats"])[0]

    t = jnp.ones_like(x)
    _, jvp_plain = jax.jvp(forward(plain), (x,), (t,))
    assert np.all(np.isfinite(np.asarray(jvp_plain)))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(forward(fused), (x,), (t,))
