"""The ``run`` command, in four phases that read top to bottom:

    select   experiment files -> validated RunSpecs (every file checked before anything else)
    plan     one planning pass -> one Invocation: rung, runs, estimates, what is left out
             (planning/planner.py; reads the results folder, writes nothing)
    execute  the plan's jobs on an executor: local, pool or Ray (executors.py)
    summary  one line per run, read back from its folder

The runner measures what the estimate needs (``training/timing.py``) and hands the numbers
to the planner; it never calls back into planning once the plan is made.

Results: ``<results>/<experiment>/<run name>-s<seed>-<identity>/`` (rundir.RunDir).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ... import stopping
from ...data.cifar10 import DatasetError, cifar10_provenance, load_cifar10
from ...fileio import EXIT_NO_SPACE, atomic_write_json, free_bytes, human_bytes, human_duration
from ...models import model_info
from ..device import DEFAULT_RUNS_PER_GPU, cpu_native_bf16, default_profile, pick_device, sharing_speedup
from ..planning.budget import Rung, choose_precision, describe, describe_precision, read_record, write_record
from ..planning.estimate import Estimator, Sharing, StepCost
from ..planning.experiments import Precision, RunSpec, explain_only, select_runs
from ..planning.plan import Action, Plan
from ..planning.planner import Invocation, Request, Selection, choose, plan_invocation, select
from ..rundir import LEFT_OUT_FILE, RETRAIN_HINT, SELECTED_FILE, read_run_record, run_label
from ..training.modelcheck import check_plugin_families
from ..training.step import arithmetic, step_mode
from ..training.timing import kept_step_cost, time_step_cost
from .executors import DriverStop, Executor, LocalExecutor, PoolExecutor, cpu_slots, gpu_slots
from .progress import JobProgress, Verdict
from .worker import NO_SPACE, Outcome, WorkerContext

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


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


# --------------------------------------------------------------------------- run
@dataclass(frozen=True)
class ExecutorChoice:
    """How to execute: ``local`` (sequential), ``pool`` (``workers`` or ``gpus``), ``ray``, or
    ``auto``: on CUDA a pool over every GPU with ``runs_per_gpu`` runs on each (default
    ``device.DEFAULT_RUNS_PER_GPU``: one run leaves a GPU mostly idle), elsewhere local."""

    kind: str = "auto"
    workers: int = 1
    gpus: str | None = None
    runs_per_gpu: int | None = None  # None: DEFAULT_RUNS_PER_GPU (pool and Ray on GPUs)
    ray_address: str | None = None
    ray_storage: str = "auto"   # ray: "shared", "driver" (files back through Ray) or "auto" (ray_storage.py)
    cpus_per_run: float = 1
    threads: int | None = None  # torch threads per run; None: the CPUs split between the slots

    def resolved(self, device: torch.device) -> "ExecutorChoice":
        """``auto`` and the default runs per GPU made concrete for this device."""
        kind = self.kind
        if kind == "auto":
            kind = "pool" if (device.type == "cuda" or self.gpus or self.workers > 1) else "local"
        per_gpu = self.runs_per_gpu or DEFAULT_RUNS_PER_GPU
        return ExecutorChoice(kind, self.workers, self.gpus, per_gpu, self.ray_address, self.ray_storage,
                              self.cpus_per_run, self.threads)

    def build(self, device: torch.device) -> tuple[Executor, int]:
        """The executor and its number of concurrent slots (call on a ``resolved`` choice)."""
        per_gpu = self.runs_per_gpu or 1
        if self.kind == "ray":
            from .ray_executor import RayExecutor

            return RayExecutor(self.ray_address, per_gpu, self.cpus_per_run, self.threads,
                               storage=self.ray_storage), 0
        if self.kind == "pool" or self.gpus or self.workers > 1:
            if self.gpus:
                slots = gpu_slots(self.gpus, per_gpu, self.threads)
            elif device.type == "cuda":
                slots = gpu_slots("all", per_gpu, self.threads)
            else:
                slots = cpu_slots(self.workers, self.threads)
            return PoolExecutor(slots), len(slots)
        return LocalExecutor(self.threads), 1

    def sharing(self, device: torch.device, slots: int) -> Sharing:
        """The slots as the estimate sees them: on CUDA ``runs_per_gpu`` on each GPU, slowing
        each other as measured (``device.sharing_speedup``); on a CPU each slot on its own, at
        the speed its model was timed at with all the cores (the plan says "if they scale")."""
        per_gpu = self.runs_per_gpu or 1
        if device.type == "cuda" and slots > 1:
            return Sharing(max(1, slots // per_gpu), per_gpu, sharing_speedup)
        return Sharing(devices=slots)  # Ray's 0: its slots are counted once it runs (no whole-job figure)


def run_experiments(files: list[str], profile: str | None = None, only: list[str] | None = None,
                    data: str | None = None, results: str = "results", device: str = "auto",
                    include_opt_in: bool = False, dry_run: bool = False, progress: bool = True,
                    data_dir: str | Path = "data", executor: ExecutorChoice = ExecutorChoice(),
                    estimate: bool = True, left_out: list[str] | None = None, left_out_hint: str = "",
                    retrain_damaged: bool = False, budget: float | None = None,
                    known_to_show: Callable[[Rung, str], str] | None = None, precision: Precision | None = None,
                    bf16_verdict: Callable[[], tuple[bool, str]] | None = None,
                    verdict: Verdict | None = None, needs_reference: bool = False,
                    coverage: Callable[[str, str, tuple[str, ...], str], tuple[bool, str]] | None = None) -> int:
    """The `run` command. Returns the exit code: 0 when every run finished or diverged,
    1 when one failed, 130 when interrupted.

    ``left_out``: experiment files this invocation leaves out on purpose (run_all.sh's CPU
    default); the plan says what they are, what they would cost here, and ``left_out_hint``
    (the flag that runs them). ``budget`` (seconds): the longest rung of the ladder whose
    estimate fits chooses the profile (budget.py); an explicit ``profile`` wins over it.
    ``known_to_show``: what a rung's committed reference showed, in words (the command line
    hands in ``reporting.claims.known_to_show``; the plan prints it beside the rung).
    ``precision``: ``--precision``, over the profiles'; without it a budget on a CPU with
    native bf16 trains in bf16 when ``bf16_verdict`` (the references' verdict, handed in by the
    command line as ``reporting.reference.bf16_verdict``) says it gives fp32's answer
    (``budget.choose_precision``). ``verdict``: a finished run against its committed reference,
    in words (``reporting.reference.verdict_of_run``), for the line each finished run prints
    and ``<results>/progress.jsonl`` (``progress.JobProgress``). ``needs_reference``: a budget
    picks among the rungs whose committed reference covers the selected runs, by ``coverage``
    (the command line hands in ``reporting.reference.coverage``), which also gives the plan's
    REFERENCE line."""
    dev = pick_device(device)
    budget_s = None if profile else budget
    prec = choose_precision(precision, dev.type, dev.type == "cpu" and cpu_native_bf16(), bool(budget_s),
                            bf16_verdict)
    request = Request(tuple(files), tuple(only) if only else None, include_opt_in, profile, budget_s,
                      tuple(left_out or ()), retrain_damaged, prec.precision, needs_reference)
    selection = select(request, default_profile(dev))  # every file and row checked first
    check_user_models(selection)  # a plug-in's model through every part the suite calls, before data loads

    stopping.pause_for_test("data")
    prov = load_data(data, data_dir, results, dry_run)
    results_dir = Path(results).resolve()  # absolute: workers elsewhere get the same paths
    executor = executor.resolved(dev)
    runner, slots = executor.build(dev)
    position = [0, 0]  # (k, n) of the model the estimate asks for: said only when it is timed, not kept

    def timed_here(model: str, batch: int, device: torch.device, precision: str) -> StepCost:
        k, n = position
        print(f"timing {n} model{'s' if n > 1 else ''} for the estimate: {k}/{n} ({model})", flush=True)
        return time_step_cost(model, batch, device, precision)

    estimator = Estimator(lambda model, batch, precision: kept_step_cost(model, batch, dev, precision, measure=timed_here),
                          prov["n_test"], progress=lambda k, n, model: position.__setitem__(slice(None), [k, n]))
    stopping.pause_for_test("plan")  # before the models are timed for the estimate
    precision = prec.precision or "fp32"

    def covered(rung: Rung) -> tuple[bool, str]:  # the rung's reference against the selected rows
        names = tuple(dict.fromkeys(s.name for s in selection.by_profile.get(rung.profile, [])))
        return coverage(rung.profile, precision, names, prov["sha256"]) if coverage else (False, "not looked up")

    inv = plan_invocation(selection, results_dir, prov, estimator if (estimate or request.budget_s) else None,
                          executor.sharing(dev, slots), read_record(results_dir), lambda rung: covered(rung)[0])
    plan = inv.plan
    if inv.choice is not None:
        print("\n" + "\n".join(describe(inv.choice, request.budget_s,
                                           known_to_show(inv.choice.rung, precision) if known_to_show else None)))
        if coverage is not None:  # which reference the runs will be compared with, or what it lacks
            print(f"REFERENCE {covered(inv.choice.rung)[1]}")
        if not dry_run:
            write_record(results_dir, request.budget_s, selection.rows, inv.choice.rung)
    alternative = None
    if inv.choice is not None and prec.alternative is not None:  # the other precision's rung, for the plan
        other = select(dataclasses.replace(request, precision=prec.alternative), default_profile(dev))
        alternative = choose(other, results_dir, prov["sha256"], estimator, executor.sharing(dev, slots), None)
    if lines := describe_precision(prec, alternative):
        print(("" if inv.choice is not None else "\n") + "\n".join(lines))
    print_plan(inv, dev, executor)
    if inv.left_out is not None:
        print_left_out(inv, left_out_hint)
    # so the reports can tell runs left out on purpose (another file, or rows --only did not
    # select) from runs really missing
    left = [p.spec for p in inv.left_out.runs] if inv.left_out is not None else []
    if request.only:  # every run of the files that --only did not plan (its baselines are planned: they train now)
        planned = {s.label for s in selection.by_profile[inv.profile]}
        left += [s for s in select_runs(list(files), inv.profile, None, include_opt_in, request.precision)
                 if s.label not in planned]
    if left and not dry_run:
        record_left_out(results_dir, left, left_out_hint or "the same command without --only")
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
            record_selected(results_dir, [p.spec for p in plan.runs])
            for p in plan.damaged:  # only RETRAIN reaches here with a job; DAMAGED is left as it is
                if p.action == Action.RETRAIN:
                    print(f"[plan] {p.run.key}: damaged ({p.problems}); moved to {p.run.move_aside()}, "
                          "training it again")
            for p in plan.reuses:  # the cheap side effects first: identical finished runs are copied
                p.run.copy_from(p.source, p.spec.config())
                where = p.source.key if p.source.results.resolve() == plan.results.resolve() else p.source.shown
                print(f"[plan] {p.run.key}: identical to the finished {where}, copied instead of trained again")
            ctx = WorkerContext(data=str(Path(data).resolve()) if data else None,
                                data_dir=str(Path(data_dir).resolve()), dataset_sha256=prov["sha256"],
                                device=dev.type, stop_file=str(stop.path), progress=progress)
            job = JobProgress(plan.jobs, results_dir, inv.eta, bar=progress and slots != 1, verdict=verdict)
            try:
                outcomes = runner.execute(plan.jobs, ctx, stop, job) if plan.jobs and not stop.act() else []
            finally:
                job.closed("stopped" if stop.requested or stop.signalled else "ended")
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


def check_user_models(selection: Selection) -> None:
    """The selected runs' plug-in families, each put through the step, the optimiser's groups
    and the analyses on random images (training/modelcheck.py): a model that cannot train
    stops the invocation here (PluginError), before the data loads; an analysis it cannot
    give is named, and its runs train without it."""
    specs = [s for runs in selection.by_profile.values() for s in runs if s.plugins]
    if not specs:
        return
    for line in check_plugin_families(specs[0].recipe, {p.origin for s in specs for p in s.plugins}):
        print(f"[plug-in] {line}")


def load_data(data: str | None, data_dir: str | Path, results: str, dry_run: bool) -> dict[str, Any]:
    """Load (and on first use decode and cache) the dataset; print and return its provenance.
    A dry run writes nothing in the data folder and decodes only a source new to this machine."""
    try:
        prov = cifar10_provenance(data, data_dir) if dry_run else load_cifar10(data, data_dir=data_dir).provenance
    except DatasetError as e:
        raise DatasetError(f"{e}\nNothing was trained; results already in {results}/ are untouched.") from None
    print(f"[data] {prov['name']}: {prov['n_train']:,} train / {prov['n_test']:,} test images, "
          f"sha256 {prov['sha256'][:16]}..., from {prov['path']}")
    if prov.get("warning"):
        print(f"[data] WARNING: {prov['warning']}")
    return prov


def record_left_out(results: Path, left: list[RunSpec], hint: str) -> None:
    """``<results>/.left-out.json``: the runs this invocation left out on purpose (run_all.sh's
    CPU default, the rows ``--only`` did not select), as the reports name missing runs, and
    what adds them."""
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / LEFT_OUT_FILE, {
        "runs": sorted({run_label(s.experiment, s.name, s.seed) for s in left}), "hint": hint})


def record_selected(results: Path, specs: list[RunSpec]) -> None:
    """Add the runs this invocation selected to ``<results>/.selected.json`` (a union over every
    invocation that wrote here): the reports list a run as missing only if one selected it.
    Written once the folder is known writable; an unreadable record is started anew."""
    before, _ = read_run_record(results, SELECTED_FILE)
    runs = sorted(before | {run_label(s.experiment, s.name, s.seed) for s in specs})
    atomic_write_json(results / SELECTED_FILE, {"runs": runs})


def space_needed(plan: Plan) -> int:
    """Bytes the plan's jobs write, roughly: every run's final weights (fp32) and, at its
    peak, one run's checkpoint (weights and momentum) twice over (the atomic write's
    temporary copy beside the old file)."""
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


def print_plan(inv: Invocation, device: torch.device, executor: ExecutorChoice) -> None:
    plan, slots = inv.plan, inv.slots
    by_run = {j.run: s for j, s in inv.eta.items()}
    print(f"\nPlan: profile {inv.profile}, device {device}, executor {executor.kind}"
          f"{f' ({slots} at a time)' if slots > 1 else ''}, results in {plan.results}/")
    if inv.request.only:
        for line in explain_only(list(inv.request.only), [p.spec for p in plan.runs]):
            print(f"  {line}")
    for p in plan.runs:
        what = p.action.value
        if p.source is not None:  # another folder of these results, or a committed reference's run
            what += f" {p.source.key}" if p.source.results.resolve() == plan.results.resolve() else f" from {p.source.shown}"
        elif p.done_iterations:
            what += f" at {p.done_iterations}"
        extra = f"~{human_duration(by_run[p.run])}" if p.run in by_run else ""
        print(f"  {p.spec.experiment + '/' + p.spec.name:<32} seed {p.spec.seed:<3} "
              f"{p.spec.recipe.iterations:>6} it  {what:<36} {extra}")
    for p in plan.damaged:
        fix = "moved aside and trained again" if p.action == Action.RETRAIN else RETRAIN_HINT
        print(f"  DAMAGED {p.run.path}: {p.problems}. Fix: {fix}")
    order = " (the longest started first)" if slots != 1 and len(plan.jobs) > 1 else ""
    print(f"  {len(plan.jobs)} to train{order}, {plan.count(Action.REUSE, Action.SAME_AS)} reused from an identical run, "
          f"{plan.count(Action.FINISHED, Action.DIVERGED)} already done"
          + (f", {plan.count(Action.DAMAGED)} damaged (not trained)" if plan.count(Action.DAMAGED) else ""))
    for mode in dict.fromkeys(step_mode(j.spec.recipe, device) for j in plan.jobs):
        print(f"  step: {mode}")
    for math in dict.fromkeys(arithmetic(j.spec.recipe, device) for j in plan.jobs):
        print(f"  arithmetic: {math}")
    if device.type == "cpu" and (busy := busy_cpus()) >= 1:
        print(f"  NOTE: {busy:.1f} of this machine's {os.cpu_count()} CPUs are busy with other work. "
              "Training threads then wait for cores and can run several times slower (resnet110 at batch 32 "
              "on 2 cores: 0.31 s a step alone, 1.62 s beside two busy processes with 2 threads, 0.84 s with "
              "1). On a shared machine try --threads 1; results depend on the thread count, so keep it fixed.")
    if inv.eta:
        if slots > 1:
            per = inv.sharing.per_device
            how = (f"{per} runs sharing a GPU give {inv.sharing.speedup(per):.2f}x one run's throughput, as "
                   "measured (device.py)" if device.type == "cuda" else "if they scale")
            wall = f"; the whole job about {human_duration(inv.job_s or 0)} with {slots} at a time ({how})"
        else:
            wall = ""
        print(f"  ESTIMATED TIME: {human_duration(inv.total_s)} of training on {device}{wall} "
              f"(each model timed here for a few steps)\n")


def print_left_out(inv: Invocation, hint: str) -> None:
    """What this default leaves out here, what it would cost, and how to run it anyway."""
    plan = inv.left_out
    files = ", ".join(f"{e} ({n} runs)" for e, n in
                      sorted({p.spec.experiment: sum(q.spec.experiment == p.spec.experiment for q in plan.runs)
                              for p in plan.runs}.items()))
    cost = f"; they would take about {human_duration(inv.left_out_s)} here" if inv.left_out_s is not None else ""
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
              f"{human_duration(meta.get('wall_time_s') or 0):>9}")
    # meta's wall_time_s counts the optimizer steps alone, over all attempts: on a CPU the
    # evaluations, layer signals, checkpoints and responses add 37-42 % on the quick rung (a
    # fresh-clone ./run_all.sh, 2026-12-02: started-to-finished over wall_time_s)
    print("  steps: time in training steps, all attempts; evaluations, layer signals and checkpoints come on top")
    if locked:
        print(f"  locked: {len(locked)} run(s) being trained by another process right now")
