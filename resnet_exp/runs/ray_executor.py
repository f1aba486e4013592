"""The Ray executor: each run is a Ray task, on this machine or on a cluster.

- ``num_gpus = 1 / runs_per_gpu``: fractional, so K runs share one GPU; ``num_cpus``
  per run; ``max_retries``: a run whose worker process or node dies is retried, and
  resumes from its checkpoint (the results folder is shared).
- No address: a local Ray instance; ``auto`` or ``ray://host:port``: an existing cluster.
- Every node must see the results folder and the data at the same path (the usual
  cluster set-up: a shared filesystem). Before anything trains, a probe task on every
  node reads a token the driver wrote and writes one back; a node that cannot is named
  in a clear error.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import uuid
from pathlib import Path
from typing import Any

from .executors import DriverStop, ProgressBoard
from .plan import Job
from .rundir import RunStatus
from .worker import NO_SPACE, Outcome, WorkerContext, run_job


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
    import ray

    node = ray.get_runtime_context().get_node_id()
    gpus = [str(g) for g in ray.get_gpu_ids()]
    where = {"executor": "ray", "node": node, "host": platform.node(), "gpu": ",".join(gpus) or None}
    print(f"[start] {job.spec.label} on {platform.node()}, node {node[:12]}", flush=True)
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


def check_shared_storage(ray: Any, results: Path, paths: list[str]) -> list[dict[str, Any]]:
    """Every alive node sees ``results`` (both ways) and ``paths``; RayUnavailable if not."""
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
        if problems:
            raise RayUnavailable("the Ray cluster cannot run these runs:\n  - " + "\n  - ".join(problems) +
                                 "\nEvery node must see the results folder and the data (--data, data/) at the "
                                 "same path: put them on a shared filesystem (NFS, Lustre, ...) mounted alike "
                                 "on every node, and pass absolute paths.")
        return replies
    finally:
        for f in probe.parent.glob(f"{token}*"):
            f.unlink(missing_ok=True)


class RayExecutor:
    def __init__(self, address: str | None = None, runs_per_gpu: int = 1, cpus_per_run: float = 1,
                 threads: int | None = None, progress: bool = True, max_retries: int = 3) -> None:
        self.address, self.runs_per_gpu, self.cpus_per_run = address, runs_per_gpu, cpus_per_run
        self.threads = threads or max(1, int(cpus_per_run))
        self.max_retries, self.progress = max_retries, progress

    def execute(self, jobs: list[Job], ctx: WorkerContext, stop: DriverStop) -> list[Outcome]:
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
            nodes = check_shared_storage(ray, results, [p for p in shared if Path(p).exists()])
            use_gpu = ray.cluster_resources().get("GPU", 0) > 0 and ctx.device != "cpu"
            print(f"[ray] {len(nodes)} node(s): {', '.join(sorted({n['host'] for n in nodes}))}; "
                  f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs; "
                  f"each run: {self.cpus_per_run:g} CPU" + (f", 1/{self.runs_per_gpu} GPU" if use_gpu else ""),
                  flush=True)
            task = ray.remote(_ray_task).options(
                num_cpus=self.cpus_per_run, num_gpus=1 / self.runs_per_gpu if use_gpu else 0,
                max_retries=self.max_retries, retry_exceptions=False)
            run_ctx = dataclasses.replace(ctx, device="cuda" if use_gpu else "cpu",
                                          threads=self.threads, progress=False)
            refs = {task.remote(job, run_ctx): i for i, job in enumerate(jobs)}
            return self._collect(ray, refs, jobs, stop)
        finally:
            if started_here:
                ray.shutdown()

    def _collect(self, ray: Any, refs: dict[Any, int], jobs: list[Job], stop: DriverStop) -> list[Outcome]:
        board = ProgressBoard(jobs, self.progress)
        outcomes: dict[int, Outcome] = {}
        pending = list(refs)
        try:
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
                        board.ended(i, outcomes[i])
                        if outcomes[i].status == NO_SPACE:  # the others stop at their next iteration
                            stop.stop_for_full_disk(kill=lambda: [ray.cancel(r, force=True) for r in pending])
                except KeyboardInterrupt:
                    if stop.requested:
                        for ref in pending:
                            ray.cancel(ref, force=True)
                        raise
                    stop.request()  # tasks checkpoint and return "interrupted"
        finally:
            board.close()
        return [outcomes.get(i, Outcome(job, "not started")) for i, job in enumerate(jobs)]
