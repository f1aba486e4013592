"""The training step, and the two ways the loop runs it: eagerly, or captured once in a CUDA
graph and replayed.

Why graphs: on a GPU the eager step is bound by the host. On an H200 (torch 2.11, batch 128)
the eager step took 8.52 / 19.37 / 37.54 ms for ResNet-20 / 56 / 110, and the same kernels
replayed from a CUDA graph 2.46 / 6.84 / 13.36 ms (``../shared/gpu-runs/README.md`` where
present; README, "Performance"). A graph replays the recorded kernels with one host call.

What a graph changes, and what it must not:

- The step (forward, loss, backward, the foreach SGD step) reads its batch from static input
  buffers and writes the loss and the number wrong into static outputs; the loop copies each
  batch in and reads (accumulates) the outputs before the next replay.
- Foreach SGD reads its learning rate as a Python float, and a graph freezes it. So the step
  is captured again whenever the rate changes: at the end of the warm-up and at each
  milestone, three or four captures a run. (A tensor lr makes foreach SGD call ``.item()``,
  which cannot be captured; ``fused=True`` reads a tensor lr on the device but rounds
  differently: both would change the recipe's numbers.)
- Before the first capture the loop takes ``EAGER_STEPS`` real steps (they are iterations of
  the run, on a side stream as capture requires), so that autograd, cuDNN and the optimizer's
  momentum buffers exist. A resumed run loads its checkpoint before that: a state loaded
  after a capture would be invisible to the graph.
- Nothing else runs inside the graph: evaluation, the layer signals and checkpoints run
  between replays, on the tensors the graph updates in place.

The capture itself sits behind ``Capture``: ``CudaGraphs`` on a GPU, ``StandIn`` on the CPU,
which "captures" by keeping the closure and "replays" by calling it on the same static
buffers, at the same points. The CPU tests run the whole graphed loop through the stand-in
and check that its logs and weights are bit-identical to the eager loop's (tests/test_step.py);
only the CUDA calls in ``CudaGraphs`` need a GPU (``scripts/gpu_check.sh`` checks them).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..planning.experiments import Recipe

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
EAGER_STEPS = 3  # real steps before the first capture (PyTorch's whole-network example takes 3)


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; the multi-tensor (foreach) kernels on CUDA."""
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov,
                           foreach=device.type == "cuda" or None)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, amp: torch.dtype | None = None,
                    cache_casts: bool = True) -> StepFn:
    """One SGD step on a batch; returns (loss, number wrong) as device tensors, never
    synchronising with the host. The benchmark times exactly this function.
    ``cache_casts=False`` for a captured step: autocast's weight-cast cache must not outlive
    a capture (PyTorch's CUDA-graph notes); it changes no number, only what is recomputed."""
    device_type = next(model.parameters()).device.type

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type, dtype=amp, enabled=amp is not None, cache_enabled=cache_casts):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (out.detach().argmax(1) != y).sum()

    return step


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Capture(Protocol):
    """How a step closure is run before capture, captured, and replayed."""

    def warm(self, body: Callable[[], None]) -> None:
        """Run ``body`` for real, as capture needs it run first (a side stream on CUDA)."""

    def capture(self, body: Callable[[], None]) -> None:
        """Record ``body``, running nothing; replaces any earlier recording."""

    def replay(self) -> None:
        """Run what was recorded."""


class CudaGraphs:
    """``torch.cuda.CUDAGraph`` capture and replay. The only part of the step that needs a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def warm(self, body: Callable[[], None]) -> None:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            body()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, body: Callable[[], None]) -> None:
        self.graph = None  # the old graph's memory pool goes before the new one is taken
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        self.graph = graph

    def replay(self) -> None:
        assert self.graph is not None, "replay before capture"
        self.graph.replay()


class StandIn:
    """The CPU stand-in for ``CudaGraphs``: capture keeps the closure, replay calls it. The
    graphed loop's logic (static buffers, when to capture, frozen lr) is then the one tested."""

    def __init__(self) -> None:
        self.body: Callable[[], None] | None = None
        self.captures = 0

    def warm(self, body: Callable[[], None]) -> None:
        body()

    def capture(self, body: Callable[[], None]) -> None:
        self.body = body
        self.captures += 1

    def replay(self) -> None:
        assert self.body is not None, "replay before capture"
        self.body()


class EagerStep:
    """The step as written: the lr set, then forward, backward and SGD, every iteration."""

    mode = "eager"

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer) -> None:
        self.step, self.optimizer = step, optimizer

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        set_lr(self.optimizer, lr)
        return self.step(x, y)


