"""VGG-19 with batch normalisation, as in Kuang's CIFAR collection (one linear layer after the convs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels

STAGES = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]  # (channels, convs) per stage, a max-pool after each


class VGG19(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        layers, in_planes = [], 3
        for planes, convs in STAGES:
            planes = channels(planes, width)
            for _ in range(blocks(convs, depth)):
                layers += [nn.Conv2d(in_planes, planes, 3, padding=1), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
                in_planes = planes
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: odd resolutions keep their last row
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
