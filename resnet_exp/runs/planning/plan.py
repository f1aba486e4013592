"""The plan: what each selected run needs, decided from the results folder alone.

``make_plan`` is pure: it reads meta.json files and writes nothing (no folder, no lock,
no copy), so ``run --dry-run`` leaves the tree as it found it. Side effects belong to
the executors (``executors.py``), which carry the plan out.

A run's identity (``RunSpec.identity``) decides what is done with it:

- finished or diverged in its own folder: skipped;
- finished in another experiment's folder (figure1/plain20 is figure6/plain20): reused,
  i.e. copied, not trained;
- the same identity planned earlier in this invocation: trained once, then copied;
- otherwise trained: from its checkpoint when it has one.

Every folder is checked (``RunDir.check``) before it is trusted: one whose meta.json,
log.csv, model.pt and checkpoint disagree is "damaged", never skipped as finished nor
reused; it is listed with what is wrong, and trained again (after its folder is moved
aside, kept) only with ``retrain_damaged``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from .experiments import RunSpec
from ..rundir import RunDir, RunStatus


class Action(str, enum.Enum):
    NEW = "new"              # train from the start
    RESUME = "resume"        # train on from its checkpoint
    RETRY = "retry"          # failed last time: train again (from its checkpoint if any)
    REUSE = "reuse"          # finished under another experiment: copy it
    SAME_AS = "same as"      # identical to a run trained earlier in this plan: copy it after
    FINISHED = "finished"    # nothing to do
    DIVERGED = "diverged"    # nothing to do (a diverged run is kept, not retried)
    DAMAGED = "damaged"      # its files disagree: listed with the fix, not trained
    RETRAIN = "retrain"      # damaged, and --retrain-damaged: moved aside, trained again

    @property
    def trains(self) -> bool:
        return self in (Action.NEW, Action.RESUME, Action.RETRY, Action.RETRAIN)


@dataclass(frozen=True, eq=False)
class PlannedRun:
    spec: RunSpec
    run: RunDir
    identity: str
    action: Action
    source: RunDir | None = None  # REUSE: the finished folder; SAME_AS: the folder that trains it
    done_iterations: int = 0      # RESUME / RETRY: where its checkpoint is
    problems: str = ""            # DAMAGED / RETRAIN: what is wrong


@dataclass(frozen=True, eq=False)
class Job:
    """One training, per identity: train in ``run``, then copy to ``copies`` (each folder
    with the spec whose name, group and baseline its meta.json gets)."""

    spec: RunSpec
    run: RunDir
    identity: str
    done_iterations: int = 0
    copies: tuple[tuple[RunDir, RunSpec], ...] = ()

    @property
    def remaining_iterations(self) -> int:
        return self.spec.recipe.iterations - self.done_iterations


@dataclass
class Plan:
    runs: list[PlannedRun]
    results: Path
    dataset_sha256: str
    jobs: list[Job] = field(default_factory=list)

    def count(self, *actions: Action) -> int:
        return sum(p.action in actions for p in self.runs)

    @property
    def reuses(self) -> list[PlannedRun]:
        """Finished elsewhere: copied before anything trains."""
        return [p for p in self.runs if p.action == Action.REUSE]

    @property
    def damaged(self) -> list[PlannedRun]:
        return [p for p in self.runs if p.action in (Action.DAMAGED, Action.RETRAIN)]


def finished_by_identity(results: Path, identity: str | None = None) -> dict[str, RunDir]:
    """Every finished run of a results tree that passes its check, by identity; with
    ``identity``, only the folders named for it (``<name>-s<seed>-<identity[:10]>``)."""
    out: dict[str, RunDir] = {}
    runs = RunDir.all_in(results) if identity is None else (
        RunDir(p) for p in sorted(Path(results).glob(f"[!.]*/*-{identity[:10]}")) if p.is_dir())
    for run in runs:
        meta = run.read_meta() or {}
        if meta.get("status") == RunStatus.FINISHED.value and isinstance(meta.get("identity"), str) \
                and meta["identity"] not in out and run.check().ok:
            out[meta["identity"]] = run
    return out


def make_plan(specs: list[RunSpec], results: str | Path, dataset_sha256: str,
              retrain_damaged: bool = False, elsewhere: dict[str, RunDir] | None = None) -> Plan:
    """Decide, for every run, what to do (see the module docstring). Reads only. ``elsewhere``:
    finished runs outside the results folder that may be copied in (by identity): the
    committed references' runs of the selected rows' baselines (``reference_baselines``)."""
    results = Path(results)
    finished = {**(elsewhere or {}), **finished_by_identity(results)}
    training: dict[str, PlannedRun] = {}  # identity -> the planned run that trains it
    runs: list[PlannedRun] = []
    for spec in specs:
        identity = spec.identity(dataset_sha256)
        run = RunDir.for_run(results, spec.experiment, spec.run_dir_name(dataset_sha256))
        status = run.status(identity)
        meta = run.read_meta() or {}
        health = run.check() if run.holds_run_files() else None
        if health is not None and not health.ok:
            planned = PlannedRun(spec, run, identity, Action.RETRAIN if retrain_damaged else Action.DAMAGED,
                                 problems=str(health))
            if retrain_damaged:
                training[identity] = planned
        elif status is not None and status.done:
            planned = PlannedRun(spec, run, identity, Action(status.value))
        elif identity in finished:
            planned = PlannedRun(spec, run, identity, Action.REUSE, source=finished[identity])
        elif identity in training:
            planned = PlannedRun(spec, run, identity, Action.SAME_AS, source=training[identity].run)
        else:
            done = int(meta.get("iteration") or 0) if run.has_checkpoint() else 0
            action = Action.RETRY if status == RunStatus.FAILED else Action.RESUME if done else Action.NEW
            planned = PlannedRun(spec, run, identity, action, done_iterations=done)
            training[identity] = planned
        runs.append(planned)

    jobs = [Job(p.spec, p.run, p.identity, p.done_iterations,
                tuple((q.run, q.spec) for q in runs if q.action == Action.SAME_AS and q.identity == p.identity))
            for p in runs if p.action.trains]
    return Plan(runs, results, dataset_sha256, jobs)


def reference_baselines(specs: list[RunSpec], dataset_sha256: str, references: list[Path]) -> dict[str, RunDir]:
    """The finished runs of ``references`` (committed reference results folders) that are one of
    the selected rows' baselines, by identity: the same recipe, model, seed, precision and
    dataset sha256 as a planned baseline run, so the plan copies them instead of training them
    again (with the real CIFAR-10, another sha256, nothing matches). Baselines only: a selected
    row's own runs always train here, so that they can be compared with the reference."""
    wanted = {s.identity(dataset_sha256) for s in specs if f"{s.experiment}/{s.name}" in
              {t.baseline for t in specs if t.baseline}}
    out: dict[str, RunDir] = {}
    if not wanted:  # no baseline selected: no reference folder read
        return out
    for folder in references:
        if folder.is_dir():
            for identity, run in finished_by_identity(folder).items():
                if identity in wanted:
                    out.setdefault(identity, run)
    return out
