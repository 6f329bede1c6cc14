"""The oneDNN convolutions (nnbasics.nn.onednn, the optional extra) equal lax.conv_general_dilated:
outputs and both gradients for every supported kind of shape, stride and padding, compiled, under
vmap (members with their own kernels, a shared kernel, nested) and under jit. Without the switch,
with an unsupported convolution, or with the extension absent, the convolution takes today's path.

The tests that run oneDNN skip (with the reason) where the extension cannot be built: no oneDNN
wheels (`pip install -e ".[onednn]"`) or no C++ compiler."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nnbasics.nn import conv, onednn
from nnbasics.threads import cpu_threads

RTOL = 1e-4


@pytest.fixture(autouse=True)
def switch_back():
    yield
    conv.use_onednn(None)


@pytest.fixture(scope="module")
def built():
    if not onednn.load(warn=False):
        pytest.skip(f"oneDNN extension unavailable: {onednn.error()}")


def reference(x, w, strides, padding):
    pads = conv.explicit_padding(padding, x.shape[1:3], w.shape[:2], strides, (1, 1))
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b))), 1e-6)
    err = float(np.max(np.abs(a - b))) / scale
    assert err <= rtol, f"relative error {err:.2e} > {rtol}"


def uses_ffi(f, *args) -> bool:
    return "onednn" in str(jax.make_jaxpr(f)(*args))


# (batch, height, width, cin, cout, kernel, strides, padding): ResNet-20's layers (smaller batch),
# 1x1 and 5x5 kernels, strides 2 and 3, SAME/VALID/asymmetric/unused padding, non-square inputs.
CASES = [
    (4, 32, 32, 3, 16, (3, 3), (1, 1), "SAME"),
    (4, 16, 16, 16, 16, (3, 3), (1, 1), [(1, 1), (1, 1)]),
    (4, 16, 16, 16, 32, (3, 3), (2, 2), [(1, 1), (1, 1)]),
    (3, 8, 8, 32, 64, (3, 3), (2, 2), "SAME"),
    (2, 9, 7, 5, 6, (1, 1), (1, 1), "VALID"),
    (2, 9, 7, 5, 6, (1, 1), (2, 2), "VALID"),
    (2, 11, 10, 4, 3, (5, 5), (1, 1), "SAME"),
    (2, 11, 10, 4, 3, (3, 2), (3, 2), [(2, 0), (0, 1)]),
    (3, 7, 9, 2, 4, (3, 3), (2, 3), [(0, 2), (1, 0)]),
    (1, 6, 6, 3, 2, (2, 2), (2, 2), "SAME"),
    (2, 5, 5, 3, 2, (3, 3), (1, 1), [(3, 3), (2, 2)]),  # padding wider than the kernel
    (2, 3, 4, 6, 5, (3, 4), (1, 1), "VALID"),  # a single output position
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}x{c[2]}x{c[3]}-{c[4]}_k{c[5]}_s{c[6]}_{c[7]}" for c in CASES])
def test_values_and_gradients(built, case):
    n, h, w, cin, cout, k, strides, padding = case
    kx, kw, kg = jax.random.split(jax.random.key(sum(case[:5])), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    kern = jax.random.normal(kw, (*k, cin, cout)) / np.sqrt(k[0] * k[1] * cin)
    y_ref = reference(x, kern, strides, padding)
    g = jax.random.normal(kg, y_ref.shape)

    def f(impl):
        return jax.jit(lambda x, w: conv.conv_general(x, w, strides, padding, impl=impl))

    def loss(impl):
        return jax.jit(jax.grad(lambda x, w: jnp.vdot(conv.conv_general(x, w, strides, padding, impl=impl), g), (0, 1)))

    assert uses_ffi(f("onednn"), x, kern)
    close(f("onednn")(x, kern), y_ref)
    dx, dw = loss("onednn")(x, kern)
    dx_ref, dw_ref = jax.grad(lambda x, w: jnp.vdot(reference(x, w, strides, padding), g), (0, 1))(x, kern)
    close(dx, dx_ref)
    close(dw, dw_ref)


def _loss(impl, strides=(2, 2), padding="SAME"):
    def loss(x, w):
        y = conv.conv_general(x, w, strides, padding, impl=impl) if impl else reference(x, w, strides, padding)
        return jnp.sum(jnp.tanh(y) ** 2)

    return loss


def test_vmap_members_with_own_kernels_and_data(built):
    xs = jax.random.normal(jax.random.key(0), (3, 4, 10, 10, 5))
    ws = jax.random.normal(jax.random.key(1), (3, 3, 3, 5, 6)) / 6
    got = jax.jit(jax.vmap(jax.value_and_grad(_loss("onednn"), (0, 1))))(xs, ws)
    want = jax.vmap(jax.value_and_grad(_loss(None), (0, 1)))(xs, ws)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        close(a, b)


@pytest.mark.parametrize("axes", [(None, 0), (0, None)], ids=["shared-data", "shared-kernel"])
def test_vmap_shared_operand(built, axes):
    """Members that share the batch (seeds vmapped over one data stream) or share the kernel (the
    handler folds the members into one batch)."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 9, 9, 5))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5, 6)) / 6
    x = x[0] if axes[0] is None else x
    w = w[0] if axes[1] is None else w
    got = jax.jit(jax.vmap(jax.grad(_loss("onednn", (1, 1)), (0, 1)), in_axes=axes))(x, w)
    want = jax.vmap(jax.grad(_loss(None, (1, 1)), (0, 1)), in_axes=axes)(x, w)
    for a, b in zip(got, want):
        close(a, b)


