"""The batched CIFAR-10 AutoAugment against torchvision's own, operation by operation, and its draws by frequency."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import AutoAugment

from haet.train.autoaugment import (
    REFERENCE,
    SUB_POLICIES,
    AuthorsAutoAugment,
    Draws,
    apply,
    authors_magnitude,
    batch_autoaugment,
    draw,
)

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


# The authors' operations as their PIL policy wrote them (protocol facts: DeepVoltaire's CIFAR10Policy), by level
# 0-9 and sign: the reference the `authors` convention is held to. Only those that differ from torchvision's.
def _authors(image: Image.Image, name: str, level: int, sign: int) -> Image.Image:
    fill = (128, 128, 128)
    if name in ("ShearX", "ShearY"):
        m = np.linspace(0, 0.3, 10)[level] * sign
        data = (1, m, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, m, 1, 0)
        return image.transform(image.size, Image.AFFINE, data, Image.BICUBIC, fillcolor=fill)
    if name in ("TranslateX", "TranslateY"):
        offset = np.linspace(0, 150 / 331, 10)[level] * image.size[0] * sign
        data = (1, 0, offset, 0, 1, 0) if name == "TranslateX" else (1, 0, 0, 0, 1, offset)
        return image.transform(image.size, Image.AFFINE, data, fillcolor=fill)
    if name == "Rotate":
        rotated = image.convert("RGBA").rotate(np.linspace(0, 30, 10)[level])
        return Image.composite(rotated, Image.new("RGBA", rotated.size, (128,) * 4), rotated).convert(image.mode)
    assert name == "Solarize"
    return ImageOps.solarize(image, np.linspace(256, 0, 10)[level])


AUTHORS_DIFFER = [
    (slot, index)
    for index, sub_policy in enumerate(SUB_POLICIES)
    for slot in (0, 1)
    if sub_policy[slot][0] in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Solarize")
]


@pytest.mark.parametrize(("slot", "index"), AUTHORS_DIFFER, ids=[f"{s}-{i}" for s, i in AUTHORS_DIFFER])
@pytest.mark.parametrize("sign", [0, 1])
def test_the_authors_convention_gives_their_pil_pixels_in_the_loader_and_close_to_them_on_the_device(slot, index, sign):
    name, _, level = SUB_POLICIES[index][slot]
    images = _images(8, seed=index)
    draws = _only(slot, index, sign, len(images))
    on_device = apply(images, draws, "authors")
    for position in range(len(images)):
        pil = Image.fromarray(images[position].permute(1, 2, 0).numpy())
        params = (index, draws.probabilities[position], draws.signs[position])
        with mock.patch.object(AutoAugment, "get_params", staticmethod(lambda count, params=params: params)):
            loader = np.asarray(AuthorsAutoAugment()(pil)).astype(int)
        # their translate's sign convention is the opposite of torchvision's (both signs are equally likely);
        # their rotate has no sign at all
        authors_sign = {"TranslateX": -1, "TranslateY": -1}.get(name, 1) * (1 if sign else -1)
        expected = np.asarray(_authors(pil, name, level, authors_sign)).astype(int)
        assert np.array_equal(loader, expected), name
        device = on_device[position].permute(1, 2, 0).numpy().astype(int)
        if name in ("ShearX", "ShearY"):  # torch's bicubic kernel is not PIL's
            assert np.abs(device - expected).mean() < 1.5, name
        else:
            assert np.abs(device - expected).max() <= 1, name


def test_the_authors_rotate_never_turns_clockwise_and_their_translate_goes_a_pixel_further():
    rotate = next((slot, i) for i, sub in enumerate(SUB_POLICIES) for slot in (0, 1) if sub[slot][0] == "Rotate")
    images = _images(4)
    clockwise = apply(images, _only(*rotate, 0, len(images)), "authors")
    counter = apply(images, _only(*rotate, 1, len(images)), "authors")
    assert torch.equal(clockwise, counter) and not torch.equal(apply(images, _only(*rotate, 0, 4)), counter)
    assert [authors_magnitude("TranslateX", m) for m in (12.89, -14.5, 4.83)] == [13, -15, 5]
