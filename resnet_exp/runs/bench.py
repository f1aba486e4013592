"""Training throughput: our runner's step against a textbook PyTorch loop.

    python -m resnet_exp bench [--models resnet20 resnet56 resnet110 plain56] [--iters N]

Both sides train the same model (same builder, fp32, batch 128, one SGD step per
batch, the same number of timed iterations) in the same process on the same images:

- ours: the runner's data path and step (``loader.TrainBatches`` on the device,
  batched crop/flip, ``train.make_train_step``), synchronised only at the end;
- textbook: a torchvision-style ``VisionDataset`` that turns each uint8 image into a
  PIL image and applies ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize``, exactly what ``torchvision.datasets.CIFAR10`` does per
  image, through a ``DataLoader`` with worker processes, ``.to(device)`` each batch,
  and ``loss.item()`` each step, as tutorials do.

The images are CIFAR-10 when ``load_cifar10`` finds it (--data, data/), else random
uint8 tensors of CIFAR-10's shape: the throughput does not depend on the pixels.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..data.loader import TrainBatches, prepare_splits
from ..models import build_model
from .device import pick_device
from .planning.experiments import Recipe, load_profiles
from .training.train import device_name, make_optimizer, make_train_step

WARMUP_ITERS = 5


def gemm_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's fp32 GEMM rate with torch's threads, GFLOP/s (n x n matmuls, 2 n^3 FLOPs
    each): the figure to quote beside any wall time, since machines of one kind differ."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    k, t0 = 0, time.perf_counter()
    while k < 3 or time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def _images(data: str | None, n_train: int = 50_000) -> tuple[torch.Tensor, torch.Tensor, str]:
    from ..data.cifar10 import DatasetError, load_cifar10

    try:
        ds = load_cifar10(data, download=False, verbose=False)
        return ds.train_x, ds.train_y, ds.provenance["name"]
    except DatasetError:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
        return x, torch.arange(n_train) % 10, "synthetic uint8 images (no CIFAR-10 found)"


class TextbookCifar(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per image: HWC uint8 -> PIL -> transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.data = x.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision stores it
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def bench_ours(model_name: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, iters: int,
               recipe: Recipe, barrier: Any = None) -> float:
    """Images/s of our step. ``barrier``: start timing together with other processes."""
    from ..data.cifar10 import Cifar10

    splits = prepare_splits(Cifar10(x, y, x[:10], y[:10], {}), device)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    amp = torch.bfloat16 if recipe.precision == "bf16" else None
    step = make_train_step(model, make_optimizer(model, recipe, device), amp)
    batches = TrainBatches(splits.train_x, splits.train_y, recipe.batch_size, augment=recipe.augment, seed=0)
    batch_size = recipe.batch_size
    for _ in range(WARMUP_ITERS):
        step(*batches.next())
    _sync(device)
    if barrier is not None:
        barrier.wait()
    t = time.perf_counter()
    for _ in range(iters):
        loss, _ = step(*batches.next())
    loss.item()  # the one host synchronisation
    return iters * batch_size / (time.perf_counter() - t)


def bench_textbook(model_name: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, iters: int,
                   recipe: Recipe, workers: int) -> float:
    batch_size = recipe.batch_size
    import torchvision.transforms as T

    mean = (x[:10_000].float() / 255).mean(dim=(0, 2, 3)).tolist()
    std = (x[:10_000].float() / 255).std(dim=(0, 2, 3)).tolist()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(TextbookCifar(x, y, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    done, t = 0, None
    while True:
        for xb, yb in loader:
            if done == WARMUP_ITERS:
                _sync(device)
                t = time.perf_counter()
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the tutorial's running-loss bookkeeping
            done += 1
            if done == WARMUP_ITERS + iters:
                return iters * batch_size / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(models: list[str], iters: int = 50, device: str = "auto", out: str | None = None,
              profile: str = "paper", workers: int | None = None, data: str | None = None) -> list[dict[str, Any]]:
    dev = pick_device(device)
    recipe = load_profiles()[profile]
    batch_size = recipe.batch_size
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    x, y, source = _images(data)
    gemm = gemm_gflops() if dev.type == "cpu" else None  # the figure to quote beside any CPU wall time
    if gemm:
        print(f"bench: this machine's fp32 GEMM rate: {gemm:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    print(f"bench: {iters} timed iterations (after {WARMUP_ITERS} warm-up), profile {profile} "
          f"(batch {batch_size}, {recipe.precision}), "
          f"device {device_name(dev)}, textbook DataLoader workers {workers}; images: {source}")
    rows = []
    print(f"| {'model':<10} | {'device':<28} | {'ours img/s':>10} | {'textbook img/s':>14} | {'ratio':>6} |")
    print(f"|{'-' * 12}|{'-' * 30}|{'-' * 12}|{'-' * 16}|{'-' * 8}|")
    for name in models:
        ours = bench_ours(name, x, y, dev, iters, recipe)
        textbook = bench_textbook(name, x, y, dev, iters, recipe, workers)
        row = {"model": name, "device": device_name(dev), "ours_images_per_s": round(ours, 1),
               "textbook_images_per_s": round(textbook, 1), "ratio": round(ours / textbook, 2)}
        rows.append(row)
        print(f"| {name:<10} | {row['device'][:28]:<28} | {ours:>10.0f} | {textbook:>14.0f} | {row['ratio']:>6.2f} |",
              flush=True)
    _write_results(out or f"benchmarks/results/bench-{dev.type}.json", rows, iters=iters, profile=profile,
                   batch_size=batch_size, workers=workers, images=source, gemm_gflops=gemm and round(gemm, 1))
    return rows


def _write_results(path: str, rows: list[dict[str, Any]], **fields: Any) -> None:
    """A benchmark's table as JSON, with what it ran on and when."""
    from ..fileio import atomic_write_json
    from .training.train import git_commit

    atomic_write_json(path, {**fields, "torch": torch.__version__, "git_commit": git_commit(),
                             "date": time.strftime("%Y-%m-%d %H:%M"), "results": rows})
    print(f"wrote {path}")


