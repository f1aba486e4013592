"""One training run, top to bottom: build, (resume), step, evaluate, log, checkpoint.

The run's files are those of ``rundir.RunDir``. The loop's state is one object,
``LoopState``: what a checkpoint saves and a resume restores, through its ``state_dict`` and
``load_state_dict``, as the optimizer and the batch stream do theirs. The hot loop never
synchronises with the host: training loss and error accumulate in device tensors and are
read only at evaluation time (and every ``warmup_check_every`` iterations during warm-up).
The step itself is eager or replayed from a CUDA graph (``step.py``); the loop is the same.

Stopping: Ctrl-C, SIGTERM (e.g. ``timeout``) or the driver's stop file end the loop at
the next iteration with a checkpoint that holds the partial interval's running sums, so
the resumed log is identical to an uninterrupted one. A second signal stops at once.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ...data.loader import DeviceSplits, TrainBatches, evaluate
from ...fileio import atomic_torch_save, atomic_write_bytes
from ...models import build_model
from ...models.plugins import ensure_plugins
from ...stopping import StopRequest
from ..planning.experiments import Recipe, RunSpec
from ..rundir import LOG_COLUMNS, VAL_COLUMNS, RunDir, RunStatus, schedule, sha256_file
from .callbacks import SKIPPED_KEY, Callback, LoopContext, call_hook
from .provenance import static_meta
from .responses import ResponsesCallback
from .signals import SignalRecorder
from .step import Capture, GraphedStep, autocast_dtype, make_optimizer, make_stepper, set_numerics

# Divergence: a non-finite loss, or a training loss above DIVERGED_LOSS (about 40x the
# 2.3 of a chance guess over 10 classes) on DIVERGED_LINES consecutive log lines. Such a
# run is kept, marked "diverged", and the suite goes on.
DIVERGED_LOSS = 100.0
DIVERGED_LINES = 3


class RunInterrupted(Exception):
    """The run stopped on request after writing a checkpoint; the next invocation resumes it."""


def lr_at(iteration: int, recipe: Recipe, warming_up: bool) -> float:
    """The paper's step schedule: lr, times lr_decay at each milestone passed."""
    if warming_up:
        return recipe.warmup_lr
    lr = recipe.lr * recipe.lr_decay ** sum(iteration >= m for m in recipe.milestones)
    return float(f"{lr:.8g}")  # 0.1 * 0.1 is 0.010000000000000002 in binary; log 0.01


def build_for(spec: RunSpec, device: torch.device) -> torch.nn.Module:
    ensure_plugins(spec.plugins)  # a worker imports the run's plug-ins from the text that came with it
    torch.manual_seed(spec.seed)  # model init; the data stream has its own generator
    model = build_model(spec.model, shortcut=spec.shortcut, zero_init_residual=spec.zero_init_residual)
    return model.to(device).to(memory_format=torch.channels_last)


def default_callbacks() -> list[Callback]:
    """What every run records: the layer signals (signals.csv) during training, and the
    layer responses of Figure 7 (responses.csv) from the final weights."""
    return [SignalRecorder(), ResponsesCallback()]


