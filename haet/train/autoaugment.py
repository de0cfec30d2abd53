"""torchvision's CIFAR-10 AutoAugment policy on a whole uint8 batch on the device, one sub-policy per image.

Every image draws its own sub-policy (uniform over the 25), and for each of the sub-policy's two operations a
probability and a sign, exactly as torchvision.transforms.AutoAugment draws them for one image. Images that share
an operation and signed magnitude are gathered and transformed together by torchvision's own operation functions
(the ones its AutoAugment calls on tensors; for Equalize the batched v2 one, which gives the same result), so each
image gets what torchvision gives it, without a loop over images. Grouping needs the group sizes on the host: one
synchronisation per operation slot (two per call), which is why the resident pipeline augments a whole epoch at
once rather than a batch at a time.

Two conventions (recipe.autoaugment). `torchvision`: its AutoAugment, as above. `authors`: the PIL implementation
the authors' final submission imported (DeepVoltaire's CIFAR10Policy; protocol facts), where it differs: shears
resampled bicubically (about the top-left corner, as both do), rotations always counter-clockwise (no random
sign), translations rounded to the nearest pixel (torchvision truncates: 13, 15, 5 px where it moves 12, 14, 4 at
32 px) and solarize thresholds on a 256 scale. The loader applies it to PIL images with PIL's own resampling, so
it gives the authors' pixels; the resident pipeline shears with torch's bicubic kernel (a = -0.75 where PIL's is
-0.5: within about 0.6 of a level on average, against about 3 for torchvision's nearest shear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.autoaugment import _apply_op
from torchvision.transforms.v2.functional import equalize

FILL = 128  # the authors' (and the loader pipeline's) fill for pixels that geometric operations uncover
REFERENCE = AutoAugment(AutoAugmentPolicy.CIFAR10, fill=FILL)
SUB_POLICIES = REFERENCE.policies  # torchvision's own list: the same 25 sub-policies, probabilities, magnitudes
CONVENTIONS = ("torchvision", "authors")


def authors_magnitude(name: str, magnitude: float) -> float:
    """torchvision's signed magnitude as the authors' policy would have applied it (shears aside: see shear)."""
    if name == "Rotate":
        return abs(magnitude)  # their rotate has no random sign
    if name in ("TranslateX", "TranslateY"):  # PIL's nearest affine lands on the rounded offset
        return math.copysign(math.floor(abs(magnitude) + 0.5), magnitude)
    if name == "Solarize":  # linspace(256, 0) where torchvision has linspace(255, 0)
        return magnitude * 256 / 255
    return magnitude


def bicubic_shear(images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """The authors' shear of uint8 N x C x H x W images: PIL's affine (1, m, 0, 0, 1, 0) (x from x + m * y) or its
    transpose, bicubic, uncovered pixels at the fill."""
    count, channels, height, width = images.shape
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=images.device)
    if name == "ShearX":  # in grid coordinates: u_in = u + m * (v + 1) * H / W
        theta[0, 1] = theta[0, 2] = magnitude * height / width
    else:
        theta[1, 0] = theta[1, 2] = magnitude * width / height
    grid = F.affine_grid(theta.expand(count, 2, 3), [count, channels, height, width], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bicubic", padding_mode="border", align_corners=False)
    ones = torch.ones(count, 1, height, width, device=images.device)
    inside = F.grid_sample(ones, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    return torch.where(inside, out, float(FILL)).round_().clamp_(0, 255).to(torch.uint8)


def _tensor_operation(images: torch.Tensor, name: str, magnitude: float, convention: str) -> torch.Tensor:
    if name == "Equalize":  # v1's loops over images (a synchronisation each); v2's is batched, same result
        return equalize(images)
    if convention == "authors":
        if name in ("ShearX", "ShearY"):
            return bicubic_shear(images, name, magnitude)
        magnitude = authors_magnitude(name, magnitude)
        if name == "Solarize" and magnitude > 255:
            return images  # a threshold past every pixel: nothing is inverted
    return _apply_op(images, name, magnitude, InterpolationMode.NEAREST, [float(FILL)] * images.shape[1])


class AuthorsAutoAugment(AutoAugment):
    """The authors' CIFAR-10 policy on PIL images, for the loader: torchvision's draws and sub-policies, the
    operations as their PIL code applied them."""

    def __init__(self) -> None:
        super().__init__(AutoAugmentPolicy.CIFAR10, fill=FILL)

    def forward(self, image: Image.Image) -> Image.Image:
        transform_id, probabilities, signs = self.get_params(len(self.policies))
        space = self._augmentation_space(10, (image.height, image.width))
        for slot, (name, probability, magnitude_id) in enumerate(self.policies[transform_id]):
            if probabilities[slot] > probability:
                continue
            magnitudes, signed = space[name]
            magnitude = float(magnitudes[magnitude_id].item()) if magnitude_id is not None else 0.0
            magnitude = -magnitude if signed and signs[slot] == 0 else magnitude
            if name in ("ShearX", "ShearY"):  # their float64 levels: float32's move a pixel a level here and there
                magnitude = math.copysign(float(np.linspace(0, 0.3, 10)[magnitude_id]), magnitude)
                data = (1, magnitude, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, magnitude, 1, 0)
                image = image.transform(image.size, Image.AFFINE, data, Image.BICUBIC, fillcolor=(FILL,) * 3)
                continue
            magnitude = authors_magnitude(name, magnitude)
            if name != "Solarize" or magnitude <= 255:
                image = _apply_op(image, name, magnitude, InterpolationMode.NEAREST, FILL)
        return image


@dataclass(frozen=True)
class Draws:
    """What torchvision's AutoAugment.get_params draws, for every image: sub-policy, probabilities, signs."""

    sub_policy: torch.Tensor  # int64 N, in [0, 25)
    probabilities: torch.Tensor  # float N x 2: operation i runs when probabilities[:, i] <= its p
    signs: torch.Tensor  # int64 N x 2: 0 flips the sign of a signed magnitude


