"""AlexNet, VGG, GoogLeNet; parameter, multiply-add and receptive-field counting; the model table."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.analysis import model_stats
from nnbasics.models import get_model, googlenet, model_info
from nnbasics.models.alexnet import adaptive_avg_pool
from nnbasics.nn.conv import Conv

# torchvision.models' counts for 1000 classes (sum(p.numel() for p in m.parameters()))
TORCHVISION = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_counts_equal_torchvision(name):
    assert model_stats.count_params(get_model(name, num_classes=1000), (224, 224, 3)) == TORCHVISION[name]
    assert model_info(name)["reference_params"] == TORCHVISION[name]


def test_vgg_bn_adds_two_parameters_per_conv_channel():
    convs16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert TORCHVISION["vgg16_bn"] - TORCHVISION["vgg16"] == 2 * sum(convs16)


def test_googlenet_matches_table1():
    m = get_model("googlenet", num_classes=1000)
    n = model_stats.count_params(m, (224, 224, 3))
    assert n == googlenet.googlenet_params_by_hand() == 6_998_552  # 5x5 branches, biases, no auxiliary heads
    assert abs(n - googlenet.TABLE1_TOTAL) / googlenet.TABLE1_TOTAL < 0.05  # Table 1's own (rounded) column sums to 6.80M
    shapes = model_stats.abstract_variables(m, (224, 224, 3))["params"]
    assert shapes["inception_3a"]["b3_5x5"]["conv"]["kernel"].shape == (5, 5, 16, 32)
    # output channels of every block are the four branches' sum (Table 1 "depth" 256, 480, ..., 1024)
    x = jnp.zeros((1, 224, 224, 3))
    block = googlenet.Inception(googlenet.INCEPTION["5b"])
    out = jax.eval_shape(lambda: block.init_with_output(jax.random.key(0), jnp.zeros((1, 7, 7, 832))))
    assert out[0].shape == (1, 7, 7, 1024)
    del x
    aux = model_stats.count_params(get_model("googlenet", num_classes=1000, aux_logits=True), (224, 224, 3))
    assert aux > n  # the auxiliary heads exist on request and are not in the default count


def test_inception_uses_the_pool_branch():
    """The pool-projection branch contributes to the output (uvadlc #131 dropped it)."""
    block = googlenet.Inception((2, 2, 2, 2, 2, 3))
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
    params = model_stats.random_variables(block, (6, 6, 4))["params"]
    g = jax.jit(jax.grad(lambda p: jnp.sum(block.apply({"params": p}, x) ** 2)))(params)
    assert float(jnp.abs(g["b4_proj"]["conv"]["kernel"]).sum()) > 0
    y = jax.jit(block.apply)({"params": params}, x)
    assert y.shape == (1, 6, 6, 2 + 2 + 2 + 3)


def test_local_response_norm_by_hand():
    x = jax.random.normal(jax.random.key(0), (1, 2, 2, 7))
    out = jax.jit(lambda x: googlenet.local_response_norm(x, size=5, alpha=1e-1, beta=0.75, k=2.0))(x)
    xn = np.asarray(x)
    ref = np.empty_like(xn)
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        ref[..., c] = xn[..., c] / (2.0 + 0.1 / 5 * np.sum(xn[..., lo:hi] ** 2, axis=-1)) ** 0.75
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_adaptive_avg_pool_like_pytorch():
    x = np.arange(5 * 5, dtype=np.float32).reshape(1, 5, 5, 1)
    y = np.asarray(jax.jit(lambda x: adaptive_avg_pool(x, (3, 3)))(x))[0, ..., 0]
    xn = np.asarray(x)[0, ..., 0]
    bins = [(0, 2), (1, 4), (3, 5)]  # floor(i*5/3) .. ceil((i+1)*5/3)
    ref = np.array([[xn[a:b, c:d].mean() for c, d in bins] for a, b in bins])
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    np.testing.assert_allclose(adaptive_avg_pool(np.ones((1, 1, 1, 2), np.float32), (7, 7)), np.ones((1, 7, 7, 2)))


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = Conv(4, (3, 3), strides=1, padding="SAME")(x)  # 8*8*4 outputs x 27 = 6912 MACs
        x = Conv(6, (3, 3), strides=2, padding="VALID", feature_group_count=2)(x)  # 3*3*6 x (9*2) = 972
        x = nn.max_pool(x, (3, 3), strides=(1, 1))
        return nn.Dense(5)(x.reshape(x.shape[0], -1))  # 6 x 5 = 30


def test_macs_by_hand_and_against_xla():
    m = _Tiny()
    assert model_stats.count_macs(m, (8, 8, 3)) == 6912 + 972 + 30
    # XLA's flop count of the compiled program: 2 per multiply-add, minus the padding zeros XLA
    # skips, plus the element-wise ops; it brackets our count
    flops = model_stats.compiled_flops(m, (8, 8, 3))
    assert 0.8 * 2 * (6912 + 972 + 30) < flops < 1.5 * 2 * (6912 + 972 + 30)


@pytest.mark.parametrize("name,macs,rf", [
    ("alexnet", 714_188_480, 195),  # torchvision 0.71 GFLOPS; the known 195-pixel receptive field
    ("vgg16", 15_470_264_320, 212),  # torchvision 15.47; pool5 sees 212 pixels
    ("resnet18", 1_814_073_344, 435),  # torchvision 1.81; He et al. 1.8e9
    ("resnet20", 40_551_040, 81),  # 3 + 2 * (6 * 1 + 6 * 2 + 6 * 4) - ... = 81 (see the hand count below)
])
def test_macs_and_receptive_fields(name, macs, rf):
    s = model_stats.model_stats(name)
    assert s.macs == macs and s.receptive_field == rf


def test_receptive_field_formula_and_gradient():
    # by hand for the CIFAR ResNet-20: the 3x3 stem, then 18 3x3 convs at jumps 1, 2, 4 (6 each)
    size, jump = 3, 1
    for stage in range(3):
        for layer in range(6):
            if stage > 0 and layer == 0:
                size += 2 * jump
                jump *= 2
            else:
                size += 2 * jump
    assert size == 81
    # measured: the support of d(last feature map unit)/d(input) for a narrow ResNet-20
    m = get_model("resnet20", width=2, norm="none", activation="identity")  # linear: no dead paths
    x = jax.random.normal(jax.random.key(0), (1, 96, 96, 3))
    v = model_stats.random_variables(m, (96, 96, 3))

    def unit(x):
        _, inter = m.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
        fmap = inter["intermediates"]["stage3_block3"]["__call__"][0]
        return fmap[0, 12, 12].sum()

    g = np.abs(np.asarray(jax.jit(jax.grad(unit))(x)))[0].sum(-1)
    rows, cols = np.flatnonzero(g.sum(1)), np.flatnonzero(g.sum(0))
    assert rows[-1] - rows[0] + 1 == 81 and cols[-1] - cols[0] + 1 == 81
    assert model_stats.receptive_field(m, (96, 96, 3)) == 81


class _TwoConvs(nn.Module):
    impl: str = "xla"
    dilation: int = 1

    @nn.compact
    def __call__(self, x, train=False):
        x = Conv(2, (3, 3), padding="SAME", impl=self.impl)(x)
        x = Conv(2, (3, 3), strides=2, padding="SAME", kernel_dilation=self.dilation, impl=self.impl)(x)
        return x.mean(axis=(1, 2))


@pytest.mark.parametrize("impl", ["xla", "patches"])
def test_receptive_field_of_either_conv_implementation(impl):
    """Two 3x3 convs see 5x5 (the lecture's 18-for-25); a dilation of 2 in the second: 7x7. The
    patch-matrix implementation (slices, stack, matrix product) gives the same answer."""
    assert model_stats.receptive_field(_TwoConvs(impl), (9, 9, 1)) == 5
    assert model_stats.receptive_field(_TwoConvs(impl, dilation=2), (9, 9, 1)) == 7
    assert model_stats.count_macs(_TwoConvs(impl), (8, 8, 1)) == 8 * 8 * 2 * 9 + 4 * 4 * 2 * 18


@pytest.mark.parametrize("name,shape,batch", [
    ("alexnet", (64, 64, 3), 2), ("vgg11_bn", (32, 32, 3), 1), ("googlenet", (32, 32, 3), 2),
])
def test_forward_pass(name, shape, batch):
    """A forward pass on CPU at a small batch and input (global / adaptive pooling allow it); the
    weights are filled on the host (no random-number program to compile) and the classifier is
    narrowed to 256 units (its full shapes are checked by the parameter counts). Every other
    model's forward pass is traced abstractly by the parameter-count tests."""
    m = get_model(name, num_classes=7, **({} if name == "googlenet" else {"hidden": 256}))
    v = model_stats.random_variables(m, shape)
    x = jax.random.normal(jax.random.key(0), (batch, *shape))
    y = jax.jit(m.apply)(v, x)
    assert y.shape == (batch, 7) and bool(jnp.isfinite(y).all()) and float(jnp.std(y)) > 0


def test_models_table_json_and_text():
    rows = json.loads(__import__("nnbasics.runs.models_table", fromlist=["x"]).models_table(True, ["resnet20", "mlp"]))
    assert [r["name"] for r in rows] == ["resnet20", "mlp"]
    assert {"name", "input_shape", "params", "macs"} <= set(rows[0])
    assert rows[0]["params"] == 269_722 and rows[0]["input_shape"] == [32, 32, 3] and rows[0]["macs"] == 40_551_040
    assert rows[1]["params"] is None  # an MLP has no fixed input shape
    from nnbasics.runs.models_table import models_table

    text = models_table(False, ["resnet20"])
    assert "resnet20" in text and "269,722" in text and "= 269,722" in text


def test_model_zoo_experiment_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    res = run_experiment("model_zoo", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in res["claims"]]
    assert ids[0] == "params_equal_reference" and "params_resnet20" in ids and "macs_alexnet" in ids
    for c in res["claims"]:
        assert c["verdict"] == "pass", c  # counting is exact even in the smoke preset
    assert res["claims"][0]["context"][0]["lecture_top5_error"] == 15.3
    assert (tmp_path / "models.txt").exists() and (tmp_path / "figures" / "params_vs_macs.png").exists()


def _googlenet_sizes(hw: int) -> list[int]:
    """The spatial size after conv1 and after every stride-2 pool, by PyTorch's ceil_mode formula."""
    sizes = [(hw + 6 - 7) // 2 + 1]
    for _ in range(4):
        h = sizes[-1]
        out = -(-(h - 3) // 2) + 1
        sizes.append(out - 1 if (out - 1) * 2 >= h else out)
    return sizes


@pytest.mark.parametrize("hw", [224, 225, 199, 31])
def test_googlenet_pools_round_up_like_pytorch(hw):
    """GoogLeNet's 3x3/2 max pools follow PyTorch's ceil_mode (torchvision, Caffe) at odd sizes too:
    225 -> 113 -> 56 -> 28 -> 14 -> 7 (SAME padding would give 57 after the first pool)."""
    m = get_model("googlenet", num_classes=5)

    def run(x):
        return m.init_with_output(jax.random.key(0), x, capture_intermediates=True)

    _, state = jax.eval_shape(run, jnp.zeros((1, hw, hw, 3)))
    inter = state["intermediates"]
    sizes = _googlenet_sizes(hw)
    assert inter["conv1"]["__call__"][0].shape[1] == sizes[0]
    for block, size in (("inception_3a", sizes[2]), ("inception_4a", sizes[3]), ("inception_5a", sizes[4])):
        assert inter[block]["__call__"][0].shape[1:3] == (size, size), (block, hw)
    if hw == 225:
        assert sizes == [113, 56, 28, 14, 7]
    if hw == 31:
        assert sizes[-1] == 1


def test_googlenet_too_small_input_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        jax.eval_shape(lambda x: get_model("googlenet", num_classes=5).init(jax.random.key(0), x), jnp.zeros((1, 30, 30, 3)))


def test_models_table_is_cached_by_source_and_survives_a_damaged_cache(tmp_path, monkeypatch):
    """The rows come from the cache once computed (the counters are not called again), equal the
    computed ones, and a damaged cache file is ignored and rewritten."""
    from nnbasics.runs import models_table as mt

    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    first = mt.model_rows(["resnet20", "alexnet"])
    (path,) = tmp_path.glob("models-*.json")
    assert set(json.loads(path.read_text())) == {"resnet20", "alexnet"}

    def fail(names):
        raise AssertionError(f"computed again: {names}")

    with monkeypatch.context() as m:
        m.setattr(mt, "_compute_rows", fail)
        assert mt.model_rows(["alexnet", "resnet20"]) == first[::-1]
    path.write_text('{"resnet20": [1, 2')  # cut mid-file
    again = mt.model_rows(["resnet20"])
    assert again == first[:1] and again[0]["params"] == 269_722
    assert json.loads(path.read_text())["resnet20"] == first[0]
