"""One training run, top to bottom: build, (resume), step, evaluate, log, checkpoint.

The run's files are those of ``rundir.RunDir``. The hot loop never synchronises with the
host: training loss and error accumulate in device tensors and are read only at
evaluation time (and every ``warmup_check_every`` iterations during warm-up).

Stopping: Ctrl-C, SIGTERM (e.g. ``timeout``) or the driver's stop file end the loop at
the next iteration with a checkpoint that holds the partial interval's running sums, so
the resumed log is identical to an uninterrupted one. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ... import stopping
from .callbacks import Callback, LoopContext, default_callbacks
from ..planning.experiments import Recipe, RunSpec
from ...fileio import atomic_torch_save, atomic_write_bytes
from ...data.loader import DeviceSplits, TrainBatches, evaluate
from ...models import build_model
from ..rundir import LOG_COLUMNS, VAL_COLUMNS, RunDir, RunStatus, schedule, sha256_file

STOP_FILE_POLL_S = 1.0  # how often the loop looks for the driver's stop file

# Divergence: a non-finite loss, or a training loss above DIVERGED_LOSS (about 40x the
# 2.3 of a chance guess over 10 classes) on DIVERGED_LINES consecutive log lines. Such a
# run is kept, marked "diverged", and the suite goes on.
DIVERGED_LOSS = 100.0
DIVERGED_LINES = 3


class RunInterrupted(Exception):
    """The run stopped on request after writing a checkpoint; the next invocation resumes it."""


class StopRequest:
    """Has anyone asked this run to stop? Ctrl-C or SIGTERM in this process (main thread
    only: Python delivers signals there), or ``stop_file`` appearing (how a driver stops
    workers in other processes or on other machines). A second signal stops at once."""

    def __init__(self, stop_file: str | os.PathLike | None = None) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self._requested = False
        self._next_poll = 0.0
        self._handling = contextlib.ExitStack()

    def _first(self, signum: int) -> None:
        if self._requested:  # already stopping (the driver's stop file): a signal now means "at once"
            raise KeyboardInterrupt
        self._requested = True
        print(f"\n{signal.Signals(signum).name}: stopping at the next iteration with a checkpoint "
              "(again to stop at once, losing the work since the last checkpoint)", flush=True)

    @property
    def requested(self) -> bool:
        if not self._requested and self.stop_file is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + STOP_FILE_POLL_S
                self._requested = self.stop_file.exists()
        return self._requested

    @staticmethod
    def _again(signum: int) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> "StopRequest":
        # never SIGINT where it was ignored at start; a repeat within a second is the same request
        self._handling.enter_context(stopping.handling(self._first, self._again))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handling.close()


def lr_at(iteration: int, recipe: Recipe, warming_up: bool) -> float:
    """The paper's step schedule: lr, times lr_decay at each milestone passed."""
    if warming_up:
        return recipe.warmup_lr
    lr = recipe.lr * recipe.lr_decay ** sum(iteration >= m for m in recipe.milestones)
    return float(f"{lr:.8g}")  # 0.1 * 0.1 is 0.010000000000000002 in binary; log 0.01


def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    amp: torch.dtype | None = None) -> Callable[[torch.Tensor, torch.Tensor],
                                                                 tuple[torch.Tensor, torch.Tensor]]:
    """One SGD step on a batch; returns (loss, number wrong) as device tensors, never
    synchronising with the host. The benchmark times exactly this function."""
    device_type = next(model.parameters()).device.type

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (out.detach().argmax(1) != y).sum()

    return step


