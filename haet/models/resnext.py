"""ResNeXt-29 (2x64d) for CIFAR, as in Kuang's collection: 3 stages of 3 grouped bottlenecks, cardinality 2,
bottleneck width 64 doubling every stage, a 1x1 stem of 64 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels

CARDINALITY = 2


class GroupedBottleneck(nn.Module):
    expansion = 2

    def __init__(self, in_planes: int, group_width: int, stride: int):
        super().__init__()
        out_planes = self.expansion * group_width
        self.conv1, self.bn1 = nn.Conv2d(in_planes, group_width, 1, bias=False), nn.BatchNorm2d(group_width)
        self.conv2 = nn.Conv2d(group_width, group_width, 3, stride=stride, padding=1, groups=CARDINALITY, bias=False)
        self.bn2 = nn.BatchNorm2d(group_width)
        self.conv3, self.bn3 = nn.Conv2d(group_width, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNeXt29(nn.Module):
    stage_blocks = (3, 3, 3)

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(64, width)
        layers: list[nn.Module] = [nn.Conv2d(3, in_planes, 1, bias=False), nn.BatchNorm2d(in_planes), nn.ReLU()]
        bottleneck_width = channels(64, width)
        for stage, count in enumerate(self.stage_blocks):
            group_width = CARDINALITY * bottleneck_width * 2**stage
            for index in range(blocks(count, depth)):
                layers.append(GroupedBottleneck(in_planes, group_width, 2 if stage > 0 and index == 0 else 1))
                in_planes = GroupedBottleneck.expansion * group_width
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
