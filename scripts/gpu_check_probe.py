"""scripts/gpu_check.sh's probe of what a captured step freezes: a rate set behind the step's
back after a capture, then a replay without a new capture.

    python scripts/gpu_check_probe.py OUT_JSON [--device cuda|cpu]

A real CUDA graph keeps the rate it was captured with (foreach SGD's lr is a Python float baked
into its kernels); the CPU stand-in (``step.StandIn(mimic=True)``) is written to do the same.
The probe captures a ResNet-8 step at lr 0.1, sets the optimizer's lr to 123 directly, replays,
and compares the weight update with that of an eager step from the same state at lr 0.1 and at
lr 123 (``update_ratio``: the replay's update norm over the lr-0.1 step's; about 1 when the
captured rate was kept, about 1,000 when the new one was read). Writes OUT_JSON; prints one line.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_exp.models import build_model  # noqa: E402
from resnet_exp.runs.device import pick_device  # noqa: E402
from resnet_exp.runs.planning.experiments import load_profiles  # noqa: E402
from resnet_exp.runs.training.step import (CudaGraphs, GraphedStep, StandIn, make_optimizer,  # noqa: E402
                                           make_train_step, set_lr, set_numerics)


def update_norm(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(((after[k].float() - before[k].float()) ** 2).sum()
                                for k in before if before[k].is_floating_point())))


def probe(device: torch.device) -> dict[str, Any]:
    recipe = load_profiles()["paper"].model_copy(update={"deterministic": True})
    torch.manual_seed(0)
    model = build_model("resnet8").to(device).to(memory_format=torch.channels_last).train()
    set_numerics(model, recipe, device)
    opt = make_optimizer(model, recipe, device)
    capture = CudaGraphs(device) if device.type == "cuda" else StandIn(mimic=True)
    step = GraphedStep(make_train_step(model, opt, cache_casts=False), model, opt, capture, eager_steps=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 3, 32, 32, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=g).to(device)
    with step:
        for _ in range(5):  # 3 real steps, the capture, a replay
            step(x, y, 0.1)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        twins = {}
        for lr in (0.1, 123.0):  # eager steps from the same state, at the captured rate and the new one
            twin = copy.deepcopy(model)
            twin_opt = make_optimizer(twin, recipe, device)
            twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
            set_lr(twin_opt, lr)
            make_train_step(twin, twin_opt)(x, y)
            twins[lr] = twin.state_dict()
        opt.param_groups[0]["lr"] = 123.0  # behind the step's back: no new capture
        step(x, y, 0.1)                    # the step's own rate is unchanged: a replay
        if device.type == "cuda":
            torch.cuda.synchronize()
        after = model.state_dict()
        replayed, kept, read = update_norm(after, before), update_norm(twins[0.1], before), update_norm(twins[123.0], before)
        ratio = replayed / kept
        return {"device": str(device), "capture": type(capture).__name__, "captures": capture.captures,
                "replay_update_norm": replayed, "eager_lr_0.1_update_norm": kept, "eager_lr_123_update_norm": read,
                "update_ratio": ratio, "kept_captured_lr": 0.9 < ratio < 1.1,
                "lr_in_optimizer_after": opt.param_groups[0]["lr"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Does a replay keep the captured lr?")
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    res = probe(pick_device(args.device))  # on CUDA: cuBLAS's workspace for `deterministic`, before CUDA starts
    args.out.write_text(json.dumps(res, indent=2))
    print(f"lr probe ({res['capture']}): replay update {res['update_ratio']:.4f}x the lr-0.1 step's "
          f"({'kept the captured lr' if res['kept_captured_lr'] else 'did NOT keep the captured lr'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
