"""SimpleDLA, the simplified Deep Layer Aggregation of Kuang's collection: binary trees of residual blocks whose
outputs are merged by a 1x1 root conv. Depth scales each tree's number of levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.resnet import BasicBlock
from haet.models.scaling import blocks, channels

TREES = [(32, 64, 1, 1), (64, 128, 2, 2), (128, 256, 2, 2), (256, 512, 1, 2)]  # in, out, levels, stride


class Tree(nn.Module):
    def __init__(self, in_planes: int, planes: int, levels: int, stride: int):
        super().__init__()
        if levels == 1:
            self.left, self.right = BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)
        else:
            self.left = Tree(in_planes, planes, levels - 1, stride)
            self.right = Tree(planes, planes, levels - 1, 1)
        self.root = nn.Sequential(nn.Conv2d(2 * planes, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.left(x)
        return self.root(torch.cat([left, self.right(left)], 1))


def conv_bn_relu(in_planes: int, planes: int) -> list[nn.Module]:
    return [nn.Conv2d(in_planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True)]


class SimpleDLA(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        c16, c32 = channels(16, width), channels(32, width)
        layers = [*conv_bn_relu(3, c16), *conv_bn_relu(c16, c16), *conv_bn_relu(c16, c32)]
        for in_planes, planes, levels, stride in TREES:
            layers.append(Tree(channels(in_planes, width), channels(planes, width), blocks(levels, depth), stride))
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(channels(512, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
