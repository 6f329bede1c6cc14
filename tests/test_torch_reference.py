"""The zoo's models against PyTorch: the same weights give the same logits (eval mode).

Compact PyTorch references with torchvision's layouts are written here (torchvision itself is not
imported: its wheel does not load beside the CPU torch): ImageNet ResNets (basic and bottleneck
blocks, stride on the 3x3, projection shortcuts), the CIFAR ResNet with option-A shortcuts, VGG
with and without BatchNorm, single-tower AlexNet (adaptive average pool to 6x6) and GoogLeNet
(Table 1, LRN, ceil-mode pools). Modules carry the zoo's layer names, so a seeded random torch
model is copied into the flax variables by name: conv OIHW -> HWIO, linear (out, in) -> (in, out)
(the first linear after a flatten also reorders its inputs from C,H,W to H,W,C), BatchNorm weight,
bias, running mean and variance -> scale, bias, mean, var. The whole file is skipped without torch.

The 224x224 runs of the large nets (ResNet-18, ResNet-50, VGG-16, VGG-16-BN, GoogLeNet) take long
on a small CPU; they run with NNBASICS_TORCH_FULL=1 (AlexNet's 224 always runs). Every model is
also compared at an odd input size. VGG and AlexNet use 256 hidden units instead of 4096 (the
classifier's layout is unchanged).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn as tnn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from nnbasics.models import get_model  # noqa: E402
from nnbasics.models.googlenet import INCEPTION  # noqa: E402
from nnbasics.models.vgg import CONFIGS  # noqa: E402

FULL = pytest.mark.skipif(not os.environ.get("NNBASICS_TORCH_FULL"), reason="large net at 224x224: NNBASICS_TORCH_FULL=1")
NUM_CLASSES = 10
HIDDEN = 256


# ------------------------------------------------------------------------------ PyTorch references


class TBasic(tnn.Module):
    """torchvision's BasicBlock; `option_a`: the CIFAR ResNet's zero-padded identity shortcut."""

    def __init__(self, cin, width, stride, option_a=False):
        super().__init__()
        self.conv1, self.norm1 = tnn.Conv2d(cin, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width)
        self.conv2, self.norm2 = tnn.Conv2d(width, width, 3, 1, 1, bias=False), tnn.BatchNorm2d(width)
        self.stride, self.extra, self.option_a = stride, width - cin, option_a
        if not option_a and (stride != 1 or cin != width):
            self.proj_conv, self.proj_norm = tnn.Conv2d(cin, width, 1, stride, bias=False), tnn.BatchNorm2d(width)

    def shortcut(self, x):
        if hasattr(self, "proj_conv"):
            return self.proj_norm(self.proj_conv(x))
        if self.option_a and (self.stride != 1 or self.extra):
            x = x[:, :, ::self.stride, ::self.stride]
            return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class TBottleneck(tnn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3)."""

    def __init__(self, cin, width, stride):
        super().__init__()
        out = 4 * width
        self.conv1, self.norm1 = tnn.Conv2d(cin, width, 1, bias=False), tnn.BatchNorm2d(width)
        self.conv2, self.norm2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width)
        self.conv3, self.norm3 = tnn.Conv2d(width, out, 1, bias=False), tnn.BatchNorm2d(out)
        if stride != 1 or cin != out:
            self.proj_conv, self.proj_norm = tnn.Conv2d(cin, out, 1, stride, bias=False), tnn.BatchNorm2d(out)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + (self.proj_norm(self.proj_conv(x)) if hasattr(self, "proj_conv") else x))


