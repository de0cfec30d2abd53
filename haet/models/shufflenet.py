"""ShuffleNet (groups 2, 'G2') and ShuffleNetV2 for 32x32 inputs, after Kuang's CIFAR collection.

Kuang's ShuffleNet G2/G3 fail to build: the bottleneck width is computed as out_planes / 4, a float. Here it is
an integer, and scaled channel counts are kept multiples of what the grouped convolutions need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, count, height, width = x.shape
    return x.view(batch, groups, count // groups, height, width).transpose(1, 2).reshape(batch, count, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNet V1 unit; a stride-2 unit concatenates an average-pooled shortcut, so it outputs in + out."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first: bool):
        super().__init__()
        mid = out_planes // 4
        self.stride = stride
        self.first_groups = 1 if first else groups  # the stem's few channels are not split into groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNetG2(nn.Module):
    stage_planes, stage_blocks, groups = (200, 400, 800), (4, 8, 4), 2

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        multiple = 4 * self.groups  # mid = out / 4 must split into the groups
        in_planes = channels(24, width, multiple)
        self.stem = nn.Sequential(nn.Conv2d(3, in_planes, 1, bias=False), nn.BatchNorm2d(in_planes), nn.ReLU())
        layers = []
        for planes, count in zip(self.stage_planes, self.stage_blocks, strict=True):
            out_planes = max(channels(planes, width, multiple), in_planes + multiple)
            for index in range(blocks(count, depth)):
                first_unit = index == 0
                layers.append(
                    ShuffleUnit(
                        in_planes,
                        out_planes - in_planes if first_unit else out_planes,
                        2 if first_unit else 1,
                        self.groups,
                        first=not layers,
                    )
                )
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class V2Unit(nn.Module):
    """ShuffleNetV2 unit: half the channels pass through, the other half is transformed."""

    def __init__(self, planes: int):
        super().__init__()
        half = planes // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        passed, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([passed, self.branch(transformed)], 1), 2)


class V2DownUnit(nn.Module):
    """ShuffleNetV2 stride-2 unit: both branches downsample, their concatenation doubles the channels."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        mid = planes // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_planes, in_planes, 3, stride=2, padding=1, groups=in_planes, bias=False),
            nn.BatchNorm2d(in_planes),
            nn.Conv2d(in_planes, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_planes, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(nn.Module):
    stage_planes, stage_blocks, head = (116, 232, 464), (3, 7, 3), 1024  # the 1x size

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(24, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, in_planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_planes),
            nn.ReLU(),
        ]
        for planes, count in zip(self.stage_planes, self.stage_blocks, strict=True):
            planes = channels(planes, width, 2)  # halves must be whole
            layers.append(V2DownUnit(in_planes, planes))
            layers += [V2Unit(planes) for _ in range(blocks(count, depth))]
            in_planes = planes
        head = channels(self.head, width)
        layers += [nn.Conv2d(in_planes, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
