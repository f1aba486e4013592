"""What a worker does with one job, whichever executor runs it (in the driver's process,
in a pool process, or in a Ray task on another machine):

    take the identity's lock (or report "locked": another process trains it)
    -> claim_folder: if the identity finished meanwhile (another driver), copy it
    -> train_job: load the data (the driver has cached it) and train or resume
    -> copy_finished: to the plan's other folders for the same identity

A Ray node that cannot see the driver's results folder does the same in two places: the
driver's side takes the lock, claims and copies; the node trains (ray_storage.py).
"""

from __future__ import annotations

import os
import platform
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from ...data.cifar10 import Cifar10, load_cifar10
from ...data.loader import DeviceSplits, prepare_splits
from ...fileio import is_no_space, no_space_message
from ...models.plugins import ensure_plugins
from ..planning.plan import Job, finished_by_identity
from ..rundir import RunStatus
from ..training.train import RunInterrupted, train_run


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides its job; small and picklable."""

    data: str | None
    data_dir: str
    dataset_sha256: str
    device: str = "cpu"            # "cpu" or "cuda" (the worker's first visible GPU)
    threads: int | None = None     # torch intra-op threads; None: torch's default
    stop_file: str | None = None   # the driver creates it to stop every worker
    progress: bool = False         # a per-run progress bar (the sequential executor)


NO_SPACE = "no space"  # an Outcome status: a write found the disk full; the invocation stops


@dataclass
class Outcome:
    job: Job
    status: str                    # a RunStatus value, or "locked" / "not started" / NO_SPACE
    meta: dict[str, Any] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reused_from: str | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.meta.get("final") or {}


_DATA: dict[tuple[str | None, str], Cifar10] = {}
_SPLITS: dict[tuple, DeviceSplits] = {}


def provide_dataset(ctx: WorkerContext, ds: Cifar10) -> None:
    """Give this worker process the dataset instead of loading it from ``ctx.data`` (a Ray
    node that cannot see the driver's files gets it through the object store)."""
    _DATA[(ctx.data, ctx.data_dir)] = ds


def splits_for(job: Job, ctx: WorkerContext, device: torch.device) -> tuple[DeviceSplits, dict[str, Any]]:
    """The job's data on the device, loaded once per worker process."""
    key = (ctx.data, ctx.data_dir)
    if key not in _DATA:
        _DATA[key] = load_cifar10(ctx.data, data_dir=ctx.data_dir, download=False, verbose=False)
    ds = _DATA[key]
    if ds.provenance["sha256"] != ctx.dataset_sha256:
        raise RuntimeError(f"this worker sees dataset {ds.provenance['sha256'][:12]}... at {ctx.data or ctx.data_dir}, "
                           f"the driver planned with {ctx.dataset_sha256[:12]}...: every worker must see the same data")
    r = job.spec.recipe
    skey = (key, r.train_per_class, r.test_per_class, r.val_split, str(device))
    if skey not in _SPLITS:
        _SPLITS[skey] = prepare_splits(ds, device, r.train_per_class, r.test_per_class, r.val_split)
    return _SPLITS[skey], ds.provenance


def run_job(job: Job, ctx: WorkerContext, where: dict[str, Any] | None = None) -> Outcome:
    """Carry out one job; never raises for a failed run (the suite goes on), only for a
    second Ctrl-C (KeyboardInterrupt), after marking the run interrupted."""
    where = {"host": platform.node(), "pid": os.getpid(), **(where or {})}
    if ctx.stop_file and os.path.exists(ctx.stop_file):  # stopped before this job began: leave it untouched
        return Outcome(job, "not started", where=where)
    ensure_plugins(job.spec.plugins)  # its model's code, from the job (a fresh worker or a Ray node lacks it)
    lock = job.run.lock(job.identity)
    if not lock.acquire():
        return Outcome(job, "locked", where=where)
    try:
        if (reused := claim_folder(job, where)) is not None:
            return reused
        outcome = train_job(job, ctx, where)
        if outcome.status == RunStatus.FINISHED.value:
            copy_finished(job)
        return outcome
    finally:
        lock.release()


def claim_folder(job: Job, where: dict[str, Any]) -> Outcome | None:
    """With the identity's lock held: tidy the folder, and if another driver finished this
    identity since the plan was made, copy it (an Outcome); None: train it."""
    # Holding the lock, nobody else writes this folder: what a killed atomic write left
    # behind (.<name>.<random>.tmp) can go.
    for orphan in job.run.path.glob(".*.tmp"):
        orphan.unlink(missing_ok=True)
    if (done := finished_by_identity(job.run.results, job.identity).get(job.identity)) is None:
        return None
    if done != job.run:
        job.run.copy_from(done, job.spec.config())
    for copy, spec in job.copies:
        copy.copy_from(done, spec.config())
    return Outcome(job, RunStatus.FINISHED.value, job.run.read_meta() or {}, where, reused_from=done.key)


def copy_finished(job: Job) -> None:
    """The finished run, copied to the plan's other folders for the same identity."""
    for copy, spec in job.copies:
        copy.copy_from(job.run, spec.config())


def train_job(job: Job, ctx: WorkerContext, where: dict[str, Any]) -> Outcome:
    """Load the data and train (or resume) ``job.run``, its lock held by the caller. A
    failure is recorded in meta.json and returned, never raised."""
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    device = torch.device(ctx.device)
    ensure_plugins(job.spec.plugins)  # a Ray node without the driver's files trains from here
    try:
        splits, provenance = splits_for(job, ctx, device)
        meta = train_run(job.spec, splits, job.run, device, provenance, job.identity, ctx.progress,
                         stop_file=ctx.stop_file, where=where)
        return Outcome(job, meta["status"], meta, where)
    except RunInterrupted:
        return Outcome(job, RunStatus.INTERRUPTED.value, job.run.read_meta() or {}, where)
    except KeyboardInterrupt:
        if job.run.exists():
            job.run.update_meta(status=RunStatus.INTERRUPTED.value)
        raise
    except Exception as e:  # one broken run must not stop the others
        if is_no_space(e):  # ...but a full disk stops them all: the driver says so once, no traceback
            return Outcome(job, NO_SPACE, job.run.read_meta() or {}, where,
                           error=no_space_message(getattr(e, "filename", None) or job.run.path))
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
        try:
            meta = job.run.update_meta(status=RunStatus.FAILED.value, error=error, identity=job.identity,
                                       config=job.spec.config())
        except OSError:  # a full or read-only disk: the error says which file
            meta = job.run.read_meta() or {}
        print(f"[{job.spec.label}] FAILED: {error}; its checkpoint (if any) is kept, the suite goes on", flush=True)
        return Outcome(job, RunStatus.FAILED.value, meta, where, error=error)
