"""The ``run`` command, in four phases that read top to bottom:

    select   experiment files -> validated RunSpecs (every file checked before anything else)
    plan     RunSpecs + results folder -> Plan (pure: reads, writes nothing; plan.py)
    execute  the plan's jobs on an executor: local, pool or Ray (executors.py)
    summary  one line per run, read back from its folder

Results: ``<results>/<experiment>/<run name>-s<seed>-<identity>/`` (rundir.RunDir).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ... import stopping
from ...data.cifar10 import DatasetError, load_cifar10
from ...data.loader import eval_batch_size, evaluate
from ...fileio import EXIT_NO_SPACE, atomic_write_json, free_bytes, human_bytes
from .executors import DriverStop, Executor, LocalExecutor, PoolExecutor, cpu_slots, gpu_slots
from ..planning.experiments import RunSpec, check_against_data, select_runs
from ...models import build_model
from ..planning.plan import Action, Job, Plan, make_plan
from ..rundir import LEFT_OUT_FILE, RETRAIN_HINT
from ..training.signals import probe_size_for, signal_points
from ..training.train import make_optimizer, make_train_step
from .worker import NO_SPACE, Outcome, WorkerContext
from ..planning.budget import Choice, describe, keep_choice, load_ladder, read_record, write_record
from ..device import default_profile, pick_device

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


# --------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class StepCost:
    """One model's costs here, measured: seconds per training step of a batch, and per test
    image evaluated (``evaluate``'s batches, eval mode, no gradients)."""

    step_s: float
    eval_image_s: float


def seconds_per_call(call: Any, budget_s: float) -> float:
    """Mean seconds of ``call()`` (which must wait for the device) after one warm-up call,
    over at least two calls or ``budget_s``."""
    call()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < budget_s:
        call()
        n += 1
    return (time.perf_counter() - t0) / n


def time_per_step(model_name: str, batch_size: int, device: torch.device, budget_s: float = 1.5) -> float:
    """Seconds per training step of one model here, measured on random images after one
    warm-up step, for at least two steps or ``budget_s``."""
    from ..planning.experiments import load_profiles

    model = build_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    step = make_train_step(model, make_optimizer(model, load_profiles()["paper"], device))
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    return seconds_per_call(lambda: step(x, y)[0].item(), budget_s)


def time_per_eval_image(model_name: str, device: torch.device, budget_s: float = 0.5) -> float:
    """Seconds per test image evaluated by one model here: ``evaluate`` over one of its
    batches of random images, after one warm-up batch, at least twice or for ``budget_s``.
    Measured, not assumed: on a CPU it ranged from a quarter of a training image's time to more
    than a whole one with the batch size and the cache (benchmarks/eval_batch.py)."""
    model = build_model(model_name).to(device).to(memory_format=torch.channels_last)
    n_images = eval_batch_size(device)
    x = torch.randn(n_images, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (n_images,), device=device)
    return seconds_per_call(lambda: evaluate(model, x, y)[1].item(), budget_s) / n_images


def time_step_cost(model_name: str, batch_size: int, device: torch.device) -> StepCost:
    return StepCost(time_per_step(model_name, batch_size, device), time_per_eval_image(model_name, device))


class Estimator:
    """Time of runs here: each distinct model's training step and evaluation are timed
    (``time_step_cost``); a layer-signals measurement (a forward and a backward pass of the
    probe batch) costs as much as training on it. ``scaled`` estimates models not timed from
    the timed ones' seconds per FLOP."""

    def __init__(self, device: torch.device, n_test: int) -> None:
        self.device, self.n_test = device, n_test
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
                self.costs[key] = time_step_cost(*key, self.device)
            out[job] = self._run_seconds(job, self.costs[key])
        return out

    def scaled(self, jobs: list[Job]) -> float:
        """Total seconds, by FLOPs from the models timed so far (timing one more if none)."""
        from ...models import model_info

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


def busy_cpus(sample_s: float = 0.3) -> float:
    """CPUs busy with other work right now: /proc/stat over ``sample_s`` while this process
    waits (a load average would still count work that ended a minute ago); 0 where unknown."""
    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        (t0, i0), _ = times(), time.sleep(sample_s)
        t1, i1 = times()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


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
    ray_storage: str = "auto"   # ray: "shared", "driver" (files back through Ray) or "auto" (ray_storage.py)
    cpus_per_run: float = 1
    threads: int | None = None  # torch threads per run; None: the CPUs split between the slots

    def build(self, device: torch.device, progress: bool) -> tuple[Executor, int]:
        """The executor and its number of concurrent slots."""
        if self.kind == "ray":
            from .ray_executor import RayExecutor

            return RayExecutor(self.ray_address, self.runs_per_gpu, self.cpus_per_run, self.threads, progress,
                               storage=self.ray_storage), 0
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
                    estimate: bool = True, left_out: list[str] | None = None, left_out_hint: str = "",
                    retrain_damaged: bool = False, budget: float | None = None) -> int:
    """The `run` command. Returns the exit code: 0 when every run finished or diverged,
    1 when one failed, 130 when interrupted.

    ``left_out``: experiment files this invocation leaves out on purpose (run_all.sh's CPU
    default); the plan says what they are, what they would cost here, and ``left_out_hint``
    (the flag that runs them). ``budget`` (seconds): the longest rung of the ladder whose
    estimate fits chooses the profile (budget.py); an explicit ``profile`` wins over it."""
    dev = pick_device(device)
    budget = None if profile else budget
    profile = profile or (load_ladder()[0].profile if budget else default_profile(dev))
    specs = select_runs(files, profile, only, include_opt_in)

    stopping.pause_for_test("data")
    prov = load_data(data, data_dir, results, dry_run)
    check_against_data(specs, prov["n_train"], prov["n_test"])

    results_dir = Path(results).resolve()  # absolute: workers elsewhere get the same paths
    runner, slots = executor.build(dev, progress)
    estimator = Estimator(dev, prov["n_test"])
    if budget:
        choice = pick_rung(files, only, include_opt_in, budget, results_dir, prov["sha256"], estimator, slots,
                           dry_run)
        profile = choice.rung.profile
        specs = select_runs(files, profile, only, include_opt_in)
    plan = make_plan(specs, results_dir, prov["sha256"], retrain_damaged)
    stopping.pause_for_test("plan")  # before the models are timed for the estimate
    eta = estimator.timed(plan.jobs) if (estimate and plan.jobs) else {}
    print_plan(plan, eta, profile, dev, executor, slots)
    if left_out:
        left = plan_left_out(specs, select_runs(left_out, profile, None, include_opt_in), results_dir,
                             prov["sha256"])
        print_left_out(left, estimator if estimate else None, left_out_hint)
        if not dry_run:  # so the reports can tell runs left out on purpose from runs really missing
            record_left_out(results_dir, left, left_out_hint)
    if dry_run:
        warn_if_short_of_space(plan, results_dir)
        return 0

    # From here on Ctrl-C only sets a flag, acted on at safe points (before execution, between
    # local runs, in the pool's and Ray's loops): see DriverStop.catching_sigint.
    stop = DriverStop(results_dir)

    def at_once() -> None:  # the second Ctrl-C
        raise KeyboardInterrupt

    with stop.catching_sigint(at_once):
        try:
            warn_if_short_of_space(plan, results_dir)
            check_writable(results_dir)
            for p in plan.damaged:  # only RETRAIN reaches here with a job; DAMAGED is left as it is
                if p.action == Action.RETRAIN:
                    print(f"[plan] {p.run.key}: damaged ({p.problems}); moved to {p.run.move_aside()}, "
                          "training it again")
            for p in plan.reuses:  # the cheap side effects first: identical finished runs are copied
                p.run.copy_from(p.source, p.spec.config())
                print(f"[plan] {p.run.key}: identical to the finished {p.source.key}, copied instead of trained again")
            ctx = WorkerContext(data=str(Path(data).resolve()) if data else None,
                                data_dir=str(Path(data_dir).resolve()), dataset_sha256=prov["sha256"],
                                device=dev.type, stop_file=str(stop.path), progress=progress)
            outcomes = runner.execute(plan.jobs, ctx, stop) if plan.jobs and not stop.act() else []
            stop.act()
        finally:
            stop.clear()
    print_summary(plan, outcomes)
    if full := [o for o in outcomes if o.status == NO_SPACE]:
        print(f"\n{full[0].error}", file=sys.stderr)
        return EXIT_NO_SPACE
    if stop.requested:
        print("\ninterrupted: finished runs are kept; interrupted runs resume from their checkpoint "
              "on the next invocation")
        return stopping.exit_status(EXIT_INTERRUPTED)
    if plan.count(Action.DAMAGED):
        print(f"\n{plan.count(Action.DAMAGED)} damaged run(s) were left as they are: {RETRAIN_HINT}")
        return EXIT_FAILED
    return EXIT_FAILED if any(o.status == "failed" for o in outcomes) else 0


