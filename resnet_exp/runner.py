"""The ``run`` command, in four phases that read top to bottom:

    select   experiment files -> validated RunSpecs (every file checked before anything else)
    plan     RunSpecs + results folder -> Plan (pure: reads, writes nothing; plan.py)
    execute  the plan's jobs on an executor: local, pool or Ray (executors.py)
    summary  one line per run, read back from its folder

Results: ``<results>/<experiment>/<run name>-s<seed>-<identity>/`` (rundir.RunDir).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import DatasetError, load_cifar10
from .executors import DriverStop, Executor, LocalExecutor, PoolExecutor, cpu_slots, gpu_slots
from .experiments import ExperimentError, RunSpec, load_experiment
from .models import build_model
from .plan import Action, Job, Plan, make_plan
from .rundir import RunDir
from .train import make_optimizer, make_train_step
from .worker import Outcome, WorkerContext

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    return torch.device(device)


def default_profile(device: torch.device) -> str:
    return "paper" if device.type == "cuda" else "quick"


# --------------------------------------------------------------------------- select
def select_runs(files: list[str], profile: str, only: list[str] | None = None,
                include_opt_in: bool = False) -> list[RunSpec]:
    """Every run of every file, validated, then narrowed by --only / opt-in."""
    specs: list[RunSpec] = []
    stems: dict[str, str] = {}
    for f in files:
        stem = Path(f).stem
        if stem in stems and Path(stems[stem]).resolve() != Path(f).resolve():
            raise ExperimentError(f"{f} and {stems[stem]}: two experiment files named {stem!r} would share "
                                  f"results/{stem}/; rename one")
        stems[stem] = f
        specs.extend(load_experiment(f, profile))
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise ExperimentError(f"--only {' '.join(sorted(unknown))}: no such row; rows are "
                                  f"{', '.join(dict.fromkeys(s.name for s in specs))}")
        return [s for s in specs if s.name in only]
    return [s for s in specs if include_opt_in or not s.opt_in]


# --------------------------------------------------------------------------- estimate
def time_per_step(model_name: str, batch_size: int, device: torch.device, budget_s: float = 1.5) -> float:
    """Seconds per training step of one model here, measured on random images after one
    warm-up step, for at least two steps or ``budget_s``."""
    from .experiments import load_profiles

    model = build_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    step = make_train_step(model, make_optimizer(model, load_profiles()["paper"], device))
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    step(x, y)
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < budget_s:
        loss, _ = step(x, y)
        loss.item()
        n += 1
    return (time.perf_counter() - t0) / n


def estimate_seconds(jobs: list[Job], device: torch.device, n_test: int) -> dict[Job, float]:
    """Training plus evaluation time of each job here, from each distinct model's
    measured step time (an evaluation image costs about a third of a training image)."""
    step_s: dict[tuple[str, int], float] = {}
    out = {}
    for job in jobs:
        r = job.spec.recipe
        key = (job.spec.model, r.batch_size)
        if key not in step_s:
            step_s[key] = time_per_step(*key, device)
        test_images = (r.test_per_class * 10) if r.test_per_class else n_test
        evals = job.remaining_iterations // r.eval_every + 1
        out[job] = step_s[key] * (job.remaining_iterations + evals * test_images / r.batch_size / 3)
    return out


def fmt_time(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


# --------------------------------------------------------------------------- run
@dataclass(frozen=True)
class ExecutorChoice:
    """How to execute: ``local`` (sequential), ``pool`` (``workers`` or ``gpus``), ``ray``."""

    kind: str = "local"
    workers: int = 1
    gpus: str | None = None
    runs_per_gpu: int = 1
    ray_address: str | None = None
    cpus_per_run: float = 1
    threads: int | None = None  # torch threads per run; None: the CPUs split between the slots

    def build(self, device: torch.device, progress: bool) -> tuple[Executor, int]:
        """The executor and its number of concurrent slots."""
        if self.kind == "ray":
            from .ray_executor import RayExecutor

            return RayExecutor(self.ray_address, self.runs_per_gpu, self.cpus_per_run, self.threads, progress), 0
        if self.kind == "pool" or self.gpus or self.workers > 1:
            if self.gpus:
                slots = gpu_slots(self.gpus, self.runs_per_gpu, self.threads)
            elif device.type == "cuda":
                slots = gpu_slots("all", self.runs_per_gpu, self.threads)
            else:
                slots = cpu_slots(self.workers, self.threads)
            return PoolExecutor(slots, progress), len(slots)
        return LocalExecutor(self.threads), 1


def run_experiments(files: list[str], profile: str | None = None, only: list[str] | None = None,
                    data: str | None = None, results: str = "results", device: str = "auto",
                    include_opt_in: bool = False, dry_run: bool = False, progress: bool = True,
                    data_dir: str | Path = "data", executor: ExecutorChoice = ExecutorChoice(),
                    estimate: bool = True) -> int:
    """The `run` command. Returns the exit code: 0 when every run finished or diverged,
    1 when one failed, 130 when interrupted."""
    dev = pick_device(device)
    profile = profile or default_profile(dev)
    specs = select_runs(files, profile, only, include_opt_in)

    try:
        dataset = load_cifar10(data, data_dir=data_dir, write=not dry_run)
    except DatasetError as e:
        raise DatasetError(f"{e}\nNothing was trained; results already in {results}/ are untouched.") from None
    prov = dataset.provenance
    print(f"[data] {prov['name']}: {prov['n_train']:,} train / {prov['n_test']:,} test images, "
          f"sha256 {prov['sha256'][:16]}..., from {prov['path']}")
    if prov.get("warning"):
        print(f"[data] WARNING: {prov['warning']}")

    results_dir = Path(results).resolve()  # absolute: workers elsewhere get the same paths
    plan = make_plan(specs, results_dir, prov["sha256"])
    runner, slots = executor.build(dev, progress)
    eta = estimate_seconds(plan.jobs, dev, prov["n_test"]) if (estimate and plan.jobs) else {}
    print_plan(plan, eta, profile, dev, executor, slots)
    if dry_run:
        return 0

    for p in plan.reuses:  # the cheap side effects first: identical finished runs are copied
        p.run.copy_from(p.source)
        print(f"[plan] {p.run.key}: identical to the finished {p.source.key}, copied instead of trained again")
    stop = DriverStop(results_dir)
    ctx = WorkerContext(data=str(Path(data).resolve()) if data else None, data_dir=str(Path(data_dir).resolve()),
                        dataset_sha256=prov["sha256"], device=dev.type, stop_file=str(stop.path), progress=progress)
    try:
        outcomes = runner.execute(plan.jobs, ctx, stop) if plan.jobs else []
    finally:
        stop.clear()
    print_summary(plan, outcomes)
    if stop.requested:
        print("\ninterrupted: finished runs are kept; interrupted runs resume from their checkpoint "
              "on the next invocation")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(o.status == "failed" for o in outcomes) else 0


def print_plan(plan: Plan, eta: dict[Job, float], profile: str, device: torch.device,
               executor: ExecutorChoice, slots: int) -> None:
    by_run = {j.run: eta[j] for j in eta}
    print(f"\nPlan: profile {profile}, device {device}, executor {executor.kind}"
          f"{f' ({slots} at a time)' if slots > 1 else ''}, results in {plan.results}/")
    for p in plan.runs:
        what = p.action.value
        if p.source is not None:
            what += f" {p.source.key}"
        elif p.done_iterations:
            what += f" at {p.done_iterations}"
        extra = f"~{fmt_time(by_run[p.run])}" if p.run in by_run else ""
        print(f"  {p.spec.experiment + '/' + p.spec.name:<32} seed {p.spec.seed:<3} "
              f"{p.spec.recipe.iterations:>6} it  {what:<36} {extra}")
    total = sum(eta.values())
    print(f"  {len(plan.jobs)} to train, {plan.count(Action.REUSE, Action.SAME_AS)} reused from an identical run, "
          f"{plan.count(Action.FINISHED, Action.DIVERGED)} already done")
    if eta:
        wall = f"; about {fmt_time(total / slots)} with {slots} at a time if they scale" if slots > 1 else ""
        print(f"  ESTIMATED TIME: {fmt_time(total)} of training on {device}{wall} "
              f"(each model timed here for a few steps)\n")


def print_summary(plan: Plan, outcomes: list[Outcome]) -> None:
    """One line per planned run, read back from its folder (the folder is the truth)."""
    locked = {o.job.run for o in outcomes if o.status == "locked"}
    print("\nSummary")
    print(f"  {'run':<34} {'status':<12} {'iter':>6} {'train err %':>11} {'test err %':>10} {'wall':>9}")
    for p in plan.runs:
        meta: dict[str, Any] = p.run.read_meta() or {}
        status = "locked" if p.run in locked else meta.get("status", "not started")
        final = meta.get("final") or {}
        fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"  {p.spec.label:<34} {status:<12} {meta.get('iteration', '-')!s:>6} "
              f"{fmt(final.get('train_error')):>11} {fmt(final.get('test_error')):>10} "
              f"{fmt_time(meta.get('wall_time_s') or 0):>9}")
    if locked:
        print(f"  locked: {len(locked)} run(s) being trained by another process right now")


def run_dir_of(spec: RunSpec, results: str | Path, dataset_sha256: str) -> RunDir:
    return RunDir.for_run(results, spec.experiment, spec.run_dir_name(dataset_sha256))