# --------------------------------------------------------------------------- concurrency
def _concurrent_worker(model: str, device: str, iters: int, profile: str, threads: int, barrier: Any,
                       results: Any) -> None:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8, generator=g)
    results.put(bench_ours(model, x, torch.arange(10_000) % 10, torch.device(device), iters,
                           load_profiles()[profile], barrier))


def run_concurrent_bench(models: list[str], ks: list[int], iters: int = 50, device: str = "auto",
                         profile: str = "paper", out: str | None = None) -> list[dict[str, Any]]:
    """Total training images/s of K runs at once on one device (K processes, as the pool
    executor runs them; on the CPU the threads are split between them)."""
    import multiprocessing

    dev = pick_device(device)
    mp = multiprocessing.get_context("spawn")
    cpus = os.cpu_count() or 1
    print(f"bench --concurrent: {iters} timed iterations per run, profile {profile}, device {device_name(dev)}")
    print(f"| {'model':<10} | {'K':>3} | {'threads/run':>11} | {'total img/s':>11} | {'per run':>8} | {'vs K=1':>6} |")
    print(f"|{'-' * 12}|{'-' * 5}|{'-' * 13}|{'-' * 13}|{'-' * 10}|{'-' * 8}|")
    rows: list[dict[str, Any]] = []
    for name in models:
        base = None
        for k in ks:
            threads = max(1, cpus // k) if dev.type == "cpu" else 1
            barrier, results = mp.Barrier(k), mp.Queue()
            procs = [mp.Process(target=_concurrent_worker, args=(name, dev.type, iters, profile, threads, barrier,
                                                                 results)) for _ in range(k)]
            for p in procs:
                p.start()
            rates = [results.get() for _ in procs]
            for p in procs:
                p.join()
            total = sum(rates)
            base = base or total
            rows.append({"model": name, "k": k, "threads_per_run": threads, "total_images_per_s": round(total, 1),
                         "per_run_images_per_s": round(total / k, 1), "speedup_vs_k1": round(total / base, 2)})
            print(f"| {name:<10} | {k:>3} | {threads:>11} | {total:>11.0f} | {total / k:>8.0f} | "
                  f"{total / base:>6.2f} |", flush=True)
    _write_results(out or f"benchmarks/results/concurrent-{dev.type}.json", rows, iters=iters, profile=profile,
                   device=device_name(dev))
    return rows
