"""Training throughput: our runner's step against a textbook PyTorch loop.

    python -m resnet_exp bench [--models resnet20 resnet56 resnet110 plain56] [--iters N]

Both sides train the same model (same builder, fp32, batch 128, one SGD step per
batch, the same number of timed iterations) in the same process on the same images:

- ours: the runner's data path and step as the loop runs it (``loader.TrainBatches`` on
  the device, batched crop/flip, ``step.make_stepper``), synchronised only at the end, in
  each of the step modes asked for (``--modes``): ``eager``, ``graph`` (replayed from a
  CUDA graph, the CUDA default; eager where no GPU can capture), ``graph-bf16`` (bf16
  autocast, an opt-in recipe) and ``bf16`` (eager bf16 autocast: on a CPU, the default modes
  are ``eager`` and ``bf16``, their ratio printed beside the fp32 and bf16 GEMM rates and
  whether oneDNN computes bf16 natively);
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
from .device import cpu_native_bf16, pick_device
from .planning.experiments import Recipe, load_profiles
from .training.provenance import device_name, git_commit
from .training.step import EAGER_STEPS, make_optimizer, make_stepper, set_numerics

WARMUP_ITERS = EAGER_STEPS + 2  # a graphed step's real steps and its capture come before the timing
# The step modes ``bench --modes`` compares: recipe changes over the profile's recipe.
MODES = {"eager": {"cuda_graph": False}, "graph": {"cuda_graph": True}, "bf16": {"cuda_graph": False, "precision": "bf16"},
         "graph-tf32": {"cuda_graph": True, "precision": "tf32"}, "graph-bf16": {"cuda_graph": True, "precision": "bf16"}}


def default_modes(device: torch.device) -> list[str]:
    """On CUDA eager against graphed; on a CPU (no graphs) fp32 against bf16, the choice there."""
    return ["eager", "graph"] if device.type == "cuda" else ["eager", "bf16"]


def gemm_gflops(n: int = 1024, seconds: float = 1.0, dtype: torch.dtype = torch.float32) -> float:
    """This machine's GEMM rate with torch's threads, GFLOP/s (n x n matmuls, 2 n^3 FLOPs
    each): the figure to quote beside any wall time, since machines of one kind differ."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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
    set_numerics(model, recipe, device)  # as a run does: its precision, cuDNN's autotuner unless deterministic
    step, _ = make_stepper(model, make_optimizer(model, recipe, device), recipe, device)
    batches = TrainBatches(splits.train_x, splits.train_y, recipe.batch_size, augment=recipe.augment, seed=0)
    batch_size = recipe.batch_size
    for _ in range(WARMUP_ITERS):
        step(*batches.next(), recipe.lr)
    _sync(device)
    if barrier is not None:
        barrier.wait()
    t = time.perf_counter()
    for _ in range(iters):
        loss, _ = step(*batches.next(), recipe.lr)
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
    set_numerics(model, recipe, device)  # the same arithmetic as ours (fp32: TF32 off), whatever ran before
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
              profile: str = "paper", workers: int | None = None, data: str | None = None,
              modes: list[str] | None = None) -> list[dict[str, Any]]:
    """Images/s and ms per step of our step in each mode, and of the textbook loop."""
    dev = pick_device(device)
    recipe = load_profiles()[profile]
    modes = modes or default_modes(dev)
    if unknown := [m for m in modes if m not in MODES]:
        raise ValueError(f"--modes {' '.join(unknown)}: unknown; valid: {', '.join(MODES)}")
    batch_size = recipe.batch_size
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    x, y, source = _images(data)
    gemm = gemm_gflops() if dev.type == "cpu" else None  # the figure to quote beside any CPU wall time
    gemm_bf16 = gemm_gflops(dtype=torch.bfloat16) if dev.type == "cpu" else None
    native = cpu_native_bf16() if dev.type == "cpu" else None
    if gemm:
        print(f"bench: this machine's GEMM rate: fp32 {gemm:.0f} GFLOP/s, bf16 {gemm_bf16:.0f} GFLOP/s "
              f"({torch.get_num_threads()} threads); native bf16 (oneDNN): {'yes' if native else 'no'}")
        if not native:
            print("bench: this CPU does not compute bf16 natively: bf16 is emulated here, and the budget keeps fp32")
    print(f"bench: {iters} timed iterations (after {WARMUP_ITERS} warm-up), profile {profile} "
          f"(batch {batch_size}), device {device_name(dev)}, textbook DataLoader workers {workers}; images: {source}")
    if dev.type != "cuda" and any(MODES[m].get("cuda_graph") for m in modes):
        print("bench: no CUDA device here: the graph modes run eagerly (runs/training/step.py)")
    rows = []
    out = out or f"benchmarks/results/bench-{dev.type}.json"
    ratio = "eager" in modes and "bf16" in modes  # the fp32/bf16 step ratio, what the budget's choice rests on
    head = "".join(f" {m + ' ms':>14} |" for m in modes) + (f" {'fp32/bf16':>9} |" if ratio else "")
    print(f"| {'model':<10} |{head} {'textbook ms':>12} | {'eager/textbook':>14} |")
    print(f"|{'-' * 12}|" + f"{'-' * 16}|" * len(modes) + ("-" * 11 + "|" if ratio else "") + f"{'-' * 14}|{'-' * 16}|")
    for name in models:
        rates = {m: bench_ours(name, x, y, dev, iters, recipe.model_copy(update=MODES[m])) for m in modes}
        textbook = bench_textbook(name, x, y, dev, iters, recipe, workers)
        ms = {m: 1000 * batch_size / r for m, r in rates.items()}
        first = rates[modes[0]]
        row = {"model": name, "device": device_name(dev), "batch_size": batch_size,
               **{f"{m}_images_per_s": round(r, 1) for m, r in rates.items()},
               **{f"{m}_ms_per_step": round(v, 3) for m, v in ms.items()},
               "ours_images_per_s": round(first, 1), "textbook_images_per_s": round(textbook, 1),
               "ratio": round(first / textbook, 2)}
        if ratio:
            row["fp32_over_bf16"] = round(ms["eager"] / ms["bf16"], 2)
        rows.append(row)
        cells = "".join(f" {ms[m]:>14.2f} |" for m in modes) + (f" {row['fp32_over_bf16']:>9.2f} |" if ratio else "")
        print(f"| {name:<10} |{cells} {1000 * batch_size / textbook:>12.2f} | {row['ratio']:>14.2f} |", flush=True)
        # written after every model: a benchmark stopped part way (gpu_check.sh's deadline) keeps its rows
        _write_results(out, rows, iters=iters, profile=profile, batch_size=batch_size, workers=workers,
                       images=source, gemm_gflops=gemm and round(gemm, 1),
                       gemm_bf16_gflops=gemm_bf16 and round(gemm_bf16, 1), cpu_bf16_native=native, modes=modes,
                       complete=len(rows) == len(models))
    print(f"wrote {out}")
    return rows