@pytest.mark.parametrize("threads,members,side_by_side", [(2, 4, True), (4, 4, True), (2, 3, True), (3, 7, True),
                                                           (4, 3, True), (2, 4, False)])
def test_members_side_by_side_equal_one_after_another(built, monkeypatch, threads, members, side_by_side):
    """With more than one thread, members with their own kernels run side by side (one single-threaded
    primitive each) when their convolutions are small and there are at least as many as threads, else one
    after another on every thread (`side_by_side` False: the row limit set below these convolutions):
    both give the one-thread values. The thread count is the call's attribute, so any machine runs this."""
    xs = jax.random.normal(jax.random.key(0), (members, 4, 10, 10, 5))
    ws = jax.random.normal(jax.random.key(1), (members, 3, 3, 5, 6)) / 6
    f = jax.vmap(jax.value_and_grad(_loss("onednn"), (0, 1)))
    monkeypatch.setattr(onednn, "SIDE_BY_SIDE_MAX_ROWS", onednn.SIDE_BY_SIDE_MAX_ROWS if side_by_side else 10)

    def compiled(n):  # a new function each time: jit's trace cache would keep the first thread count
        monkeypatch.setattr("nnbasics.threads._pool_threads", n)
        g = jax.jit(lambda a, b: f(a, b))
        text = g.lower(xs, ws).as_text()
        assert f"threads = {n} : i64" in text
        assert f"side_by_side_rows = {onednn.SIDE_BY_SIDE_MAX_ROWS} : i64" in text
        return g

    one = compiled(1)(xs, ws)
    before = onednn.side_by_side_calls()
    many = jax.block_until_ready(compiled(threads)(xs, ws))
    # three calls (forward, both gradients) ran side by side, or none
    assert onednn.side_by_side_calls() - before == (3 if side_by_side and members >= threads else 0)
    want = jax.vmap(jax.value_and_grad(_loss(None), (0, 1)))(xs, ws)
    for a, b, c in zip(jax.tree.leaves(one), jax.tree.leaves(many), jax.tree.leaves(want)):
        close(b, c)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_nested_vmap(built):
    xs = jax.random.normal(jax.random.key(0), (2, 3, 2, 8, 8, 4))
    ws = jax.random.normal(jax.random.key(1), (2, 3, 3, 4, 5)) / 6
    inner = (0, None)  # the inner vmap shares each outer member's kernel
    got = jax.jit(jax.vmap(jax.vmap(jax.grad(_loss("onednn"), (0, 1)), in_axes=inner)))(xs, ws)
    want = jax.vmap(jax.vmap(jax.grad(_loss(None), (0, 1)), in_axes=inner))(xs, ws)
    for a, b in zip(got, want):
        close(a, b)


