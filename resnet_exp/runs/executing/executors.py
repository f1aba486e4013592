"""Executors carry out a plan's jobs; each job is ``worker.run_job``, wherever it runs.

- ``LocalExecutor``: one run after another in this process, one progress bar per run.
- ``PoolExecutor``: K runs at a time on each listed GPU, or N at a time on the CPU,
  one worker process per slot taking the next job from a queue.
- ``ray_executor.RayExecutor``: each run a Ray task, on this machine or a cluster.

Written by hand, on purpose: the pool is ~60 lines of ``multiprocessing``, because
``concurrent.futures`` hides its processes and we need to pin each to a GPU
(CUDA_VISIBLE_DEVICES before CUDA starts) and to stop them at a checkpoint.

Threads: on the CPU a run's numbers depend on how many threads it uses (oneDNN splits
its reductions by thread), so ``--threads N`` fixes them for every executor: the same
row, seed and threads give the same log.csv, sequential, pooled or on Ray. Without it
each slot gets the machine's CPUs divided by the number of slots.

Stopping: the first Ctrl-C (or SIGTERM) makes the driver create the stop file every
worker polls; each checkpoints at its next iteration and returns "interrupted". A
second Ctrl-C ends the workers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from tqdm import tqdm

from ... import stopping
from ...fileio import human_duration
from ..planning.plan import Job
from ..rundir import RunStatus
from .progress import JobProgress
from .worker import NO_SPACE, Outcome, WorkerContext, run_job


class DriverStop:
    """The driver's stop request, as a file every worker (any process, any node that sees
    the results folder) polls. One per driver, so two drivers never stop each other."""

    def __init__(self, results: Path) -> None:
        self.path = Path(results) / ".stop" / uuid.uuid4().hex
        self.requested = False
        self.signalled = False  # set by a SIGINT handler (flags only: no I/O, no exception there)

    def act(self) -> bool:
        """At a safe point: carry out a Ctrl-C that a handler noted. Returns ``requested``."""
        if self.signalled and not self.requested:
            self.request()
        return self.requested

    def request(self, say: bool = True) -> None:
        if not self.requested:
            self.requested = True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            if say:
                print("\ninterrupt: every run checkpoints at its next iteration and stops "
                      "(Ctrl-C again to stop at once, losing the work since each run's last checkpoint)", flush=True)

    def stop_for_full_disk(self, kill: Callable[[], None]) -> None:
        """A worker found the disk full: every other worker stops at its next iteration. An
        empty stop file usually fits on a full disk; where it does not, ``kill`` stops the
        workers at once (they lose only the work since their last checkpoint)."""
        try:
            self.request(say=False)
        except OSError:
            self.requested = True
            kill()

    @contextlib.contextmanager
    def catching_sigint(self, second: Callable[[], None]) -> Iterator[None]:
        """While inside: Ctrl-C only sets ``signalled`` (no I/O, no exception: ``act`` carries
        it out at a safe point); the second calls ``second``. A KeyboardInterrupt raised at an
        arbitrary point can be swallowed by library code, or land inside a queue read halfway
        through a message. Main thread only (Python delivers signals there); nested uses
        restore each other."""
        def first(signum: int) -> None:
            self.signalled = True

        with stopping.handling(first, lambda signum: second()):
            yield

    def clear(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # the results folder itself is unusable: the error that says so is already on its way
            pass


class Executor(Protocol):
    def execute(self, jobs: list[Job], ctx: WorkerContext, stop: DriverStop,
                progress: JobProgress) -> list[Outcome]: ...


class LocalExecutor:
    """One run after another in this process, on one device: a progress bar per run, and the
    whole job's line before and after each (``progress.JobProgress``)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def execute(self, jobs: list[Job], ctx: WorkerContext, stop: DriverStop,
                progress: JobProgress) -> list[Outcome]:
        outcomes = []
        for i, job in enumerate(jobs):
            if i:
                stopping.pause_for_test("between-runs")
            if stop.act():  # Ctrl-C between two runs
                break
            where = {"executor": "local", "device": ctx.device}
            progress.started(i, where)
            outcome = run_job(job, dataclasses.replace(ctx, threads=self.threads), where)
            outcomes.append(outcome)
            progress.finished(i, outcome)
            if outcome.status == RunStatus.INTERRUPTED.value:  # Ctrl-C reached train_run
                stop.requested = True
                break
            if outcome.status == NO_SPACE:  # nothing else can be written either
                break
        return outcomes


@dataclass(frozen=True)
class Slot:
    name: str
    cuda_visible_devices: str | None  # None on the CPU
    threads: int


