"""The training step: forward, backward and optimiser step of one batch, eager or replayed as a CUDA graph.

runtime.capture picks one. eager is torch as written: hundreds of small kernels launched one by one, which on a fast
GPU bounds a small model (SENet-18 at width 0.67 spends most of its step launching squeeze-excitation kernels).
cuda-graph captures the step once per batch shape, before the budget's clock starts, and replays it: one launch.

The captured step keeps its batch in static buffers (each step's batch is copied in), and its learning rate in a
device tensor the host fills before each replay, so a schedule changes the rate without recapture. An epoch's
last, smaller batch has a graph of its own. Capture needs a few steps run first on a side stream; they run on
random images and labels (as airbench warms up) and train nothing the run keeps: the model's parameters and
buffers and the momentum are put back afterwards.

The captured SGD step is written here with foreach ops: torch.optim.SGD reads a tensor learning rate with .item(),
a synchronisation a graph cannot hold. tests/test_step.py holds it equal to torch.optim.SGD.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from haet.train.config import RecipeError

WARMUP_STEPS = 3  # torch's whole-network capture example warms up 3 steps on a side stream


class EagerStep:
    """One optimiser step of torch.optim's optimiser as written."""

    mode = "eager"
    capture_s = 0.0

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, bf16: bool):
        self.model, self.optimizer, self.loss_fn, self.bf16 = model, optimizer, loss_fn, bf16
        self.lr = optimizer.param_groups[0]["lr"]

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(self.model(inputs), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def sgd_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    lr: torch.Tensor,
    momentum: float,
    weight_decay: float,
) -> None:
    """torch.optim.SGD's step (dampening 0, no Nesterov) with the rate a device tensor: no host read."""
    with torch.no_grad():
        directions = torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay else list(grads)
        if momentum:
            # a zero buffer times momentum plus the gradient is the gradient: what SGD's first step stores
            torch._foreach_mul_(momentum_buffers, momentum)
            torch._foreach_add_(momentum_buffers, directions)
            directions = momentum_buffers
        torch._foreach_add_(params, torch._foreach_mul(directions, -lr))


class StaticStep:
    """SGD steps over static batch buffers, one per batch size; capture() records each size's step as a graph."""

    mode = "cuda-graph"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        momentum: float,
        weight_decay: float,
        bf16: bool,
        input_shape: tuple[int, ...],
        batch_sizes: list[int],
        num_classes: int,
        memory_format: torch.memory_format,
    ):
        self.model, self.loss_fn, self.bf16 = model, loss_fn, bf16
        self.momentum, self.weight_decay, self.num_classes = momentum, weight_decay, num_classes
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device
        self.momentum_buffers = [torch.zeros_like(p) for p in self.params] if momentum else []
        self.lr = 0.0
        self.lr_tensor = torch.zeros((), device=device)
        self.batches = {
            size: (
                torch.zeros((size, *input_shape), device=device).contiguous(memory_format=memory_format),
                torch.zeros(size, dtype=torch.long, device=device),
            )
            for size in batch_sizes
        }
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.losses: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0

    def _step(self, size: int) -> torch.Tensor:
        inputs, targets = self.batches[size]
        # autocast's weight cache would hold casts made during capture: off, as torch's graph notes ask
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            loss = self.loss_fn(self.model(inputs), targets)
        grads = torch.autograd.grad(loss, self.params)
        sgd_update(self.params, list(grads), self.momentum_buffers, self.lr_tensor, self.momentum, self.weight_decay)
        return loss.detach()

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        size = len(targets)
        if size not in self.batches:
            raise ValueError(f"no static buffer for a batch of {size}; this step holds {sorted(self.batches)}")
        static_inputs, static_targets = self.batches[size]
        static_inputs.copy_(inputs)
        static_targets.copy_(targets)
        self.lr = lr
        self.lr_tensor.fill_(lr)
        if size in self.graphs:
            self.graphs[size].replay()
            return self.losses[size]
        return self._step(size)

    def warm_up_and_capture(self, graphs: bool = True) -> float:
        """Warm up every batch size on random data, capture its graph (graphs=False: warm up only), then put the
        model and momentum back as they were; returns the seconds it took."""
        start = time.perf_counter()
        saved_model = {name: value.clone() for name, value in self.model.state_dict().items()}
        device = self.lr_tensor.device
        generator = torch.Generator(device=device).manual_seed(0)  # leaves the run's own generators alone
        side_stream = torch.cuda.Stream(device) if graphs else None
        if side_stream is not None:
            side_stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side_stream) if graphs else contextlib.nullcontext():
            for size, (inputs, targets) in self.batches.items():
                inputs.copy_(torch.randn(inputs.shape, generator=generator, device=device))
                targets.copy_(torch.randint(self.num_classes, (size,), generator=generator, device=device))
                for _ in range(WARMUP_STEPS):
                    self._step(size)
        if graphs:
            torch.cuda.current_stream(device).wait_stream(side_stream)
            for size in self.batches:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.losses[size] = self._step(size)
                self.graphs[size] = graph
        self.model.load_state_dict(saved_model)  # copies in place: the graphs read the same tensors
        if self.momentum_buffers:
            torch._foreach_zero_(self.momentum_buffers)
        if graphs:
            torch.cuda.synchronize(device)
        self.capture_s = time.perf_counter() - start
        return self.capture_s


def resolve_capture(name: str, device: torch.device, optimizer: str) -> str:
    """The step a run takes. auto is eager everywhere until a GPU run shows the captured step trains alike
    (README "Speed")."""
    if name == "auto":
        return "eager"
    if name == "cuda-graph" and device.type != "cuda":
        raise RecipeError(
            f"runtime.capture cuda-graph replays the training step as a CUDA graph, and this run's device is "
            f"{device.type}: set runtime.capture to eager (or auto) off CUDA"
        )
    if name == "cuda-graph" and optimizer != "sgd":
        raise RecipeError(
            f"runtime.capture cuda-graph captures an SGD step (the paper's optimiser), and recipe.optimizer is "
            f"{optimizer}: use SGD or runtime.capture eager"
        )
    return name
