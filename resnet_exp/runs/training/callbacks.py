"""Measurements that hook into the training loop, the way Lightning's callbacks do.

``train_run`` calls every callback at four moments and knows nothing else about them:

    on_start(ctx)            the model is built (and resumed); ctx.start is the first iteration to train
    on_iteration(ctx, it)    the top of iteration ``it`` (the state after ``it`` steps), after the
                             stop check and before its step
    on_checkpoint(ctx, it)   a checkpoint at ``it`` is being written: return what meta.json's
                             ``files`` should record so that a resume can be checked
    on_end(ctx, status)      the loop ended (finished, diverged); for a finished run, return the
                             results files to checksum in meta.json

A callback that keeps state across a resume returns it from ``state_dict()`` and takes it
back in ``load_state_dict()``, as Lightning's callbacks do: it travels in the checkpoint with
the loop's own state (``train.LoopState``). The loop's default list is ``train.default_callbacks``.

A callback must not change the training: no RNG draw from the training streams, no change
to a parameter, a buffer or the optimizer, no ``.grad`` left behind (``signals.py`` shows
how). Time a callback spends is not training time: the loop subtracts it from the timed
interval, so ``images_per_s`` and ``elapsed_s`` stay those of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...data.loader import DeviceSplits
from ..rundir import RunDir, RunStatus


@dataclass
class LoopContext:
    """What a callback may look at (never change): the run and its model and data."""

    run: RunDir
    model: torch.nn.Module
    splits: DeviceSplits
    device: torch.device
    iterations: int
    eval_every: int
    batch_size: int
    start: int          # the first iteration this process trains (0, or the checkpoint's)
    meta: dict[str, Any]  # meta.json as the loop will write it; a callback may add its own key


class Callback:
    """Does nothing at every moment; subclasses override what they need."""

    def on_start(self, ctx: LoopContext) -> None: ...

    def on_iteration(self, ctx: LoopContext, iteration: int) -> None: ...

    def on_checkpoint(self, ctx: LoopContext, iteration: int) -> dict[str, str]:
        return {}

    def on_end(self, ctx: LoopContext, status: RunStatus) -> list[Path]:
        return []

    def state_dict(self) -> dict[str, Any]:
        """What this callback must carry across a resume; saved in every checkpoint (under
        its class name) and handed back to ``load_state_dict`` before ``on_start``. Empty
        (the default) saves nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

