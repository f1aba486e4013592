"""Ray without a shared filesystem: the driver keeps the results folder, the nodes train.

When some node cannot see the results folder (cloud VMs from Ray's cluster launcher,
KubeRay pods, workstations joined with ``ray start``), ``RayExecutor`` runs each job as
``train_on_node`` and talks to one ``DriverFiles`` actor pinned to the driver's node:

    the data      the decoded uint8 tensors, put in the object store once by the driver:
                  Ray moves an object to a node once and its tasks map it read-only
                  (no JPEG decoding per node, no download per run). The source archive
                  would be smaller on the wire but would make every node decode 60,000
                  images. Checked on arrival: the provenance sha256 is the one the plan
                  was made with, and the arrays hash to the digest the driver computed.
    the lock      the identity's lock in the driver's results folder, taken and held by
                  the actor (a task retried after its node died takes it over; writes of
                  the older attempt are refused from then on)
    the files     the node trains in a scratch folder of its own; every atomic write
                  there (log.csv at each evaluation, meta.json, checkpoint.pt, signals.csv,
                  mean.pt, model.pt, responses.csv) is sent to the actor as it happens, in
                  order, and written there with the same atomic write. The driver's folder
                  is therefore always one a local run could have left: ``RunDir.check``,
                  the planner and the reports cannot tell where a run trained. At the
                  end, one pass makes the driver's folder equal the node's (a deleted
                  checkpoint, a checkpoint moved aside as unusable).
    a resume      a task (first or retried) starts from the driver's copy of the folder,
                  so a run whose node died resumes from the last checkpoint that came back
    stopping      the actor looks for the driver's stop file; a thread in the task copies
                  it to the scratch folder, where the training loop polls it as usual
    a full disk   a write the driver cannot make comes back to the node as the same
                  OSError (ENOSPC, the driver's path): the run stops as on a local disk

Everything goes through Ray (task arguments, the object store, actor calls): no server
or socket of our own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.cifar10 import Cifar10
from ...fileio import atomic_write_bytes, is_no_space, no_space_message, observing_writes
from ..planning.plan import Job
from ..rundir import IdentityLock, RunDir, RunStatus, sha256_file
from ...stopping import STOP_FILE_POLL_S
from .worker import NO_SPACE, Outcome, WorkerContext, claim_folder, copy_finished, provide_dataset, train_job

ARRAYS = ("train_x", "train_y", "test_x", "test_y")


# --------------------------------------------------------------------------- the data
def dataset_payload(ds: Cifar10) -> dict[str, Any]:
    """What the driver puts in the object store: numpy arrays (Ray maps them without a copy),
    the provenance, and the arrays' digest."""
    arrays = {k: getattr(ds, k).numpy() for k in ARRAYS}
    return {"provenance": ds.provenance, "arrays": arrays, "digest": _digest(arrays)}


def dataset_from_payload(payload: dict[str, Any], expected_sha256: str) -> Cifar10:
    """The dataset on a node, checked: the plan's dataset, arrived whole."""
    got = payload["provenance"]["sha256"]
    if got != expected_sha256:
        raise RuntimeError(f"the object store holds dataset {got[:12]}..., the driver planned with "
                           f"{expected_sha256[:12]}...")
    if _digest(payload["arrays"]) != payload["digest"]:
        raise RuntimeError("the dataset arrived through Ray's object store with other bytes than the driver "
                           "put there (its sha256 differs)")
    # writable copies: the object store's arrays are read-only
    return Cifar10(**{k: torch.from_numpy(np.array(payload["arrays"][k])) for k in ARRAYS},
                   provenance=payload["provenance"])


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# --------------------------------------------------------------------------- the driver's side
class StaleAttempt(RuntimeError):
    """A newer attempt of this run (Ray retried the task) owns the run folder now."""


def _os_error(e: OSError, path: Path) -> dict[str, Any]:
    return {"errno": e.errno, "strerror": e.strerror or str(e), "filename": str(getattr(e, "filename", None) or path)}


def _from_os_error(error: dict[str, Any]) -> OSError:
    return OSError(error["errno"], error["strerror"], error["filename"])


def _raise(error: dict[str, Any]) -> None:
    raise _from_os_error(error)


