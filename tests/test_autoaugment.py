"""The batched CIFAR-10 AutoAugment against torchvision's own, operation by operation, and its draws by frequency."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import AutoAugment

from haet.train.autoaugment import REFERENCE, SUB_POLICIES, Draws, apply, batch_autoaugment, draw

KEYS = [(slot, index, sign) for slot in (0, 1) for index in range(len(SUB_POLICIES)) for sign in (0, 1)]


def _images(count: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random images (upsampled noise), closer to photographs than white noise is."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (count, 3, 8, 8), generator=generator).float()
    return torch.nn.functional.interpolate(noise, size=32, mode="bilinear").round().to(torch.uint8)


def _only(slot: int, index: int, sign: int, count: int) -> Draws:
    """Draws that run one sub-policy's operation in one slot, with one sign, on every image."""
    probabilities = torch.tensor([[0.0, 2.0] if slot == 0 else [2.0, 0.0]]).repeat(count, 1)  # 2.0 > every p
    return Draws(torch.full((count,), index), probabilities, torch.full((count, 2), sign))


def _torchvision(image, sub_policy: int, probabilities: torch.Tensor, signs: torch.Tensor):
    """torchvision's AutoAugment on one image (tensor or PIL) with its random draws given."""
    params = (sub_policy, probabilities, signs)
    with mock.patch.object(AutoAugment, "get_params", staticmethod(lambda count: params)):
        return REFERENCE(image)


@pytest.mark.parametrize(("slot", "index", "sign"), KEYS, ids=[f"{s}-{i}-{g}" for s, i, g in KEYS])
def test_every_operation_and_magnitude_equals_torchvision_on_tensors_and_pil_within_a_level(slot, index, sign):
    images = _images(8, seed=index)
    draws = _only(slot, index, sign, len(images))
    ours = apply(images, draws)
    for position in range(len(images)):
        expected = _torchvision(images[position], index, draws.probabilities[position], draws.signs[position])
        assert torch.equal(ours[position], expected)  # exact: torchvision's own operation on the same tensor
        pil = Image.fromarray(images[position].permute(1, 2, 0).numpy())
        from_pil = np.asarray(_torchvision(pil, index, draws.probabilities[position], draws.signs[position]))
        difference = np.abs(from_pil.astype(int) - ours[position].permute(1, 2, 0).numpy().astype(int))
        # the loader's PIL path rounds blends where tensors truncate: one intensity level at most
        assert difference.max() <= 1, SUB_POLICIES[index][slot]


def test_whole_policies_with_random_draws_equal_torchvision_image_by_image():
    images = _images(200, seed=1)
    draws = draw(len(images), torch.Generator().manual_seed(3))
    ours = apply(images, draws)
    for position in range(len(images)):
        args = (draws.sub_policy[position].item(), draws.probabilities[position], draws.signs[position])
        assert torch.equal(ours[position], _torchvision(images[position], *args))


def test_sub_policies_and_operations_are_drawn_as_often_as_the_policy_says():
    count = 200_000
    draws = draw(count, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws.sub_policy, minlength=25).double() / count
    # each sub-policy 1/25; a binomial's standard deviation here is 0.00044: 5 of them as the tolerance
    assert torch.all((frequencies - 1 / 25).abs() < 5 * (1 / 25 * 24 / 25 / count) ** 0.5)
    for slot in (0, 1):
        for index, sub_policy in enumerate(SUB_POLICIES):
            chosen = draws.sub_policy == index
            ran = (draws.probabilities[chosen, slot] <= sub_policy[slot][1]).double().mean().item()
            p, n = sub_policy[slot][1], int(chosen.sum())
            assert abs(ran - p) < 5 * max(p * (1 - p), 1e-4) ** 0.5 / n**0.5 + 1e-9, (index, slot, ran, p)
        assert abs(draws.signs[:, slot].double().mean().item() - 0.5) < 0.005


def test_uint8_in_uint8_out_and_bad_input_is_refused():
    out = batch_autoaugment(_images(16), torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == (16, 3, 32, 32)
    with pytest.raises(ValueError, match=r"uint8 N x C x H x W batch"):
        batch_autoaugment(_images(4).float(), torch.Generator().manual_seed(0))
