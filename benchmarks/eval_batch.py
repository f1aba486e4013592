"""What a full-test-set evaluation costs against training, by the batch ``evaluate`` runs
in: seconds per evaluated image as a share of a training image's (a step of 128 over 128),
on the CPU, with this machine's GEMM rate beside the figures; and what that makes of the
evaluations' share of a run on the short rungs of the ladder (16 or 17 evaluations of
10,000 images a run). ``evaluate`` uses data/loader.py's ``eval_batch_size`` (128 on a CPU).

    python benchmarks/eval_batch.py [--threads 2] [--models resnet20 resnet56] [--batches 64 128 256 1000]
"""
import argparse
import time

import torch

from resnet_exp.data.loader import eval_batch_size, evaluate
from resnet_exp.models import build_model
from resnet_exp.runs.bench import gemm_gflops
from resnet_exp.runs.training.timing import time_per_step
from resnet_exp.runs.planning.experiments import load_profiles

N_IMAGES = 2000  # evaluated per measurement: enough batches of every size for a steady rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 500, 1000])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"GEMM rate: {gemm_gflops():.0f} GFLOP/s fp32 ({args.threads} threads); "
          f"evaluate's batch on this device: {eval_batch_size(cpu)}")
    profiles = load_profiles()
    x = torch.randn(N_IMAGES, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (N_IMAGES,))
    for name in args.models:
        model = build_model(name).to(memory_format=torch.channels_last)
        train_image_s = time_per_step(name, 128, cpu, budget_s=5.0) / 128
        shares = []
        for b in args.batches:
            evaluate(model, x[:b], y[:b], batch_size=b)  # warm-up: a new shape
            t0 = time.perf_counter()
            evaluate(model, x, y, batch_size=b)
            ratio = (time.perf_counter() - t0) / N_IMAGES / train_image_s
            of_run = []
            for profile in ("quick128", "quick"):
                r = profiles[profile]
                evals = r.iterations // r.eval_every + 1
                e = evals * 10_000 * ratio
                of_run.append(f"{profile} {100 * e / (e + r.iterations * r.batch_size):.0f} %")
            shares.append(f"  batch {b:5d}: {ratio:.2f} of a training image; evaluations' share of a run: "
                          + ", ".join(of_run))
        print(f"{name}: a training image {train_image_s * 1e3:.2f} ms\n" + "\n".join(shares))


if __name__ == "__main__":
    main()
