"""The fast convolution paths equal lax.conv_general_dilated: outputs and gradients (input and
kernel) over random shapes, strides, paddings, dilations and groups, 1-D and 2-D, compiled and
eager (chex variants), under vmap, grad and a sharding mesh."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax import lax

from nnbasics.nn import conv

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def reference(x, w, strides, padding, dilation, groups):
    nd = x.ndim - 2
    pads = conv.explicit_padding(padding, x.shape[1:-1], w.shape[:nd], strides, dilation)
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=SPECS[nd],
                                    feature_group_count=groups)


def random_case(rng: np.random.RandomState, nd: int) -> dict:
    """A random convolution whose output is not empty."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cin = groups * int(rng.randint(1, 4))
        cout = groups * int(rng.randint(1, 4))
        k = tuple(int(v) for v in rng.randint(1, 4, nd))
        strides = tuple(int(v) for v in rng.randint(1, 3, nd))
        dilation = tuple(int(v) for v in rng.randint(1, 3, nd))
        size = tuple(int(v) for v in rng.randint(4, 10, nd))
        padding = [["SAME", "VALID"][rng.randint(2)], [(int(rng.randint(0, 3)), int(rng.randint(0, 3))) for _ in range(nd)]][
            rng.randint(2)]
        batch = int(rng.choice([1, 3, 8, 10]))
        pads = conv.explicit_padding(padding, size, k, strides, dilation)
        if all(o > 0 for o in conv.output_shape(size, k, strides, pads, dilation)):
            return {"shape": (batch, *size, cin), "kshape": (*k, cin // groups, cout), "strides": strides,
                    "padding": padding, "dilation": dilation, "groups": groups}


def value_and_grads(f, x, w, ct):
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(ct))


def assert_close(got, want, what=""):
    """Equal shapes, and values within 2e-5 relative to the largest entry of `want` (sums of many
    products: float32 rounding grows with their size)."""
    chex.assert_equal_shape([got, want])
    scale = max(1.0, float(np.max(np.abs(want))) if np.size(want) else 1.0)
    try:
        chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5 * scale)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None


IMPLS = ("patches", "chunked", "auto")


def check_case(case: dict, key: jax.Array, variant=jax.jit) -> None:
    """Every path's output and vjp against lax.conv's, all in one program `variant(...)` (jit or eager)."""
    kx, kw, kc = jax.random.split(key, 3)
    x = jax.random.normal(kx, case["shape"])
    w = jax.random.normal(kw, case["kshape"])
    args = (case["strides"], case["padding"], case["dilation"], case["groups"])

    @variant
    def all_paths(x, w, ct):
        want = value_and_grads(lambda a, b: reference(a, b, *args), x, w, ct)
        got = {i: value_and_grads(functools.partial(conv.conv_general, strides=args[0], padding=args[1],
                                                    dilation=args[2], feature_group_count=args[3], impl=i), x, w, ct)
               for i in IMPLS}
        return want, got

    ct = jax.random.normal(kc, reference(x, w, *args).shape)
    want, got = all_paths(x, w, ct)
    for impl in IMPLS:
        for name, g, r in zip(("output", "d input", "d kernel"), got[impl], want):
            assert_close(g, r, f"{name} {impl} {case}")


