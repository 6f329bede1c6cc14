"""ResNets and plain nets: exact parameter counts, shortcuts, pluggable norm and activation."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnbasics.analysis.model_stats import abstract_variables, random_variables
from nnbasics.models import get_model, model_info, model_names, resnet


def n_params(model, shape) -> int:
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"])))


def cifar_count(depth: int, shortcut: str = "A", width: int = 16) -> int:
    """The CIFAR ResNet's parameters counted by hand from the paper's description (sec. 4.2)."""
    n = (depth - 2) // 6
    w = [width, 2 * width, 4 * width]
    convs = 27 * w[0]  # 3x3x3 stem
    bns = 2 * w[0]
    cin = w[0]
    for c in w:
        for _ in range(n):
            convs += 9 * cin * c + 9 * c * c
            bns += 4 * c
            if shortcut == "B" and cin != c:
                convs += cin * c
                bns += 2 * c
            cin = c
    return convs + bns + w[2] * 10 + 10


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_counts(depth):
    assert n_params(get_model(f"resnet{depth}"), (32, 32, 3)) == cifar_count(depth) == resnet.REFERENCE_PARAMS[f"resnet{depth}"]
    # the paper's rounded numbers (0.27M, 0.46M, 0.66M, 0.85M, 1.7M)
    paper = resnet.PAPER_PARAMS[f"resnet{depth}"]
    assert abs(cifar_count(depth) - paper) / paper < 0.02
    # a plain net has the same layers (option A shortcuts have no parameters)
    assert n_params(get_model(f"plain{depth}"), (32, 32, 3)) == cifar_count(depth)


def test_cifar_option_b_and_width():
    assert n_params(get_model("resnet20", shortcut="B"), (32, 32, 3)) == cifar_count(20, "B") == 272_474
    assert n_params(get_model("resnet20", width=4), (32, 32, 3)) == cifar_count(20, width=4)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_counts_equal_torchvision(depth):
    torchvision = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}[depth]
    assert n_params(get_model(f"resnet{depth}", num_classes=1000), (224, 224, 3)) == torchvision
    assert model_info(f"resnet{depth}")["reference_params"] == torchvision


def test_every_resnet_has_a_plain_twin():
    names = model_names()
    for d in (*resnet.CIFAR_DEPTHS, *resnet.IMAGENET_SPECS):
        assert f"resnet{d}" in names and f"plain{d}" in names


def test_pad_shortcut():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    s = resnet.pad_shortcut(x, 7, 2)
    assert s.shape == (2, 2, 2, 7)
    np.testing.assert_array_equal(s[..., 2:5], x[:, ::2, ::2, :])
    assert float(jnp.abs(s[..., :2]).sum() + jnp.abs(s[..., 5:]).sum()) == 0.0


def _zero_kernels(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if "kernel" in jax.tree_util.keystr(p) and "proj" not in jax.tree_util.keystr(p) else v,
        params,
    )


@pytest.mark.parametrize("block", [resnet.BasicBlock, resnet.BottleneckBlock])
def test_residual_block_is_identity_when_branch_is_zero(block):
    """F(x) = 0 gives relu(x + 0) = relu(x) for a residual block and relu(0) = 0 for a plain one."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    feats = 16 if block is resnet.BasicBlock else 4
    for residual in (True, False):
        m = block(feats, residual=residual, norm="none")
        params = _zero_kernels(random_variables(m, (8, 8, 16))["params"])
        y = jax.jit(m.apply)({"params": params}, x)
        np.testing.assert_allclose(y, jax.nn.relu(x) if residual else jnp.zeros_like(x), atol=1e-6)