class GraphedStep:
    """The step captured once and replayed (see the module's docstring). Returns the static
    outputs: read them before the next call, which overwrites them."""

    mode = "cuda graph"

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer, capture: Capture,
                 eager_steps: int = EAGER_STEPS) -> None:
        self.step, self.optimizer, self.capturer = step, optimizer, capture
        # the static buffers, made at the first call in the batch's own layout (channels_last)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.wrong: torch.Tensor | None = None
        self.eager_left = eager_steps
        self.lr: float | None = None   # the rate the current capture holds
        self.captured = False
        self.captures: list[int] = []  # the call number of every capture (0-based), for meta.json
        self.calls = 0
        self.failed: str | None = None  # why a capture failed: the step is eager from then on

    def _body(self) -> None:
        loss, wrong = self.step(self.x, self.y)
        self.loss.copy_(loss)
        self.wrong.copy_(wrong)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is None:
            self.x, self.y = torch.empty_like(x), torch.empty_like(y)
            self.loss = torch.zeros((), device=x.device)
            self.wrong = torch.zeros((), device=x.device, dtype=torch.long)
        self.x.copy_(x)
        self.y.copy_(y)
        if lr != self.lr:  # a new rate: the graph holds the old one
            set_lr(self.optimizer, lr)
            self.lr, self.captured = lr, False
        self.calls += 1
        if self.failed is None and not self.captured:
            if self.eager_left > 0:
                self.eager_left -= 1
                self.capturer.warm(self._body)
                return self.loss, self.wrong
            try:
                self.capturer.capture(self._body)  # records; the replay below takes this iteration's step
            except Exception as e:  # an old driver, an op that cannot be captured: eager, said once
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                self.mode = f"eager (the capture failed: {self.failed})"
                print(f"step: the CUDA graph capture failed ({self.failed}); training eagerly from here", flush=True)
            else:
                self.captured = True
                self.captures.append(self.calls - 1)
        if self.failed is not None:
            self._body()
        else:
            self.capturer.replay()
        return self.loss, self.wrong


Stepper = EagerStep | GraphedStep


def graph_unavailable(device: torch.device) -> str | None:
    """Why this device cannot capture a step (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run trains on {device.type}"
    if not hasattr(torch.cuda, "CUDAGraph"):
        return "this torch build has no CUDA graphs"
    return None


def step_mode(recipe: Recipe, device: torch.device) -> str:
    """How the loop will run the step, in words, and why (the plan prints it; meta.json keeps it)."""
    if not recipe.cuda_graph:
        return "eager (the recipe's cuda_graph is off)"
    if (why := graph_unavailable(device)) is not None:
        return f"eager ({why})"
    return "cuda graph, captured again at each new lr"


def make_stepper(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, device: torch.device,
                 capture: Capture | None = None) -> tuple[Stepper, str]:
    """The step the loop runs, and one line saying which and why. Graphed where the recipe
    asks for it (``cuda_graph``) and the device can capture; ``capture`` overrides the device's
    (the CPU tests pass ``StandIn()``)."""
    amp = torch.bfloat16 if recipe.precision == "bf16" else None
    how = step_mode(recipe, device)
    if not recipe.cuda_graph or (capture is None and how.startswith("eager")):
        return EagerStep(make_train_step(model, optimizer, amp), optimizer), how
    if capture is None:
        capture = CudaGraphs(device)
    else:
        how = f"graph captured through {type(capture).__name__}, captured again at each new lr"
    return GraphedStep(make_train_step(model, optimizer, amp, cache_casts=False), optimizer, capture), how


class DeterministicPool(nn.Module):
    """Global average pooling as a mean over the map. ``nn.AdaptiveAvgPool2d``'s CUDA backward
    has no deterministic kernel (PyTorch raises under deterministic algorithms), so a
    ``deterministic`` run swaps this in. Not used otherwise: the default keeps the pooling
    every reference was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def set_determinism(model: nn.Module, recipe: Recipe, device: torch.device) -> None:
    """The recipe's ``deterministic``: PyTorch's deterministic algorithms (cuDNN's too, its
    autotuner off) or, by default on CUDA, cuDNN's autotuner for speed. Process-wide: set
    at the start of every run. cuBLAS's workspace setting, which determinism needs, is set
    by ``runs/device.pick_device`` before CUDA starts."""
    torch.use_deterministic_algorithms(recipe.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = recipe.deterministic
        torch.backends.cudnn.benchmark = not recipe.deterministic
        if recipe.deterministic:
            for name, module in list(model.named_modules()):
                for child_name, child in list(module.named_children()):
                    if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                        setattr(module, child_name, DeterministicPool())
