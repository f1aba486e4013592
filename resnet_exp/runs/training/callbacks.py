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

A callback is a measurement, never a condition of training: when one fails (it raises
``AnalysisSkipped`` because the model does not offer what it needs, or anything else), the
loop calls it no more for that run, records why in meta.json's ``analyses_skipped``
(``{name: reason}``, shown on the reports' index) and trains on; the run finishes. Only a
full disk still stops everything (``fileio.is_no_space``).

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
from ...fileio import is_no_space
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


class AnalysisSkipped(Exception):
    """A measurement this model cannot give (a whole-network plug-in without Figure 7's
    ``response_modules()``, say): the run goes on without it, the reason recorded."""


class Callback:
    """Does nothing at every moment; subclasses override what they need. ``name`` is how
    meta.json's ``analyses_skipped`` and the reports name it."""

    name = "callback"

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


SKIPPED_KEY = "analyses_skipped"  # meta.json: {callback name: why it was left out of this run}


def call_hook(ctx: LoopContext, cb: Callback, hook: str, *args: Any, default: Any = None) -> Any:
    """``cb.<hook>(ctx, *args)``, unless the callback was left out of this run; a failure
    leaves it out from then on, with the reason in ``ctx.meta`` (written with the loop's next
    meta.json) and one printed line, and returns ``default``. A full disk is not the
    analysis's fault: it propagates, and the run stops as any write would stop it."""
    if cb.name in (ctx.meta.get(SKIPPED_KEY) or {}):
        return default
    try:
        return getattr(cb, hook)(ctx, *args)
    except Exception as e:
        if isinstance(e, OSError) and is_no_space(e):
            raise
        reason = str(e) if isinstance(e, AnalysisSkipped) else f"{type(e).__name__} in {hook}: {e}"
        reason = reason.splitlines()[0] if reason else type(e).__name__
        ctx.meta.setdefault(SKIPPED_KEY, {})[cb.name] = reason
        print(f"[{ctx.run.key}] {cb.name}: left out of this run ({reason}); the training goes on",
              flush=True)
        return default