def cpu_slots(workers: int, threads: int | None = None) -> list[Slot]:
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    return [Slot(f"cpu{i}", None, threads) for i in range(workers)]


def gpu_slots(gpus: str, runs_per_gpu: int, threads: int | None = None) -> list[Slot]:
    """``gpus``: "all" or a list such as "0,1,3"."""
    if gpus == "all":
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
        if not ids:
            raise ValueError("--gpus all: no CUDA device is visible here; use --workers N on the CPU")
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or not all(g.isdigit() for g in ids):
            raise ValueError(f"--gpus {gpus!r}: expected 'all' or GPU indices such as 0,1,3")
    threads = threads or max(1, (os.cpu_count() or 1) // (len(ids) * runs_per_gpu))
    # one slot of each GPU in turn: the first (longest) runs spread over the GPUs, as the
    # estimate assumes (planning/estimate.job_seconds), instead of piling onto GPU 0
    return [Slot(f"gpu{g}.{k}", g, threads) for k in range(runs_per_gpu) for g in ids]


def _pool_worker(slot: Slot, ctx: WorkerContext, todo: Any, events: Any) -> None:
    # the driver decides; training handles its own (stopping.StopRequest): a terminal's Ctrl-C or
    # hang-up reaches the whole process group, and between runs must not kill a worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopping.survive_output()  # this process writes to the same closed pipe or vanished terminal
    if slot.cuda_visible_devices is not None:     # before anything starts CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
    ctx = dataclasses.replace(ctx, threads=slot.threads, progress=False)
    try:
        while (item := todo.get()) is not None:
            if ctx.stop_file and os.path.exists(ctx.stop_file):
                break
            index, job = item
            where = {"executor": "pool", "slot": slot.name, "host": os.uname().nodename, "pid": os.getpid()}
            events.put(("start", index, where))
            events.put(("end", index, run_job(job, ctx, where)))
    except KeyboardInterrupt:  # a second Ctrl-C: run_job marked the run interrupted
        pass


class PoolExecutor:
    """K runs at a time on each listed GPU (or N on the CPU), one process per slot."""

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots

    def execute(self, jobs: list[Job], ctx: WorkerContext, stop: DriverStop,
                progress: JobProgress) -> list[Outcome]:
        mp = multiprocessing.get_context("spawn")  # fresh interpreters: no forked CUDA or thread state
        todo, events = mp.Queue(), mp.Queue()
        procs: list[Any] = []
        asked = {"abort": False}

        def kill_now() -> None:  # the second Ctrl-C: stop at once
            asked["abort"] = True
            for p in procs:
                p.kill()

        def aborted() -> bool:
            """Called at safe points: carry out what Ctrl-C asked for."""
            stop.act()           # the first: every worker checkpoints at its next iteration
            return asked["abort"]

        outcomes: dict[int, Outcome] = {}
        started: dict[int, dict[str, Any]] = {}
        with stop.catching_sigint(kill_now):
            try:
                for item in enumerate(jobs):
                    todo.put(item)
                for _ in self.slots:
                    todo.put(None)
                for slot in self.slots:
                    aborted()
                    if stop.requested:  # stopped while the pool was being built: start no more workers
                        break
                    procs.append(mp.Process(target=_pool_worker, args=(slot, ctx, todo, events), daemon=True))
                    procs[-1].start()
                self._drain(events, jobs, progress, outcomes, started, procs, stop, aborted)
            finally:
                for p in procs:
                    p.join(timeout=5)
        if aborted():
            raise KeyboardInterrupt
        for i, where in started.items():  # a worker process that died mid-run (OOM, kill -9)
            if i not in outcomes:
                outcomes[i] = Outcome(jobs[i], RunStatus.FAILED.value, jobs[i].run.read_meta() or {}, where,
                                      error="its worker process died; the next invocation resumes it")
        return [outcomes.get(i, Outcome(job, "not started")) for i, job in enumerate(jobs)]

    @staticmethod
    def _drain(events: Any, jobs: list[Job], board: JobProgress, outcomes: dict[int, Outcome],
               started: dict[int, dict[str, Any]], procs: list[Any], stop: DriverStop,
               aborted: Callable[[], bool]) -> None:
        while len(outcomes) < len(jobs) and not aborted():
            try:
                kind, index, payload = events.get(timeout=0.5)
            except queue.Empty:
                board.poll()
                if not any(p.is_alive() for p in procs):
                    return
                continue
            if kind == "start":
                started[index] = payload
                board.started(index, payload)
            else:
                outcomes[index] = payload
                board.finished(index, payload)
                if payload.status == NO_SPACE:
                    stop.stop_for_full_disk(kill=lambda: [p.kill() for p in procs])
