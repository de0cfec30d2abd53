"""haet-winner: the 1st-place method of the HAET 2021 challenge (88.0%), written in this project's code from its
public description (protocol-facts, "The winning entry"): the "bag of tricks" ResNet of Page's fast CIFAR-10
training with a frozen patch-whitening layer, GhostBatchNorm (16 splits, scale frozen at 1), CELU(0.3), label
smoothing 0.1, Nesterov SGD with biases at 64x the rate, a piecewise-linear rate, weight EMA (0.99 every 5 steps)
for the model handed in, flip test-time augmentation, and SAM (rho 0.05) as an option (haet-winner-sam).

Where this differs from the entry, and why: the rate's schedule runs over the fraction of the deadline spent, not
over a fixed epoch count (the entry's epochs were fitted to a V100; this runs on any hardware); the whitening
convolution pads by 1 so that small images keep their size; the data are fp32, not fp16, so that the CPU runs it;
the EMA's momentum ramps up to 0.99 as min(0.99, (1 + k) / (10 + k)) after k updates (TensorFlow's form), so that
a short run's average is not mostly its initial weights. Gradient centralisation and meta-learning, named in the
entry's write-up but not in its public code, are left out.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BATCH_SIZE = 256
PEAK_LR, WEIGHT_DECAY, BIAS_SCALE = 0.4, 5e-4, 64
EMA_MOMENTUM, EMA_EVERY = 0.99, 5
GHOST_SPLITS = 16


class GhostBatchNorm(nn.BatchNorm2d):
    """BatchNorm over GHOST_SPLITS slices of each batch (Page's), scale frozen at 1; evaluation uses the mean of the
    slices' running statistics."""

    def __init__(self, channels: int, splits: int = GHOST_SPLITS):
        super().__init__(channels)
        self.splits = splits
        self.weight.requires_grad_(False)
        self.register_buffer("ghost_mean", torch.zeros(channels * splits))
        self.register_buffer("ghost_var", torch.ones(channels * splits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training or n % self.splits:
            mean = self.ghost_mean.view(self.splits, c).mean(0)
            var = self.ghost_var.view(self.splits, c).mean(0)
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        ghosts = x.reshape(n // self.splits, c * self.splits, h, w)
        out = F.batch_norm(ghosts, self.ghost_mean, self.ghost_var, self.weight.repeat(self.splits),
                           self.bias.repeat(self.splits), True, self.momentum, self.eps)  # fmt: skip
        return out.reshape(n, c, h, w)


def conv_bn(channels_in: int, channels_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)]
    layers += [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(*layers, GhostBatchNorm(channels_out), nn.CELU(0.3))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class BagOfTricksNet(nn.Module):
    def __init__(self, whitening: torch.Tensor, num_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))
        self.whiten = nn.Conv2d(3, whitening.shape[0], 3, padding=1, bias=False)
        self.whiten.weight.data.copy_(whitening)
        self.whiten.weight.requires_grad_(False)
        self.layers = nn.Sequential(
            nn.Conv2d(whitening.shape[0], 64, 1, bias=False), GhostBatchNorm(64), nn.CELU(0.3),
            conv_bn(64, 128, pool=True), Residual(128),
            conv_bn(128, 256, pool=True),
            conv_bn(256, 512, pool=True), Residual(512),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(512, num_classes, bias=False),
        )  # fmt: skip

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W in, logits out (normalisation is the model's, so predict needs nothing else)."""
        x = (images_uint8.float() / 255 - self.mean) / self.std
        return self.layers(self.whiten(x)) * 0.125


def whitening_filters(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """27 3x3 filters from the eigenvectors of the training images' 3x3 patches (Page's whitening)."""
    x = (images[:10000].float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    patches = F.unfold(x, 3).transpose(1, 2).reshape(-1, 27).double()
    patches = patches - patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    return (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(27, 3, 3, 3).float()


def crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted within a reflection padding of 4 and flipped at random (one draw an epoch)."""
    n, c, h, w = images.shape
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="reflect")
    dy, dx = (torch.randint(9, (n,), generator=generator, device=images.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    out = padded[torch.arange(n, device=images.device)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows, cols]  # fmt: skip
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).to(torch.uint8)


def rate(progress: float) -> float:
    return float(np.interp(progress, [0.0, 0.2, 1.0], [0.0, PEAK_LR, 0.1 * PEAK_LR]))


def sam_step(model: nn.Module, loss_of, rho: float) -> None:
    """Sharpness-aware minimisation's ascent: gradients taken at weights moved rho along the gradient's direction."""
    parameters = [p for p in model.parameters() if p.grad is not None]
    norm = torch.norm(torch.stack([p.grad.norm() for p in parameters])) + 1e-12
    moves = [p.grad * (rho / norm) for p in parameters]
    with torch.no_grad():
        torch._foreach_add_(parameters, moves)
    model.zero_grad()
    loss_of().backward()
    with torch.no_grad():
        torch._foreach_sub_(parameters, moves)


def train_method(
    images, labels, num_classes, device, deadline, hand_in, sam_rho: float = 0.0, epochs: int | None = None
) -> None:
    """Train until an epoch no longer fits before the deadline, the rate's schedule over the deadline's time; with
    epochs, for that many epochs (the entry's own form), the schedule over them. deadline on the run's clock (its
    now(); a plain number: time.time()'s)."""
    now = getattr(deadline, "now", time.time)
    start = now()
    generator = torch.Generator(device=device).manual_seed(torch.initial_seed() % 2**63)
    inputs = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
    targets = torch.from_numpy(labels).to(device)
    unit = inputs.float() / 255
    mean, std = unit.mean((0, 2, 3)), unit.std((0, 2, 3))
    model = BagOfTricksNet(whitening_filters(inputs, mean, std), num_classes, mean, std).to(device)
    ema = copy.deepcopy(model)
    biases = [p for name, p in model.named_parameters() if p.requires_grad and "bias" in name]
    weights = [p for name, p in model.named_parameters() if p.requires_grad and "bias" not in name]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": WEIGHT_DECAY, "scale": 1},
         {"params": biases, "weight_decay": WEIGHT_DECAY / BIAS_SCALE, "scale": BIAS_SCALE}],
        lr=0.0, momentum=0.9, nesterov=True,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    budget_s, epoch_s, step = deadline - start, 0.0, 0
    steps_per_epoch = max(len(targets) // BATCH_SIZE, 1)
    epoch = 0
    # an epoch that still fits, with time to hand it in
    while now() + 1.2 * epoch_s + 0.5 < deadline and (epochs is None or epoch < epochs):
        epoch_start = now()
        augmented = crop_flip(inputs, generator)
        order = torch.randperm(len(targets), generator=generator, device=device)
        for batch in order[: len(order) // BATCH_SIZE * BATCH_SIZE or len(order)].split(BATCH_SIZE):
            progress = (now() - start) / budget_s if epochs is None else step / (epochs * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = rate(progress) * group["scale"]

            def loss_of(batch=batch, augmented=augmented):
                return loss_fn(model(augmented[batch]), targets[batch])

            optimizer.zero_grad(set_to_none=True)
            loss_of().backward()
            if sam_rho:
                sam_step(model, loss_of, sam_rho)
            optimizer.step()
            step += 1
            if step % EMA_EVERY == 0:
                momentum = min(EMA_MOMENTUM, (1 + step // EMA_EVERY) / (10 + step // EMA_EVERY))
                with torch.no_grad():
                    for averaged, current in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
                        if averaged.dtype.is_floating_point:
                            averaged.mul_(momentum).add_(current, alpha=1 - momentum)
                        else:
                            averaged.copy_(current)
        hand_in(ema if step >= EMA_EVERY else model)
        epoch_s, epoch = now() - epoch_start, epoch + 1


def train(images, labels, num_classes, device, deadline, hand_in) -> None:
    train_method(images, labels, num_classes, device, deadline, hand_in)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Class indices from the logits of each image and of its mirror image (flip test-time augmentation)."""
    model.eval()
    device = next(model.buffers()).device
    inputs = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
    predictions = []
    for chunk in inputs.split(500):
        logits = model(chunk) + model(chunk.flip(3))
        predictions.append(logits.argmax(1))
    return torch.cat(predictions).cpu().numpy()
