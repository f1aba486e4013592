"""The Ray executor: each run is a Ray task, on this machine or on a cluster.

- ``num_gpus = 1 / runs_per_gpu``: fractional, so K runs share one GPU; ``num_cpus``
  per run; ``max_retries``: a run whose worker process or node dies is retried, and
  resumes from its checkpoint (in the shared results folder, or the copy the driver holds).
- No address: a local Ray instance; ``auto`` or ``ray://host:port``: an existing cluster.
- Storage. Before anything trains, a probe task on every node reads a token the driver
  wrote in the results folder, writes one back, and looks for the data. Where every node
  can (a shared filesystem mounted alike), runs read and write the results folder
  directly. Where one cannot (cloud VMs, KubeRay pods, workstations joined with ``ray
  start``), the driver keeps the results folder and the runs' files come back through
  Ray (``ray_storage.py``). ``storage`` forces one or the other; the plan says which.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import uuid
from pathlib import Path
from typing import Any

from ...fileio import human_bytes
from .executors import DriverStop
from .progress import JobProgress
from ..planning.plan import Job
from .ray_storage import DriverFiles, dataset_payload, node_where, train_on_node
from ..rundir import RunStatus
from .worker import NO_SPACE, Outcome, WorkerContext, run_job

STORAGES = ("auto", "shared", "driver")


class RayUnavailable(ValueError):
    """Ray is not installed, or the cluster cannot be used as asked."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: pip install -e '.[ray]' "
                             "(./run_tests.sh installs it into .venv)") from None
    return ray


def _ray_task(job: Job, ctx: WorkerContext) -> Outcome:
    """The body of one Ray task (module-level, so workers import it by name)."""
    where = node_where()
    print(f"[start] {job.spec.label} on {platform.node()}, node {where['node'][:12]}", flush=True)
    return run_job(job, ctx, where)


def _probe(probe: str, token: str, paths: list[str]) -> dict[str, Any]:
    """Run on one node: can it see the driver's files, and can the driver see its own?"""
    import ray

    node = ray.get_runtime_context().get_node_id()
    p = Path(probe)
    sees = p.exists() and p.read_text() == token
    missing = [q for q in paths if not Path(q).exists()]
    if sees:
        p.with_name(f"{p.name}.{node}").write_text(token)
    return {"node": node, "host": platform.node(), "sees_results": sees, "missing": missing}


@dataclasses.dataclass
class StorageProbe:
    nodes: list[dict[str, Any]]   # one reply per alive node
    problems: list[str]           # what some node cannot see; empty: the storage is shared

    @property
    def shared(self) -> bool:
        return not self.problems


def probe_storage(ray: Any, results: Path, paths: list[str]) -> StorageProbe:
    """Does every alive node see ``results`` (both ways) and ``paths``?"""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = results / ".probe" / token
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(token)
    probe_task = ray.remote(num_cpus=0)(_probe)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    try:
        replies = ray.get([probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                           .remote(str(probe), token, paths) for n in nodes])
        problems = []
        for r in replies:
            back = probe.with_name(f"{probe.name}.{r['node']}")
            if not r["sees_results"] or not back.exists():
                problems.append(f"node {r['node'][:12]} on {r['host']} cannot see the results folder {results} "
                                "(or the driver cannot see what it wrote there)")
            if r["missing"]:
                problems.append(f"node {r['node'][:12]} on {r['host']} cannot see {', '.join(r['missing'])}")
        return StorageProbe(replies, problems)
    finally:
        for f in probe.parent.glob(f"{token}*"):
            f.unlink(missing_ok=True)


def describe_sent(outcomes: list[Outcome]) -> str:
    """What came back to the driver, by file: the README's "what travels" measured."""
    by_file: dict[str, list[int]] = {}
    runs, waited = 0, 0.0
    for o in outcomes:
        if sent := o.where.get("sent"):
            runs, waited = runs + 1, waited + o.where.get("sending_s", 0.0)
            for name, (writes, nbytes) in sent.items():
                total = by_file.setdefault(name, [0, 0])
                total[0], total[1] = total[0] + writes, total[1] + nbytes
    whole = sum(b for _, b in by_file.values())
    parts = ", ".join(f"{name} {human_bytes(b)} in {w} write{'s' * (w != 1)}"
                      for name, (w, b) in sorted(by_file.items(), key=lambda kv: -kv[1][1]))
    return (f"[ray] back to the driver from {runs} run(s): {human_bytes(whole)}" + (f" ({parts})" if parts else "") +
            f"; the runs waited {waited:.1f} s for it")


