"""How long the plan's runs take here, from measured costs (``training/timing.py`` measures
them; this module only does the arithmetic, so planning never imports the training loop).

A run's time: its remaining steps, its evaluations of the test (and validation) images, and
its layer-signal measurements (a forward and a backward pass of the probe batch, costed as
training on it). The whole job's time: the runs, longest first (the order multi-slot
executors take them in), each onto the slot that frees first; the runs sharing a device at a
given moment each advance at the device's measured speedup for that many over their number.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ...models import model_info
from ..rundir import probe_size_for, signal_points
from .plan import Job


@dataclass(frozen=True)
class StepCost:
    """One model's costs here, measured: seconds per training step of a batch, and per test
    image evaluated (``evaluate``'s batches, eval mode, no gradients)."""

    step_s: float
    eval_image_s: float


CostFn = Callable[[str, int, str], StepCost]  # (model, batch size, precision) -> its measured costs


class Estimator:
    """Time of runs here. ``cost`` measures a model once (``timed`` asks for each distinct
    (model, batch, precision) once); ``scaled`` estimates models not measured from the measured ones'
    seconds per FLOP."""

    def __init__(self, cost: CostFn, n_test: int, progress: Callable[[int, int, str], None] | None = None) -> None:
        self.cost, self.n_test = cost, n_test
        self.costs: dict[tuple[str, int, str], StepCost] = {}
        self.progress = progress  # (k, n, model) before the k-th of n models is timed: no silent minutes

    def _run_seconds(self, job: Job, cost: StepCost) -> float:
        r = job.spec.recipe
        test_images = (r.test_per_class * 10) if r.test_per_class else self.n_test
        evals = job.remaining_iterations // r.eval_every + 1
        # The signals: 21 measurements on the short rungs, about 10 % of a 1/128 run, 2.5 % of a
        # 1/32 one; left out, the estimate fell 14 % short at 1/128 (docs/ladder.md, "The CPU default").
        start = r.iterations - job.remaining_iterations
        signals = sum(p >= start for p in signal_points(r.iterations, r.eval_every))
        steps = job.remaining_iterations + signals * probe_size_for(r.batch_size) / r.batch_size
        return cost.step_s * steps + cost.eval_image_s * evals * (test_images + r.val_split)

    def timed(self, jobs: list[Job]) -> dict[Job, float]:
        todo = [k for k in dict.fromkeys(self._key(j) for j in jobs) if k not in self.costs]
        for i, key in enumerate(todo, start=1):
            if self.progress:
                self.progress(i, len(todo), key[0])
            self.costs[key] = self.cost(*key)
        return {job: self._run_seconds(job, self.costs[self._key(job)]) for job in jobs}

    @staticmethod
    def _key(job: Job) -> tuple[str, int, str]:
        return job.spec.model, job.spec.recipe.batch_size, job.spec.recipe.precision

    def scaled(self, jobs: list[Job]) -> float:
        """Total seconds, by FLOPs from the models timed so far (timing one more if none)."""
        if not jobs:
            return 0.0
        if not self.costs:
            self.timed(jobs[:1])
        flops = functools.lru_cache(maxsize=None)(lambda m: model_info(m)["flops"])

        def median(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        # seconds per (forward FLOP x image), the median over the models timed
        step_rate = median([c.step_s / (flops(m) * b) for (m, b, _), c in self.costs.items()])
        eval_rate = median([c.eval_image_s / flops(m) for (m, _, _), c in self.costs.items()])
        return sum(self._run_seconds(j, StepCost(step_rate * flops(j.spec.model) * j.spec.recipe.batch_size,
                                                 eval_rate * flops(j.spec.model))) for j in jobs)


def scales_perfectly(runs: int) -> float:
    """n runs at once, n times the throughput: what the estimate assumes where nothing was measured."""
    return float(runs)


@dataclass(frozen=True)
class Sharing:
    """How an executor's slots share devices: ``devices`` devices, ``per_device`` slots on each.
    ``speedup(n)``: n runs at once on one device give that many times one run's throughput, so
    each advances at speedup(n) / n of its speed alone (``device.sharing_speedup`` for a GPU).
    The default: one slot."""

    devices: int = 1
    per_device: int = 1
    speedup: Callable[[int], float] = scales_perfectly

    @property
    def slots(self) -> int:
        return self.devices * self.per_device


def longest_first(jobs: list[Job], eta: dict[Job, float] | None = None) -> list[Job]:
    """The order a multi-slot executor takes its jobs in: longest first, so that the longest run
    does not start last and run on alone (LPT scheduling). By the estimate where there is one,
    else by arithmetic: forward FLOPs x images left. Ties keep the plan's order."""
    def length(job: Job) -> float:
        if eta:
            return eta[job]
        return model_info(job.spec.model)["flops"] * job.remaining_iterations * job.spec.recipe.batch_size
    return sorted(jobs, key=length, reverse=True)


def job_seconds(run_seconds: list[float], sharing: Sharing = Sharing()) -> float:
    """Wall time of runs of these lengths (each alone on a device), started in this order, each
    onto the slot that frees first: the first runs go to the slots in turn, one device after
    another (``gpu_slots`` interleaves its slots so), and a run that ends frees its slot for the
    next. While n runs share a device each advances at ``speedup(n) / n`` of its own speed, so
    the last runs, left alone, go faster. One slot: the plain sum."""
    if sharing.slots <= 1:
        return float(sum(run_seconds))
    todo = deque(run_seconds)
    on = [[] for _ in range(sharing.devices)]  # each device's runs: seconds left, at their speed alone
    for _ in range(sharing.per_device):
        for runs in on:
            if todo:
                runs.append(todo.popleft())
    now, eps = 0.0, 1e-9 * max(run_seconds, default=0.0)
    while any(on):
        rates = [sharing.speedup(len(runs)) / len(runs) if runs else 0.0 for runs in on]
        dt = min(min(runs) / rate for runs, rate in zip(on, rates) if runs)  # until the next run ends
        now += dt
        for d, rate in enumerate(rates):
            left = [s - dt * rate for s in on[d]]
            on[d] = [s for s in left if s > eps]
            for _ in range(len(left) - len(on[d])):  # each run that ended frees its slot
                if todo:
                    on[d].append(todo.popleft())
    return now