class TResNet(tnn.Module):
    def __init__(self, stages, widths, bottleneck=False, imagenet=True):
        super().__init__()
        self.imagenet = imagenet
        self.stem_conv = tnn.Conv2d(3, widths[0] if not imagenet else 64, 7 if imagenet else 3, 2 if imagenet else 1,
                                    3 if imagenet else 1, bias=False)
        cin = self.stem_conv.out_channels
        self.stem_norm = tnn.BatchNorm2d(cin)
        self.blocks = []
        for i, (n, w) in enumerate(zip(stages, widths)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                block = TBottleneck(cin, w, stride) if bottleneck else TBasic(cin, w, stride, option_a=not imagenet)
                self.add_module(f"stage{i + 1}_block{j + 1}", block)
                self.blocks.append(block)
                cin = 4 * w if bottleneck else w
        self.head = tnn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem_conv(x)))
        if self.imagenet:
            x = F.max_pool2d(x, 3, 2, 1)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(dim=(2, 3)))


class TVGG(tnn.Module):
    def __init__(self, layers, batch_norm):
        super().__init__()
        self.layers, cin, i = [], 3, 0
        for v in layers:
            if v == "M":
                self.layers.append(tnn.MaxPool2d(2, 2))
                continue
            i += 1
            conv = tnn.Conv2d(cin, v, 3, 1, 1)
            self.add_module(f"conv{i}", conv)
            self.layers.append(conv)
            if batch_norm:
                self.add_module(f"norm{i}", tnn.BatchNorm2d(v))
                self.layers.append(getattr(self, f"norm{i}"))
            self.layers.append(tnn.ReLU())
            cin = v
        self.fc1, self.fc2, self.head = tnn.Linear(cin * 49, HIDDEN), tnn.Linear(HIDDEN, HIDDEN), tnn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 7), 1)
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class TAlexNet(tnn.Module):
    def __init__(self):
        super().__init__()
        specs = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
        for i, (cin, cout, k, s, p) in enumerate(specs):
            self.add_module(f"conv{i + 1}", tnn.Conv2d(cin, cout, k, s, p))
        self.fc1, self.fc2, self.head = tnn.Linear(256 * 36, HIDDEN), tnn.Linear(HIDDEN, HIDDEN), tnn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x):
        for i in range(1, 6):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i in (1, 2, 5):
                x = F.max_pool2d(x, 3, 2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 6), 1)
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class TUnit(tnn.Module):
    """Conv with bias (k // 2 padding) + ReLU; the zoo's ConvUnit holds the conv as `conv`."""

    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, k, stride, k // 2)

    def forward(self, x):
        return F.relu(self.conv(x))


class TInception(tnn.Module):
    def __init__(self, cin, spec):
        super().__init__()
        n1, r3, n3, r5, n5, pp = spec
        self.b1_1x1, self.b2_reduce, self.b2_3x3 = TUnit(cin, n1, 1), TUnit(cin, r3, 1), TUnit(r3, n3, 3)
        self.b3_reduce, self.b3_5x5, self.b4_proj = TUnit(cin, r5, 1), TUnit(r5, n5, 5), TUnit(cin, pp, 1)

    def forward(self, x):
        pooled = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        return torch.cat([self.b1_1x1(x), self.b2_3x3(self.b2_reduce(x)), self.b3_5x5(self.b3_reduce(x)),
                          self.b4_proj(pooled)], 1)