def test_conv_module_auto_uses_onednn_when_switched_on(built):
    x = jax.random.normal(jax.random.key(0), (32, 8, 8, 3))  # 32 x 4 x 4 = 512 output rows: above the size rule
    layer = conv.Conv(4, (3, 3), strides=2)
    params = layer.init(jax.random.key(1), x)
    conv.use_onednn(False)
    assert conv.choose_implementation(2, 1, 8, "cpu") == "chunked"
    y_off = layer.apply(params, x)
    assert not uses_ffi(lambda p: layer.apply(p, x), params)
    conv.use_onednn(True)
    assert conv.choose_implementation(2, 1, 8, "cpu") == "onednn"
    assert conv.choose_implementation(1, 1, 8, "cpu") == "onednn"  # 1-D: a one-row 2-D conv
    assert conv.choose_implementation(2, 2, 8, "cpu") == "xla"  # grouped: not oneDNN's (nor chunked's)
    assert conv.choose_implementation(2, 1, 8, "gpu") == "xla"
    assert uses_ffi(lambda p: layer.apply(p, x), params)
    close(layer.apply(params, x), y_off)
    hlo = jax.jit(lambda p: layer.apply(p, x)).lower(params).as_text()
    assert re.search(rf"threads = {cpu_threads()} : i64", hlo), "oneDNN's threads must be XLA:CPU's"


# 1-D convs (batch, length, cin, cout, kernel, stride, padding): MNIST-1D's CNN layers, the
# normalizers' 3-tap convs, a 1x1, a VALID and an asymmetric padding
CASES_1D = [
    (6, 40, 1, 25, 5, 2, [(1, 1)]),
    (6, 20, 25, 25, 3, 2, [(1, 1)]),
    (6, 40, 16, 32, 3, 1, "SAME"),
    (6, 17, 8, 4, 1, 1, "VALID"),
    (6, 23, 3, 5, 4, 3, [(2, 0)]),
]


@pytest.mark.parametrize("case", CASES_1D, ids=[f"{c[1]}x{c[2]}-{c[3]}_k{c[4]}_s{c[5]}_{c[6]}" for c in CASES_1D])
def test_1d_values_and_gradients(built, case):
    """A 1-D conv on oneDNN (a one-row 2-D conv) equals lax.conv: output, input and kernel gradients."""
    n, length, cin, cout, k, stride, padding = case
    kx, kw, kg = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(kx, (n, length, cin))
    w = jax.random.normal(kw, (k, cin, cout)) / np.sqrt(k * cin)
    pads = conv.explicit_padding(padding, x.shape[1:2], w.shape[:1], (stride,), (1,))

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (stride,), pads, dimension_numbers=("NWC", "WIO", "NWC"))

    def mine(x, w):
        return conv.conv_general(x, w, stride, padding, impl="onednn")

    assert uses_ffi(mine, x, w)
    g = jax.random.normal(kg, ref(x, w).shape)
    close(jax.jit(mine)(x, w), ref(x, w))
    got = jax.jit(jax.grad(lambda x, w: jnp.sum(mine(x, w) * g), (0, 1)))(x, w)
    want = jax.grad(lambda x, w: jnp.sum(ref(x, w) * g), (0, 1))(x, w)
    for a, b in zip(got, want):
        close(a, b)
    # members with their own kernels and data, as fit vmaps seeds
    xs, ws = jnp.stack([x, 2 * x]), jnp.stack([w, -w])
    got = jax.jit(jax.vmap(jax.grad(lambda x, w: jnp.sum(mine(x, w) ** 2), (0, 1))))(xs, ws)
    want = jax.vmap(jax.grad(lambda x, w: jnp.sum(ref(x, w) ** 2), (0, 1)))(xs, ws)
    for a, b in zip(got, want):
        close(a, b)


