"""Receptive fields: analytic formulas by hand, paper values, and agreement with jax.grad supports."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from nnbasics.analysis import receptive_field as rfa
from nnbasics.models import get_model, model_names
from nnbasics.nn.conv import Conv


def test_chain_by_hand():
    # conv3 (pad 1) -> pool2/2 -> conv3 dilation 2 (pad 2) -> conv3 stride 2 (pad 1)
    layers = [rfa.Layer(3, 1, 1, 1), rfa.Layer(2, 2, 1, 0), rfa.Layer(3, 1, 2, 2), (3, 2, 1, 1)]
    rows = rfa.receptive_field_table(layers, input_size=32)
    sizes = [r.size[0] for _, r in rows]
    jumps = [r.jump[0] for _, r in rows]
    starts = [r.start[0] for _, r in rows]
    assert sizes == [1, 3, 4, 12, 16]  # 1 + 2*1, +1*1, +4*2, +2*2
    assert jumps == [1, 1, 2, 2, 4]
    assert starts == [0, -1, -1, -5, -7]  # start - pad_low * jump
    assert rows[-1][1].out_size == (8, 8)
    assert rows[-1][1].span((2, 0)) == [(1, 16), (-7, 8)]


def test_dilated_and_stacked_fields():
    assert [rfa.receptive_field([rfa.Layer(3, 1, d, "SAME") for d in (1, 2, 4)[:n]]).size[0] for n in (1, 2, 3)] == [
        3, 7, 15]  # Yu & Koltun Fig. 1
    assert rfa.receptive_field([rfa.Layer(3)] * 2).size == (5, 5)
    assert rfa.receptive_field([rfa.Layer(3)] * 3).size == (7, 7)
    assert rfa.num_layers_for(7) == 3
    assert rfa.receptive_field([rfa.Layer((3, 1)), rfa.Layer((1, 5))]).size == (3, 5)


def test_paper_architecture_values():
    """Known values (torchvision layer choices): AlexNet conv5 163, VGG-16 conv5_3 196 (pool5: 212),
    ResNet-50 427, ResNet-18 435 (Araujo et al. 2019 and the receptive-field literature)."""
    assert rfa.receptive_field(rfa.alexnet_layers()).size[0] == 163
    assert rfa.receptive_field(rfa.vgg_layers("vgg16")).size[0] == 196
    assert rfa.receptive_field(rfa.vgg_layers("vgg16") + [rfa.Layer(2, 2)]).size[0] == 212
    assert rfa.receptive_field(rfa.resnet_layers("resnet50")).size[0] == 427
    assert rfa.receptive_field(rfa.resnet_layers("resnet18")).size[0] == 435
    assert rfa.receptive_field(rfa.cifar_resnet_layers(20)).size[0] == 81
    assert rfa.receptive_field(rfa.resnet_layers("resnet50"), 224).out_size == (7, 7)
    assert rfa.architecture_layers("resnet56") == rfa.cifar_resnet_layers(56)
    assert rfa.architecture_layers("googlenet") is None


def test_same_padding_with_stride_needs_input_size():
    with pytest.raises(ValueError, match="input_size"):
        rfa.receptive_field([rfa.Layer(3, 2, 1, "SAME")])
    # lax's SAME on an even input with stride 2 pads (0, 1): the start does not move.
    assert rfa.receptive_field([rfa.Layer(3, 2, 1, "SAME")], input_size=8).start == (0, 0)
    with pytest.raises(ValueError, match="empty"):
        rfa.receptive_field([rfa.Layer(5)], input_size=3)


class SmallNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = jax.nn.relu(Conv(4, (3, 3), padding="SAME")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = jax.nn.relu(Conv(4, (3, 3), kernel_dilation=2, padding="SAME")(x))
        x = Conv(4, (3, 3), strides=2, padding=[(1, 1), (1, 1)])(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_gradient_support_equals_analytic_field():
    layers = [rfa.Layer(3, 1, 1, "SAME"), rfa.Layer(2, 2), rfa.Layer(3, 1, 2, "SAME"), rfa.Layer(3, 2, 1, 1)]
    rf = rfa.receptive_field(layers, 32)
    f = rfa.last_conv_fn(SmallNet(), (32, 32, 1))
    m = rfa.empirical_receptive_field(f, (32, 32, 1), num_inputs=16)
    assert m.size == rf.size == (16, 16)
    assert [a for a, _ in rf.span(m.unit)] == list(m.start)
    assert m.fill == 1.0
    assert m.grad_map.shape == (32, 32)
    # Any other unit moves by the jump.
    m2 = rfa.empirical_receptive_field(f, (32, 32, 1), unit=(3, 5), num_inputs=16)
    assert [a for a, _ in rf.span((3, 5))] == list(m2.start)


def test_head_is_skipped_and_weights_never_created():
    f = rfa.last_conv_fn(SmallNet(), (16, 16, 1))
    assert set(f.args[0]["params"]) == {"Conv_0", "Conv_1", "Conv_2"}  # no Dense_0


def test_plain_function_and_zero_gradient():
    m = rfa.empirical_receptive_field(lambda x: x[:, 2:-2, 2:-2] * 0 + x[:, :-4, :-4], (9, 9, 1), unit=(1, 1))
    assert m.size == (1, 1) and m.start == (1, 1)
    with pytest.raises(ValueError, match="zero"):
        rfa.empirical_receptive_field(lambda x: x * 0.0, (5, 5, 1))


@pytest.mark.parametrize("name", ["fcn", "resnet20"])
def test_registry_models_agree(name):
    if name not in model_names():
        pytest.skip(f"{name} is not registered")
    from experiments.receptive_fields import model_layers

    layers = model_layers(name)
    rf = rfa.receptive_field(layers)
    h = rf.jump[0] * int(np.ceil(rf.size[0] / rf.jump[0] + 2))
    w = max(2 * rf.jump[0], 16)
    kw = {"pad_input": False} if name == "fcn" else {}
    f = rfa.last_conv_fn(get_model(name, num_classes=10, **kw), (h, w, 3))
    m = rfa.empirical_receptive_field(f, (h, w, 3))
    assert m.size[0] == rf.size[0]
    assert m.start[0] == rf.span(m.unit)[0][0]


def test_receptive_fields_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    doc = run_experiment("receptive_fields", "smoke", workdir=tmp_path)
    ids = [c["id"] for c in doc["claims"]]
    assert ids == ["dilated_receptive_fields", "stacked_3x3_convs", "registry_receptive_fields"]
    for c in doc["claims"]:
        assert c["verdict"] == "pass"  # exact identities and counts: a correct implementation passes at any size
    byid = {c["id"]: c for c in doc["claims"]}
    assert byid["dilated_receptive_fields"]["measured"]["rf_measured"] == [3.0, 7.0]
    stacked = byid["stacked_3x3_convs"]
    assert stacked["measured"]["dof_two_3x3"] == 17.0 and stacked["measured"]["dof_three_3x3"] <= 27
    assert stacked["measured"]["composite_relative_error"] < 1e-5
    assert all(not k["random"] for k in stacked["checks"])
    assert (tmp_path / "receptive_fields.json").exists()
    assert (tmp_path / "figures" / "gradient_receptive_fields.png").exists()
