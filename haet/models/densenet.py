"""DenseNet-121 (growth 32, blocks 6-12-24-16, compression 0.5) with a CIFAR 3x3 stem, as in Kuang's
collection. Width scales the growth rate; depth scales the layers of each dense block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels


class DenseLayer(nn.Module):
    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet121(nn.Module):
    block_layers, reduction = (6, 12, 24, 16), 0.5

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        growth = channels(32, width)
        planes = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, planes, 3, padding=1, bias=False)]
        for index, count in enumerate(self.block_layers):
            for _ in range(blocks(count, depth)):
                layers.append(DenseLayer(planes, growth))
                planes += growth
            if index < len(self.block_layers) - 1:
                reduced = math.floor(planes * self.reduction)
                layers.append(Transition(planes, reduced))
                planes = reduced
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
