"""One training run, top to bottom: build, (resume), step, evaluate, log, checkpoint.

Files in the run folder:
    log.csv        one line per evaluation (rewritten atomically at each line)
    meta.json      resolved config, provenance, versions, status, wall time
    checkpoint.pt  model + optimizer + data-stream state at the last checkpointed line
    model.pt       final weights (state_dict)

The hot loop never synchronises with the host: training loss and error accumulate in
device tensors and are read only at evaluation time.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .experiments import RunSpec
from .fileio import atomic_torch_save, atomic_write_json, atomic_write_text, read_json
from .loader import DeviceSplits, TrainBatches, evaluate
from .models import build_model

LOG_COLUMNS = ["iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
               "elapsed_s", "images_per_s"]
VAL_COLUMNS = ["val_loss", "val_error"]
TIMING_COLUMNS = {"elapsed_s", "images_per_s"}  # the only columns that differ between identical runs


class GracefulStop:
    """Ctrl-C or SIGTERM (e.g. `timeout`) asks the loop to stop at the next log line,
    after a checkpoint, so no work is lost; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstop requested: checkpointing at the next log line (again to stop at once, "
              "losing the work since the last checkpoint)", flush=True)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def lr_at(iteration: int, recipe: dict[str, Any], warming_up: bool) -> float:
    """The paper's step schedule: lr, times lr_decay at each milestone passed."""
    if warming_up:
        return recipe["warmup_lr"]
    lr = recipe["lr"] * recipe["lr_decay"] ** sum(iteration >= m for m in recipe["milestones"])
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


