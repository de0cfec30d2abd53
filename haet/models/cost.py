"""MACs and parameters of a model at an input resolution: the objective g(phi) of the paper's NAS.

Counted by one forward pass on the meta device (shapes only, no arithmetic, no memory), with hooks on:
- nn.Conv2d: output elements x (in_channels / groups) x kernel height x kernel width;
- nn.Linear: output elements x in_features.
Nothing else counts as a MAC: not BatchNorm, activations, pooling, additions or the squeeze-excitation scaling.
BatchNorm output elements are counted separately: the `thop` package adds 2 operations per BatchNorm output
element, which is the whole difference between its 556,651,520 for the CIFAR ResNet-18 and our 555,422,720.
Bias additions are not counted (thop does not count them for conv either). Results are cached per
(name, depth, width, resolution, classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from haet.models import build


@dataclass(frozen=True)
class ModelCost:
    macs: int  # multiply-accumulates of one forward pass of one image (conv + linear)
    params: int
    batchnorm_elements: int  # BatchNorm output elements of one image
    input_px: int

    @property
    def thop_macs(self) -> int:
        """What the thop package reports for the same model (it adds 2 per BatchNorm output element)."""
        return self.macs + 2 * self.batchnorm_elements


def count(model: nn.Module, input_px: int) -> ModelCost:
    """Count a built model by one meta-device forward pass of one input_px x input_px image."""
    totals = {"macs": 0, "bn": 0}

    def on_conv(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1]
        totals["macs"] += output.numel() * (module.in_channels // module.groups) * kernel

    def on_linear(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        totals["macs"] += output.numel() * module.in_features

    def on_batchnorm(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        totals["bn"] += output.numel()

    model = model.to("meta").eval()
    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(on_linear))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(on_batchnorm))
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, input_px, input_px, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    params = sum(parameter.numel() for parameter in model.parameters())
    return ModelCost(macs=totals["macs"], params=params, batchnorm_elements=totals["bn"], input_px=input_px)


@lru_cache(maxsize=4096)
def model_cost(
    name: str, depth: float = 1.0, width: float = 1.0, input_px: int = 32, num_classes: int = 10
) -> ModelCost:
    """Cost of build(name, num_classes, depth, width) on input_px x input_px inputs (cached)."""
    with torch.device("meta"):
        model = build(name, num_classes, depth, width)
    return count(model, input_px)
