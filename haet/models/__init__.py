"""The model zoo of the paper's Table 1, behind one registry.

    build("SENet18", num_classes=10, depth=1.0, width=0.67)  ->  torch.nn.Module
    list_models()                                             ->  registry names: Table 1's, in its order, then others

Every model takes 3-channel inputs of any resolution (global average pooling before the classifier) and any
number of classes. Input resolution is a property of the run, not of the model: see input_size().
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from haet.models import densenet, dla, dpn, googlenet, mobile, regnet, resnet, resnext, shufflenet, vgg
from haet.models.scaling import ModelError, check_multiplier

BASE_RESOLUTION = 32
MIN_RESOLUTION = 8


@dataclass(frozen=True)
class ModelInfo:
    name: str  # registry name
    table1_name: str  # as printed in the paper's Table 1
    builder: Callable[[int, float, float], nn.Module]
    scales_depth: bool = True


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in [
        ModelInfo("RegNetX_200MF", "RegNetX_200MF", regnet.RegNetX200MF),
        ModelInfo("ShuffleNetV2", "ShuffleNet V2", shufflenet.ShuffleNetV2),
        ModelInfo("EfficientNetB0_CIFAR", "EfficientNet B0", mobile.EfficientNetB0CIFAR),
        ModelInfo("MobileNetV2", "MobileNet V2", mobile.MobileNetV2),
        ModelInfo("GoogLeNet", "GoogleNet", googlenet.GoogLeNet, scales_depth=False),
        ModelInfo("DenseNet121", "DenseNet121", densenet.DenseNet121),
        ModelInfo("ResNet18", "ResNet-18", resnet.resnet18),
        ModelInfo("SENet18", "SENet-18", resnet.senet18),
        ModelInfo("DPN92", "DPN92", dpn.DPN92),
        ModelInfo("PreActResNet18", "PreActResNet18", resnet.preact_resnet18),
        ModelInfo("ResNet110", "ResNet110", resnet.resnet110),
        ModelInfo("ShuffleNetG2", "ShuffleNet G2", shufflenet.ShuffleNetG2),
        ModelInfo("ResNeXt29_2x64d", "ResNeXt29 (2x64d)", resnext.ResNeXt29),
        ModelInfo("MobileNet", "MobileNet V1", mobile.MobileNet),
        ModelInfo("VGG19", "VGG19", vgg.VGG19),
        ModelInfo("ResNet50", "ResNet50", resnet.resnet50),
        ModelInfo("SimpleDLA", "SimpleDLA", dla.SimpleDLA),
        # not in Table 1: EfficientNet-B0 as Tan & Le describe it, beside the collection's that the paper screened
        ModelInfo("EfficientNetB0", "EfficientNet B0 (Tan & Le)", mobile.EfficientNetB0),
    ]
}


def list_models() -> list[str]:
    return list(MODELS)


def model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} Known models: {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, num_classes: int = 10, depth: float = 1.0, width: float = 1.0) -> nn.Module:
    """The model `name` with `num_classes` outputs, its blocks scaled by depth and its channels by width."""
    info = model_info(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    depth, width = check_multiplier("depth", depth), check_multiplier("width", width)
    if depth != 1.0 and not info.scales_depth:
        raise ModelError(f"{name} has no depth multiplier (its blocks differ from one another); use depth 1")
    return info.builder(num_classes, depth, width)


def input_size(resolution: float) -> int:
    """Input side in pixels for a resolution multiplier: int(32 * r), as the paper's code computed it."""
    resolution = check_multiplier("resolution", resolution)
    size = int(BASE_RESOLUTION * resolution)
    if size < MIN_RESOLUTION:
        raise ModelError(
            f"resolution {resolution} gives {size}x{size} inputs; the smallest allowed is "
            f"{MIN_RESOLUTION}x{MIN_RESOLUTION} (resolution >= {MIN_RESOLUTION / BASE_RESOLUTION})"
        )
    return size


__all__ = ["MODELS", "ModelError", "ModelInfo", "build", "input_size", "list_models", "model_info"]