def test_switch_moves_every_cpu_formulation_but_xla(built, monkeypatch):
    """Switched on, the CPU formulations a preset names for speed ('patches', 'chunked', 'auto') run
    on oneDNN, 1-D and 2-D, with the same values; 'xla' stays XLA's own; off, none of them does; and on
    another backend the switch changes nothing."""
    # output rows (batch x positions) at or above conv.ONEDNN_MIN_ROWS, so the size rule lets the switch act
    x2, w2 = jax.random.normal(jax.random.key(0), (32, 8, 8, 4)), jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
    x1, w1 = jax.random.normal(jax.random.key(2), (64, 8, 4)), w2[0]
    for x, w in ((x2, w2), (x1, w1)):
        for impl in conv.IMPLEMENTATIONS:
            def f(x, w, impl=impl):  # a new function for each switch position: the switch is read at trace time
                return conv.conv_general(x, w, 2, "SAME", impl=impl)

            conv.use_onednn(False)
            off = f(x, w)
            assert uses_ffi(lambda x, w: f(x, w), x, w) == (impl == "onednn"), (x.ndim, impl, "off")
            conv.use_onednn(True)
            assert uses_ffi(lambda x, w: f(x, w), x, w) == (impl != "xla"), (x.ndim, impl, "on")
            close(f(x, w), off)
    conv.use_onednn(True)
    monkeypatch.setattr(conv.jax, "default_backend", lambda: "gpu")
    for impl in ("auto", "patches", "chunked"):
        assert not uses_ffi(lambda x, w, impl=impl: conv.conv_general(x, w, impl=impl), x2, w2), impl


def test_unsupported_convolutions_fall_back(built):
    conv.use_onednn(True)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 4))
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
    assert uses_ffi(lambda x, w: conv.conv_general(x, w), x, w)
    for kwargs, args in [
        ({"dilation": 2}, (x, w)),
        ({"feature_group_count": 2}, (x, w[:, :, :2])),
        ({"padding": [(-1, 0), (0, 0)]}, (x, w)),
        ({}, (x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))),
        ({"dilation": 2}, (x[:, :, 0], w[:, 0])),  # 1-D, dilated
        ({}, (x[..., None], jnp.ones((3, 3, 3, 1, 2)))),  # 3-D
    ]:
        f = lambda x, w, kwargs=kwargs: conv.conv_general(x, w, **kwargs)  # noqa: E731
        assert not uses_ffi(f, *args), kwargs
        got = f(*args)
        want = conv.conv_general(*args, impl="xla", **kwargs)
        close(got.astype(jnp.float32), want.astype(jnp.float32), 1e-2)


def test_default_off(monkeypatch):
    """Without the switch nothing changes: 'auto' picks today's implementations and never builds."""
    monkeypatch.delenv("NNBASICS_ONEDNN", raising=False)
    monkeypatch.setattr(onednn, "load", lambda warn=True: pytest.fail("load() called with the switch off"))
    assert not conv.onednn_enabled()
    assert conv.choose_implementation(2, 1, 128, "cpu") == "chunked"
    assert conv.choose_implementation(2, 1, 2, "cpu") == "xla"
    x = jnp.ones((8, 6, 6, 3))
    w = jnp.ones((3, 3, 3, 2))
    assert not uses_ffi(lambda x, w: conv.conv_general(x, w), x, w)
    monkeypatch.setenv("NNBASICS_ONEDNN", "0")
    assert not conv.onednn_enabled()


