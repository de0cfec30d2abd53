"""ResNets for 32x32 inputs: ResNet-18/50, PreActResNet-18, SENet-18 (Kuang's CIFAR collection, ImageNet-style
64..512 widths with a 3x3 stem), and the CIFAR ResNet-110 of He et al. (16/32/64 widths, option-A shortcuts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)


def projection(in_planes: int, planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.shortcut = projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_planes), conv3x3(in_planes, planes, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), conv3x3(planes, planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False) if needs_projection else None

    def residual(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.residual(out) + shortcut


class SEPreActBlock(PreActBlock):
    """Pre-activation block with squeeze-excitation (planes // 16 hidden units, at least one)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        hidden = max(1, planes // 16)  # the paper's code; at widths below 0.25 it would be zero
        self.fc1 = nn.Conv2d(planes, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, planes, 1)

    def residual(self, out: torch.Tensor) -> torch.Tensor:
        weight = F.adaptive_avg_pool2d(out, 1)
        weight = torch.sigmoid(self.fc2(F.relu(self.fc1(weight))))
        return out * weight


class ResNet(nn.Module):
    """Four stages of widths 64..512 (times width), the first at stride 1, behind a 3x3 stem.

    As in Kuang's collection, PreActResNet's stem is a bare conv and no pre-activation net ends with BN + ReLU;
    SENet's stem has BN + ReLU.
    """

    def __init__(
        self,
        block: type[nn.Module],
        stage_blocks: list[int],
        num_classes: int,
        depth: float,
        width: float,
        stem_bn: bool = True,
    ):
        super().__init__()
        widths = [channels(base, width) for base in (64, 128, 256, 512)]
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0]) if stem_bn else None
        layers, in_planes = [], widths[0]
        for stage, (planes, count) in enumerate(zip(widths, stage_blocks, strict=True)):
            for index in range(blocks(count, depth)):
                layers.append(block(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
                in_planes = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        out = self.layers(out)
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def kaiming_init(model: nn.Module) -> nn.Module:
    """Convs Kaiming-normal (fan_out), BatchNorm weight 1 and bias 0: the authors' final SENet-18 code."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def resnet18(num_classes: int, depth: float, width: float) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, depth, width)


def resnet50(num_classes: int, depth: float, width: float) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, depth, width)


def preact_resnet18(num_classes: int, depth: float, width: float) -> nn.Module:
    return ResNet(PreActBlock, [2, 2, 2, 2], num_classes, depth, width, stem_bn=False)


def senet18(num_classes: int, depth: float, width: float) -> nn.Module:
    return kaiming_init(ResNet(SEPreActBlock, [2, 2, 2, 2], num_classes, depth, width))


class OptionAShortcut(nn.Module):
    """He et al.'s parameter-free CIFAR shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class CifarBasicBlock(BasicBlock):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(in_planes, planes)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: 3 stages of n basic blocks at 16, 32, 64 channels."""

    def __init__(self, n: int, num_classes: int, depth: float, width: float):
        super().__init__()
        widths = [channels(base, width) for base in (16, 32, 64)]
        self.conv1, self.bn1 = conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            for index in range(blocks(n, depth)):
                layers.append(CifarBasicBlock(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet110(num_classes: int, depth: float, width: float) -> nn.Module:
    return CifarResNet(18, num_classes, depth, width)