class RayExecutor:
    def __init__(self, address: str | None = None, runs_per_gpu: int = 1, cpus_per_run: float = 1,
                 threads: int | None = None, max_retries: int = 3,
                 storage: str = "auto") -> None:
        if storage not in STORAGES:
            raise RayUnavailable(f"--ray-storage {storage!r}: choose one of {', '.join(STORAGES)}")
        self.address, self.runs_per_gpu, self.cpus_per_run = address, runs_per_gpu, cpus_per_run
        self.threads = threads or max(1, int(cpus_per_run))
        self.max_retries, self.storage = max_retries, storage

    def execute(self, jobs: list[Job], ctx: WorkerContext, stop: DriverStop,
                progress: JobProgress) -> list[Outcome]:
        ray = _import_ray()
        if stop.act():  # Ctrl-C before anything started
            return [Outcome(job, "not started") for job in jobs]
        started_here = not ray.is_initialized()
        # every run's [start] line matters; Ray would fold lines that differ only in names
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if started_here:
            ray.init(address=self.address, include_dashboard=False, configure_logging=False, log_to_driver=True)
        try:
            results = jobs[0].run.results if jobs else Path(".")
            shared = [p for p in (ctx.data, ctx.data_dir) if p]
            probe = probe_storage(ray, results, [p for p in shared if Path(p).exists()])
            use_gpu = ray.cluster_resources().get("GPU", 0) > 0 and ctx.device != "cpu"
            print(f"[ray] {len(probe.nodes)} node(s): {', '.join(sorted({n['host'] for n in probe.nodes}))}; "
                  f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs; "
                  f"each run: {self.cpus_per_run:g} CPU" + (f", 1/{self.runs_per_gpu} GPU" if use_gpu else ""),
                  flush=True)
            options = dict(num_cpus=self.cpus_per_run, num_gpus=1 / self.runs_per_gpu if use_gpu else 0,
                           max_retries=self.max_retries, retry_exceptions=False)
            run_ctx = dataclasses.replace(ctx, device="cuda" if use_gpu else "cpu",
                                          threads=self.threads, progress=False)
            if not self._driver_keeps_files(ray, probe, results):
                task = ray.remote(_ray_task).options(**options)
                return self._collect(ray, {task.remote(job, run_ctx): i for i, job in enumerate(jobs)}, jobs, stop,
                                     progress)
            outcomes = self._collect(ray, self._submit_with_driver_storage(ray, jobs, run_ctx, options), jobs, stop,
                                     progress)
            print(describe_sent(outcomes), flush=True)
            return outcomes
        finally:
            if started_here:
                ray.shutdown()

    def _driver_keeps_files(self, ray: Any, probe: StorageProbe, results: Path) -> bool:
        """Shared storage, or the driver's (said, with the reason); RayUnavailable where the
        choice cannot work."""
        found = "\n  - ".join(probe.problems)
        if self.storage == "shared" and not probe.shared:
            raise RayUnavailable(f"--ray-storage shared, but:\n  - {found}\nMount the results folder and the data "
                                 "alike on every node (NFS, Lustre, ...) and pass absolute paths, or let the driver "
                                 "keep the files: --ray-storage auto (or driver)")
        if self.storage == "shared" or (self.storage == "auto" and probe.shared):
            print(f"[ray] storage: shared (every node sees {results} and the data): runs write there directly",
                  flush=True)
            return False
        if ray.util.client.ray.is_connected():
            raise RayUnavailable("the driver keeps the results folder when the nodes do not share one, which "
                                 "needs the driver on a cluster node: a ray:// client cannot host it. Run the "
                                 "command on the head node (or one joined with `ray start`) with --ray-address auto")
        why = f"some node cannot see it:\n  - {found}" if probe.problems else "--ray-storage driver"
        print(f"[ray] storage: the driver's ({why})\n[ray] each run trains in node-local scratch; its files come "
              f"back to {results} through Ray as they are written; the data goes to each node once through the "
              "object store", flush=True)
        return True

    def _submit_with_driver_storage(self, ray: Any, jobs: list[Job], ctx: WorkerContext,
                                    options: dict[str, Any]) -> dict[Any, int]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ...data.cifar10 import load_cifar10

        payload = dataset_payload(load_cifar10(ctx.data, data_dir=ctx.data_dir, download=False, verbose=False))
        if payload["provenance"]["sha256"] != ctx.dataset_sha256:
            raise RayUnavailable("the dataset changed on disk since the plan was made; run the command again")
        nbytes = sum(a.nbytes for a in payload["arrays"].values())
        print(f"[ray] data: {nbytes / 2**20:.0f} MB of decoded tensors in the object store "
              f"(sha256 {ctx.dataset_sha256[:12]}...)", flush=True)
        data_ref = ray.put(payload)
        # The actor lives and dies with this driver, on its node: the results folder is here.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        store = ray.remote(DriverFiles).options(num_cpus=0, scheduling_strategy=here).remote(ctx.stop_file)
        task = ray.remote(train_on_node).options(**options)
        return {task.remote(job, ctx, store, data_ref): i for i, job in enumerate(jobs)}

    def _collect(self, ray: Any, refs: dict[Any, int], jobs: list[Job], stop: DriverStop,
                 board: JobProgress) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        pending = list(refs)
        while pending:
            try:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                stop.act()  # a Ctrl-C the driver's handler noted: tasks checkpoint and return
                board.poll()
                for ref in ready:
                    i = refs[ref]
                    try:
                        outcomes[i] = ray.get(ref)
                    except ray.exceptions.RayError as e:  # retries exhausted, node lost for good
                        outcomes[i] = Outcome(jobs[i], RunStatus.FAILED.value, jobs[i].run.read_meta() or {},
                                              error=f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    board.finished(i, outcomes[i])
                    if outcomes[i].status == NO_SPACE:  # the others stop at their next iteration
                        stop.stop_for_full_disk(kill=lambda: [ray.cancel(r, force=True) for r in pending])
            except KeyboardInterrupt:
                if stop.requested:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise
                stop.request()  # tasks checkpoint and return "interrupted"
        return [outcomes.get(i, Outcome(job, "not started")) for i, job in enumerate(jobs)]
