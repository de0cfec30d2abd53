"""Two ways to feed a training step, with the same augmentations.

- loader: torchvision transforms on PIL images in DataLoader workers (the paper's pipeline, and the reference);
- resident: the uint8 dataset lives on the training device and resizing, random crop, flip, AutoAugment (every
  image its own sub-policy: haet.train.autoaugment) and Cutout run batched there, for every recipe.

Augmentations, in the authors' order: Resize to the run's input side (the resolution multiplier, bilinear; only
when it differs from the stored images) -> RandomCrop(input side, padding 4) -> RandomHorizontalFlip -> AutoAugment
(CIFAR-10 policy, fill 128) -> ToTensor -> Cutout (one 16x16 hole, centre uniform in the image, clipped at the
border, before normalisation so cut pixels become -mean/std) -> Normalize. Resizing first, as the authors' scaled
networks did, keeps the crop padding at 4 px and Cutout's hole at 16 px whatever the resolution; it happens in the
training loop, so its cost counts against the budget (as the challenge's submissions had to pay it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from haet.train.config import NORMALIZATIONS

CROP_PADDING = 4
CUTOUT_SIZE = 16


class Cutout:
    """Zero one size x size square of a C x H x W tensor, centre uniform in the image, clipped at the border."""

    def __init__(self, size: int = CUTOUT_SIZE):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        y, x = int(torch.randint(height, ())), int(torch.randint(width, ()))
        half = self.size // 2
        image = image.clone()
        image[..., max(0, y - half) : min(height, y + half), max(0, x - half) : min(width, x + half)] = 0
        return image


def train_transform(
    augment: str, normalize: str, side: int, input_px: int | None = None, autoaugment: str = "torchvision"
):
    """The loader's transforms (a torchvision Compose) for images stored at side x side, trained at input_px
    (default: side), with torchvision's AutoAugment or the authors' (autoaugment)."""
    # Imported here, not at the top: torchvision's import pulls in torch._dynamo (about 2 s of every training
    # process's start), and only the loader pipeline and AutoAugment need it.
    from torchvision import transforms

    mean, std = NORMALIZATIONS[normalize]
    input_px = input_px or side
    steps: list = []
    if input_px != side:
        steps.append(transforms.Resize((input_px, input_px), interpolation=transforms.InterpolationMode.BILINEAR))
    if augment in ("basic", "cutout", "paper"):
        steps += [transforms.RandomCrop(input_px, padding=CROP_PADDING), transforms.RandomHorizontalFlip()]
    if augment == "paper" and autoaugment == "authors":
        from haet.train.autoaugment import AuthorsAutoAugment

        steps.append(AuthorsAutoAugment())
    elif augment == "paper":
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10, fill=128))
    steps.append(transforms.ToTensor())
    if augment in ("cutout", "paper"):
        steps.append(Cutout())
    steps.append(transforms.Normalize(mean, std))
    return transforms.Compose(steps)


class AugmentedImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def drop_last(count: int, batch_size: int) -> bool:
    # BatchNorm cannot train on a batch of one image; dropping that one image is the smallest loss.
    return count % batch_size == 1


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """The sizes of an epoch's batches, as both pipelines cut them: full ones, then the rest unless dropped."""
    rest = count % batch_size
    return [batch_size] + ([rest] if rest and not drop_last(count, batch_size) else [])


class LoaderPipeline:
    """Batches from torchvision transforms in DataLoader workers, reshuffled every epoch."""

    name = "loader"

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        augment: str,
        normalize: str,
        batch_size: int,
        workers: int,
        seed: int,
        device: torch.device,
        input_px: int | None = None,
        autoaugment: str = "torchvision",
    ):
        self.generator = torch.Generator().manual_seed(seed)
        transform = train_transform(augment, normalize, images.shape[1], input_px, autoaugment)
        dataset = AugmentedImages(images, labels, transform)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            generator=self.generator,
            drop_last=drop_last(len(labels), batch_size),
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for inputs, targets in self.loader:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)


def to_device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 numpy -> uint8 N x 3 x H x W tensor on device."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()


