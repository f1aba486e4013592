"""Where and with what a run was trained, as meta.json records it: the device, torch, the
code's commit, the host and the worker. Read by the reports (``compare`` names what may
differ between two runs from these fields) and by the benchmark."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from typing import Any

import torch

from ..device import cpu_native_bf16
from ..planning.experiments import RunSpec


def static_meta(spec: RunSpec, identity: str, n_params: int, dataset: dict[str, Any],
                device: torch.device, where: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of meta.json that do not change while the run trains."""
    return {"identity": identity, "config": spec.config(), "params": n_params, "dataset": dataset,
            "device": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None, "tf32": tf32_flags(device),
            "cpu_bf16_native": cpu_native_bf16() if device.type == "cpu" else None,
            "precision": spec.recipe.precision,
            "python": platform.python_version(), "host": platform.node(), "git_commit": git_commit(),
            "worker": where or {"executor": "local", "pid": os.getpid()}}


def tf32_flags(device: torch.device) -> dict[str, bool] | None:
    """Whether cuDNN's convolutions and cuBLAS's matmuls may use TF32, as this process has them
    (``step.set_numerics`` sets them from the recipe's precision); None off CUDA, where TF32
    does not exist. Read at the run's start, after ``set_numerics``."""
    if device.type != "cuda":
        return None
    return {"cudnn": bool(torch.backends.cudnn.allow_tf32), "cublas": bool(torch.backends.cuda.matmul.allow_tf32)}


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
