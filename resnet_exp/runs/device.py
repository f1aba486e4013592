"""Which device a run uses, the profile that suits it, and how many runs share a GPU.
Shared by the runner and the benchmark, so ``bench`` measures where ``run`` would train."""

from __future__ import annotations

import os

import numpy as np
import torch

# Runs sharing one GPU by default (``run --runs-per-gpu``, ./run_all.sh on CUDA). One run leaves
# an H200 mostly idle at the paper's batch of 128. Measured there, eager, ResNet-20 (total
# images/s over one run's, ../shared/gpu-runs/README.md, 2026-12-04): 2 at once 1.55x, 4 at
# once 2.30x, 8 at once 2.32x: 4 is where it stops paying. With graphed steps the best count
# is still to be measured (scripts/gpu_check.sh measures K = 1, 2, 4, 8, with and without MPS).
# The table also drives the plan's whole-job estimate (``sharing_speedup``): replace it with the
# graphed figures once measured.
DEFAULT_RUNS_PER_GPU = 4
GPU_SHARING_SPEEDUP = {1: 1.0, 2: 1.55, 4: 2.30, 8: 2.32}  # K runs at once: total throughput / one run's


def sharing_speedup(runs: int) -> float:
    """Total throughput of ``runs`` runs sharing one GPU over one run's alone: measured
    (``GPU_SHARING_SPEEDUP``), on the straight line between two measured counts (3 runs: between
    2 and 4), and no more gain than measured beyond the largest count. The plan's estimate
    of the whole job uses it (``planning/estimate.Sharing``)."""
    counts = sorted(GPU_SHARING_SPEEDUP)
    return float(np.interp(runs, counts, [GPU_SHARING_SPEEDUP[k] for k in counts]))


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively, as PyTorch's oneDNN backend reports it (AVX512-BF16
    or AMX; not a guess from the CPU's name). Without it bf16 autocast on a CPU is emulated and
    slower than fp32, so the budget keeps fp32 there (issue 46)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or one that cannot tell
        return False


def pick_device(device: str) -> torch.device:
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace, read when CUDA starts in this process
        # and inherited by the workers: set before any CUDA call, so a recipe's `deterministic`
        # works in every run (a little more workspace memory otherwise, no change in numbers)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return dev


def default_profile(device: torch.device) -> str:
    return "paper" if device.type == "cuda" else "quick"
