"""One planning pass: what an invocation of ``run`` asked for -> one ``Invocation``: the rows,
the rung, the runs and what each needs, their estimates, and what is left out. The executor
(``executing/runner.py``) then carries it out and never calls back into planning.

Two steps, so that a mistake in a file shows before the data is loaded:

    select(request)                  every experiment file and row validated, for each candidate
                                     profile (the pinned one, or every rung of the budget's ladder)
    plan_invocation(selection, ...)  the rung (budget.py), the plan (plan.py), the estimates
                                     (estimate.py, from costs measured by the caller), the left-out runs

Reads the results folder; writes nothing (the runner records the budget's choice and the
left-out runs once it trains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .budget import Choice, keep_choice
from .estimate import Estimator, Sharing, job_seconds, longest_first
from .experiments import Precision, RunSpec, check_against_data, select_runs
from .ladder import REPO, Rung, load_ladder
from ..rundir import RunDir
from .plan import Action, Job, Plan, make_plan, reference_baselines


@dataclass(frozen=True)
class Request:
    """What the user asked for (``run``'s arguments that decide what is trained)."""

    files: tuple[str, ...]
    only: tuple[str, ...] | None = None
    include_opt_in: bool = False
    profile: str | None = None       # pinned: wins over a budget
    budget_s: float | None = None    # the longest rung of the ladder that fits chooses the profile
    left_out: tuple[str, ...] = ()   # files left out on purpose (run_all.sh's CPU default)
    retrain_damaged: bool = False
    precision: Precision | None = None  # replaces the profiles' (run --precision, or the CPU's bf16 choice)
    needs_reference: bool = False    # a budget picks among rungs with a complete reference (budget.py)


@dataclass(frozen=True)
class Selection:
    request: Request
    by_profile: dict[str, list[RunSpec]]  # candidate profile -> its validated runs (ladder order)

    @property
    def rows(self) -> list[str]:
        """The selected rows, the same on every rung: what the budget's record is keyed on."""
        specs = next(iter(self.by_profile.values()))
        return sorted({f"{s.experiment}/{s.name}-s{s.seed}" for s in specs})


@dataclass
class Invocation:
    """The one plan an invocation carries out."""

    request: Request
    profile: str
    plan: Plan
    eta: dict[Job, float] = field(default_factory=dict)  # each job's seconds alone here (empty: not estimated)
    job_s: float | None = None       # the whole job's wall time on the executor's slots
    sharing: Sharing = Sharing()     # the executor's slots and how they share devices
    choice: Choice | None = None     # the budget's rung, when a budget chose the profile
    left_out: Plan | None = None
    left_out_s: float | None = None  # what the left-out runs would take here (scaled by FLOPs)

    @property
    def total_s(self) -> float:
        return sum(self.eta.values())

    @property
    def slots(self) -> int:
        return self.sharing.slots


def select(request: Request, default_profile: str) -> Selection:
    """Validate every file and row for each candidate profile (ExperimentError on a mistake)."""
    if request.budget_s and not request.profile:
        profiles = [r.profile for r in load_ladder()]
    else:
        profiles = [request.profile or default_profile]
    only = list(request.only) if request.only else None
    return Selection(request, {p: select_runs(list(request.files), p, only, request.include_opt_in,
                                              request.precision) for p in profiles})


def plan_invocation(selection: Selection, results: Path, dataset: dict[str, Any], estimator: Estimator | None,
                    sharing: Sharing = Sharing(), recorded: dict[str, Any] | None = None,
                    judged: Callable[[Rung], bool] | None = None) -> Invocation:
    """The rung (if a budget chooses it), the plan, the estimates and the left-out runs.
    ``dataset``: the loaded data's provenance (sha256, n_train, n_test); ``estimator``: None
    plans without timing anything; ``sharing``: the executor's slots, and how runs sharing a
    device slow each other; ``recorded``: an earlier invocation's budget record. With more
    than one slot the plan's jobs are put longest first, the order the executor takes them in."""
    req, sha = selection.request, dataset["sha256"]
    choice = None
    if len(selection.by_profile) > 1:  # a budget: estimate every rung, keep or choose one (budget.py)
        if estimator is None:
            raise ValueError("a budget needs the estimate: the rung is chosen by it")
        choice = choose(selection, results, sha, estimator, sharing, recorded, judged)
        profile = choice.rung.profile
    else:
        profile = next(iter(selection.by_profile))
    specs = selection.by_profile[profile]
    check_against_data(specs, dataset["n_train"], dataset["n_test"])
    plan = make_plan(specs, results, sha, req.retrain_damaged, copyable(specs, sha))
    eta = estimator.timed(plan.jobs) if (estimator is not None and plan.jobs) else {}
    plan.jobs = start_order(plan.jobs, eta, sharing)
    inv = Invocation(req, profile, plan, eta, job_seconds([eta[j] for j in plan.jobs], sharing) if eta else None,
                     sharing, choice)
    if req.left_out:
        left = select_runs(list(req.left_out), profile, None, req.include_opt_in, req.precision)  # whole files
        inv.left_out = plan_left_out(specs, left, results, sha)
        inv.left_out_s = estimator.scaled(inv.left_out.jobs) if estimator is not None else None
    return inv


def start_order(jobs: list[Job], eta: dict[Job, float], sharing: Sharing) -> list[Job]:
    """The order the executor takes the jobs in: longest first with more than one slot (or
    Ray's, counted once it runs), so the longest run does not start last; else the plan's."""
    return longest_first(jobs, eta) if sharing.slots != 1 else jobs


def choose(selection: Selection, results: Path, dataset_sha256: str, estimator: Estimator, sharing: Sharing,
           recorded: dict[str, Any] | None, judged: Callable[[Rung], bool] | None = None) -> Choice:
    """The budget's rung: every rung planned and estimated for the selected rows (each model
    timed once: a rung's estimate is what is left to train on it, spread over the slots), then
    the rule that keeps a rerun on its rung (budget.keep_choice); ``judged``: with
    ``--needs-reference``, whether a rung's reference covers the selected runs."""
    estimates, unfinished = [], {}
    by_rung = {r.profile: r for r in load_ladder()}
    for profile, specs in selection.by_profile.items():
        plan = make_plan(specs, results, dataset_sha256, elsewhere=copyable(specs, dataset_sha256))
        pending = [p for p in plan.runs if p.action in (Action.RESUME, Action.RETRY) and p.done_iterations]
        if pending:
            unfinished[profile] = len(pending)
        eta = estimator.timed(plan.jobs)
        estimates.append((by_rung[profile], job_seconds([eta[j] for j in start_order(plan.jobs, eta, sharing)], sharing)))
    return keep_choice(estimates, selection.request.budget_s, unfinished, recorded, selection.rows,
                       judged if selection.request.needs_reference else None)


def copyable(specs: list[RunSpec], dataset_sha256: str) -> dict[str, RunDir]:
    """The committed references' runs that these specs' baselines may be copied from."""
    return reference_baselines(specs, dataset_sha256, [REPO / ref for rung in load_ladder() for ref in rung.references])


def plan_left_out(specs: list[RunSpec], left: list[RunSpec], results: Path, dataset_sha256: str) -> Plan:
    """The plan of the left-out runs as if they came after this invocation's: what this
    invocation trains, they reuse, and it is not counted twice."""
    both = make_plan(specs + left, results, dataset_sha256)
    mine = {id(s) for s in left}
    return Plan([p for p in both.runs if id(p.spec) in mine], results, dataset_sha256,
                [j for j in both.jobs if id(j.spec) in mine])
