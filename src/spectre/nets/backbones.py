"""Image backbones with torchvision's state-dict key names, so official checkpoints load unchanged.

* ``ResNet50``: the DECA variant (torchvision-style bottleneck, stride in the 3x3 conv, no ``fc``),
  used by DECA's ``E_flame`` and SPECTRE's emotion network; returns the 2048-d pooled feature.
* ``ResNet18Trunk``: the VSR lipreader trunk (BasicBlock, Swish/ReLU/PReLU, no stem: the Conv3d
  front-end replaces it); returns the 512-d pooled feature.
* ``MobileNetV2``: torchvision ``mobilenet_v2`` (width 1.0) with ``features`` and ``classifier``.

Blocks list their (conv, batch-norm) pairs in ``conv_bn_pairs`` so ``spectre.nets.fast`` can fold
the norms into the convolutions for inference without knowing each architecture.
"""
from __future__ import annotations

import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(x) (the VSR lipreader's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def make_activation(kind: str, channels: int) -> nn.Module:
    if kind == "swish":
        return Swish()
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    raise ValueError(f"unknown activation {kind!r} (swish, relu or prelu)")


def _conv_bn(inp: int, out: int, stride: int) -> nn.Sequential:
    """1x1 projection shortcut: keys ``downsample.0`` (conv) and ``downsample.1`` (bn)."""
    return nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))


# ---------------------------------------------------------------------------------------------
# ResNet-50 (DECA variant)


class Bottleneck(nn.Module):
    expansion = 4
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, inp: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """DECA's ResNet-50: 7x7/2 stem, max-pool 3/2 pad 1, [3,4,6,3] bottlenecks, global average pool.

    DECA pools with ``AvgPool2d(7)``, which equals the global mean for the 224x224 inputs it is
    defined on; we take the global mean so other sizes still give one 2048-d vector.
    """

    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = [Bottleneck(inp, planes, stride, _conv_bn(inp, planes * 4, stride))]
            inp = planes * 4
            blocks += [Bottleneck(inp, planes) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_features = inp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# ResNet-18 trunk (VSR lipreader)


class BasicBlock(nn.Module):
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, inp: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 activation: str = "swish"):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = make_activation(activation, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = make_activation(activation, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class ResNet18Trunk(nn.Module):
    """Four BasicBlock stages [2,2,2,2] on 64-channel input, adaptive average pool -> (N, 512)."""

    def __init__(self, activation: str = "swish"):
        super().__init__()
        inp = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            down = _conv_bn(inp, planes, stride) if (stride != 1 or inp != planes) else None
            blocks = [BasicBlock(inp, planes, stride, down, activation), BasicBlock(planes, planes, 1, None, activation)]
            inp = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_features = inp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision layout)


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion t, channels c, repeats n, first stride s), torchvision / the MobileNetV2 paper
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """torchvision ``mobilenet_v2()`` (width 1.0): ``features`` (19 stages) + ``classifier``.

    ``forward`` returns the pooled 1280-d feature; the 1000-way classifier is kept only so that
    official state dicts (which contain it) load strictly.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        inp = 32
        layers: list[nn.Module] = [_conv_bn_relu6(3, inp, 3, 2)]
        for t, c, n, s in _MOBILENET_V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn_relu6(inp, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self.out_features = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))