def pick_rung(files: list[str], only: list[str] | None, include_opt_in: bool, budget: float, results: Path,
              dataset_sha256: str, estimator: Estimator, slots: int, dry_run: bool) -> Choice:
    """The budget's rung (budget.py): every rung planned and estimated for the selected rows
    (each model timed once: the estimate of a rung is what is left to train on it), then the
    rule that keeps a rerun on its rung; printed."""
    estimates, unfinished, rows = [], {}, None
    for rung in load_ladder():
        specs = select_runs(files, rung.profile, only, include_opt_in)
        rows = rows or sorted({f"{s.experiment}/{s.name}-s{s.seed}" for s in specs})  # the same on every rung
        plan = make_plan(specs, results, dataset_sha256)
        pending = [p for p in plan.runs if p.action in (Action.RESUME, Action.RETRY) and p.done_iterations]
        if pending:
            unfinished[rung.profile] = len(pending)
        # what is left to train on this rung (finished runs cost nothing), spread over the slots
        estimates.append((rung, sum(estimator.timed(plan.jobs).values()) / max(slots, 1)))
    choice = keep_choice(estimates, budget, unfinished, read_record(results), rows)
    print("\n" + "\n".join(describe(choice, budget)))
    if not dry_run:
        write_record(results, budget, rows, choice.rung)
    return choice


