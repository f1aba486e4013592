"""The training step, and the two ways the loop runs it: eagerly, or captured once in a CUDA
graph and replayed.

Why graphs: on a GPU the eager step is bound by the host. On an H200 (torch 2.11, batch 128)
the eager step took 8.52 / 19.37 / 37.54 ms for ResNet-20 / 56 / 110, and the same kernels
replayed from a CUDA graph 2.46 / 6.84 / 13.36 ms (``../shared/gpu-runs/README.md`` where
present; docs/performance.md). A graph replays the recorded kernels with one host call.

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

The capture itself sits behind ``Capture``: ``CudaGraphs`` on a GPU, ``StandIn`` on the CPU.
The stand-in "captures" by keeping the closure and "replays" by calling it on the same static
buffers, at the same points, and it behaves like a graph where a graph would differ from a call:
at capture it snapshots what a graph freezes (``Frozen``: the optimizer's hyper-parameters, the
tensors the step reads and writes, the hooks present, the modules' train/eval flags), and a
replay after any of them changed behind the step's back fails (``GraphStateChanged``), where
on CUDA the graph would silently go on with the old values or the old memory. The CPU tests run
the whole graphed loop through the stand-in and check that its logs and weights are
bit-identical to the eager loop's (tests/test_step.py); only the CUDA calls in ``CudaGraphs``
need a GPU (``scripts/gpu_check.sh`` checks them). ``CudaGraphs`` runs the same check every
``CudaGraphs.CHECK_EVERY`` replays, so a stale graph on a GPU fails the run within that many steps.

One capture is alive per process at a time (``live_captures``): a run releases its graph, its
memory pool and the gradients allocated in it when it ends (``GraphedStep`` is a context
manager), so a pool worker that trains runs back to back never holds two.

Arithmetic (``set_numerics``): ``precision: fp32`` is IEEE fp32 on every device. On CUDA that
means TF32 off for cuDNN's convolutions and cuBLAS's matmuls (PyTorch turns cuDNN's on by
default), so a GPU run computes at the precision of the CPU references and of the paper's 2015
GPUs; ``tf32`` opts into TF32 tensor cores, ``bf16`` into bf16 autocast. meta.json records the
flags a run trained with (``provenance.tf32_flags``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..planning.experiments import Recipe

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
EAGER_STEPS = 3  # real steps before the first capture (PyTorch's whole-network example takes 3)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """How a model's parameters are optimised, in the ecosystem's two conventions:

    - ``model.param_groups()``: a list of ``{"params": [...], "lr_mult": x, "weight_decay_mult": y}``
      (multipliers of the recipe's rate and decay, default 1; Fixup's scalars at lr / 10);
    - timm's ``no_weight_decay()``: names of parameters that take no weight decay, on the model
      or on any of its modules (names relative to that module: a plug-in block can say it).

    A model with neither (every built-in net of the paper) is one group: the paper's SGD."""
    if hasattr(model, "param_groups"):
        groups = [dict(g) for g in model.param_groups()]
    else:
        groups = [{"params": list(model.parameters())}]
    named = dict(model.named_parameters())
    skip = {id(named[f"{prefix}.{n}" if prefix else n]) for prefix, m in model.named_modules()
            if hasattr(m, "no_weight_decay") for n in m.no_weight_decay()}
    if skip:
        split = []
        for g in groups:
            for no_decay in (False, True):
                params = [p for p in g["params"] if (id(p) in skip) == no_decay]
                if params:
                    split.append({**g, "params": params, **({"weight_decay_mult": 0.0} if no_decay else {})})
        groups = split
    seen = [id(p) for g in groups for p in g["params"]]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in model.parameters()}:
        raise ValueError(f"{type(model).__name__}.param_groups() must name each parameter exactly once")
    for g in groups:
        g.setdefault("lr_mult", 1.0)
        g["weight_decay"] = recipe.weight_decay * g.pop("weight_decay_mult", 1.0)
        g["lr"] = recipe.lr * g["lr_mult"]
    return groups


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD over the model's parameter groups (``param_groups``); the multi-tensor
    (foreach) kernels on CUDA."""
    return torch.optim.SGD(param_groups(model, recipe), lr=recipe.lr, momentum=recipe.momentum,
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
    """The schedule's rate, times each group's ``lr_mult`` (``param_groups``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


class GraphStateChanged(RuntimeError):
    """A replay after something the graph froze at capture changed without a new capture: on
    CUDA the graph would go on with the old value or the old memory, silently."""


def _same(a: Any, b: Any) -> bool:
    return a is b or (not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = tuple(f"_global{name}" for name in _HOOK_DICTS)


@dataclass(frozen=True)
class Frozen:
    """What a CUDA graph fixes when it is captured, taken as a snapshot to compare with later:

    - ``hyper``: every param group's hyper-parameters (lr, momentum, weight decay, ...), which
      foreach SGD reads as Python numbers and the graph bakes into its kernels;
    - ``tensors``: every tensor the step reads or writes (parameters, buffers such as BN's
      running statistics, the optimizer's state, the static inputs and outputs), held, with
      their addresses: the graph reads and writes those addresses, so a tensor replaced since
      (a ``load_state_dict`` that swaps a buffer, a new momentum buffer) is invisible to it;
    - ``hooks``: the module, parameter, global and optimizer hooks present (Python: a graph
      never runs a hook added after it was captured, and always "runs" the ones captured);
    - ``training``: the modules in train mode (BN's batch statistics or running ones)."""

    hyper: tuple[dict[str, Any], ...]
    tensors: dict[str, torch.Tensor]
    addresses: dict[str, int]
    hooks: dict[str, tuple[int, ...]]
    training: frozenset[str]

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer, statics: dict[str, torch.Tensor]) -> "Frozen":
        names = {id(p): n for n, p in model.named_parameters()}
        tensors = {f"parameter {n}": p for n, p in model.named_parameters()}
        tensors.update({f"buffer {n}": b for n, b in model.named_buffers()})
        for p, state in optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer state {key} of {names.get(id(p), '?')}"] = value
        tensors.update({f"static {n}": t for n, t in statics.items()})
        hooks = {f"{kind[1:]} of module {n or '(root)'}": tuple(d)
                 for n, m in model.named_modules() for kind in _HOOK_DICTS if (d := getattr(m, kind, None))}
        hooks.update({f"{kind[1:]} of parameter {n}": tuple(d) for n, p in model.named_parameters()
                      for kind in ("_backward_hooks", "_post_accumulate_grad_hooks") if (d := getattr(p, kind, None))})
        hooks.update({f"global module hook {kind}": tuple(d) for kind in _GLOBAL_HOOKS
                      if (d := getattr(nn.modules.module, kind, None))})
        hooks.update({f"optimizer {kind}": tuple(d) for kind in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
                      if (d := getattr(optimizer, kind, None))})
        return cls(hyper=tuple({k: v for k, v in g.items() if k != "params"} | {"params": len(g["params"])}
                               for g in optimizer.param_groups),
                   tensors=tensors, addresses={k: t.data_ptr() for k, t in tensors.items()}, hooks=hooks,
                   training=frozenset(n for n, m in model.named_modules() if m.training))

    def hyper_changes(self, now: "Frozen") -> list[str]:
        if len(now.hyper) != len(self.hyper):
            return [f"the optimizer has {len(now.hyper)} param groups, {len(self.hyper)} at capture"]
        return [f"param group {i}'s {k} is {new.get(k)!r}, {v!r} at capture"
                for i, (old, new) in enumerate(zip(self.hyper, now.hyper))
                for k, v in old.items() if k not in new or not _same(v, new[k])] + \
               [f"param group {i} has a new key {k!r}" for i, (old, new) in enumerate(zip(self.hyper, now.hyper))
                for k in new.keys() - old.keys()]

    def other_changes(self, now: "Frozen") -> list[str]:
        """What no replay can mimic: replaced tensors, other hooks, other train/eval flags."""
        replaced = [k for k, t in self.tensors.items() if k in now.tensors and
                    (now.tensors[k] is not t or now.addresses[k] != self.addresses[k])]
        out = [f"tensors were replaced (the graph reads and writes those it was captured with): "
               f"{', '.join(replaced[:8])}{f' and {len(replaced) - 8} more' if len(replaced) > 8 else ''}"] \
            if replaced else []
        out += [f"{k} is new since the capture" for k in sorted(now.tensors.keys() - self.tensors.keys())]
        out += [f"{k} is gone since the capture" for k in sorted(self.tensors.keys() - now.tensors.keys())]
        out += [f"the {k} changed (a graph runs no Python hook added or removed after its capture)"
                for k in sorted(self.hooks.keys() | now.hooks.keys()) if self.hooks.get(k) != now.hooks.get(k)]
        for mode, names in (("eval", self.training - now.training), ("train", now.training - self.training)):
            if names:
                out.append(f"modules in {mode} mode, the other at capture: {', '.join(n or '(root)' for n in sorted(names))}")
        return out

    def changes(self, now: "Frozen") -> list[str]:
        return self.hyper_changes(now) + self.other_changes(now)

    @contextmanager
    def hyper_applied(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """The optimizer's hyper-parameters as captured, for one replay, then as they were."""
        now = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        for group, frozen in zip(optimizer.param_groups, self.hyper):
            group.update({k: v for k, v in frozen.items() if k != "params"})
        try:
            yield
        finally:
            for group, values in zip(optimizer.param_groups, now):
                group.update(values)


@dataclass(frozen=True)
class Watched:
    """What a capture freezes, to snapshot: the step's model, optimizer and static tensors."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    statics: dict[str, torch.Tensor]

    def take(self) -> Frozen:
        return Frozen.take(self.model, self.optimizer, self.statics)


class Capture(Protocol):
    """How a step closure is run before capture, captured, replayed and released."""

    def warm(self, body: Callable[[], None]) -> None:
        """Run ``body`` for real, as capture needs it run first (a side stream on CUDA)."""

    def capture(self, body: Callable[[], None], watched: Watched) -> dict[str, Any]:
        """Record ``body``, running nothing; replaces any earlier recording (released first).
        Returns what it measured (for meta.json)."""

    def replay(self) -> None:
        """Run what was recorded."""

    def release(self) -> None:
        """Let go of the recording and its memory; a later ``capture`` may record again."""


class Captures:
    """What both capturers share: the snapshot of what the graph froze, the check against it,
    and the count of captures alive in this process (one graph and pool per process)."""

    live: ClassVar[int] = 0  # captures held in this process, by every capturer

    def __init__(self) -> None:
        self.watched: Watched | None = None
        self.frozen: Frozen | None = None
        self.captures = 0

    def _hold(self, watched: Watched) -> dict[str, Any]:
        """After a successful capture: the snapshot, and one more capture alive."""
        others = Captures.live
        self.watched, self.frozen = watched, watched.take()
        self.captures += 1
        Captures.live += 1
        return {"other_captures_alive": others}

    def release(self) -> None:
        if self.frozen is not None:
            Captures.live -= 1
        self.watched = self.frozen = None

    def check(self, mimic_hyper: bool = False) -> None:
        """Raise ``GraphStateChanged`` naming what changed since the capture (with
        ``mimic_hyper``, changed hyper-parameters are allowed: the replay uses the frozen ones)."""
        assert self.frozen is not None and self.watched is not None, "replay before capture"
        now = self.watched.take()
        changes = self.frozen.other_changes(now) + ([] if mimic_hyper else self.frozen.hyper_changes(now))
        if changes:
            raise GraphStateChanged("replayed a captured step after " + "; ".join(changes[:5])
                                    + (f" (and {len(changes) - 5} more)" if len(changes) > 5 else "")
                                    + ": capture again after changing what the graph froze")


def live_captures() -> int:
    """Captures alive in this process (a graph and its memory pool each)."""
    return Captures.live


class CudaGraphs(Captures):
    """``torch.cuda.CUDAGraph`` capture and replay. The only part of the step that needs a GPU.
    Captured on the side stream the warm-up steps ran on; re-captures (a new lr) share one
    memory pool, released with the graph at the end of the run."""

    CHECK_EVERY = 100  # replays between checks of the frozen state (a snapshot costs host time)

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.pool: Any = None
        self.replays = 0

    def warm(self, body: Callable[[], None]) -> None:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            body()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, body: Callable[[], None], watched: Watched) -> dict[str, Any]:
        self._drop_graph()  # the old graph's blocks go back to the pool before the new one takes them
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            body()
        torch.cuda.current_stream().wait_stream(self.stream)
        self.graph = graph
        return {**self._hold(watched), "memory_reserved": torch.cuda.memory_reserved(self.device)}

    def replay(self) -> None:
        assert self.graph is not None, "replay before capture"
        self.replays += 1
        if self.replays % self.CHECK_EVERY == 0:
            self.check()
        self.graph.replay()

    def _drop_graph(self) -> None:
        if self.graph is not None:
            Captures.release(self)
            self.graph.reset()
            self.graph = None

    def release(self) -> None:
        self._drop_graph()
        Captures.release(self)
        self.pool = None
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # the pool's blocks back to the driver: the next run starts clean


class StandIn(Captures):
    """The CPU stand-in for ``CudaGraphs``: capture keeps the closure, replay calls it. The
    graphed loop's logic (static buffers, when to capture, frozen lr) is then the one tested.

    Like a graph, a replay runs with what was frozen at capture. Where a graph would silently
    differ from calling the closure again, every replay checks (``Captures.check``) and raises
    ``GraphStateChanged``. ``mimic=True`` replays a changed hyper-parameter as a graph does
    (with the captured value, silently); what no replay can mimic still raises."""

    def __init__(self, mimic: bool = False) -> None:
        super().__init__()
        self.body: Callable[[], None] | None = None
        self.mimic = mimic

    def warm(self, body: Callable[[], None]) -> None:
        body()

    def capture(self, body: Callable[[], None], watched: Watched) -> dict[str, Any]:
        self.release()
        self.body = body
        return self._hold(watched)

    def replay(self) -> None:
        assert self.body is not None and self.frozen is not None, "replay before capture"
        self.check(mimic_hyper=self.mimic)
        with self.frozen.hyper_applied(self.watched.optimizer):
            self.body()

    def release(self) -> None:
        super().release()
        self.body = None


class EagerStep:
    """The step as written: the lr set, then forward, backward and SGD, every iteration. A
    context manager like ``GraphedStep``, holding nothing to release."""

    mode = "eager"

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer) -> None:
        self.step, self.optimizer = step, optimizer

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        set_lr(self.optimizer, lr)
        return self.step(x, y)

    def __enter__(self) -> "EagerStep":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class GraphedStep:
    """The step captured once and replayed (see the module's docstring). Returns the static
    outputs: read them before the next call, which overwrites them. Used as a context
    manager: leaving it releases the capture, its memory pool and the gradients allocated in
    it (a run ends, stopped or finished; the next run in this process captures its own)."""

    mode = "cuda graph"

    def __init__(self, step: StepFn, model: nn.Module, optimizer: torch.optim.Optimizer, capture: Capture,
                 eager_steps: int = EAGER_STEPS) -> None:
        self.step, self.model, self.optimizer, self.capturer = step, model, optimizer, capture
        # the static buffers, made at the first call in the batch's own layout (channels_last)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.wrong: torch.Tensor | None = None
        self.eager_left = eager_steps
        self.lr: float | None = None   # the rate the current capture holds
        self.captured = False
        self.captures: list[int] = []  # the call number of every capture (0-based), for meta.json
        self.capture_log: list[dict[str, Any]] = []  # per capture: its call, lr and what it measured
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
            watched = Watched(self.model, self.optimizer, {"x": self.x, "y": self.y, "loss": self.loss,
                                                           "wrong": self.wrong})
            try:  # records; the replay below takes this iteration's step
                measured = self.capturer.capture(self._body, watched)
            except Exception as e:  # an old driver, an op that cannot be captured: eager, said once
                self.capturer.release()
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                self.mode = f"eager (the capture failed: {self.failed})"
                print(f"step: the CUDA graph capture failed ({self.failed}); training eagerly from here", flush=True)
            else:
                self.captured = True
                self.captures.append(self.calls - 1)
                self.capture_log.append({"call": self.calls - 1, "lr": lr, **measured})
        if self.failed is not None:
            self._body()
        else:
            self.capturer.replay()
        return self.loss, self.wrong

    def __enter__(self) -> "GraphedStep":
        return self

    def __exit__(self, *exc: object) -> None:
        self.capturer.release()
        # gradients allocated during a capture live in its pool: let them go with it
        self.optimizer.zero_grad(set_to_none=True)
        self.captured = False


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


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast computes in for a recipe's precision: bf16, else none (fp32 and TF32
    are fp32 tensors). One place for the step, the loop's evaluation and the estimate's timing."""
    return torch.bfloat16 if precision == "bf16" else None


def make_stepper(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, device: torch.device,
                 capture: Capture | None = None) -> tuple[Stepper, str]:
    """The step the loop runs, and one line saying which and why. Graphed where the recipe
    asks for it (``cuda_graph``) and the device can capture; ``capture`` overrides the device's
    (the CPU tests pass ``StandIn()``)."""
    amp = autocast_dtype(recipe.precision)
    how = step_mode(recipe, device)
    if not recipe.cuda_graph or (capture is None and how.startswith("eager")):
        return EagerStep(make_train_step(model, optimizer, amp), optimizer), how
    if capture is None:
        capture = CudaGraphs(device)
    else:
        how = f"graph captured through {type(capture).__name__}, captured again at each new lr"
    return GraphedStep(make_train_step(model, optimizer, amp, cache_casts=False), model, optimizer, capture), how


class DeterministicPool(nn.Module):
    """Global average pooling as a mean over the map. ``nn.AdaptiveAvgPool2d``'s CUDA backward
    has no deterministic kernel (PyTorch raises under deterministic algorithms), so a
    ``deterministic`` run swaps this in. Not used otherwise: the default keeps the pooling
    every reference was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def set_numerics(model: nn.Module, recipe: Recipe, device: torch.device) -> None:
    """The kernels and arithmetic a run computes with, process-wide: set at the start of every
    run (and before the estimate's and the benchmark's timings, which must pick what a run picks).

    - The recipe's ``precision`` on CUDA: TF32 tensor cores for cuDNN's convolutions and
      cuBLAS's matmuls only with ``tf32``; ``fp32`` is IEEE fp32 (PyTorch's own default turns
      cuDNN's TF32 on, which would make a GPU's "fp32" another arithmetic than the CPU's).
      ``bf16`` autocasts (``make_train_step``); what stays fp32 under it is IEEE fp32 too.
    - The recipe's ``deterministic``: PyTorch's deterministic algorithms (cuDNN's too, its
      autotuner off) or, by default on CUDA, cuDNN's autotuner for speed. cuBLAS's workspace
      setting, which determinism needs, is set by ``runs/device.pick_device`` before CUDA starts."""
    torch.use_deterministic_algorithms(recipe.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = recipe.precision == "tf32"
        torch.backends.cudnn.deterministic = recipe.deterministic
        torch.backends.cudnn.benchmark = not recipe.deterministic
        if recipe.deterministic:
            for name, module in list(model.named_modules()):
                for child_name, child in list(module.named_children()):
                    if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                        setattr(module, child_name, DeterministicPool())


def arithmetic(recipe: Recipe, device: torch.device) -> str:
    """The arithmetic a run on ``device`` computes in, in words (the plan prints it)."""
    if recipe.precision == "bf16":
        return "bf16 autocast (convolutions and matmuls in bf16, the rest fp32)"
    if device.type != "cuda":
        return "fp32" + (" (TF32 is a CUDA format: fp32 here)" if recipe.precision == "tf32" else "")
    if recipe.precision == "tf32":
        return "TF32 tensor cores for convolutions and matmuls (10-bit mantissa), the rest fp32"
    return "fp32, TF32 off (IEEE fp32 like the CPU references; precision: tf32 opts in)"
