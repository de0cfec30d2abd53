"""GoogLeNet (Inception v1) for 32x32 inputs, as in Kuang's CIFAR collection: a 3x3 stem of 192 channels in place
of the ImageNet stem, and the 5x5 branch as two 3x3 convs. Inception modules differ from one another, so only
width scales; depth stays 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import channels

# in-planes are derived; each row: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection
MODULES = {
    "a3": (64, 96, 128, 16, 32, 32),
    "b3": (128, 128, 192, 32, 96, 64),
    "a4": (192, 96, 208, 16, 48, 64),
    "b4": (160, 112, 224, 24, 64, 64),
    "c4": (128, 128, 256, 24, 64, 64),
    "d4": (112, 144, 288, 32, 64, 64),
    "e4": (256, 160, 320, 32, 128, 128),
    "a5": (256, 160, 320, 32, 128, 128),
    "b5": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = {"b3", "e4"}


def conv_bn_relu(in_planes: int, planes: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_planes, planes, kernel, padding=kernel // 2), nn.BatchNorm2d(planes), nn.ReLU(True)]


class Inception(nn.Module):
    def __init__(self, in_planes: int, n1: int, n3_reduce: int, n3: int, n5_reduce: int, n5: int, pool: int):
        super().__init__()
        self.branch1 = nn.Sequential(*conv_bn_relu(in_planes, n1, 1))
        self.branch3 = nn.Sequential(*conv_bn_relu(in_planes, n3_reduce, 1), *conv_bn_relu(n3_reduce, n3, 3))
        self.branch5 = nn.Sequential(
            *conv_bn_relu(in_planes, n5_reduce, 1), *conv_bn_relu(n5_reduce, n5, 3), *conv_bn_relu(n5, n5, 3)
        )
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *conv_bn_relu(in_planes, pool, 1))
        self.out_planes = n1 + n3 + n5 + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(192, width)
        layers: list[nn.Module] = conv_bn_relu(3, in_planes, 3)
        for name, sizes in MODULES.items():
            module = Inception(in_planes, *(channels(size, width) for size in sizes))
            layers.append(module)
            in_planes = module.out_planes
            if name in POOL_AFTER:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
