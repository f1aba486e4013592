"""Which device a run uses, and the profile that suits it. Shared by the runner and the
benchmark, so ``bench`` measures where ``run`` would train."""

from __future__ import annotations

import torch


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    return torch.device(device)


def default_profile(device: torch.device) -> str:
    return "paper" if device.type == "cuda" else "quick"
