"""torchvision's CIFAR-10 AutoAugment policy on a whole uint8 batch on the device, one sub-policy per image.

Every image draws its own sub-policy (uniform over the 25), and for each of the sub-policy's two operations a
probability and a sign, exactly as torchvision.transforms.AutoAugment draws them for one image. Images that share
an operation and signed magnitude are gathered and transformed together by torchvision's own operation functions
(the ones its AutoAugment calls on tensors; for Equalize the batched v2 one, which gives the same result), so each
image gets what torchvision gives it, without a loop over images. Grouping needs the group sizes on the host: one
synchronisation per operation slot (two per call), which is why the resident pipeline augments a whole epoch at
once rather than a batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.autoaugment import _apply_op
from torchvision.transforms.v2.functional import equalize

FILL = 128  # the authors' (and the loader pipeline's) fill for pixels that geometric operations uncover
REFERENCE = AutoAugment(AutoAugmentPolicy.CIFAR10, fill=FILL)
SUB_POLICIES = REFERENCE.policies  # torchvision's own list: the same 25 sub-policies, probabilities, magnitudes


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


def apply(images: torch.Tensor, draws: Draws) -> torch.Tensor:
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
            if not counts[key + 1]:
                continue
            if name == "Equalize":  # v1's loops over images (a synchronisation each); v2's is batched, same result
                pieces[key + 1] = equalize(pieces[key + 1])
            else:
                fill = [float(FILL)] * images.shape[1]
                pieces[key + 1] = _apply_op(pieces[key + 1], name, magnitude, InterpolationMode.NEAREST, fill)
        images = torch.empty_like(images).index_copy_(0, order, torch.cat(pieces))
    return images


def batch_autoaugment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw for every image and apply: the CIFAR-10 policy on a uint8 batch, as many images at once as given."""
    return apply(images, draw(len(images), generator))