def load_data(data: str | None, data_dir: str | Path, results: str, dry_run: bool) -> dict[str, Any]:
    """Load (and on first use decode and cache) the dataset; print and return its provenance."""
    try:
        prov = load_cifar10(data, data_dir=data_dir, write=not dry_run).provenance
    except DatasetError as e:
        raise DatasetError(f"{e}\nNothing was trained; results already in {results}/ are untouched.") from None
    print(f"[data] {prov['name']}: {prov['n_train']:,} train / {prov['n_test']:,} test images, "
          f"sha256 {prov['sha256'][:16]}..., from {prov['path']}")
    if prov.get("warning"):
        print(f"[data] WARNING: {prov['warning']}")
    return prov


def plan_left_out(specs: list[RunSpec], left: list[RunSpec], results: Path, dataset_sha256: str) -> Plan:
    """The plan of the left-out runs as if they came after this invocation's: what this
    invocation trains, they reuse, and it is not counted twice."""
    both = make_plan(specs + left, results, dataset_sha256)
    mine = {id(s) for s in left}
    return Plan([p for p in both.runs if id(p.spec) in mine], results, dataset_sha256,
                [j for j in both.jobs if id(j.spec) in mine])


def record_left_out(results: Path, left: Plan, hint: str) -> None:
    """``<results>/.left-out.json``: the runs this invocation left out on purpose (run_all.sh's
    CPU default), as the reports name missing runs, and the flag that adds them."""
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / LEFT_OUT_FILE, {
        "runs": sorted({f"{p.spec.experiment}/{p.spec.name} (seed {p.spec.seed})" for p in left.runs}),
        "hint": hint})


def space_needed(plan: Plan) -> int:
    """Bytes the plan's jobs write, roughly: every run's final weights (fp32) and, at its
    peak, one run's checkpoint (weights and momentum) twice over (the atomic write's
    temporary copy beside the old file)."""
    from ...models import model_info

    per_model = {m: model_info(m)["params"] for m in {j.spec.model for j in plan.jobs}}  # each model once
    params = [per_model[j.spec.model] for j in plan.jobs]
    return sum(4 * n for n in params) + max((16 * n for n in params), default=0) + (1 << 20) * len(params)