def make_optimizer(model: torch.nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; the multi-tensor (foreach) kernels on CUDA."""
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov,
                           foreach=device.type == "cuda" or None)


def build_for(spec: RunSpec, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(spec.seed)  # model init; the data stream has its own generator
    model = build_model(spec.model, shortcut=spec.shortcut, zero_init_residual=spec.zero_init_residual)
    return model.to(device).to(memory_format=torch.channels_last)


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


def train_run(spec: RunSpec, splits: DeviceSplits, run: RunDir, device: torch.device,
              dataset: dict[str, Any], identity: str, progress: bool = True,
              stop_file: str | os.PathLike | None = None, where: dict[str, Any] | None = None,
              callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train (or resume) one run to the end; returns its meta.json content.

    ``callbacks`` are the measurements that hook into the loop (``callbacks.py``); by
    default every run records its layer signals and responses (``default_callbacks``).
    Raises RunInterrupted after checkpointing when asked to stop."""
    r = spec.recipe
    run.path.mkdir(parents=True, exist_ok=True)
    model = build_for(spec, device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, r, device)
    batches = TrainBatches(splits.train_x, splits.train_y, r.batch_size, r.augment, seed=spec.seed)
    amp = torch.bfloat16 if r.precision == "bf16" else None
    step = make_train_step(model, optimizer, amp)
    columns = LOG_COLUMNS + (VAL_COLUMNS if splits.val_x is not None else [])
    zero = lambda dtype=torch.float32: torch.zeros((), device=device, dtype=dtype)  # noqa: E731

    # ---- state, fresh or from the checkpoint
    start, elapsed, rows = 0, 0.0, []
    warming_up = r.warmup_lr is not None and spec.depth >= r.warmup_min_depth
    warmup_end: int | None = None
    loss_sum, wrong, seen = zero(), zero(torch.long), 0        # since the last log line
    warm_wrong, warm_seen = zero(torch.long), 0                # since the last warm-up check
    if (ckpt := usable_checkpoint(run, spec)) is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batches.load_state_dict(ckpt["batches"])
        start, elapsed, warming_up, warmup_end = (ckpt["iteration"], ckpt["elapsed_s"],
                                                  ckpt["warming_up"], ckpt["warmup_end"])
        loss_sum, wrong, seen = ckpt["interval"]["loss_sum"].to(device), ckpt["interval"]["wrong"].to(device), \
            ckpt["interval"]["seen"]
        warm_wrong, warm_seen = ckpt["warm_window"]["wrong"].to(device), ckpt["warm_window"]["seen"]
        # The log may run ahead of the checkpoint: keep exactly the lines it covers, and
        # never resume into a log with a gap (the planner calls such a run damaged).
        rows = [row for row in run.read_log() if int(row["iteration"]) <= start]
        covered = [i for i in schedule(r.iterations, r.eval_every) if i <= start]
        if [int(row["iteration"]) for row in rows] != covered:
            raise RuntimeError(f"{run.log_path} lacks lines the checkpoint (iteration {start}) covers; "
                               "rerun with --retrain-damaged")
        print(f"[{spec.name}] resuming at iteration {start} ({len(rows)} log lines kept)", flush=True)

    if not run.mean_path.exists():
        atomic_torch_save(splits.mean.cpu(), run.mean_path)
    meta = {**(run.read_meta() or {}), **_static_meta(spec, identity, n_params, dataset, device, where),
            "status": RunStatus.RUNNING.value, "iteration": start}
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    callbacks = default_callbacks() if callbacks is None else callbacks
    ctx = LoopContext(run, model, splits, device, r.iterations, r.eval_every, r.batch_size, start, meta)
    for cb in callbacks:
        cb.on_start(ctx)
    # one entry per process that trained this run: a resume history, and proof of "trained once"
    meta["attempts"] = [*meta.get("attempts", []), {**meta["worker"], "from_iteration": start,
                                                     "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    run.write_meta(meta)

    def checkpoint(iteration: int, train_time: float) -> None:
        """Checkpoint, with the checksums that tell it and the log lines it covers from
        damaged copies recorded in meta.json. The new checkpoint's sha256 is recorded as
        pending *before* it is written, so a kill between the two writes leaves a
        checkpoint that matches one of them (the old one, or the pending new one)."""
        buf = io.BytesIO()
        torch.save({"iteration": iteration, "elapsed_s": elapsed + train_time, "warming_up": warming_up,
                           "warmup_end": warmup_end, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "batches": batches.state_dict(),
                           "interval": {"loss_sum": loss_sum, "wrong": wrong, "seen": seen},
                    "warm_window": {"wrong": warm_wrong, "seen": warm_seen}}, buf)
        data = buf.getvalue()
        files = meta.setdefault("files", {})
        files["checkpoint.pt.pending"] = hashlib.sha256(data).hexdigest()
        run.write_meta(meta)
        atomic_write_bytes(run.checkpoint_path, data)
        prefix = run.log_prefix(iteration) or b""
        extra = {k: v for cb in callbacks for k, v in cb.on_checkpoint(ctx, iteration).items()}
        meta.update(iteration=iteration, wall_time_s=round(elapsed + train_time, 1),
                    files={"checkpoint.pt": files.pop("checkpoint.pt.pending"),
                           "log_prefix": hashlib.sha256(prefix).hexdigest(), **extra})
        run.write_meta(meta)

    # ---- train
    t_line = last_ckpt = time.perf_counter()
    bar = tqdm(total=r.iterations, initial=start, desc=spec.name, disable=not progress,
               dynamic_ncols=True, leave=True, mininterval=2.0)
    model.train()
    status = RunStatus.RUNNING
    high_loss = 0  # consecutive log lines with a training loss above DIVERGED_LOSS
    with StopRequest(stop_file) as stop:
        for it in range(start, r.iterations):
            if stop.requested:  # checkpoint mid-interval: the running sums go with it
                checkpoint(it, time.perf_counter() - t_line)
                bar.close()
                run.update_meta(status=RunStatus.INTERRUPTED.value)
                raise RunInterrupted(f"{spec.label} stopped at iteration {it}")
            # measurements of the state after `it` steps; their time is not training time
            t_callbacks = time.perf_counter()
            for cb in callbacks:
                cb.on_iteration(ctx, it)
            t_line += time.perf_counter() - t_callbacks

            lr = lr_at(it, r, warming_up)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = batches.next()
            loss, batch_wrong = step(x, y)
            loss_sum += loss * len(y)
            wrong += batch_wrong
            seen += len(y)
            bar.update(1)

            # Warm-up (110 layers and deeper): lr 0.01 until training error < 80 %.
            if warming_up:
                warm_wrong += batch_wrong
                warm_seen += len(y)
                if (it + 1) % r.warmup_check_every == 0:
                    if warm_wrong.item() * 100 / warm_seen < r.warmup_until_train_error:
                        warming_up, warmup_end = False, it + 1
                    warm_wrong.zero_()
                    warm_seen = 0

            done = it + 1 == r.iterations
            if (it + 1) % r.eval_every and not done:
                continue

            # ---- evaluate and log (the only regular host synchronisation of the loop)
            train_time = time.perf_counter() - t_line
            test_loss, test_err = evaluate(model, splits.test_x, splits.test_y, autocast_dtype=amp)
            row = {"iteration": it + 1, "epoch": round((it + 1) / batches.batches_per_epoch, 4), "lr": lr,
                   "train_loss": (loss_sum / seen).item(), "train_error": (wrong.float() * 100 / seen).item(),
                   "test_loss": test_loss.item(), "test_error": test_err.item(),
                   "elapsed_s": round(elapsed + train_time, 3),
                   "images_per_s": round(seen / max(train_time, 1e-9), 1)}
            if splits.val_x is not None:
                val_loss, val_err = evaluate(model, splits.val_x, splits.val_y, autocast_dtype=amp)
                row.update(val_loss=val_loss.item(), val_error=val_err.item())
            elapsed += train_time
            rows.append(row)
            run.write_log(rows, columns)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", train_err=f"{row['train_error']:.1f}",
                            test_err=f"{row['test_error']:.2f}", refresh=False)
            loss_sum.zero_(), wrong.zero_()
            seen = 0

            high_loss = high_loss + 1 if row["train_loss"] > DIVERGED_LOSS else 0
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])) \
                    or high_loss >= DIVERGED_LINES:
                status = RunStatus.DIVERGED
                break
            if done or time.perf_counter() - last_ckpt >= r.checkpoint_every_s:
                checkpoint(it + 1, 0.0)
                last_ckpt = time.perf_counter()
            t_line = time.perf_counter()  # evaluation and checkpoint time is not training time
    bar.close()

    if status == RunStatus.RUNNING:
        status = RunStatus.FINISHED
        atomic_torch_save(model.state_dict(), run.model_path)
    # the callbacks' last word (the final signals; Figure 7's responses from the final weights)
    written = [p for cb in callbacks for p in cb.on_end(ctx, status)]
    if status == RunStatus.FINISHED:
        # the checksums that tell the run's results from damaged copies (RunDir.check)
        meta["files"] = {p.name: sha256_file(p) for p in (run.log_path, run.model_path, run.mean_path, *written)}
    final = rows[-1] if rows else {}
    meta.update(status=status.value, iteration=int(final.get("iteration", start)), wall_time_s=round(elapsed, 1),
                warmup_end_iteration=warmup_end, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                final={k: float(final[k]) for k in ("train_error", "test_error", "train_loss", "test_loss",
                                                    "val_error") if k in final})
    run.write_meta(meta)
    if status == RunStatus.FINISHED:  # no longer needed: the final weights are in model.pt
        run.checkpoint_path.unlink(missing_ok=True)
    if status == RunStatus.DIVERGED:
        print(f"[{spec.name}] DIVERGED: loss is {final.get('train_loss')} at iteration {final.get('iteration')}; "
              "the run is kept, marked diverged, and the suite goes on (lower its lr or add warm-up)", flush=True)
    return meta


def _static_meta(spec: RunSpec, identity: str, n_params: int, dataset: dict[str, Any],
                 device: torch.device, where: dict[str, Any] | None) -> dict[str, Any]:
    return {"identity": identity, "config": spec.config(), "params": n_params, "dataset": dataset,
            "device": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "python": platform.python_version(), "host": platform.node(), "git_commit": git_commit(),
            "worker": where or {"executor": "local", "pid": os.getpid()}}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit this process runs (read once: a later checkout does not change the code
    already imported)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=here)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