class TGoogLeNet(tnn.Module):
    """Table 1 with LRN and torchvision's ceil-mode 3x3/2 max pools."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2_reduce, self.conv2 = TUnit(3, 64, 7, 2), TUnit(64, 64, 1), TUnit(64, 192, 3)
        self.lrn = tnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        cin = 192
        for name, spec in INCEPTION.items():
            self.add_module(f"inception_{name}", TInception(cin, spec))
            cin = spec[0] + spec[2] + spec[4] + spec[5]
        self.head = tnn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        def pool(v):
            return F.max_pool2d(v, 3, 2, ceil_mode=True)

        x = self.lrn(pool(self.conv1(x)))
        x = pool(self.lrn(self.conv2(self.conv2_reduce(x))))
        for name in INCEPTION:
            if name in ("4a", "5a"):
                x = pool(x)
            x = getattr(self, f"inception_{name}")(x)
        return self.head(x.mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------ porting


def randomize(model, seed=0):
    """He-normal weights, small random biases and BatchNorm affine/statistics, so no layer is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (tnn.Conv2d, tnn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
            elif isinstance(m, tnn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _put(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def port(model, flatten_spatial=None):
    """The torch model's weights as flax variables, by module name. `flatten_spatial` = (S, C): the
    linear `fc1` reads a flattened S x S x C map (reordered from torch's C,H,W to flax's H,W,C)."""
    params, stats = {}, {}
    for name, m in model.named_modules():
        path = tuple(name.split("."))
        if isinstance(m, tnn.Conv2d):
            _put(params, (*path, "kernel"), m.weight.detach().permute(2, 3, 1, 0).numpy())
        elif isinstance(m, tnn.Linear):
            w = m.weight.detach()
            if name == "fc1" and flatten_spatial is not None:
                s, c = flatten_spatial
                w = w.reshape(-1, c, s, s).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            _put(params, (*path, "kernel"), w.T.numpy())
        elif isinstance(m, tnn.BatchNorm2d):
            _put(params, (*path, "scale"), m.weight.detach().numpy())
            _put(stats, (*path, "mean"), m.running_mean.numpy())
            _put(stats, (*path, "var"), m.running_var.numpy())
        else:
            continue
        if getattr(m, "bias", None) is not None:
            _put(params, (*path, "bias"), m.bias.detach().numpy())
    return {"params": params, **({"batch_stats": stats} if stats else {})}


def compare(name, tmodel, hw, batch=1, flatten_spatial=None, **kw):
    """Max |logit difference| between the zoo model `name` with the ported weights and the torch model."""
    model = get_model(name, num_classes=NUM_CLASSES, **kw)
    x = np.random.default_rng(1).standard_normal((batch, hw, hw, 3)).astype(np.float32)
    variables = port(randomize(tmodel), flatten_spatial)
    expect = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    got = jax.tree.map(lambda a: a.shape, variables)
    assert jax.tree.structure(got) == jax.tree.structure(jax.tree.map(lambda a: a.shape, expect))
    assert got == jax.tree.map(lambda a: a.shape, expect), "the ported weights have the zoo model's shapes"
    y = np.asarray(jax.jit(model.apply)(variables, x))
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert y.shape == ref.shape == (batch, NUM_CLASSES)
    scale = float(np.abs(ref).max())
    assert scale > 1e-2, "the logits are not degenerate"
    err = float(np.abs(y - ref).max())
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, scale))
    print(f"{name} at {hw}x{hw}: max |logit diff| = {err:.2e} (max |logit| {scale:.2f})")
    return err


# -------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("hw", [32, 33])
def test_cifar_resnet20_option_a_equals_torch(hw):
    compare("resnet20", TResNet((3, 3, 3), (16, 32, 64), imagenet=False), hw, batch=2)


@pytest.mark.parametrize("hw", [pytest.param(224, marks=FULL), 199])
def test_resnet18_equals_torch(hw):
    compare("resnet18", TResNet((2, 2, 2, 2), (64, 128, 256, 512)), hw)


@pytest.mark.parametrize("hw", [pytest.param(224, marks=FULL), 97])
def test_resnet50_equals_torch(hw):
    compare("resnet50", TResNet((3, 4, 6, 3), (64, 128, 256, 512), bottleneck=True), hw)


@pytest.mark.parametrize("hw", [224, 199])
def test_alexnet_equals_torch(hw):
    compare("alexnet", TAlexNet(), hw, flatten_spatial=(6, 256), hidden=HIDDEN)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("hw", [pytest.param(224, marks=FULL), 67])
def test_vgg16_equals_torch(hw, bn):
    compare("vgg16_bn" if bn else "vgg16", TVGG(CONFIGS[16], bn), hw, flatten_spatial=(7, 512), hidden=HIDDEN)


@pytest.mark.parametrize("hw", [pytest.param(224, marks=FULL), 65])
def test_googlenet_equals_torch_ceil_mode(hw):
    compare("googlenet", TGoogLeNet(), hw)