def _write_results(path: str, rows: list[dict[str, Any]], **fields: Any) -> None:
    """A benchmark's table as JSON, with what it ran on and when."""
    from ..fileio import atomic_write_json

    atomic_write_json(path, {**fields, "torch": torch.__version__, "git_commit": git_commit(),
                             "date": time.strftime("%Y-%m-%d %H:%M"), "results": rows})


# --------------------------------------------------------------------------- concurrency
def _concurrent_worker(model: str, device: str, iters: int, profile: str, threads: int, barrier: Any,
                       results: Any, mode: str = "graph") -> None:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8, generator=g)
    results.put(bench_ours(model, x, torch.arange(10_000) % 10, torch.device(device), iters,
                           load_profiles()[profile].model_copy(update=MODES[mode]), barrier))


def run_concurrent_bench(models: list[str], ks: list[int], iters: int = 50, device: str = "auto",
                         profile: str = "paper", out: str | None = None, mode: str = "graph") -> list[dict[str, Any]]:
    """Total training images/s of K runs at once on one device (K processes, as the pool
    executor runs them; on the CPU the threads are split between them)."""
    import multiprocessing

    dev = pick_device(device)
    mp = multiprocessing.get_context("spawn")
    cpus = os.cpu_count() or 1
    print(f"bench --concurrent: {iters} timed iterations per run, profile {profile}, step {mode}, "
          f"device {device_name(dev)}")
    print(f"| {'model':<10} | {'K':>3} | {'threads/run':>11} | {'total img/s':>11} | {'per run':>8} | {'vs K=1':>6} |")
    print(f"|{'-' * 12}|{'-' * 5}|{'-' * 13}|{'-' * 13}|{'-' * 10}|{'-' * 8}|")
    rows: list[dict[str, Any]] = []
    out = out or f"benchmarks/results/concurrent-{dev.type}.json"
    for name in models:
        base = None
        for k in ks:
            threads = max(1, cpus // k) if dev.type == "cpu" else 1
            barrier, results = mp.Barrier(k), mp.Queue()
            procs = [mp.Process(target=_concurrent_worker, args=(name, dev.type, iters, profile, threads, barrier,
                                                                 results, mode)) for _ in range(k)]
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
            _write_results(out, rows, iters=iters, profile=profile, device=device_name(dev), mode=mode,
                           complete=len(rows) == len(models) * len(ks))  # after every K, as bench does
    print(f"wrote {out}")
    return rows
