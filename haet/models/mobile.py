"""Depthwise-separable nets: MobileNet (V1), MobileNetV2 and EfficientNet-B0, for 32x32 inputs.

MobileNet and MobileNetV2 follow Kuang's CIFAR versions, whose strides were changed for 32x32 images: V1's stem
has stride 1 (ImageNet: 2); V2's stem and its second stage have stride 1 (ImageNet: 2 and 2).
EfficientNetB0 follows Tan & Le (MBConv + squeeze-excitation 0.25, swish, 1x1 head to 1280, dropout 0.2,
stochastic depth 0.2) with the same CIFAR change of a stride-1 stem. EfficientNetB0_CIFAR is Kuang's as it stood
from 2020-05-06 on, the version the paper most likely screened: its Table 1 also has SimpleDLA, which the
collection gained only on 2020-11-20 (3,599,686 parameters, 30,331,392 MACs; the 2020-04 version had 6.8 M). It
differs from Tan & Le: no 1280 head; squeeze-excitation to a quarter of the block's input channels; dropout 0.2
before the classifier only; no stochastic depth (the collection computes each block's rate from a counter it
never advances, so every rate is 0); and an expansion 1x1 conv built at expansion 1 too and never run (1,088
parameters that count and cost no MACs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haet.models.scaling import blocks, channels


def conv_bn(in_planes: int, planes: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(in_planes, planes, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(planes)]


class MobileNet(nn.Module):
    # (out channels, stride) of each depthwise-separable block; the five 512-channel blocks are the depth knob
    head = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    repeated = (512, 1, 5)
    tail = [(1024, 2), (1024, 1)]

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        plan = list(self.head)
        plan += [self.repeated[:2]] * blocks(self.repeated[2], depth)
        plan += self.tail
        in_planes = channels(32, width)
        layers = [*conv_bn(3, in_planes, 3), nn.ReLU(inplace=True)]
        for out, stride in plan:
            planes = channels(out, width)
            layers += [*conv_bn(in_planes, in_planes, 3, stride, groups=in_planes), nn.ReLU(inplace=True)]
            layers += [*conv_bn(in_planes, planes), nn.ReLU(inplace=True)]
            in_planes = planes
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block as in Kuang's collection: every stride-1 block is residual, projecting if its channels
    change; a stride-2 block has no shortcut at all."""

    def __init__(self, in_planes: int, planes: int, expansion: int, stride: int):
        super().__init__()
        hidden = expansion * in_planes
        self.body = nn.Sequential(
            *conv_bn(in_planes, hidden),
            nn.ReLU(inplace=True),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU(inplace=True),
            *conv_bn(hidden, planes),
        )
        self.shortcut = None
        if stride == 1:
            self.shortcut = nn.Identity() if in_planes == planes else nn.Sequential(*conv_bn(in_planes, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class MobileNetV2(nn.Module):
    # (expansion, out channels, blocks, stride); stride of stage 2 is 1 for CIFAR
    plan = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(32, width)
        layers = [*conv_bn(3, in_planes, 3), nn.ReLU(inplace=True)]
        for expansion, out, count, stride in self.plan:
            planes = channels(out, width)
            for index in range(blocks(count, depth)):
                layers.append(InvertedResidual(in_planes, planes, expansion, stride if index == 0 else 1))
                in_planes = planes
        head = channels(1280, width)
        layers += [*conv_bn(in_planes, head), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MBConv(nn.Module):
    """EfficientNet's block: expand, depthwise, squeeze-excitation, project; residual with stochastic depth."""

    def __init__(self, in_planes: int, planes: int, expansion: int, kernel: int, stride: int, drop_rate: float):
        super().__init__()
        hidden = expansion * in_planes
        layers: list[nn.Module] = [] if expansion == 1 else [*conv_bn(in_planes, hidden), nn.SiLU(inplace=True)]
        layers += [*conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.SiLU(inplace=True)]
        self.expand_and_depthwise = nn.Sequential(*layers)
        squeezed = max(1, int(in_planes * 0.25))
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, squeezed, 1), nn.Conv2d(squeezed, hidden, 1)
        self.project = nn.Sequential(*conv_bn(hidden, planes))
        self.residual = stride == 1 and in_planes == planes
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand_and_depthwise(x)
        scale = F.silu(self.se_reduce(F.adaptive_avg_pool2d(out, 1)))
        out = self.project(out * torch.sigmoid(self.se_expand(scale)))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            keep = torch.rand(out.shape[0], 1, 1, 1, device=out.device) >= self.drop_rate
            out = out * keep.to(out.dtype) / (1 - self.drop_rate)
        return out + x


class EfficientNetB0(nn.Module):
    # (expansion, out channels, blocks, kernel, stride)
    plan = [
        (1, 16, 1, 3, 1),
        (6, 24, 2, 3, 2),
        (6, 40, 2, 5, 2),
        (6, 80, 3, 3, 2),
        (6, 112, 3, 5, 1),
        (6, 192, 4, 5, 2),
        (6, 320, 1, 3, 1),
    ]

    def __init__(self, num_classes: int, depth: float, width: float, drop_connect: float = 0.2):
        super().__init__()
        in_planes = channels(32, width)
        layers = [*conv_bn(3, in_planes, 3), nn.SiLU(inplace=True)]
        stage_counts = [blocks(count, depth) for _, _, count, _, _ in self.plan]
        total, index = sum(stage_counts), 0
        for (expansion, out, _, kernel, stride), count in zip(self.plan, stage_counts, strict=True):
            planes = channels(out, width)
            for position in range(count):
                drop = drop_connect * index / total  # stochastic depth grows linearly with depth
                layers.append(MBConv(in_planes, planes, expansion, kernel, stride if position == 0 else 1, drop))
                in_planes, index = planes, index + 1
        head = channels(1280, width)
        layers += [*conv_bn(in_planes, head), nn.SiLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)))


class CollectionMBConv(nn.Module):
    """The CIFAR collection's EfficientNet block (2020-05-06 on), its quirks kept (see the module docstring)."""

    def __init__(self, in_planes: int, planes: int, expansion: int, kernel: int, stride: int):
        super().__init__()
        hidden = expansion * in_planes
        # built at expansion 1 as well, where forward skips it: its parameters count, as in the collection
        self.expand = nn.Sequential(*conv_bn(in_planes, hidden), nn.SiLU())
        self.skip_expand = expansion == 1
        self.depthwise = nn.Sequential(*conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.SiLU())
        squeezed = max(1, int(in_planes * 0.25))  # a quarter of the block's input, not of its expanded channels
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, squeezed, 1), nn.Conv2d(squeezed, hidden, 1)
        self.project = nn.Sequential(*conv_bn(hidden, planes))
        self.residual = stride == 1 and in_planes == planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(x if self.skip_expand else self.expand(x))
        scale = F.silu(self.se_reduce(F.adaptive_avg_pool2d(out, 1)))
        out = self.project(out * torch.sigmoid(self.se_expand(scale)))
        return out + x if self.residual else out


class EfficientNetB0CIFAR(nn.Module):
    def __init__(self, num_classes: int, depth: float, width: float):
        super().__init__()
        in_planes = channels(32, width)
        layers = [*conv_bn(3, in_planes, 3), nn.SiLU()]
        for expansion, out, count, kernel, stride in EfficientNetB0.plan:
            planes = channels(out, width)
            for position in range(blocks(count, depth)):
                layers.append(CollectionMBConv(in_planes, planes, expansion, kernel, stride if position == 0 else 1))
                in_planes = planes
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)))