def test_projection_shortcut_where_shape_changes():
    def params(block):
        return abstract_variables(block, (8, 8, 16))["params"]

    assert params(resnet.BasicBlock(32, strides=2, shortcut="B"))["proj_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert "proj_conv" not in params(resnet.BasicBlock(16, strides=1, shortcut="B"))
    assert "proj_conv" not in params(resnet.BasicBlock(32, strides=2, shortcut="A"))
    assert "proj_conv" in params(resnet.BasicBlock(16, strides=1, shortcut="C"))


def test_train_mode_updates_batch_stats_and_sows_responses():
    m = get_model("resnet20", width=4)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    v = random_variables(m, (32, 32, 3))
    y, upd = jax.jit(functools.partial(m.apply, train=True, mutable=["batch_stats", "intermediates"]))(v, x)
    assert y.shape == (4, 10) and bool(jnp.isfinite(y).all())
    assert len(jax.tree.leaves(upd["intermediates"])) == 18  # two 3x3 responses per block, 9 blocks
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], upd["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_norm_and_activation_are_pluggable():
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    plain = get_model("plain20", width=4, norm="none", activation="tanh")
    v = random_variables(plain, (16, 16, 3))
    assert set(v) == {"params"}
    y = jax.jit(plain.apply)(v, x)
    # a factory: GroupNorm with 2 groups (no running statistics either)
    gn = get_model("resnet20", width=4, norm=lambda train: functools.partial(nn.GroupNorm, num_groups=2))
    v = abstract_variables(gn, (16, 16, 3))
    assert set(v) == {"params"} and "scale" in v["params"]["stem_norm"]
    # a name from the normalizer registry: no running statistics, the same per-channel scale and bias
    ln = get_model("resnet20", norm="layer")
    assert set(abstract_variables(ln, (8, 8, 3))) == {"params"} and n_params(ln, (8, 8, 3)) == 269_722
    with pytest.raises(ValueError, match="6n"):
        resnet.cifar_resnet(21)
    assert y.shape == (2, 10) and bool(jnp.isfinite(y).all())
    # the activation is the one named: a linear ("identity") block is additive in its input
    blk = resnet.BasicBlock(3, residual=True, norm="none", activation="identity")
    vb = random_variables(blk, (16, 16, 3))
    f = jax.jit(blk.apply)
    np.testing.assert_allclose(f(vb, 2 * x), 2 * f(vb, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_forward_small_input(name):
    """Global average pooling lets the ImageNet ResNets run on a 32x32 input (eagerly: no compile
    of the whole net); weights filled on the host."""
    m = get_model(name, num_classes=5)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    y = m.apply(random_variables(m, (32, 32, 3)), x)
    assert y.shape == (2, 5) and bool(jnp.isfinite(y).all()) and float(jnp.std(y)) > 0


def test_scanned_blocks_compute_the_same_function():
    """scan_blocks=True stacks the blocks after each stage's first (one compiled body per stage):
    the same parameters, the same outputs, the same BatchNorm statistics and responses."""
    a, b = get_model("resnet20", width=4), get_model("resnet20", width=4, scan_blocks=True)
    assert n_params(a, (16, 16, 3)) == n_params(b, (16, 16, 3))
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    vb = random_variables(b, (16, 16, 3), seed=3)

    def unroll(tree):
        out = {}
        for k, sub in tree.items():
            if k.endswith("_blocks"):
                n = jax.tree.leaves(sub)[0].shape[0]
                for j in range(n):
                    out[f"{k.split('_')[0]}_block{j + 2}"] = jax.tree.map(lambda t, j=j: t[j], sub["block"])
            else:
                out[k] = sub
        return out

    va = {c: unroll(vb[c]) for c in vb}
    ya, ua = a.apply(va, x, train=True, mutable=["batch_stats", "intermediates"])
    yb, ub = b.apply(vb, x, train=True, mutable=["batch_stats", "intermediates"])
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-5)
    for u, v in zip(jax.tree.leaves(unroll(ub["batch_stats"])), jax.tree.leaves(ua["batch_stats"])):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_cifar10_resnet_needs_prepared_data(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from nnbasics.data.tfds import DatasetNotPrepared
    from nnbasics.runs.experiment import load_experiment, run_experiment

    assert load_experiment("cifar10_resnet").REPRODUCE is False
    with pytest.raises(DatasetNotPrepared, match="(?s)not prepared.*tfds build cifar10"):
        run_experiment("cifar10_resnet", "smoke", [f"--config.data_dir={tmp_path / 'none'}"], workdir=tmp_path / "w")


def test_cifar10_resnet_trains_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from nnbasics.runs.experiment import run_experiment

    with tfds.testing.mock_data(num_examples=32):
        res = run_experiment("cifar10_resnet", "smoke", workdir=tmp_path)
    from nnbasics.runs.workdir import read_metrics

    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "step" in r]
    assert [r["step"] for r in rows] == [2, 4]
    (c,) = res["claims"]
    assert c["id"] == "runs_resnet20" and c["verdict"] == "pass"  # finite losses at steps 2 and 4
    m = c["measured"]
    assert (m["eval_points"], m["steps"]) == (2, 4)
    assert m["train_loss_last"] == pytest.approx(np.mean(rows[-1]["train_loss"]), rel=1e-5)  # the last row's mean
    assert 1.5 < m["train_loss_last"] < 3.5  # 4 steps from scratch on 10 random classes: near ln 10


@pytest.mark.parametrize("scan", [False, True])
def test_zero_init_residual_zeros_the_last_norm_scale_of_residual_blocks_only(scan):
    x = jnp.ones((2, 8, 8, 3))
    for residual in (True, False):
        m = resnet.cifar_resnet(20, width=2, residual=residual, zero_init_residual=True, scan_blocks=scan)
        params = m.init(jax.random.key(0), x, train=False)["params"]
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
                for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
        last = [v for k, v in flat.items() if k.endswith("norm2/scale")]
        first = [v for k, v in flat.items() if k.endswith("norm1/scale")]
        assert len(last) == (6 if scan else 9) and len(first) == len(last)  # unrolled: 9 blocks; scanned: 3 + 3 stacked
        assert all(float(jnp.abs(v).max()) == (0.0 if residual else 1.0) for v in last)
        assert all(float(v.min()) == 1.0 for v in first)
    default = resnet.cifar_resnet(20, width=2).init(jax.random.key(0), x, train=False)["params"]
    assert float(default["stage1_block1"]["norm2"]["scale"].min()) == 1.0
