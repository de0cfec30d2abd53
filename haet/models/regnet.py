"""RegNetX-200MF for 32x32 inputs, as in Kuang's collection: a 3x3 stem of 64 channels, stages of widths
24-56-152-368 and depths 1-1-4-7, group width 8, no squeeze-excitation. Scaled widths stay multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels

DEPTHS, WIDTHS, STRIDES, GROUP_WIDTH = (1, 1, 4, 7), (24, 56, 152, 368), (1, 1, 2, 2), 8


class XBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes // GROUP_WIDTH, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class RegNetX200MF(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(64, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, in_planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_planes),
            nn.ReLU(),
        ]
        for count, planes, stride in zip(DEPTHS, WIDTHS, STRIDES, strict=True):
            planes = channels(planes, width, GROUP_WIDTH)
            for index in range(blocks(count, depth)):
                layers.append(XBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