def test_extension_absent_falls_back_with_one_warning(monkeypatch):
    """No oneDNN wheels (or no compiler): the switch on still gives today's path, with one warning."""
    monkeypatch.setattr(onednn, "_state", {"loaded": None, "error": None, "lib": None, "path": None})

    def missing():
        raise onednn.BuildError("the onednn-cpu-gomp wheel is not installed")

    monkeypatch.setattr(onednn, "onednn_paths", missing)
    monkeypatch.setenv("NNBASICS_ONEDNN", "1")
    x = jnp.ones((8, 6, 6, 3))
    w = jnp.ones((3, 3, 3, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert conv.choose_implementation(2, 1, 128, "cpu") == "chunked"
        y = conv.conv_general(x, w)
        y2 = conv.conv_general(x, w, impl="onednn")
    assert len([c for c in caught if "oneDNN" in str(c.message)]) == 1
    assert "not installed" in onednn.error()
    close(y, conv.conv_general(x, w, impl="xla"))
    close(y2, y)


def test_a_run_records_whether_its_convolutions_ran_on_onednn(built, monkeypatch):
    """A run's `versions` name the oneDNN version when the switch was on (the robustness table shows it),
    and say nothing when it was off: the numbers are then XLA's own."""
    from nnbasics.runs import experiment

    conv.use_onednn(False)
    assert "onednn" not in experiment._versions()
    conv.use_onednn(True)
    assert experiment._versions()["onednn"] == onednn.onednn_paths()[2]


def test_model_analyses_see_the_same_function_with_the_switch_on(built):
    """Multiply-adds, receptive field and XLA's flop count read the traced program's convolutions:
    with oneDNN switched on they still count the model's own (traced with the switch off), equal to
    the numbers without it, and the switch is back on afterwards."""
    from nnbasics.analysis import model_stats
    from nnbasics.models import get_model

    model = get_model("resnet20", num_classes=10)
    conv.use_onednn(False)
    off = (model_stats.count_macs(model, (32, 32, 3)), model_stats.receptive_field(model, (32, 32, 3)),
           model_stats.compiled_flops(model, (32, 32, 3)))
    conv.use_onednn(True)
    on = (model_stats.count_macs(model, (32, 32, 3)), model_stats.receptive_field(model, (32, 32, 3)),
          model_stats.compiled_flops(model, (32, 32, 3)))
    assert on == off and off[0] > 40e6  # ResNet-20: 41 M multiply-adds
    assert conv.onednn_enabled()


def test_cli_onednn_flag_switches_on_or_refuses_before_running(monkeypatch, capsys):
    """`nnbasics --onednn ...` switches the convolutions on for the process and its `--jobs` workers
    (the environment), and where the extra cannot be loaded it stops with exit 2 and one line naming
    why and how to install it, before anything runs."""
    from nnbasics.cli import main

    monkeypatch.setenv("NNBASICS_ONEDNN", "0")  # restored after the test
    monkeypatch.setattr(onednn, "load", lambda warn=True: False)
    monkeypatch.setattr(onednn, "error", lambda: "BuildError: the onednn-cpu-gomp wheel is not installed")
    with pytest.raises(SystemExit) as e:
        main(["--onednn", "config", "residual", "--smoke"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--onednn" in err and "wheel is not installed" in err and 'pip install -e ".[onednn]"' in err
    assert conv.os.environ["NNBASICS_ONEDNN"] == "0"
    monkeypatch.setattr(onednn, "load", lambda warn=True: True)
    assert main(["--onednn", "config", "residual", "--smoke"]) == 0
    assert conv.os.environ["NNBASICS_ONEDNN"] == "1"


EIGHT_DEVICES_SCRIPT = r"""
import warnings
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from nnbasics.nn import conv, onednn
assert jax.device_count() == 8 and onednn.load(warn=False), onednn.error()
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jax.random.normal(jax.random.key(0), (64, 8, 8, 16)), NamedSharding(mesh, P("data")))
k = jax.device_put(jax.random.normal(jax.random.key(1), (3, 3, 16, 16)) * 0.1, NamedSharding(mesh, P()))
grad = lambda impl: jax.jit(jax.grad(lambda x, k: jnp.sum(conv.conv_general(x, k, 1, "SAME", impl=impl) ** 2),
                                     argnums=(0, 1)))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    conv.use_onednn(True)
    on = [conv.onednn_enabled() for _ in range(3)]
    hlo = grad("patches").lower(x, k).compile().as_text()
warned = [str(c.message) for c in caught if "oneDNN" in str(c.message)]
# the explicit impl still computes the right numbers (every device gathering the whole batch)
forced = grad("onednn")
forced_hlo = forced.lower(x, k).compile().as_text()
want = grad("xla")(x, k)
err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(forced(x, k), want))
print("RESULT", on, len(warned), "8 devices" in warned[0], "nnbasics_onednn" in hlo,
      "nnbasics_onednn" in forced_hlo and "all-gather" in forced_hlo, err < 1e-4)
"""


def test_the_switch_stands_down_on_several_devices(built):
    """With 8 devices the switch gives XLA's convolutions (one warning): the FFI calls have no sharding
    rule, so XLA would gather the whole batch onto every device (the forced impl="onednn" shows the
    all-gather) and compute every convolution 8 times; the forced path's numbers are still right."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env.pop("NNBASICS_ONEDNN", None)
    out = subprocess.run([sys.executable, "-c", EIGHT_DEVICES_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, out.stderr[-2000:]
    assert line.split(None, 1)[1] == "[False, False, False] 1 True False True True", line


def test_the_switch_leaves_small_convolutions_on_their_formulation(built):
    """Below conv.ONEDNN_MIN_ROWS output rows per call (a member's batch x output positions, as traced:
    under vmap, a member's) the switch keeps the named CPU formulation, where oneDNN's fixed cost per
    call loses (experiments/benchmarks/small_conv_calls.py); at the threshold it moves the conv; the
    explicit impl="onednn" ignores the rule; the values agree either way."""
    rows = conv.ONEDNN_MIN_ROWS
    assert rows == 128
    w2 = jax.random.normal(jax.random.key(1), (3, 3, 8, 8))
    conv.use_onednn(True)
    for batch, side, moved in ((rows // 16 - 1, 4, False), (rows // 16, 4, True), (1, 8, False), (2, 8, True)):
        x = jax.random.normal(jax.random.key(0), (batch, side, side, 8))  # SAME, stride 1: side^2 positions
        for impl in ("auto", "patches", "chunked"):
            f = lambda x, w, impl=impl: conv.conv_general(x, w, 1, "SAME", impl=impl)  # noqa: E731
            assert uses_ffi(f, x, w2) == moved, (batch, side, impl)
        assert uses_ffi(lambda x, w: conv.conv_general(x, w, impl="onednn"), x, w2)
        close(conv.conv_general(x, w2), conv.conv_general(x, w2, impl="xla"))
    # 1-D: batch x output length; stride 2 halves the positions
    w1 = w2[0]
    assert not uses_ffi(lambda x, w: conv.conv_general(x, w, 2), jnp.ones((15, 16, 8)), w1)  # 15 x 8 = 120
    assert uses_ffi(lambda x, w: conv.conv_general(x, w, 2), jnp.ones((16, 16, 8)), w1)  # 16 x 8 = 128
    # under vmap the rule sees a member's batch: 6 members of batch 2 stay on the patch matrix
    xs = jax.random.normal(jax.random.key(3), (6, 2, 40, 8))
    g = jax.vmap(lambda x: conv.conv_general(x, w1, 1, "SAME", impl="patches"))
    assert not uses_ffi(g, xs)
    assert uses_ffi(jax.vmap(lambda x: conv.conv_general(x, w1, 1, "SAME", impl="patches")),
                    jnp.tile(xs, (1, 4, 1, 1)))  # batch 8 x 40 = 320 rows


def test_threads_benchmark_compares_both_paths(built, monkeypatch, capsys):
    """The benchmark that set SIDE_BY_SIDE_MAX_ROWS runs end to end on a tiny case: its programs carry the
    limit it asks for (0 for one after another), the module's limit is restored, every time is positive."""
    from experiments.benchmarks import onednn_threads

    monkeypatch.setattr(onednn_threads, "CALLS", 2)
    monkeypatch.setattr(onednn_threads, "CONV_CASES", [(2, 4, 3)])
    limit = onednn.SIDE_BY_SIDE_MAX_ROWS
    with onednn_threads.side_by_side(False):
        assert onednn.SIDE_BY_SIDE_MAX_ROWS == 0
        assert "side_by_side_rows = 0 : i64" in onednn_threads._conv_program(2, 4, 3, 2)[0].as_text()
    assert onednn.SIDE_BY_SIDE_MAX_ROWS == limit
    out = onednn_threads.main([2], [8], steps=2, repeats=1)
    assert [r["rows"] for r in out if "rows" in r] == [32]
    assert {r["setting"] for r in out if "setting" in r} == {
        "patches (no extra)", "oneDNN, one after another", "oneDNN, side by side"}
    assert all(v > 0 for r in out for k, v in r.items() if k.endswith(("_us", "_per_s")))
    assert "| 2 x 4x4 x 3 | 32 |" in capsys.readouterr().out



MEMBERS_SPLIT_SCRIPT = r"""
import json, sys, warnings
import jax, numpy as np
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit, parallel
from nnbasics.engine import loop
from nnbasics.models.resnet import cifar_resnet
from nnbasics.nn import conv, onednn
from nnbasics.progress import set_quiet
set_quiet(True)
assert onednn.load(warn=False), onednn.error()
conv.use_onednn(True)
model = cifar_resnet(8, 10, width=4, conv_impl="patches")
data = load_dataset("digits")
tc = TrainConfig(steps=6, batch_size=16, eval_every=3, seeds=tuple(range(int(sys.argv[1]))),
                 optimizer={"name": "momentum", "learning_rate": 0.05, "momentum": 0.9})
run = loop._setup(model, data, tc, "auto", None)  # the mesh (and padding) that fit chooses
shape = [parallel.axis_size(run.mesh, a) for a in (parallel.MEMBERS_AXIS, parallel.DATA_AXIS)]
state, _ = loop._initial_state(run)
idx = parallel.shard_members(np.zeros((len(run.members), 3, 16), np.int32), run.mesh)
hlo = run.run_chunk.lower(state, idx, run.arrays[0], run.arrays[1], np.int32(3)).as_text()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r = fit(model, data, tc)
print("RESULT " + json.dumps({
    "devices": jax.device_count(), "mesh": shape, "ffi": hlo.count("nnbasics_onednn_conv"), "padding": run.padding,
    "seeds": [m["seed"] for m in r.members],
    "warned": [str(c.message) for c in caught if "oneDNN" in str(c.message)],
    "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.params)],
    "loss": r.history[-1]["train_loss"]}))
"""


def _members_split(devices: int, seeds: int = 4) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("NNBASICS_ONEDNN", None)
    out = subprocess.run([sys.executable, "-c", MEMBERS_SPLIT_SCRIPT, str(seeds)], capture_output=True, text=True, env=env,
                         timeout=600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def test_members_split_over_devices_keeps_onednn_and_the_numbers(built):
    """On 4 simulated devices with the switch on, `fit` splits 4 seeds one per device (the members axis
    is preferred over the batch), each device's program calls oneDNN (its StableHLO holds the FFI calls)
    with no stand-down warning, and the trained parameters and losses equal the one-device run's."""
    one, four = _members_split(1), _members_split(4)
    assert (one["devices"], one["mesh"]) == (1, [1, 1]) and (four["devices"], four["mesh"]) == (4, [4, 1])
    assert one["ffi"] > 0 and four["ffi"] == one["ffi"], (one["ffi"], four["ffi"])
    assert one["warned"] == [] and four["warned"] == [], four["warned"]
    for a, b in zip(four["params"], one["params"]):
        close(a, b, rtol=1e-5)
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)


def test_members_padded_over_devices_keep_onednn_and_the_numbers(built):
    """3 seeds on 2 simulated devices with the switch on: a copy of the last seed makes 4, split (2, 1), each
    device's program calls oneDNN with no stand-down warning, and the 3 seeds' parameters and losses equal the
    one-device run's (without the padding the batch would be split and oneDNN would stand down)."""
    one, two = _members_split(1, seeds=3), _members_split(2, seeds=3)
    assert (one["mesh"], one["padding"]) == ([1, 1], 0) and (two["mesh"], two["padding"]) == ([2, 1], 1)
    assert one["seeds"] == two["seeds"] == [0, 1, 2]
    assert one["ffi"] > 0 and two["ffi"] == one["ffi"], (one["ffi"], two["ffi"])
    assert one["warned"] == [] and two["warned"] == [], two["warned"]
    for a, b in zip(two["params"], one["params"]):
        close(a, b, rtol=1e-5)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)


def test_per_device_program_shares_the_threads():
    """Inside `per_device_program(k)` a call takes XLA's thread count divided by k (at least one);
    outside, all of it; nesting restores; bad counts are refused."""
    assert onednn.per_device_devices() is None and onednn.call_threads() == cpu_threads()
    with onednn.per_device_program(2):
        assert onednn.per_device_devices() == 2 and onednn.call_threads() == max(1, cpu_threads() // 2)
        with onednn.per_device_program(10 ** 6):
            assert onednn.call_threads() == 1
        assert onednn.per_device_devices() == 2
    assert onednn.per_device_devices() is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="devices must be a whole number of at least 1"):
            with onednn.per_device_program(bad):
                pass
