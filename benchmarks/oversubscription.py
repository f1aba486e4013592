"""Seconds per training step of resnet110 at the smoke batch (32), by torch threads and by
how many busy processes compete for the cores (as "other jobs" did).

    python benchmarks/oversubscription.py              # OpenMP defaults
    OMP_WAIT_POLICY=PASSIVE python benchmarks/oversubscription.py
"""
import multiprocessing as mp, os, time
import torch
from resnet_exp.models import build_model
from resnet_exp.runs.training.step import make_optimizer, make_train_step
from resnet_exp.runs.planning.experiments import load_profiles

def hog():
    while True:
        pass

def step_time(threads, steps=8):
    torch.set_num_threads(threads)
    m = build_model("resnet110").to(memory_format=torch.channels_last)
    step = make_train_step(m, make_optimizer(m, load_profiles()["smoke"], torch.device("cpu")))
    x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (32,))
    step(x, y)
    t = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return (time.perf_counter() - t) / steps

if __name__ == "__main__":
    for hogs in (0, 2):
        ps = [mp.Process(target=hog, daemon=True) for _ in range(hogs)]
        for p in ps: p.start()
        for threads in (2, 1):
            print(f"hogs={hogs} threads={threads} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY','-')}: "
                  f"{step_time(threads):.3f} s/step", flush=True)
        for p in ps: p.terminate()
