"""A time budget chooses the schedule: the longest rung of the ladder (``ladder.yaml``)
whose estimated training time fits.

All runs of one invocation share one rung, so every comparison is like with like. The
estimate is the plan's own (each selected model timed here for a few steps, scaled by the
rung's iterations and evaluations); it moves with load and warm caches, so a rerun must not
follow it blindly. Rule, in this order:

1. a rung with unfinished runs (a checkpoint to resume, a failed run to retry) among the
   selected rows in this results folder is kept: Ctrl-C and rerun resume the same runs;
2. the rung recorded by an earlier invocation with the same budget and the same rows
   (``<results>/.budget.json``) is kept;
3. otherwise the longest rung that fits; if none fits, the shortest, trained anyway (the
   plan says so with its estimate: a default that refuses to run helps nobody).

``run --needs-reference`` (run_all.sh's CPU default) narrows rule 3 to the rungs whose
committed reference, in the precision the runs train in, holds every selected net with three
seeds on the same data: the default trains what it can judge. A longer rung that fits but has
no such reference is named in the plan with the command that trains it anyway (an explicit
``--budget``); when no referenced rung fits, the rule falls back to every rung. Whether a rung
is covered is the reports' answer (``reporting.reference.coverage``), handed down by the
command line as ``judged``: planning never imports the reports.

``--profile`` pins a schedule and wins over a budget.

The precision (``choose_precision``): on a CPU that computes bf16 natively (oneDNN's answer,
``device.cpu_native_bf16``) a bf16 step is about 1.85x faster, most of a rung. The budget
estimates the rungs in bf16 there only when the committed bf16 references were shown to give
the fp32 references' answer (the reports decide it from the run folders, ``reporting/
reference.py``, and the command line hands the verdict down); else fp32 stays, and the plan
says what bf16 would change. ``--precision`` overrides either way; a pinned ``--profile``
without it trains the profile's fp32.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...fileio import atomic_write_json, human_duration
from .experiments import Precision
from .ladder import Rung

BUDGET_FILE = ".budget.json"
_UNITS = {"h": 3600, "m": 60, "s": 1}


class BudgetError(ValueError):
    """A budget that is not a positive duration."""


def parse_budget(text: str) -> float:
    """Seconds in ``90s``, ``45m``, ``2h``, ``1h30m`` (a bare number is minutes)."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        t += "m"
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if not parts or "".join(n + u for n, u in parts) != t or len({u for _, u in parts}) != len(parts):
        raise BudgetError(f"--budget {text!r}: expected a duration such as 90s, 45m, 2h or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise BudgetError(f"--budget {text!r}: must be more than zero")
    return seconds


@dataclass(frozen=True)
class Choice:
    rung: Rung
    estimate_s: float
    fits: bool
    next_rung: Rung | None = None
    next_estimate_s: float | None = None
    kept: str | None = None  # why an earlier invocation's rung was kept
    # --needs-reference: a longer rung that fits but has no complete reference (left for --budget)
    unjudged: Rung | None = None
    unjudged_estimate_s: float | None = None


def choose_rung(estimates: Sequence[tuple[Rung, float]], budget_s: float,
                judged: Callable[[Rung], bool] | None = None) -> Choice:
    """The longest rung (``estimates`` is shortest first) whose estimate fits the budget; the
    shortest, marked as not fitting, when none does. ``judged``: only rungs it accepts (those
    with a complete reference), when any of them fits. Pure: no clock, no files."""
    fitting = [i for i, (_, s) in enumerate(estimates) if s <= budget_s]
    judged_fitting = [i for i in fitting if judged(estimates[i][0])] if judged is not None else fitting
    chosen = judged_fitting or fitting
    i = chosen[-1] if chosen else 0
    nxt = estimates[i + 1] if i + 1 < len(estimates) else None
    longer = [j for j in fitting if j > i]
    return Choice(estimates[i][0], estimates[i][1], bool(fitting), nxt[0] if nxt else None, nxt[1] if nxt else None,
                  unjudged=estimates[longer[-1]][0] if longer else None,
                  unjudged_estimate_s=estimates[longer[-1]][1] if longer else None)


def keep_choice(estimates: Sequence[tuple[Rung, float]], budget_s: float, unfinished: dict[str, int],
                recorded: dict[str, Any] | None, rows: list[str], judged: Callable[[Rung], bool] | None = None) -> Choice:
    """The rule of the module docstring: unfinished runs, then the recorded choice, then
    ``choose_rung`` (with ``judged``, see there). ``unfinished``: profile -> number of selected
    runs with work to resume."""
    by_profile = {r.profile: (i, r, s) for i, (r, s) in enumerate(estimates)}
    kept, why = None, None
    if unfinished:
        profile = max(unfinished, key=lambda p: by_profile[p][0] if p in by_profile else -1)
        kept, why = profile, f"{unfinished[profile]} unfinished run(s) of this rung in the results folder resume"
    elif recorded and recorded.get("budget_s") == budget_s and recorded.get("rows") == rows:
        kept, why = recorded.get("profile"), "chosen for this budget and these rows by an earlier invocation"
    if kept in by_profile:
        i, rung, s = by_profile[kept]
        nxt = estimates[i + 1] if i + 1 < len(estimates) else None
        return Choice(rung, s, s <= budget_s, nxt[0] if nxt else None, nxt[1] if nxt else None, why)
    return choose_rung(estimates, budget_s, judged)


def read_record(results: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((results / BUDGET_FILE).read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def write_record(results: Path, budget_s: float, rows: list[str], rung: Rung) -> None:
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / BUDGET_FILE, {"budget_s": budget_s, "rows": rows, "profile": rung.profile})


def describe(choice: Choice, budget_s: float, known_to_show: str | None = None) -> list[str]:
    """The plan's lines about the budget's choice. ``known_to_show``: what the rung's committed
    reference showed, in words; the reports compute it (``reporting/claims.py``) and the
    command line on top hands it down, so that planning never imports the reports."""
    lines = [f"BUDGET {human_duration(budget_s)}: rung {choice.rung.profile} ({choice.rung.caption}), estimated "
             f"{human_duration(choice.estimate_s)} of training here"]
    if choice.kept:
        lines[0] += f"; kept: {choice.kept}"
    if not choice.fits:
        lines.append(f"  even the shortest rung does not fit the budget (estimate {human_duration(choice.estimate_s)}); "
                     "training it anyway")
    if choice.next_rung is not None and choice.next_estimate_s is not None:
        lines.append(f"  next rung {choice.next_rung.profile} ({choice.next_rung.caption}) would take about "
                     f"{human_duration(choice.next_estimate_s)}")
    if choice.unjudged is not None and choice.unjudged_estimate_s is not None:
        lines.append(f"  rung {choice.unjudged.profile} ({choice.unjudged.caption}) also fits "
                     f"({human_duration(choice.unjudged_estimate_s)} here) but has no complete reference to judge "
                     f"its runs against; to train it anyway: ./run_all.sh --budget {_budget_text(budget_s)}")
    if known_to_show is not None:
        lines.append(f"  this rung is known to show: {known_to_show}")
    return lines


def _budget_text(seconds: float) -> str:
    """A budget as ``--budget`` takes it back: 1h, 45m, 1h30m."""
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m}m" if h and m else f"{h}h" if h else f"{m}m"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision an invocation trains in and why. ``precision`` None: each profile's own
    (fp32); ``alternative``: the precision the plan also estimates the budget's rung in, so that
    it can say what the other choice would have trained."""

    precision: Precision | None
    why: str | None = None
    alternative: Precision | None = None


def choose_precision(requested: Precision | None, device_type: str, native_bf16: bool, budget: bool,
                     bf16_verdict: Callable[[], tuple[bool, str]] | None = None) -> PrecisionChoice:
    """The rule of the module docstring. ``bf16_verdict``: (bf16 shown equivalent to fp32, the
    evidence in one sentence), read from the committed references only when it can matter."""
    if requested is not None:
        return PrecisionChoice(requested, f"--precision {requested}")
    if device_type != "cpu" or not budget:
        return PrecisionChoice(None)
    if not native_bf16:
        return PrecisionChoice(None, "fp32: this CPU does not compute bf16 natively (oneDNN reports no "
                                     "AVX512-BF16 or AMX), so bf16 would be emulated and slower")
    shown, evidence = bf16_verdict() if bf16_verdict else (False, "no bf16 references to judge it by")
    if shown:
        return PrecisionChoice("bf16", f"bf16: this CPU computes it natively and {evidence}", alternative="fp32")
    return PrecisionChoice(None, f"fp32: this CPU computes bf16 natively, but {evidence}; "
                                 "--precision bf16 trains in it anyway", alternative="bf16")


def describe_precision(choice: PrecisionChoice, alternative: Choice | None) -> list[str]:
    """The plan's lines about the precision: which, why, and the other precision's rung."""
    if choice.why is None:
        return []
    lines = [f"PRECISION {choice.why}"]
    if alternative is not None and choice.alternative is not None:
        lines.append(f"  in {choice.alternative} the budget would train rung {alternative.rung.profile} "
                     f"({alternative.rung.caption}), estimated {human_duration(alternative.estimate_s)} here")
    return lines