def warn_if_short_of_space(plan: Plan, results: Path) -> None:
    if not plan.jobs:
        return
    need, free = space_needed(plan), free_bytes(results)
    if free is not None and free < need:
        print(f"  WARNING: {human_bytes(free)} free where the results go ({results}); the planned runs write "
              f"about {human_bytes(need)} (final weights and checkpoints). Free space first, or pass --results "
              "on a bigger disk. If the disk fills, everything stops cleanly and resumes later.\n")


class ResultsNotWritable(ValueError):
    """The results folder cannot be written: nothing is trained."""


def check_writable(results: Path) -> None:
    """Fail before training, naming the folder, rather than on the first checkpoint."""
    probe = results / ".locks" / f".write-probe-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as e:
        raise ResultsNotWritable(f"the results folder {results} cannot be written ({e.strerror or e}); nothing "
                                 "was trained. Fix its permissions or free space, or pass --results DIR") from None


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
    for p in plan.damaged:
        fix = "moved aside and trained again" if p.action == Action.RETRAIN else RETRAIN_HINT
        print(f"  DAMAGED {p.run.path}: {p.problems}. Fix: {fix}")
    total = sum(eta.values())
    print(f"  {len(plan.jobs)} to train, {plan.count(Action.REUSE, Action.SAME_AS)} reused from an identical run, "
          f"{plan.count(Action.FINISHED, Action.DIVERGED)} already done"
          + (f", {plan.count(Action.DAMAGED)} damaged (not trained)" if plan.count(Action.DAMAGED) else ""))
    if device.type == "cpu" and (busy := busy_cpus()) >= 1:
        print(f"  NOTE: {busy:.1f} of this machine's {os.cpu_count()} CPUs are busy with other work. "
              "Training threads then wait for cores and can run several times slower (resnet110 at batch 32 "
              "on 2 cores: 0.31 s a step alone, 1.62 s beside two busy processes with 2 threads, 0.84 s with "
              "1). On a shared machine try --threads 1; results depend on the thread count, so keep it fixed.")
    if eta:
        wall = f"; about {fmt_time(total / slots)} with {slots} at a time if they scale" if slots > 1 else ""
        print(f"  ESTIMATED TIME: {fmt_time(total)} of training on {device}{wall} "
              f"(each model timed here for a few steps)\n")


def print_left_out(plan: Plan, estimator: Estimator | None, hint: str) -> None:
    """What this default leaves out here, what it would cost, and how to run it anyway."""
    files = ", ".join(f"{e} ({n} runs)" for e, n in
                      sorted({p.spec.experiment: sum(q.spec.experiment == p.spec.experiment for q in plan.runs)
                              for p in plan.runs}.items()))
    cost = f"; they would take about {fmt_time(estimator.scaled(plan.jobs))} here" if estimator else ""
    todo = f"{len(plan.jobs)} to train, {len(plan.runs) - len(plan.jobs)} already done or reused"
    print(f"  LEFT OUT on this device: {files}: {todo}{cost} (scaled by FLOPs from the models timed above)."
          f"{' Run them anyway with ' + hint if hint else ''}\n")


def print_summary(plan: Plan, outcomes: list[Outcome]) -> None:
    """One line per planned run, read back from its folder (the folder is the truth)."""
    locked = {o.job.run for o in outcomes if o.status == "locked"}
    print("\nSummary")
    print(f"  {'run':<34} {'status':<12} {'iter':>6} {'train err %':>11} {'test err %':>10} {'steps':>9}")
    for p in plan.runs:
        meta: dict[str, Any] = p.run.read_meta() or {}
        status = "locked" if p.run in locked else meta.get("status", "not started")
        final = meta.get("final") or {}
        fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"  {p.spec.label:<34} {status:<12} {meta.get('iteration', '-')!s:>6} "
              f"{fmt(final.get('train_error')):>11} {fmt(final.get('test_error')):>10} "
              f"{fmt_time(meta.get('wall_time_s') or 0):>9}")
    # meta's wall_time_s counts the optimizer steps alone, over all attempts: on a CPU the
    # evaluations, layer signals, checkpoints and responses add 37-42 % on the quick rung (a
    # fresh-clone ./run_all.sh, 2026-12-02: started-to-finished over wall_time_s)
    print("  steps: time in training steps, all attempts; evaluations, layer signals and checkpoints come on top")
    if locked:
        print(f"  locked: {len(locked)} run(s) being trained by another process right now")