def draw(count: int, generator: torch.Generator) -> Draws:
    device = generator.device
    return Draws(
        sub_policy=torch.randint(len(SUB_POLICIES), (count,), device=device, generator=generator),
        probabilities=torch.rand(count, 2, device=device, generator=generator),
        signs=torch.randint(2, (count, 2), device=device, generator=generator),
    )


def _slot_operations(slot: int, height: int, width: int) -> list[tuple[str, float] | None]:
    """For one operation slot, the (operation, signed magnitude) of every key sub_policy * 2 + sign."""
    space = REFERENCE._augmentation_space(10, (height, width))
    operations = []
    for sub_policy in SUB_POLICIES:
        name, _, magnitude_id = sub_policy[slot]
        magnitudes, signed = space[name]
        magnitude = float(magnitudes[magnitude_id].item()) if magnitude_id is not None else 0.0
        operations += [(name, -magnitude if signed else magnitude), (name, magnitude)]
    return operations


def apply(images: torch.Tensor, draws: Draws, convention: str = "torchvision") -> torch.Tensor:
    """The policy on uint8 N x 3 x H x W images with the given draws (uint8 out, same device)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"AutoAugment takes a uint8 N x C x H x W batch, got {images.dtype} {tuple(images.shape)}")
    height, width = images.shape[-2:]
    thresholds = torch.tensor([[p for _, p, _ in sub] for sub in SUB_POLICIES], device=images.device)
    for slot in (0, 1):
        operations = _slot_operations(slot, height, width)
        runs = draws.probabilities[:, slot] <= thresholds[draws.sub_policy, slot]
        keys = torch.where(runs, draws.sub_policy * 2 + draws.signs[:, slot], -1)  # -1: this slot does nothing
        order = torch.argsort(keys)
        counts = torch.bincount(keys + 1, minlength=len(operations) + 1).tolist()  # the synchronisation
        pieces = list(torch.split(images[order], counts))
        for key, (name, magnitude) in enumerate(operations):
            if counts[key + 1]:
                pieces[key + 1] = _tensor_operation(pieces[key + 1], name, magnitude, convention)
        images = torch.empty_like(images).index_copy_(0, order, torch.cat(pieces))
    return images


def batch_autoaugment(
    images: torch.Tensor, generator: torch.Generator, convention: str = "torchvision"
) -> torch.Tensor:
    """Draw for every image and apply: the CIFAR-10 policy on a uint8 batch, as many images at once as given."""
    return apply(images, draw(len(images), generator), convention)