def run_files(folder: Path) -> list[Path]:
    """The files of a run folder that travel between a node and the driver: every plain file
    but the hidden ones (atomic writes' temporaries, locks)."""
    return [p for p in sorted(folder.glob("*")) if p.is_file() and not p.name.startswith(".")] \
        if folder.is_dir() else []


@dataclasses.dataclass
class Attempt:
    """The attempt of a run that owns its folder on the driver: its token and the identity's lock."""

    token: str
    lock: IdentityLock


class DriverFiles:
    """A Ray actor on the driver's node (``num_cpus=0``): the only process that writes the
    driver's results folder for runs that train elsewhere. One per invocation."""

    def __init__(self, stop_file: str | None) -> None:
        self.stop_file = stop_file
        self.attempts: dict[str, Attempt] = {}                     # identity -> the attempt that owns it
        self.sent: dict[str, dict[str, list[int]]] = {}           # identity -> file -> [writes, bytes]

    def stopping(self) -> bool:
        return bool(self.stop_file) and os.path.exists(self.stop_file)  # type: ignore[arg-type]

    def begin(self, job: Job, token: str, where: dict[str, Any]) -> dict[str, Any]:
        """Lock and claim the run for the attempt ``token``: {"status": ...} when there is
        nothing to train (locked elsewhere, finished meanwhile), else {"files": the run
        folder's files, to resume from}."""
        held = self.attempts.get(job.identity)
        if held is not None:  # Ray retried the task: the earlier attempt's node or process is gone
            lock = held.lock
        else:
            lock = job.run.lock(job.identity)
            if not lock.acquire():
                return {"status": "locked"}
        self.attempts[job.identity] = Attempt(token, lock)
        try:
            if (reused := claim_folder(job, where)) is not None:
                self._release(job.identity)
                return {"status": reused.status, "meta": reused.meta, "reused_from": reused.reused_from}
            files = {p.name: p.read_bytes() for p in run_files(job.run.path)}
        except OSError as e:
            self._release(job.identity)
            return {"error": _os_error(e, job.run.path)}
        self.sent.setdefault(job.identity, {})
        return {"files": files}

    def write(self, job: Job, token: str, name: str, data: bytes) -> dict[str, Any] | None:
        """One file of the run, atomically; an OSError comes back as data (the node raises it)."""
        self._check(job, token, name)
        path = job.run.path / name
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            return {"error": _os_error(e, path)}
        count = self.sent.setdefault(job.identity, {}).setdefault(name, [0, 0])
        count[0] += 1
        count[1] += len(data)
        return None

    def differing(self, job: Job, token: str, manifest: dict[str, str]) -> list[str]:
        """The names in ``manifest`` (name -> sha256 on the node) whose copy here differs."""
        for name in manifest:
            self._check(job, token, name)
        return [n for n, sha in manifest.items() if sha256_file(job.run.path / n) != sha]

    def end(self, job: Job, token: str, status: str, names: list[str] | None) -> dict[str, Any]:
        """The attempt ended with ``status``. ``names``: the files the node's folder holds
        (the others go here too); None: leave the folder as it is (a full disk). A finished
        run is copied to the plan's other folders for its identity; the lock is released."""
        self._check(job, token, "")
        try:
            if names is not None:
                for p in run_files(job.run.path):
                    if p.name not in names:
                        p.unlink()
            if status == RunStatus.FINISHED.value:
                copy_finished(job)
        except OSError as e:
            return {"error": _os_error(e, job.run.path)}
        finally:
            self._release(job.identity)
        return {"sent": self.sent.get(job.identity, {})}

    def _check(self, job: Job, token: str, name: str) -> None:
        held = self.attempts.get(job.identity)
        if held is None or held.token != token:
            raise StaleAttempt(f"{job.spec.label}: a newer attempt of this run owns its folder")
        if name and (Path(name).name != name or name.startswith(".")):
            raise ValueError(f"{name!r} is not a file name of a run folder")

    def _release(self, identity: str) -> None:
        held = self.attempts.pop(identity, None)
        if held is not None:
            held.lock.release()


