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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .loader import TrainBatches, prepare_splits
from .models import build_model
from .runner import pick_device
from .train import device_name, make_optimizer, make_train_step

RECIPE = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}
WARMUP_ITERS = 5


def _images(data: str | None, n_train: int = 50_000) -> tuple[torch.Tensor, torch.Tensor, str]:
    from .data import DatasetError, load_cifar10

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
               batch_size: int) -> float:
    from .data import Cifar10

    splits = prepare_splits(Cifar10(x, y, x[:10], y[:10], {}), device)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    step = make_train_step(model, make_optimizer(model, RECIPE, device))
    batches = TrainBatches(splits.train_x, splits.train_y, batch_size, augment=True, seed=0)
    for _ in range(WARMUP_ITERS):
        step(*batches.next())
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        loss, _ = step(*batches.next())
    loss.item()  # the one host synchronisation
    return iters * batch_size / (time.perf_counter() - t)


def bench_textbook(model_name: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, iters: int,
                   batch_size: int, workers: int) -> float:
    import torchvision.transforms as T

    mean = (x[:10_000].float() / 255).mean(dim=(0, 2, 3)).tolist()
    std = (x[:10_000].float() / 255).std(dim=(0, 2, 3)).tolist()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(TextbookCifar(x, y, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), **RECIPE)
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
              batch_size: int = 128, workers: int | None = None, data: str | None = None) -> list[dict[str, Any]]:
    dev = pick_device(device)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    x, y, source = _images(data)
    print(f"bench: {iters} timed iterations (after {WARMUP_ITERS} warm-up), batch {batch_size}, fp32, "
          f"device {device_name(dev)}, textbook DataLoader workers {workers}; images: {source}")
    rows = []
    print(f"| {'model':<10} | {'device':<28} | {'ours img/s':>10} | {'textbook img/s':>14} | {'ratio':>6} |")
    print(f"|{'-' * 12}|{'-' * 30}|{'-' * 12}|{'-' * 16}|{'-' * 8}|")
    for name in models:
        ours = bench_ours(name, x, y, dev, iters, batch_size)
        textbook = bench_textbook(name, x, y, dev, iters, batch_size, workers)
        row = {"model": name, "device": device_name(dev), "ours_images_per_s": round(ours, 1),
               "textbook_images_per_s": round(textbook, 1), "ratio": round(ours / textbook, 2)}
        rows.append(row)
        print(f"| {name:<10} | {row['device'][:28]:<28} | {ours:>10.0f} | {textbook:>14.0f} | {row['ratio']:>6.2f} |",
              flush=True)
    out_path = Path(out) if out else Path("benchmarks/results") / f"bench-{dev.type}.json"
    from .fileio import atomic_write_json
    from .train import git_commit

    atomic_write_json(out_path, {"iters": iters, "batch_size": batch_size, "workers": workers, "images": source,
                                 "torch": torch.__version__, "git_commit": git_commit(),
                                 "date": time.strftime("%Y-%m-%d %H:%M"), "results": rows})
    print(f"wrote {out_path}")
    return rows