@dataclass
class LoopState:
    """Everything the loop carries from one iteration to the next: the model, the optimizer,
    the batch stream, the callbacks that keep state, and the loop's own counters. A
    checkpoint is ``state_dict()``; a resume is ``load_state_dict()``: the one place where
    the two are written, so they cannot drift apart."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: TrainBatches
    callbacks: list[Callback]
    device: torch.device
    iteration: int = 0                # steps taken
    elapsed_s: float = 0.0            # training time of the lines logged so far, all attempts
    warming_up: bool = False          # lr 0.01 until training error < 80 % (110 layers and deeper)
    warmup_end: int | None = None
    seen: int = 0                     # images since the last log line ...
    loss_sum: torch.Tensor = field(init=False)  # ... their summed loss and errors (device tensors)
    wrong: torch.Tensor = field(init=False)
    warm_seen: int = 0                # images since the last warm-up check, and their errors
    warm_wrong: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.wrong = torch.zeros((), device=self.device, dtype=torch.long)
        self.warm_wrong = torch.zeros((), device=self.device, dtype=torch.long)

    def add(self, loss: torch.Tensor, wrong: torch.Tensor, n: int) -> None:
        """One step's batch into the running sums (read the step's outputs before the next)."""
        self.loss_sum += loss * n
        self.wrong += wrong
        self.seen += n
        if self.warming_up:
            self.warm_wrong += wrong
            self.warm_seen += n

    def check_warmup(self, recipe: Recipe) -> None:
        """Every ``warmup_check_every`` iterations: leave the warm-up once the window's training
        error is below ``warmup_until_train_error`` (one host synchronisation per check)."""
        if not self.warming_up or self.iteration % recipe.warmup_check_every:
            return
        if self.warm_wrong.item() * 100 / self.warm_seen < recipe.warmup_until_train_error:
            self.warming_up, self.warmup_end = False, self.iteration
        self.warm_wrong.zero_()
        self.warm_seen = 0

    def end_line(self) -> None:
        """A log line was written: its interval's sums start again."""
        self.loss_sum.zero_(), self.wrong.zero_()
        self.seen = 0

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "elapsed_s": self.elapsed_s, "warming_up": self.warming_up,
                "warmup_end": self.warmup_end, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "batches": self.batches.state_dict(),
                "interval": {"loss_sum": self.loss_sum, "wrong": self.wrong, "seen": self.seen},
                "warm_window": {"wrong": self.warm_wrong, "seen": self.warm_seen},
                "callbacks": {type(cb).__name__: s for cb in self.callbacks if (s := cb.state_dict())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint (before any step is captured: a graph sees only the tensors it
        was captured with). Checkpoints from before callbacks kept state lack "callbacks"."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.iteration, self.elapsed_s = state["iteration"], state["elapsed_s"]
        self.warming_up, self.warmup_end = state["warming_up"], state["warmup_end"]
        self.loss_sum = state["interval"]["loss_sum"].to(self.device)
        self.wrong = state["interval"]["wrong"].to(self.device)
        self.seen = state["interval"]["seen"]
        self.warm_wrong, self.warm_seen = state["warm_window"]["wrong"].to(self.device), state["warm_window"]["seen"]
        saved = state.get("callbacks") or {}
        for cb in self.callbacks:
            if type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors and plain values, never arbitrary pickled objects
    (``weights_only``). Loaded on the CPU: the data stream's generator state must be a
    CPU tensor whatever the training device."""
    return torch.load(path, map_location="cpu", weights_only=True)


def usable_checkpoint(run: RunDir, spec: RunSpec) -> dict[str, Any] | None:
    """The run's checkpoint, if it is the one the run wrote and it loads; otherwise it is
    moved aside (``checkpoint.pt.unusable-<n>``), the reason is kept in meta.json, and the
    run starts again from the beginning. None when there is none."""
    if not run.has_checkpoint():
        return None
    meta = run.read_meta() or {}
    files = meta.get("files") or {}
    expected = {files[k] for k in ("checkpoint.pt", "checkpoint.pt.pending") if files.get(k)}
    try:
        if expected and sha256_file(run.checkpoint_path) not in expected:
            raise ValueError("its sha256 is not the one recorded when it was written")
        ckpt = load_checkpoint(run.checkpoint_path)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("iteration"), int):
            raise ValueError("it does not hold a training state")
        return ckpt
    except Exception as e:  # truncated, corrupted, crafted, or not ours
        n = 1
        while run.path.joinpath(f"checkpoint.pt.unusable-{n}").exists():
            n += 1
        aside = run.checkpoint_path.rename(run.path / f"checkpoint.pt.unusable-{n}")
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        print(f"[{spec.name}] the checkpoint cannot be used ({reason}); moved to {aside.name}, "
              "training again from the start", flush=True)
        run.update_meta(checkpoint_problems=[*meta.get("checkpoint_problems", []),
                                             {"moved_to": aside.name, "reason": reason}], iteration=0)
        return None


def write_checkpoint(run: RunDir, meta: dict[str, Any], state: LoopState, ctx: LoopContext,
                     train_time: float = 0.0) -> None:
    """Checkpoint ``state`` (plus ``train_time`` of the interval under way), with the checksums
    that tell it and the log lines it covers from damaged copies recorded in meta.json. The new
    checkpoint's sha256 is recorded as pending *before* it is written, so a kill between the
    two writes leaves a checkpoint that matches one of them (the old one, or the pending new one)."""
    buf = io.BytesIO()
    torch.save({**state.state_dict(), "elapsed_s": state.elapsed_s + train_time}, buf)
    data = buf.getvalue()
    files = meta.setdefault("files", {})
    files["checkpoint.pt.pending"] = hashlib.sha256(data).hexdigest()
    run.write_meta(meta)
    atomic_write_bytes(run.checkpoint_path, data)
    prefix = run.log_prefix(state.iteration) or b""
    extra = {k: v for cb in state.callbacks for k, v in call_hook(ctx, cb, "on_checkpoint", state.iteration,
                                                                   default={}).items()}
    meta.update(iteration=state.iteration, wall_time_s=round(state.elapsed_s + train_time, 1),
                files={"checkpoint.pt": files.pop("checkpoint.pt.pending"),
                       "log_prefix": hashlib.sha256(prefix).hexdigest(), **extra})
    run.write_meta(meta)


def train_run(spec: RunSpec, splits: DeviceSplits, run: RunDir, device: torch.device,
              dataset: dict[str, Any], identity: str, progress: bool = True,
              stop_file: str | os.PathLike | None = None, where: dict[str, Any] | None = None,
              callbacks: list[Callback] | None = None, capture: Capture | None = None) -> dict[str, Any]:
    """Train (or resume) one run to the end; returns its meta.json content.

    ``callbacks`` are the measurements that hook into the loop (``callbacks.py``); by
    default every run records its layer signals and responses (``default_callbacks``).
    ``capture``: how a graphed step is captured (default: the device's; the CPU tests pass
    ``step.StandIn()``). Raises RunInterrupted after checkpointing when asked to stop."""
    r = spec.recipe
    run.path.mkdir(parents=True, exist_ok=True)
    model = build_for(spec, device)
    set_numerics(model, r, device)
    optimizer = make_optimizer(model, r, device)
    batches = TrainBatches(splits.train_x, splits.train_y, r.batch_size, r.augment, seed=spec.seed)
    amp = autocast_dtype(r.precision)
    columns = LOG_COLUMNS + (VAL_COLUMNS if splits.val_x is not None else [])
    callbacks = default_callbacks() if callbacks is None else callbacks
    state = LoopState(model, optimizer, batches, callbacks, device,
                      warming_up=r.warmup_lr is not None and spec.depth >= r.warmup_min_depth)

    # ---- resume: the whole state from the checkpoint, before the step is built (and captured)
    rows: list[dict[str, Any]] = []
    if (ckpt := usable_checkpoint(run, spec)) is not None:
        state.load_state_dict(ckpt)
        # The log may run ahead of the checkpoint: keep exactly the lines it covers, and
        # never resume into a log with a gap (the planner calls such a run damaged).
        rows = [row for row in run.read_log() if int(row["iteration"]) <= state.iteration]
        covered = [i for i in schedule(r.iterations, r.eval_every) if i <= state.iteration]
        if [int(row["iteration"]) for row in rows] != covered:
            raise RuntimeError(f"{run.log_path} lacks lines the checkpoint (iteration {state.iteration}) covers; "
                               "rerun with --retrain-damaged")
        print(f"[{spec.name}] resuming at iteration {state.iteration} ({len(rows)} log lines kept)", flush=True)
    start = state.iteration
    step, how = make_stepper(model, optimizer, r, device, capture)
    if device.type == "cuda" and how.startswith("eager"):
        print(f"[{spec.name}] step: {how}", flush=True)  # graphs were asked for and cannot be had here

    if not run.mean_path.exists():
        atomic_torch_save(splits.mean.cpu(), run.mean_path)
    for src in spec.plugins:  # the code this run trains, kept beside its results
        if not (copy := run.plugin_path(src.file_name)).exists():
            atomic_write_bytes(copy, src.text.encode())
    meta = {**(run.read_meta() or {}), **static_meta(spec, identity, model_params(model), dataset, device, where),
            "status": RunStatus.RUNNING.value, "iteration": start, "step": how}
    if not start:  # a run trained from scratch measures everything again
        meta.pop(SKIPPED_KEY, None)
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    ctx = LoopContext(run, model, splits, device, r.iterations, r.eval_every, r.batch_size, start, meta)
    for cb in callbacks:
        call_hook(ctx, cb, "on_start")
    # one entry per process that trained this run: a resume history, and proof of "trained once"
    meta["attempts"] = [*meta.get("attempts", []), {**meta["worker"], "from_iteration": start,
                                                     "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    run.write_meta(meta)

    # ---- train
    t_line = last_ckpt = time.perf_counter()
    bar = tqdm(total=r.iterations, initial=start, desc=spec.label, disable=not progress,
               dynamic_ncols=True, leave=True, mininterval=2.0)
    model.train()
    status = RunStatus.RUNNING
    high_loss = 0  # consecutive log lines with a training loss above DIVERGED_LOSS
    with StopRequest(stop_file) as stop, step:  # leaving it releases a captured graph
        for it in range(start, r.iterations):
            if stop.requested:  # checkpoint mid-interval: the running sums go with it
                write_checkpoint(run, meta, state, ctx, time.perf_counter() - t_line)
                run.update_meta(status=RunStatus.INTERRUPTED.value)
                bar.close()  # saved first, printed after: a closed pipe or a gone terminal loses no work
                print(stop.stopped(f"{spec.label} stopped at iteration {it}"), flush=True)
                raise RunInterrupted(f"{spec.label} stopped at iteration {it}")
            # measurements of the state after `it` steps; their time is not training time
            t_callbacks = time.perf_counter()
            for cb in callbacks:
                call_hook(ctx, cb, "on_iteration", it)
            t_line += time.perf_counter() - t_callbacks

            lr = lr_at(it, r, state.warming_up)
            x, y = batches.next()
            loss, batch_wrong = step(x, y, lr)
            state.add(loss, batch_wrong, len(y))
            state.iteration = it + 1
            bar.update(1)
            state.check_warmup(r)

            done = it + 1 == r.iterations
            if (it + 1) % r.eval_every and not done:
                continue

            # ---- evaluate and log (the only regular host synchronisation of the loop)
            train_time = time.perf_counter() - t_line
            test_loss, test_err = evaluate(model, splits.test_x, splits.test_y, autocast_dtype=amp)
            row = {"iteration": it + 1, "epoch": round((it + 1) / batches.batches_per_epoch, 4), "lr": lr,
                   "train_loss": (state.loss_sum / state.seen).item(),
                   "train_error": (state.wrong.float() * 100 / state.seen).item(),
                   "test_loss": test_loss.item(), "test_error": test_err.item(),
                   "elapsed_s": round(state.elapsed_s + train_time, 3),
                   "images_per_s": round(state.seen / max(train_time, 1e-9), 1)}
            if splits.val_x is not None:
                val_loss, val_err = evaluate(model, splits.val_x, splits.val_y, autocast_dtype=amp)
                row.update(val_loss=val_loss.item(), val_error=val_err.item())
            state.elapsed_s += train_time
            rows.append(row)
            run.write_log(rows, columns)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", train_err=f"{row['train_error']:.1f}",
                            test_err=f"{row['test_error']:.2f}", refresh=False)
            state.end_line()

            high_loss = high_loss + 1 if row["train_loss"] > DIVERGED_LOSS else 0
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])) \
                    or high_loss >= DIVERGED_LINES:
                status = RunStatus.DIVERGED
                break
            if done or time.perf_counter() - last_ckpt >= r.checkpoint_every_s:
                write_checkpoint(run, meta, state, ctx)
                last_ckpt = time.perf_counter()
            t_line = time.perf_counter()  # evaluation and checkpoint time is not training time
    bar.close()

    if status == RunStatus.RUNNING:
        status = RunStatus.FINISHED
        atomic_torch_save(model.state_dict(), run.model_path)
    # the callbacks' last word (the final signals; Figure 7's responses from the final weights):
    # each on its own, so an analysis that cannot be made never turns a trained run into a failed one
    written = [p for cb in callbacks for p in call_hook(ctx, cb, "on_end", status, default=[])]
    if status == RunStatus.FINISHED:
        # the checksums that tell the run's results from damaged copies (RunDir.check)
        meta["files"] = {p.name: sha256_file(p) for p in (run.log_path, run.model_path, run.mean_path, *written,
                                                          *(run.plugin_path(s.file_name) for s in spec.plugins))}
    final = rows[-1] if rows else {}
    meta.update(status=status.value, iteration=int(final.get("iteration", start)), wall_time_s=round(state.elapsed_s, 1),
                warmup_end_iteration=state.warmup_end, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                final={k: float(final[k]) for k in ("train_error", "test_error", "train_loss", "test_loss",
                                                    "val_error") if k in final})
    if isinstance(step, GraphedStep):  # how often it was captured; and what it became if a capture failed
        meta.update(step=step.mode if step.failed else how, step_captures=len(step.captures),
                    step_capture_log=step.capture_log)
    run.write_meta(meta)
    if status == RunStatus.FINISHED:  # no longer needed: the final weights are in model.pt
        run.checkpoint_path.unlink(missing_ok=True)
    if status == RunStatus.DIVERGED:
        print(f"[{spec.name}] DIVERGED: loss is {final.get('train_loss')} at iteration {final.get('iteration')}; "
              "the run is kept, marked diverged, and the suite goes on (lower its lr or add warm-up)", flush=True)
    return meta


def model_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