def make_optimizer(model: torch.nn.Module, recipe: dict[str, Any], device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; the multi-tensor (foreach) kernels on CUDA."""
    return torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                           weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"],
                           foreach=device.type == "cuda" or None)


def train_run(spec: RunSpec, splits: DeviceSplits, run_dir: Path, device: torch.device,
              dataset: dict[str, Any], identity: str, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one run to the end; returns its meta.json content."""
    r = spec.recipe
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, meta_path = run_dir / "checkpoint.pt", run_dir / "log.csv", run_dir / "meta.json"

    torch.manual_seed(spec.seed)  # model init; the data stream has its own generator
    model = build_model(spec.model, shortcut=spec.shortcut, zero_init_residual=spec.zero_init_residual)
    model = model.to(device).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, r, device)
    batches = TrainBatches(splits.train_x, splits.train_y, r["batch_size"], r["augment"], seed=spec.seed)
    amp = torch.bfloat16 if r["precision"] == "bf16" else None
    step = make_train_step(model, optimizer, amp)
    columns = LOG_COLUMNS + (VAL_COLUMNS if splits.val_x is not None else [])

    # ---- resume
    start, elapsed, rows = 0, 0.0, []
    warming_up = r["warmup_lr"] is not None and spec.depth >= r["warmup_min_depth"]
    warmup_end: int | None = None
    warm_window = (0, 0)  # (wrong, seen) since the last warm-up check
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batches.load_state_dict(ckpt["batches"])
        start, elapsed, warming_up, warmup_end = (ckpt["iteration"], ckpt["elapsed_s"],
                                                  ckpt["warming_up"], ckpt["warmup_end"])
        warm_window = ckpt["warm_window"]
        # The log may run ahead of the checkpoint: keep exactly the lines it covers.
        rows = [row for row in _read_log(log_path) if int(row["iteration"]) <= start]
        print(f"[{spec.name}] resuming at iteration {start} ({len(rows)} log lines kept)")

    meta = {**(read_json(meta_path) or {}), **_static_meta(spec, identity, n_params, dataset, device),
            "status": "running", "iteration": start}
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(meta_path, meta)

    # ---- train
    zero = lambda dtype=torch.float32: torch.zeros((), device=device, dtype=dtype)  # noqa: E731
    loss_sum, wrong, seen = zero(), zero(torch.long), 0
    warm_wrong, warm_seen = zero(torch.long) + warm_window[0], warm_window[1]
    last_ckpt_time = t_line = time.perf_counter()
    bar = tqdm(total=r["iterations"], initial=start, desc=spec.name, disable=not progress,
               dynamic_ncols=True, leave=True, mininterval=2.0)
    model.train()
    status = "running"
    with GracefulStop() as stop:
        for it in range(start, r["iterations"]):
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
                if (it + 1) % r["warmup_check_every"] == 0:
                    if warm_wrong.item() * 100 / warm_seen < r["warmup_until_train_error"]:
                        warming_up, warmup_end = False, it + 1
                    warm_wrong.zero_()
                    warm_seen = 0

            done = it + 1 == r["iterations"]
            if (it + 1) % r["eval_every"] and not done:
                continue

            # ---- evaluate and log (the only host synchronisation of the loop)
            now = time.perf_counter()
            train_time = now - t_line
            test_loss, test_err = evaluate(model, splits.test_x, splits.test_y, autocast_dtype=amp)
            row = {"iteration": it + 1, "epoch": round((it + 1) / batches.batches_per_epoch, 4), "lr": lr,
                   "train_loss": (loss_sum / seen).item(), "train_error": (wrong.float() * 100 / seen).item(),
                   "test_loss": test_loss.item(), "test_error": test_err.item(),
                   "elapsed_s": round(elapsed + train_time, 3), "images_per_s": round(seen / max(train_time, 1e-9), 1)}
            if splits.val_x is not None:
                val_loss, val_err = evaluate(model, splits.val_x, splits.val_y, autocast_dtype=amp)
                row.update(val_loss=val_loss.item(), val_error=val_err.item())
            elapsed += train_time
            rows.append(row)
            _write_log(log_path, rows, columns)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", train_err=f"{row['train_error']:.1f}",
                            test_err=f"{row['test_error']:.2f}", refresh=False)
            loss_sum.zero_(), wrong.zero_()
            seen = 0

            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])):
                status = "diverged"
                break
            if done or stop.requested or time.perf_counter() - last_ckpt_time >= r["checkpoint_every_s"]:
                atomic_torch_save({"iteration": it + 1, "elapsed_s": elapsed, "warming_up": warming_up,
                                   "warmup_end": warmup_end,
                                   "warm_window": (int(warm_wrong.item()), warm_seen), "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "batches": batches.state_dict()},
                                  ckpt_path)
                last_ckpt_time = time.perf_counter()
                meta.update(iteration=it + 1, wall_time_s=round(elapsed, 1))
                atomic_write_json(meta_path, meta)
            if stop.requested and not done:
                bar.close()
                raise KeyboardInterrupt  # checkpointed above: the next invocation resumes here
            t_line = time.perf_counter()  # evaluation and checkpoint time is not training time
    bar.close()

    if status == "running":
        status = "finished"
        atomic_torch_save(model.state_dict(), run_dir / "model.pt")
    final = rows[-1] if rows else {}
    meta.update(status=status, iteration=int(final.get("iteration", start)), wall_time_s=round(elapsed, 1),
                warmup_end_iteration=warmup_end, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                final={k: final.get(k) for k in ("train_error", "test_error", "train_loss", "test_loss",
                                                 "val_error") if k in final})
    atomic_write_json(meta_path, meta)
    if status == "diverged":
        print(f"[{spec.name}] DIVERGED: loss is {final.get('train_loss')} at iteration {final.get('iteration')}; "
              "the run is kept, marked diverged, and the suite goes on (lower its lr or add warm-up)")
    return meta


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_log(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _static_meta(spec: RunSpec, identity: str, n_params: int, dataset: dict[str, Any],
                 device: torch.device) -> dict[str, Any]:
    return {"identity": identity, "config": spec.config(), "params": n_params, "dataset": dataset,
            "device": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "python": platform.python_version(), "host": platform.node(), "git_commit": git_commit()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit this process runs (read once: a later checkout does not change the code
    already imported)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
