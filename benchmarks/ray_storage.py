"""What training without a shared filesystem costs (runs/executing/ray_storage.py): the bytes a run
sends back to the driver, by file, and the driver's overhead against shared storage, for
one run trained through Ray both ways on this machine, with this machine's GEMM rate.

    python benchmarks/ray_storage.py --data DATA [--model resnet56] [--profile quick]
                                     [--iterations N] [--threads 1] [--storage shared driver]

Ray binds the machine's own address even when told 127.0.0.1: the script runs itself again
in a network namespace holding only loopback (unshare -n; root), as tests/test_ray.py does.
--iterations cuts the schedule (milestones at 1/2 and 3/4, evaluations every eval_every)
to time a slice; the full quick ResNet-56 is the default. Checkpoints follow the recipe's
checkpoint_every_s (--checkpoint-every to change it), so their count depends on the speed.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def in_loopback_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="resnet56")
    p.add_argument("--profile", default="quick")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--checkpoint-every", type=float, default=None, help="seconds (default: the recipe's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--storage", nargs="+", default=["shared", "driver"], choices=["shared", "driver"],
                   help="which set-ups to time (default: both)")
    args = p.parse_args()
    if not in_loopback_namespace():
        ray_tmp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")
        try:
            cmd = f"ip link set lo up && exec {sys.executable} {' '.join(map(repr, sys.argv))}"
            env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
            sys.exit(subprocess.run(["unshare", "-n", "bash", "-c", cmd], env=env).returncode)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)

    import torch

    from resnet_exp.runs.bench import gemm_gflops
    from resnet_exp.runs.planning.experiments import load_profiles

    torch.set_num_threads(args.threads)
    print(f"GEMM rate: {gemm_gflops():.0f} GFLOP/s fp32 ({args.threads} thread(s))", flush=True)
    recipe = load_profiles()[args.profile]
    row = {"model": args.model}
    if args.iterations:
        n = args.iterations
        row.update(iterations=n, milestones=[n // 2, 3 * n // 4], eval_every=min(recipe.eval_every, n))
    if args.checkpoint_every is not None:
        row["checkpoint_every_s"] = args.checkpoint_every
    work = Path(tempfile.mkdtemp(prefix="ray-storage-bench-"))
    exp = work / "bench.yaml"
    exp.write_text(f"rows:\n  - {json.dumps(row)}\n")
    for storage in args.storage:
        results = work / storage
        cmd = [sys.executable, "-m", "resnet_exp", "run", str(exp), "--profile", args.profile, "--data", args.data,
               "--device", "cpu", "--results", str(results), "--threads", str(args.threads), "--executor", "ray",
               "--ray-storage", storage, "--cpus-per-run", "1"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
        meta = json.loads(next(results.glob("bench/*/meta.json")).read_text())
        run_s = (time.mktime(time.strptime(meta["finished"], "%Y-%m-%dT%H:%M:%S%z"))
                 - time.mktime(time.strptime(meta["started"], "%Y-%m-%dT%H:%M:%S%z")))
        print(f"\n{storage}: {args.model} {args.profile}, {meta['iteration']} iterations; command {wall:.0f} s, "
              f"the run {run_s:.0f} s from its start to its end, of which training {meta['wall_time_s']:.0f} s")
        for line in proc.stdout.splitlines():
            if line.startswith("[ray] back to the driver") or line.startswith("[ray] data:"):
                print("  " + line)
        sizes = {f.name: f.stat().st_size for f in next(results.glob("bench/*")).iterdir()}
        print(f"  final files: {', '.join(f'{k} {v / 1024:.0f} KB' for k, v in sorted(sizes.items()))}")
        if storage == "driver":
            m = re.search(r"checkpoint\.pt ([\d.]+ \w+) in (\d+) write", proc.stdout)
            if m:
                print(f"  checkpoints: {m.group(2)} ({m.group(1)} in all), one every "
                      f"{row.get('checkpoint_every_s', recipe.checkpoint_every_s):g} s of the run and at its end")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
