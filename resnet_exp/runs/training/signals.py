"""Forward and backward signals per layer, recorded during training: ``signals.csv``.

Why: the paper (Sec. 4.1) argues that plain nets degrade *not* because signals vanish: with
BN "the forward propagated signals have non-zero variances" and "the backward propagated
gradients exhibit healthy norms". This records what a reader needs to judge that on their
own runs (``reporting/signals.py`` draws it and decides claim C8).

What, for every conv and fc layer in depth order (``named_parameters`` order, named as
``named_parameters`` names them: ``layer1.0.conv1.weight``, the convention of Lightning's
``grad_norm`` and Composer's layer-wise gradient norms):

    grad_norm     L2 norm of d(loss)/d(weight)
    weight_norm   L2 norm of the weight
    response_std  std of the layer's BN output (the first BN after the layer in module order,
                  the one that normalises it; where none follows, e.g. fc, the layer's own
                  output) over every probe image, channel and position: the forward signal

When: at iterations 0, 10, 50, 100, 200 (the picture moves fastest early on) and at every
evaluation point, the state after that many steps. Where: on one fixed probe batch of
``PROBE_SIZE`` = 256 training images (two of the paper's batches; two batches of the recipe
when its batch is smaller, so a measurement costs about two training steps whatever the
recipe), the same for every run and every point (chosen by ``PROBE_SEED`` from the training
split, not augmented), BN in training mode (batch statistics, as the training step sees
them), fp32.

The measurement does not change the training (tested: the logs with and without it are
identical): it draws nothing from the data stream's or torch's global RNG (the probe's own
generator picks the images), takes gradients with ``torch.autograd.grad`` (no ``.grad`` is
written, the optimizer never sees them), and puts every BN buffer (running mean, variance,
batch count) back as it was after its forward pass.

Resume: a checkpoint at iteration k records the sha256 of the rows before k; a resumed run
keeps exactly those rows and records the rest, so its signals.csv equals an uninterrupted
run's. A finished run records the file's sha256 like log.csv's (``RunDir.check``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...fileio import atomic_write_text
from .callbacks import Callback, LoopContext
from ..rundir import EARLY_POINTS, PROBE_SIZE, RunDir, RunStatus, probe_size_for, signal_points

PROBE_SEED = 0
COLUMNS = ["iteration", "layer", "name", "grad_norm", "weight_norm", "response_std"]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # what normalises a layer


def probe_indices(n_train: int, size: int = PROBE_SIZE, seed: int = PROBE_SEED) -> torch.Tensor:
    """The probe batch's training-image indices: fixed by ``seed``, from a generator of its
    own (never the training streams), sorted."""
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n_train, generator=g)[:min(size, n_train)]).values


class LayerProbe:
    """Measures every conv and fc layer of a model on one batch, leaving the model as it was."""

    def __init__(self, model: nn.Module) -> None:
        self.names: list[str] = []
        self.weights: list[torch.Tensor] = []
        self.signal_modules: list[nn.Module] = []
        pending: tuple[str, nn.Module] | None = None
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if pending is not None:  # no BN between two layers: the layer's own output
                    self._add(*pending, pending[1])
                pending = (name, module)
            elif isinstance(module, BATCH_NORMS) and pending is not None:
                self._add(*pending, module)
                pending = None
        if pending is not None:
            self._add(*pending, pending[1])

    def _add(self, name: str, layer: nn.Module, signal_module: nn.Module) -> None:
        self.names.append(f"{name}.weight" if name else "weight")
        self.weights.append(layer.weight)
        self.signal_modules.append(signal_module)

    def measure(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
        """grad_norm, weight_norm and response_std per layer, in depth order."""
        buffers = list(model.buffers())
        saved = [b.clone() for b in buffers]
        stds: dict[int, torch.Tensor] = {}

        def hook(i: int) -> Any:
            def record(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
                stds[i] = out.detach().float().std(correction=0)
            return record

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.signal_modules)]
        was_training = model.training
        model.train()
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(model(x).float(), y)
                grads = torch.autograd.grad(loss, self.weights)
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
            model.train(was_training)
        with torch.no_grad():
            grad_norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
            weight_norms = torch.stack([torch.linalg.vector_norm(w) for w in self.weights])
        values = torch.stack([grad_norms.float(), weight_norms.float(),
                              torch.stack([stds[i] for i in range(len(self.names))])]).cpu().tolist()
        return dict(zip(("grad_norm", "weight_norm", "response_std"), values))


class SignalRecorder(Callback):
    """Writes ``signals.csv`` (see the module's docstring). Its state, the rows recorded so
    far, goes into every checkpoint (``state_dict``), so a resumed run goes on from exactly
    the rows its checkpoint covers."""

    name = "signals"

    def __init__(self, probe_size: int | None = None, probe_seed: int = PROBE_SEED) -> None:
        self.probe_size, self.probe_seed = probe_size, probe_seed
        self.rows: list[dict[str, Any]] = []
        self.points: set[int] = set()
        self.restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.restored = list(state["rows"]), True

    def on_start(self, ctx: LoopContext) -> None:
        size = self.probe_size or probe_size_for(ctx.batch_size)
        idx = probe_indices(len(ctx.splits.train_y), size, self.probe_seed).to(ctx.splits.train_y.device)
        self.x, self.y = ctx.splits.train_x[idx], ctx.splits.train_y[idx]
        self.probe = LayerProbe(ctx.model)
        self.points = set(signal_points(ctx.iterations, ctx.eval_every))
        if not ctx.start:
            self.rows = []
        elif not self.restored:  # a checkpoint written before recorders kept state: the file's rows it covers
            self.rows = _rows_before(ctx.run, ctx.start)
        recorded_from = ctx.meta.get("signals", {}).get("from_iteration", 0) if ctx.start else 0
        if ctx.start and not self.rows and ctx.start > min(self.points):
            recorded_from = ctx.start  # a run begun before signals were recorded: from here on
        ctx.meta["signals"] = {"file": ctx.run.signals_path.name, "probe_images": len(idx),
                               "probe_seed": self.probe_seed, "from_iteration": recorded_from,
                               "points": f"{', '.join(map(str, EARLY_POINTS))} and every evaluation"}

    def on_iteration(self, ctx: LoopContext, iteration: int) -> None:
        if iteration in self.points:
            self.record(ctx, iteration)

    def record(self, ctx: LoopContext, iteration: int) -> None:
        m = self.probe.measure(ctx.model, self.x, self.y)
        self.rows += [{"iteration": iteration, "layer": i + 1, "name": name, **{k: m[k][i] for k in COLUMNS[3:]}}
                      for i, name in enumerate(self.probe.names)]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(ctx.run.signals_path, buf.getvalue())

    def on_checkpoint(self, ctx: LoopContext, iteration: int) -> dict[str, str]:
        prefix = ctx.run.signals_prefix(iteration)
        return {"signals_prefix": hashlib.sha256(prefix).hexdigest()} if prefix is not None else {}

    def on_end(self, ctx: LoopContext, status: RunStatus) -> list:
        if status != RunStatus.FINISHED:
            return []
        if ctx.iterations in self.points and not any(int(r["iteration"]) == ctx.iterations for r in self.rows):
            self.record(ctx, ctx.iterations)
        return [ctx.run.signals_path] if ctx.run.signals_path.exists() else []


def _rows_before(run: RunDir, iteration: int) -> list[dict[str, Any]]:
    """signals.csv's rows before ``iteration``, as written (``RunDir.signals_prefix``)."""
    prefix = run.signals_prefix(iteration)
    return list(csv.DictReader(io.StringIO(prefix.decode()))) if prefix else []
