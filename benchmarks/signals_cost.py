"""What recording the layer signals (runs/training/signals.py) costs, as a share of a run's training
time: one measurement on the 256-image probe batch against one training step, times the
number of points each schedule records, with this machine's GEMM rate beside the figures.

    python benchmarks/signals_cost.py [--threads 2] [--models plain20 plain56 resnet56]
"""
import argparse
import time

import torch

from resnet_exp.models import build_model
from resnet_exp.runs.bench import gemm_gflops
from resnet_exp.runs.planning.experiments import load_profiles
from resnet_exp.runs.training.timing import time_per_step
from resnet_exp.runs.training.signals import PROBE_SIZE, LayerProbe, signal_points


def seconds(f, repeat: int) -> float:
    f()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        f()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet56"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"GEMM rate: {gemm_gflops():.0f} GFLOP/s fp32 ({args.threads} threads)")
    profiles = load_profiles()
    for name in args.models:
        model = build_model(name).to(memory_format=torch.channels_last)
        px = torch.randn(PROBE_SIZE, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        py = torch.randint(0, 10, (PROBE_SIZE,))
        probe = LayerProbe(model)
        t_step = time_per_step(name, 128, torch.device("cpu"), budget_s=5.0)  # what the plan's estimate times
        t_probe = seconds(lambda: probe.measure(model, px, py), 3)
        shares = []
        for profile in ("quick64", "quick", "paper"):
            r = profiles[profile]
            points = len(signal_points(r.iterations, r.eval_every))
            shares.append(f"{profile} {points} points {100 * points * t_probe / (r.iterations * t_step):.2f} %")
        print(f"{name}: step {t_step * 1000:.0f} ms, one measurement {t_probe * 1000:.0f} ms "
              f"({t_probe / t_step:.2f} steps); of the training time: {'; '.join(shares)}")


if __name__ == "__main__":
    main()