def resize(batch: torch.Tensor, input_px: int) -> torch.Tensor:
    """A float N x C x H x W batch at input_px x input_px (bilinear, antialiased when shrinking, as PIL is)."""
    if batch.shape[-1] == input_px and batch.shape[-2] == input_px:
        return batch
    return F.interpolate(
        batch, size=(input_px, input_px), mode="bilinear", align_corners=False, antialias=input_px < batch.shape[-1]
    )


def normalized(batch_uint8_or_unit: torch.Tensor, normalize: str) -> torch.Tensor:
    mean, std = NORMALIZATIONS[normalize]
    batch = batch_uint8_or_unit
    if batch.dtype == torch.uint8:
        batch = batch.float() / 255
    mean_t = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def batch_crop_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding 4 and random horizontal flip, per image, as one gather."""
    count, _, height, width = batch.shape
    padded = torch.nn.functional.pad(batch, (CROP_PADDING,) * 4)
    offset_y = torch.randint(0, 2 * CROP_PADDING + 1, (count, 1), device=batch.device, generator=generator)
    offset_x = torch.randint(0, 2 * CROP_PADDING + 1, (count, 1), device=batch.device, generator=generator)
    rows = offset_y + torch.arange(height, device=batch.device)
    flip = torch.rand(count, 1, device=batch.device, generator=generator) < 0.5
    columns = torch.arange(width, device=batch.device).expand(count, width)
    columns = torch.where(flip, width - 1 - columns, columns) + offset_x
    index = torch.arange(count, device=batch.device)[:, None, None, None]
    channel = torch.arange(batch.shape[1], device=batch.device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], columns[:, None, None, :]]


def batch_cutout(batch: torch.Tensor, generator: torch.Generator, size: int = CUTOUT_SIZE) -> torch.Tensor:
    count, _, height, width = batch.shape
    centre_y = torch.randint(0, height, (count, 1, 1), device=batch.device, generator=generator)
    centre_x = torch.randint(0, width, (count, 1, 1), device=batch.device, generator=generator)
    ys = torch.arange(height, device=batch.device).view(1, height, 1)
    xs = torch.arange(width, device=batch.device).view(1, 1, width)
    half = size // 2
    hole = (ys >= centre_y - half) & (ys < centre_y + half) & (xs >= centre_x - half) & (xs < centre_x + half)
    return batch * (~hole).unsqueeze(1)


class ResidentPipeline:
    """The whole uint8 train set on the device; shuffling, resizing, crop, flip and cutout batched there."""

    name = "resident"

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        augment: str,
        normalize: str,
        batch_size: int,
        seed: int,
        device: torch.device,
        input_px: int | None = None,
        autoaugment: str = "torchvision",
    ):
        self.images, self.labels = to_device_images(images, device), torch.as_tensor(labels, device=device)
        self.augment, self.normalize, self.batch_size = augment, normalize, batch_size
        self.autoaugment = autoaugment
        self.input_px = input_px or images.shape[1]
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed + 1)
        self.drop_last = drop_last(len(labels), batch_size)

    def __len__(self) -> int:
        full, rest = divmod(len(self.labels), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's images resized, cropped, flipped and AutoAugmented at once in uint8 (AutoAugment groups
        images by operation, which costs a synchronisation: once an epoch, not once a step); then per batch
        Cutout and normalisation in float."""
        order = torch.randperm(len(self.labels), generator=self.shuffle_generator).to(self.images.device)
        images = self.images[order[: len(self) * self.batch_size]]
        if images.shape[-1] != self.input_px:
            images = resize(images.float(), self.input_px).round_().clamp_(0, 255).to(torch.uint8)
        if self.augment != "none":
            images = batch_crop_flip(images, self.augment_generator)
        if self.augment == "paper":
            from haet.train.autoaugment import batch_autoaugment  # imports torchvision: see train_transform

            images = batch_autoaugment(images, self.augment_generator, self.autoaugment)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].float() / 255
            if self.augment in ("cutout", "paper"):
                batch = batch_cutout(batch, self.augment_generator)
            yield normalized(batch, self.normalize), self.labels[order[start : start + self.batch_size]]
