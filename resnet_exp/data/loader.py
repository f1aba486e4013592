"""The dataset as tensors on the training device, augmented a whole batch at a time.

No DataLoader and no per-image Python on the hot path: one gather does the random crops
and flips of a batch. Every random number comes from one ``torch.Generator`` whose state
is checkpointed, so a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .cifar10 import Cifar10

PAD = 4  # the paper: "4 pixels are padded on each side"


@dataclass
class DeviceSplits:
    train_x: torch.Tensor  # float32, mean-subtracted, channels_last, on the device
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    mean: torch.Tensor     # the per-pixel training mean (3, 32, 32), in [0, 1] units


def per_class_indices(y: torch.Tensor, first: int | None = None, last: int | None = None) -> torch.Tensor:
    """Indices of the first ``first`` (or last ``last``) images of every class, in order.

    Never "the first N images": the mirror is sorted by class."""
    out = []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        out.append(idx[:first] if first is not None else idx[-last:] if last is not None else idx)
    return torch.sort(torch.cat(out)).values


def prepare_splits(data: Cifar10, device: torch.device, train_per_class: int | None = None,
                   test_per_class: int | None = None, val_split: int = 0) -> DeviceSplits:
    """Subset, hold out a validation split, subtract the per-pixel training mean and move
    everything to ``device``. Padding is added later with zeros, i.e. with the mean
    image in pixel space."""
    n_classes = int(data.train_y.max()) + 1
    train_idx = torch.arange(len(data.train_y))
    val_idx = None
    if val_split:
        if val_split % n_classes:
            raise ValueError(f"val_split {val_split} must be a multiple of {n_classes} (balanced per class)")
        val_idx = per_class_indices(data.train_y, last=val_split // n_classes)
        keep = torch.ones(len(data.train_y), dtype=torch.bool)
        keep[val_idx] = False
        train_idx = torch.nonzero(keep).flatten()
    if train_per_class:
        train_idx = train_idx[per_class_indices(data.train_y[train_idx], first=train_per_class)]
    test_idx = per_class_indices(data.test_y, first=test_per_class) if test_per_class else torch.arange(len(data.test_y))

    train = data.train_x[train_idx].float().div_(255)
    mean = train.mean(dim=0)

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return (x - mean).to(device).contiguous(memory_format=torch.channels_last)

    return DeviceSplits(
        train_x=to_device(train), train_y=data.train_y[train_idx].to(device),
        test_x=to_device(data.test_x[test_idx].float().div_(255)), test_y=data.test_y[test_idx].to(device),
        val_x=to_device(data.train_x[val_idx].float().div_(255)) if val_idx is not None else None,
        val_y=data.train_y[val_idx].to(device) if val_idx is not None else None,
        mean=mean)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Random ``pad``-pixel translation (zero padding, random crop back to HxW) and random
    horizontal flip, for a whole batch in one gather."""
    b, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    flip = torch.rand(b, 1, device=dev, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=dev)                     # (b, h)
    cols = dx + torch.arange(w, device=dev)                     # (b, w)
    cols = torch.where(flip, cols.flip(1), cols)                # a flip reverses the columns
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)                               # (b, c, h, w), channels_last memory


class TrainBatches:
    """An endless stream of shuffled (and augmented) training batches.

    Each epoch is a fresh permutation; the last partial batch is dropped, so every
    batch has the same shape."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, augment: bool, seed: int) -> None:
        if batch_size > len(y):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(y)} training images")
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.generator = torch.Generator(device=x.device)
        self.generator.manual_seed(seed)
        self.batches_per_epoch = len(y) // batch_size
        self.epoch, self.position = 0, 0
        self.perm = self._new_perm()

    def _new_perm(self) -> torch.Tensor:
        return torch.randperm(len(self.y), device=self.x.device, generator=self.generator)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self.perm = self._new_perm()
        idx = self.perm[self.position * self.batch_size:(self.position + 1) * self.batch_size]
        self.position += 1
        xb, yb = self.x[idx], self.y[idx]
        return (augment_batch(xb, self.generator) if self.augment else xb), yb

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch,
                "position": self.position, "perm": self.perm.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.perm = state["perm"].to(self.x.device)


def eval_batch_size(device: torch.device) -> int:
    """Test images per forward pass of ``evaluate``. A GPU wants large batches. On a CPU a
    batch of 1,000 spills its activations (a 16x32x32 float map is 64 KiB an image, 65 MB a
    layer at 1,000) out of the caches: an evaluated image cost 0.48 of a training image's time
    at 1,000 and 0.24-0.26 at 128, one thread (benchmarks/eval_batch.py). The batch changes
    only the order of the floating-point sums: eval mode uses BN's running statistics."""
    return 128 if device.type == "cpu" else 1000


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
             autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, error %) over the whole set, as device tensors (no host sync here), in
    batches of ``batch_size`` (default: ``eval_batch_size`` of the set's device)."""
    batch_size = batch_size or eval_batch_size(x.device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    wrong = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(xb)
        loss_sum += F.cross_entropy(out.float(), yb, reduction="sum")
        wrong += (out.argmax(1) != yb).sum()
    model.train(was_training)
    return loss_sum / len(y), wrong.float() * 100 / len(y)
