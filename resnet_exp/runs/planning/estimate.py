"""How long the plan's runs take here, from measured costs (``training/timing.py`` measures
them; this module only does the arithmetic, so planning never imports the training loop).

A run's time: its remaining steps, its evaluations of the test (and validation) images, and
its layer-signal measurements (a forward and a backward pass of the probe batch, costed as
training on it). The whole job's time: the runs spread over the executor's slots, longest
first onto the slot that frees first, each slowed by what sharing a device costs.
"""

from __future__ import annotations

import functools
import heapq
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


CostFn = Callable[[str, int], StepCost]  # (model, batch size) -> its measured costs


class Estimator:
    """Time of runs here. ``cost`` measures a model once (``timed`` asks for each distinct
    (model, batch) once); ``scaled`` estimates models not measured from the measured ones'
    seconds per FLOP."""

    def __init__(self, cost: CostFn, n_test: int) -> None:
        self.cost, self.n_test = cost, n_test
        self.costs: dict[tuple[str, int], StepCost] = {}

    def _run_seconds(self, job: Job, cost: StepCost) -> float:
        r = job.spec.recipe
        test_images = (r.test_per_class * 10) if r.test_per_class else self.n_test
        evals = job.remaining_iterations // r.eval_every + 1
        # The signals: 21 measurements on the short rungs, about 10 % of a 1/128 run, 2.5 % of a
        # 1/32 one; left out, the estimate fell 14 % short at 1/128 (README, "The CPU default").
        start = r.iterations - job.remaining_iterations
        signals = sum(p >= start for p in signal_points(r.iterations, r.eval_every))
        steps = job.remaining_iterations + signals * probe_size_for(r.batch_size) / r.batch_size
        return cost.step_s * steps + cost.eval_image_s * evals * (test_images + r.val_split)

    def timed(self, jobs: list[Job]) -> dict[Job, float]:
        out = {}
        for job in jobs:
            key = (job.spec.model, job.spec.recipe.batch_size)
            if key not in self.costs:
                self.costs[key] = self.cost(*key)
            out[job] = self._run_seconds(job, self.costs[key])
        return out

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
        step_rate = median([c.step_s / (flops(m) * b) for (m, b), c in self.costs.items()])
        eval_rate = median([c.eval_image_s / flops(m) for (m, _), c in self.costs.items()])
        return sum(self._run_seconds(j, StepCost(step_rate * flops(j.spec.model) * j.spec.recipe.batch_size,
                                                 eval_rate * flops(j.spec.model))) for j in jobs)


def job_seconds(run_seconds: list[float], slots: int, slowdown: float = 1.0) -> float:
    """Wall time of runs of these lengths (each alone) on ``slots`` slots at once: longest
    first, each onto the slot that frees first (LPT scheduling), every run ``slowdown`` times
    longer for sharing its device. One slot: the plain sum."""
    if slots <= 1:
        return sum(run_seconds)
    free = [0.0] * slots
    for s in sorted(run_seconds, reverse=True):
        heapq.heapreplace(free, free[0] + s * slowdown)
    return max(free)
