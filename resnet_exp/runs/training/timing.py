"""What one model costs here, measured: a training step (the step the loop will run, graphed
on CUDA) and an evaluated test image. The plan's estimate (``planning/estimate.py``) is
built from these numbers; it receives them, it does not time anything itself."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ...data.loader import eval_batch_size, evaluate
from ...fileio import atomic_write_json, user_cache_dir
from ...models import build_model
from ..planning.estimate import StepCost
from ..planning.experiments import load_profiles
from .step import EAGER_STEPS, autocast_dtype, make_optimizer, make_stepper, set_numerics


def seconds_per_call(call: Callable[[], object], budget_s: float, warm_calls: int = 1) -> float:
    """Mean seconds of ``call()`` (which must wait for the device) after ``warm_calls``
    untimed calls, over at least two calls or ``budget_s``."""
    for _ in range(warm_calls):
        call()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < budget_s:
        call()
        n += 1
    return (time.perf_counter() - t0) / n


def time_per_step(model_name: str, batch_size: int, device: torch.device, budget_s: float = 1.5,
                  precision: str = "fp32") -> float:
    """Seconds per training step of one model here, on random images: the paper's recipe's
    step in this precision as the loop runs it (replayed from a CUDA graph where it would be),
    timed after its eager steps and capture, for at least two steps or ``budget_s``."""
    recipe = load_profiles()["paper"].model_copy(update={"precision": precision})
    model = build_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    set_numerics(model, recipe, device)  # the kernels a run picks (cuDNN's autotuner on CUDA)
    step, _ = make_stepper(model, make_optimizer(model, recipe, device), recipe, device)
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    return seconds_per_call(lambda: step(x, y, recipe.lr)[0].item(), budget_s, warm_calls=EAGER_STEPS + 1)


def time_per_eval_image(model_name: str, device: torch.device, budget_s: float = 0.5,
                        precision: str = "fp32") -> float:
    """Seconds per test image evaluated by one model here: ``evaluate`` over one of its
    batches of random images, after one warm-up batch, at least twice or for ``budget_s``.
    Measured, not assumed: on a CPU it ranged from a quarter of a training image's time to more
    than a whole one with the batch size and the cache (benchmarks/eval_batch.py)."""
    model = build_model(model_name).to(device).to(memory_format=torch.channels_last)
    n_images = eval_batch_size(device)
    x = torch.randn(n_images, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (n_images,), device=device)
    amp = autocast_dtype(precision)  # as the loop evaluates (train.py)
    return seconds_per_call(lambda: evaluate(model, x, y, autocast_dtype=amp)[1].item(), budget_s) / n_images


def time_step_cost(model_name: str, batch_size: int, device: torch.device, precision: str = "fp32") -> StepCost:
    return StepCost(time_per_step(model_name, batch_size, device, precision=precision),
                    time_per_eval_image(model_name, device, precision=precision))


# --------------------------------------------------------------------------- kept timings
# A plan's estimate times each model for a few steps: tens of seconds a model on a slow CPU,
# every invocation. The timings are kept a day per machine and setting, so that the second
# plan takes seconds; a timing taken while the CPU was busy with other work (a training job
# beside it) is marked, used only while the CPU is still busy, and taken again once it is quiet.
TIMINGS_FILE = "step-timings.json"
KEEP_S = 24 * 3600.0


def machine_key(device: torch.device) -> str:
    """What a timing depends on besides the model: the processor, the threads, torch."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                      if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{where} | {device.type} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_busy(load: Callable[[], float] = lambda: os.getloadavg()[0]) -> bool:
    """Is the CPU busy with more than this process can use (a job beside the plan)? The
    one-minute load average above the threads this process times with, plus a half."""
    try:
        return load() > torch.get_num_threads() + 0.5
    except OSError:
        return False


def kept_step_cost(model_name: str, batch_size: int, device: torch.device, precision: str = "fp32",
                   measure: Callable[[str, int, torch.device, str], StepCost] = time_step_cost,
                   clock: Callable[[], float] = time.time, busy: Callable[[], bool] = cpu_busy,
                   folder: Path | None = None) -> StepCost:
    """``measure``'s timing of one model here, or the one kept from the last day (see above)."""
    path = (folder or user_cache_dir()) / TIMINGS_FILE
    key = f"{machine_key(device)} | {precision} | {model_name} | batch {batch_size}"
    try:
        kept = json.loads(path.read_text())
        kept = kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    now, busy_now = clock(), busy()
    entry = kept.get(key)
    if isinstance(entry, dict) and 0 <= now - float(entry.get("at", -1e18)) < KEEP_S \
            and (busy_now or not entry.get("busy")):
        try:
            return StepCost(float(entry["step_s"]), float(entry["eval_image_s"]))
        except (KeyError, TypeError, ValueError):
            pass  # a damaged entry: measured again
    cost = measure(model_name, batch_size, device, precision)
    kept = {k: v for k, v in kept.items() if isinstance(v, dict) and 0 <= now - float(v.get("at", -1e18)) < KEEP_S}
    kept[key] = {"step_s": cost.step_s, "eval_image_s": cost.eval_image_s, "at": now, "busy": busy_now or busy()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, kept)
    except OSError:  # a read-only home: the plan is only slower next time
        pass
    return cost