# --------------------------------------------------------------------------- the node's side
def node_where() -> dict[str, Any]:
    """Where a Ray task runs: its node, host and GPUs (recorded in meta.json's worker)."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    return {"executor": "ray", "node": ray.get_runtime_context().get_node_id(), "host": platform.node(),
            "gpu": ",".join(gpus) or None}


_provided: str | None = None  # the digest of the dataset this worker process was given


def train_on_node(job: Job, ctx: WorkerContext, store: Any, payload: dict[str, Any]) -> Outcome:
    """The body of one Ray task when the driver keeps the results (module-level, so workers
    import it by name): train ``job`` in a scratch folder, its files sent back as written."""
    import ray

    global _provided
    where = {**node_where(), "pid": os.getpid(), "storage": "driver"}
    print(f"[start] {job.spec.label} on {platform.node()}, node {where['node'][:12]} (files back to the driver)",
          flush=True)
    if ray.get(store.stopping.remote()):
        return Outcome(job, "not started", where=where)
    if _provided != payload["digest"]:  # checked before the lock is taken: a bad copy holds nothing
        provide_dataset(ctx, dataset_from_payload(payload, ctx.dataset_sha256))
        _provided = payload["digest"]
    token = os.urandom(16).hex()
    reply = ray.get(store.begin.remote(job, token, where))
    if "error" in reply:
        return _no_space(job, where, reply["error"])
    if "status" in reply:
        return Outcome(job, reply["status"], reply.get("meta") or {}, where, reused_from=reply.get("reused_from"))
    scratch = Path(tempfile.mkdtemp(prefix="resnet-exp-"))
    local = dataclasses.replace(job, run=RunDir.for_run(scratch, job.run.experiment, job.run.name), copies=())
    local.run.path.mkdir(parents=True)
    for name, data in reply["files"].items():  # the driver's copy: a resume starts from it
        (local.run.path / name).write_bytes(data)

    sending = [0.0]  # seconds this task waited for the driver's writes: the storage's overhead

    def send(path: Path, data: bytes) -> None:
        if path.parent == local.run.path:
            t0 = time.perf_counter()
            error = ray.get(store.write.remote(job, token, path.name, data))
            sending[0] += time.perf_counter() - t0
            if error is not None:
                _raise(error["error"])

    watcher = _StopWatcher(store, scratch / ".stop")
    try:
        with observing_writes(send):
            outcome = train_job(local, dataclasses.replace(ctx, stop_file=str(watcher.local)), where)
        names: list[str] | None = None
        if outcome.status != NO_SPACE:
            manifest = {p.name: sha256_file(p) or "" for p in run_files(local.run.path)}
            try:
                for name in ray.get(store.differing.remote(job, token, manifest)):
                    send(local.run.path / name, (local.run.path / name).read_bytes())
                names = list(manifest)
            except OSError as e:  # the driver's write failed: a full disk, or another error, as data
                outcome = _no_space(job, where, _os_error(e, job.run.path))
        ended = ray.get(store.end.remote(job, token, outcome.status, names))
        if "error" in ended:
            return _no_space(job, where, ended["error"])
        return Outcome(job, outcome.status, outcome.meta,
                       {**where, "sent": ended["sent"], "sending_s": round(sending[0], 3)}, outcome.error)
    finally:
        watcher.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _no_space(job: Job, where: dict[str, Any], error: dict[str, Any]) -> Outcome:
    """A write the driver could not make: NO_SPACE for a full disk, else a failed run."""
    if is_no_space(_from_os_error(error)):
        return Outcome(job, NO_SPACE, {}, where, error=no_space_message(error["filename"]) +
                       " (the driver's results folder: the run trained on another node)")
    return Outcome(job, RunStatus.FAILED.value, {}, where,
                   error=f"the driver could not write {error['filename']}: {error['strerror']}")


class _StopWatcher:
    """Copies the driver's stop request (the actor sees the stop file) to a file in the
    scratch folder, which the training loop polls as it polls a shared stop file."""

    def __init__(self, store: Any, local: Path) -> None:
        self.store, self.local = store, local
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="driver-stop-watcher")
        self._thread.start()

    def _watch(self) -> None:
        import ray

        while not self._closed.wait(STOP_FILE_POLL_S):
            try:
                if ray.get(self.store.stopping.remote()):
                    self.local.touch()
                    return
            except Exception:  # the driver is gone: Ray ends this task anyway
                return

    def close(self) -> None:
        self._closed.set()