class RandomConvolutionsTest(chex.TestCase):
    """Five random convolutions per dimension, compiled (jit) and op by op (no jit)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("1d", 1), ("2d", 2))
    def test_random_convolutions_match_lax(self, nd):
        rng = np.random.RandomState(nd)
        for _ in range(5):
            check_case(random_case(rng, nd), jax.random.key(int(rng.randint(1 << 30))), self.variant)


def chunked_vs_reference(x, w, strides, pads, dilation, chunks):
    g = jax.random.normal(jax.random.key(2), reference(x, w, strides, pads, dilation, 1).shape)

    @jax.jit
    def both(x, w, g):
        want = jax.vjp(lambda w_: reference(x, w_, strides, pads, dilation, 1), w)[1](g)[0]
        got = [conv.weight_grad_chunked(x, g, w.shape[:2], strides, pads, dilation, chunk=c) for c in chunks]
        return want, got

    return both(x, w, g)


def test_chunked_weight_gradient_any_batch_and_stride():
    """Batches that chunks cannot tile evenly (prime) fall back to smaller chunks; strided and
    dilated 2-D kernels; the sum over chunks equals one big product."""
    assert conv.chunk_size(128) == 4 and conv.chunk_size(7) == 1 and conv.chunk_size(6) == 3 and conv.chunk_size(2) == 2
    for batch, strides, dilation, pads in [(7, (2, 2), (1, 1), [(1, 1), (1, 1)]), (12, (1, 2), (2, 1), [(0, 2), (1, 0)])]:
        x = jax.random.normal(jax.random.key(batch), (batch, 9, 8, 5))
        w = jax.random.normal(jax.random.key(1), (3, 3, 5, 6))
        chunks = (1, 3, 4, batch)
        want, got = chunked_vs_reference(x, w, strides, pads, dilation, chunks)
        for chunk, dw in zip(chunks, got):
            assert_close(dw, want, f"chunk {chunk}")


def test_channel_major_patches_are_the_transposed_patch_matrix():
    """The weight gradient's channel-major patch matrix holds exactly the values of
    `extract_patches` (rows: kernel offsets then channels; columns: images then positions), for
    strided, dilated and unevenly padded 2-D kernels and for 1-D ones."""
    rng = np.random.RandomState(0)
    for shape, kernel, strides, dilation, pads in [((3, 9, 8, 5), (3, 3), (2, 2), (1, 1), [(1, 1), (1, 1)]),
                                                   ((2, 9, 8, 4), (2, 3), (1, 2), (2, 1), [(0, 2), (1, 0)]),
                                                   ((4, 11, 3), (5,), (2,), (1,), [(2, 2)])]:
        x = rng.randn(*shape).astype(np.float32)
        want = np.asarray(conv.extract_patches(jnp.asarray(x), kernel, strides, pads, dilation))
        want = want.reshape(-1, want.shape[-1]).T  # (K * C, images * positions)
        got = conv.patches_channel_major(jnp.asarray(np.moveaxis(x, -1, 0)), kernel, strides, pads, dilation)
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="empty"):
        conv.patches_channel_major(jnp.zeros((2, 1, 3, 3)), (5, 5), (1, 1), [(0, 0), (0, 0)], (1, 1))


def test_vmap_over_members_and_second_order():
    """fit() vmaps the train step over seeds: batched kernels and inputs, grads inside vmap."""
    xs = jax.random.normal(jax.random.key(0), (2, 8, 6, 6, 3))
    ws = jax.random.normal(jax.random.key(1), (2, 3, 3, 3, 4))

    def loss(impl):
        return lambda x, w: jnp.sum(jnp.tanh(conv.conv_general(x, w, 1, "SAME", 1, 1, impl)) ** 2)

    for impl in ("chunked", "patches"):
        got = jax.jit(jax.vmap(jax.value_and_grad(loss(impl), (0, 1))))(xs, ws)
        want = jax.vmap(jax.value_and_grad(loss("xla"), (0, 1)))(xs, ws)
        chex.assert_tree_shape_prefix(got, (2,))  # one loss and one gradient per member
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert_close(g, r, impl)
    # Forward-mode and second derivatives still work through the patch path (plain autodiff).
    x1, w1 = xs[0], ws[0]
    hvp = jax.jvp(jax.grad(loss("patches"), 1), (x1, w1), (jnp.zeros_like(x1), jnp.ones_like(w1)))[1]
    hvp_ref = jax.jvp(jax.grad(loss("xla"), 1), (x1, w1), (jnp.zeros_like(x1), jnp.ones_like(w1)))[1]
    assert_close(hvp, hvp_ref, "hvp")


def test_choose_implementation_per_backend():
    for backend in ("gpu", "tpu", "cuda", "rocm"):
        assert conv.choose_implementation(2, 1, 128, backend) == "xla"
        assert conv.choose_implementation(1, 1, 100, backend) == "xla"
    assert conv.choose_implementation(1, 1, 100, "cpu") == "patches"
    assert conv.choose_implementation(2, 1, 128, "cpu") == "chunked"
    assert conv.choose_implementation(2, 1, 2, "cpu") == "xla"  # too small a batch to chunk
    assert conv.choose_implementation(2, 4, 128, "cpu") == "xla"  # grouped: lax.conv
    with pytest.raises(ValueError, match="unknown conv impl"):
        conv.conv_general(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="fast")
    with pytest.raises(ValueError, match="feature_group_count"):
        conv.conv_general(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 1, 4)), feature_group_count=2)


def test_conv_layer_matches_flax_conv():
    """`Conv` has flax.linen.Conv's parameters and computes the same function on every path."""
    x = jax.random.normal(jax.random.key(0), (8, 10, 10, 4))
    ref = nn.Conv(6, (3, 3), strides=2, padding="SAME", kernel_dilation=1, feature_group_count=2)
    variables = ref.init(jax.random.key(1), x)
    want = ref.apply(variables, x)
    for impl in ("auto", "xla", "patches", "chunked"):
        layer = conv.Conv(6, (3, 3), strides=2, padding="SAME", feature_group_count=2, impl=impl)
        chex.assert_trees_all_equal_shapes(layer.init(jax.random.key(1), x), variables)
        assert_close(layer.apply(variables, x), want, impl)
    one_d = conv.Conv(3, 5, padding=[(1, 1)])
    chex.assert_shape(one_d.init(jax.random.key(0), jnp.zeros((2, 9, 2)))["params"]["kernel"], (5, 2, 3))


SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from nnbasics.nn.conv import conv_general
    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ws = jax.device_put(w, NamedSharding(mesh, P()))
    def loss(impl):
        return lambda x, w: jnp.sum(jnp.sin(conv_general(x, w, (2, 1), "SAME", 1, 1, impl)))
    want = jax.value_and_grad(loss("xla"), (0, 1))(x, w)
    for impl in ("chunked", "patches", "auto"):
        got = jax.jit(jax.value_and_grad(loss(impl), (0, 1)))(xs, ws)
        assert got[1][0].sharding.spec == P("data"), got[1][0].sharding
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
    print("SHARDED OK")
""")


def test_sharded_batch_over_four_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert "SHARDED OK" in out.stdout, out.stdout + out.stderr


def test_speed_benchmarks_skip_cleanly_without_torch(monkeypatch, capsys):
    from experiments.benchmarks import cnn_speed, mnist1d_speed

    monkeypatch.setattr(cnn_speed, "torch_available", lambda: False)
    monkeypatch.setattr(mnist1d_speed, "torch_available", lambda: False)
    assert cnn_speed.main([]) == 0
    assert mnist1d_speed.main([]) == 0
    assert capsys.readouterr().out.count("torch is not installed") == 2


def test_small_resnet_step_benchmark_prints_every_setting(capsys):
    """The quick presets' ResNet benchmark runs end to end (a depth-8 net, 1 member, 2 steps) and
    prints one row per setting asked for with a positive rate, the baseline row at 1.00x."""
    from experiments.benchmarks import small_resnet_step

    settings = (("auto", True), ("patches", False))
    small_resnet_step.main([8], members=1, steps=2, repeats=1, settings=settings)
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) == len(settings)
    assert rows[0].startswith("| auto | scan |") and rows[0].endswith("| 1.00x |")
    assert all(float(r.split("|")[4]) > 0 for r in rows)


def test_conv1d_step_benchmark_times_patches_and_onednn(capsys):
    """The 1-D benchmark runs end to end (1 member, 2 steps): a positive rate for the patch-matrix conv,
    1.00x against itself, and a oneDNN row where the extra loads."""
    from experiments.benchmarks import conv1d_step
    from nnbasics.nn import onednn

    rates = conv1d_step.main(members=1, steps=2, batch=4, repeats=1)
    out = capsys.readouterr().out
    assert rates["patches"] > 0 and "| patches |" in out and out.count("| 1.00x |") >= 1
    assert ("onednn" in rates) == onednn.load(warn=False)
    assert all(r > 0 for r in rates.values())


def test_small_conv_calls_benchmark_times_both_per_case(capsys, monkeypatch):
    """The small-conv benchmark (it set conv.ONEDNN_MIN_ROWS) runs end to end on two cases: a row per case
    and batch with its output rows, positive times for both implementations and their ratio."""
    from experiments.benchmarks import small_conv_calls
    from nnbasics.nn import onednn

    if not onednn.load(warn=False):
        pytest.skip(f"oneDNN extension unavailable: {onednn.error()}")
    monkeypatch.setattr(small_conv_calls, "CALLS", 2)
    monkeypatch.setattr(small_conv_calls, "CASES", [((10,), 2, 3), ((4, 4), 2, 3)])
    out = small_conv_calls.main(batches=(2,), members=1)
    assert [r["rows"] for r in out] == [20, 32]
    assert all(r["patches"] > 0 and r["onednn"] > 0 for r in out)
    printed = capsys.readouterr().out
    assert "| 1-D 10, 2 -> 3 | 2 | 20 |" in printed and "| 2-D 4x4, 2 -> 3 | 2 | 32 |" in printed
