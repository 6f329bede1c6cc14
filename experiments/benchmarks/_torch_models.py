"""PyTorch twins of the benchmarked nnbasics models, and the PyTorch reference training loops.

Imported only by the speed benchmarks, after checking that torch is installed (it is the
optional `bench` extra, never a dependency of the library). Every twin has the same layers,
shapes and parameter count as its nnbasics model, so images/s compare like with like.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MNIST1DMLP(nn.Module):
    """Greydanus & Kobak's MNIST-1D MLP: h = relu(W1 x); h = h + relu(W2 h); W3 h."""

    def __init__(self, width: int = 100, num_classes: int = 10):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(40, width), nn.Linear(width, width)
        self.linear3 = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.linear1(x))
        h = h + F.relu(self.linear2(h))
        return self.linear3(h)


class MNIST1DCNN(nn.Module):
    """Greydanus & Kobak's MNIST-1D CNN: conv(5,s2,p1)-conv(3,s2,p1)-conv(3,s2,p1), 25 channels."""

    def __init__(self, channels: int = 25, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :]
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        # nnbasics flattens NWC (position-major); the order does not change the speed.
        return self.linear(x.flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.stride != 1:  # option A shortcut: subsample, zero-pad the new channels
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(x + y)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2) with option A shortcuts (n=3: ResNet-20, 0.27M params)."""

    def __init__(self, n: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_trainer(batch: int = 128, channels_last: bool = True, seed: int = 0):
    """A closure that runs `k` SGD-momentum training steps of ResNet-20 on one fixed batch."""
    torch.manual_seed(seed)
    model = CifarResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()

    def run(k: int) -> float:
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return float(loss.detach())

    return run, model


def train_mnist1d(model: nn.Module, data, steps: int = 6000, batch_size: int = 100, lr: float = 1e-2,
                  eval_every: int = 250, seed: int = 0) -> tuple[float, float]:
    """The reference recipe (Adam 1e-2, batch 100, test evaluation every 250 steps, cycling
    through the training set); returns (seconds, final test accuracy)."""
    torch.manual_seed(seed)
    xtr = torch.as_tensor(np.asarray(data.x_train, np.float32))
    ytr = torch.as_tensor(np.asarray(data.y_train, np.int64))
    xte = torch.as_tensor(np.asarray(data.x_test, np.float32))
    yte = torch.as_tensor(np.asarray(data.y_test, np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(xtr)
    acc = 0.0
    t0 = time.perf_counter()
    for step in range(steps):
        i = (step * batch_size) % n
        if i + batch_size > n:
            i = 0
        loss = F.cross_entropy(model(xtr[i:i + batch_size]), ytr[i:i + batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0:
            with torch.no_grad():
                acc = float((model(xte).argmax(-1) == yte).float().mean())
    return time.perf_counter() - t0, acc
