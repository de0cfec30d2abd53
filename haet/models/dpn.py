"""Dual Path Network 92 for 32x32 inputs, as in Kuang's collection: residual and densely connected paths side by
side in each bottleneck. The grouped 3x3 conv has 32 groups, so scaled bottleneck widths stay multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels

GROUPS = 32
IN_PLANES = (96, 192, 384, 768)
OUT_PLANES = (256, 512, 1024, 2048)
STAGE_BLOCKS = (3, 4, 20, 3)
DENSE_DEPTH = (16, 32, 24, 128)


class DualPathBlock(nn.Module):
    def __init__(self, last_planes: int, in_planes: int, out_planes: int, dense_depth: int, stride: int, first: bool):
        super().__init__()
        self.out_planes = out_planes
        self.conv1, self.bn1 = nn.Conv2d(last_planes, in_planes, 1, bias=False), nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, in_planes, 3, stride=stride, padding=1, groups=GROUPS, bias=False)
        self.bn2 = nn.BatchNorm2d(in_planes)
        self.conv3 = nn.Conv2d(in_planes, out_planes + dense_depth, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes + dense_depth)
        self.shortcut = nn.Identity()
        if first:
            self.shortcut = nn.Sequential(
                nn.Conv2d(last_planes, out_planes + dense_depth, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes + dense_depth),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        x = self.shortcut(x)
        d = self.out_planes  # the first d channels are the residual path, the rest grow densely
        return F.relu(torch.cat([x[:, :d] + out[:, :d], x[:, d:], out[:, d:]], 1))


class DPN92(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        last_planes = channels(64, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, last_planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(last_planes),
            nn.ReLU(),
        ]
        for stage in range(4):
            in_planes = channels(IN_PLANES[stage], width, GROUPS)
            out_planes = channels(OUT_PLANES[stage], width)
            dense = channels(DENSE_DEPTH[stage], width)
            for index in range(blocks(STAGE_BLOCKS[stage], depth)):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(DualPathBlock(last_planes, in_planes, out_planes, dense, stride, index == 0))
                last_planes = out_planes + (index + 2) * dense
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(last_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
