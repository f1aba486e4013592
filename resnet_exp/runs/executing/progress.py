"""Following a job while it trains, on every executor: for a person, a line when a run starts
and one when it ends (its final errors, and its verdict against the committed reference where
one exists), each with the whole job's position (runs done of all, elapsed, time left); for
programs (a notebook, a dashboard, ``tail -f`` on another terminal) the same events as JSON
lines in ``<results>/progress.jsonl``.

The time left: the plan's estimate of each run weighs how much of the job is done (runs
finished, and the iterations the running ones have logged), the wall time so far gives the
speed; before anything is done, the plan's estimate itself. So an estimate that was off by a
factor corrects itself as the runs go, while a job of long and short runs is not misread
as fast or slow by the order they happen to finish in.

One writer, the driver: every event is one ``write`` of one line on a file opened for append,
so a reader never sees half a line (the file is a log, not a state: nothing reads it back).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ...fileio import human_duration
from ..planning.plan import Job
from ..rundir import PROGRESS_FILE
from .worker import NO_SPACE, Outcome

Verdict = Callable[[dict[str, Any]], "str | None"]  # a finished run's meta.json -> its verdict in words


class JobProgress:
    """The whole job's events (see the module docstring). ``eta``: the plan's seconds per job
    (empty: weighed by iterations); ``bar``: one whole-job bar of iterations (multi-slot
    executors, whose runs print no bar of their own); ``verdict``: handed down by the command
    line (``reporting.reference.verdict_of_run``), since executing never imports the reports."""

    def __init__(self, jobs: list[Job], results: Path | None, eta: dict[Job, float] | None = None,
                 bar: bool = False, verdict: Verdict | None = None, poll_s: float = 2.0) -> None:
        self.jobs, self.results, self.verdict, self.poll_s = jobs, results, verdict, poll_s
        self.weight = {id(j): (eta or {}).get(j) or float(j.remaining_iterations) for j in jobs}
        self.estimate_s = sum((eta or {}).values()) or None
        self.ended: set[int] = set()
        # A run stopped between checkpoints left log lines past the one it resumes from; its
        # trainer trims them when it starts. Until then they are not progress of this job (read
        # as such, a resumed job looked nearly done the moment it started: "about 0 s left").
        self.stale = {i for i, j in enumerate(jobs) if j.done_iterations
                      and j.run.last_logged_iteration() > j.done_iterations}
        self.t0, self._next = time.monotonic(), 0.0
        self.bar = tqdm(total=sum(j.spec.recipe.iterations for j in jobs),
                        initial=sum(j.done_iterations for j in jobs), unit="it", dynamic_ncols=True,
                        desc=f"0/{len(jobs)} runs", disable=not bar, mininterval=1.0) if bar else None
        self.event("job", runs=len(jobs), estimate_s=self.estimate_s,
                   planned=[{"run": j.spec.label, "iterations": j.spec.recipe.iterations,
                             "done_iterations": j.done_iterations} for j in jobs])

    # ---- what happened
    def started(self, index: int, where: dict[str, Any]) -> None:
        job = self.jobs[index]
        self.say(f"[start] {job.spec.label}{_on(where)} ({self.position()})")
        self.event("start", run=job.spec.label, where=where)

    def finished(self, index: int, outcome: Outcome) -> None:
        self.ended.add(index)
        f, label = outcome.final, outcome.job.spec.label
        errors = (f"train {f['train_error']:.2f} % / test {f['test_error']:.2f} %"
                  if "train_error" in f and "test_error" in f else "")
        verdict = self.verdict(outcome.meta) if (self.verdict and errors and outcome.meta) else None
        extra = outcome.error or (f"copied from {outcome.reused_from}" if outcome.reused_from else "")
        if outcome.status == NO_SPACE:  # the driver says it once, at the end, with what to do
            extra = "(the disk is full: stopping every run)"
        parts = [p for p in (errors, verdict and f"reference: {verdict}", extra) if p]
        self.say(f"[{outcome.status}] {label}{_on(outcome.where)}" + (": " + "; ".join(parts) if parts else "")
                 + f" ({self.position()})")
        self.event("end", run=label, status=outcome.status, train_error=f.get("train_error"),
                   test_error=f.get("test_error"), verdict=verdict, error=outcome.error)
        if self.bar is not None:
            self.bar.set_description(f"{len(self.ended)}/{len(self.jobs)} runs")
        self.poll(force=True)

    def closed(self, status: str) -> None:
        self.event("done", status=status, runs_ended=len(self.ended), runs=len(self.jobs),
                   elapsed_s=round(time.monotonic() - self.t0, 1))
        if self.bar is not None:
            self.bar.close()

    # ---- where the job stands
    def reached(self) -> list[int]:
        """Each job's iteration: an ended run at its end, a running one at its last log line
        (each log.csv read once per look, shared by the bar and the time left)."""
        reached = []
        for i, j in enumerate(self.jobs):
            if i in self.ended:
                reached.append(j.spec.recipe.iterations)
                continue
            logged = j.run.last_logged_iteration()
            if i in self.stale and logged <= j.done_iterations:
                self.stale.discard(i)  # trimmed: from here on its log is this job's
            reached.append(j.done_iterations if i in self.stale
                           else min(max(logged, j.done_iterations), j.spec.recipe.iterations))
        return reached

    def fraction_done(self, reached: list[int] | None = None) -> float:
        """Of the job's estimated work: ended runs whole, running ones by their logged iterations."""
        reached = self.reached() if reached is None else reached
        total = sum(self.weight.values()) or 1.0
        done = sum(self.weight[id(j)] * (1.0 if i in self.ended else
                                         min(max(it - j.done_iterations, 0) / j.remaining_iterations, 1.0)
                                         if j.remaining_iterations else 0.0)
                   for i, (j, it) in enumerate(zip(self.jobs, reached)))
        return done / total

    def left_s(self, reached: list[int] | None = None) -> float | None:
        elapsed, frac = time.monotonic() - self.t0, self.fraction_done(reached)
        if frac <= 0 or elapsed <= 0:
            return self.estimate_s
        return elapsed * (1 - frac) / frac

    def position(self) -> str:
        left = self.left_s()
        return (f"{len(self.ended)}/{len(self.jobs)} done, {human_duration(time.monotonic() - self.t0)} elapsed"
                + (f", about {human_duration(left)} left" if left is not None and len(self.ended) < len(self.jobs)
                   else ""))

    def poll(self, force: bool = False) -> None:
        """The whole-job bar from the runs' own log.csv files (multi-slot executors)."""
        if self.bar is None or (not force and time.monotonic() < self._next):
            return
        self._next = time.monotonic() + self.poll_s
        reached = self.reached()
        self.bar.update(sum(reached) - self.bar.n)
        left = self.left_s(reached)
        if left is not None:
            self.bar.set_postfix_str(f"job: about {human_duration(left)} left", refresh=False)

    # ---- where it goes
    def say(self, line: str) -> None:
        tqdm.write(line) if self.bar is not None else print(line, flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.results is None:
            return
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": kind, **fields}, default=str)
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            with open(self.results / PROGRESS_FILE, "a") as f:
                f.write(line + "\n")
        except OSError:  # a full disk: the runs stop on their own write; following the job is not worth a failure
            pass


def _on(where: dict[str, Any]) -> str:
    parts = [where.get("host", "")] if where.get("host") else []
    for key in ("node", "slot", "gpu"):
        if where.get(key) not in (None, [], ""):
            parts.append(f"{key} {str(where[key])[:12]}")
    return f" on {', '.join(parts)}" if parts else ""
