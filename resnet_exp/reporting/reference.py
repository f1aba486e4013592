"""Your runs beside the committed reference of the same schedule.

For every finished run whose rung (profile) has a committed reference (``runs/planning/ladder.yaml``,
``reports/reference/<profile>/results``) trained on the same dataset (same sha256), its final
errors are set against the reference's seeds of the same row name: *within the reference's
seed spread* when they fall inside the 95 % prediction interval for one more seed,
mean +- t(0.975, n-1) * s * sqrt(1 + 1/n) over the reference's n seeds (``scipy.stats.t``),
*outside* otherwise (then: what may differ, from both runs' provenance). With one reference
seed there is no spread: the difference is given, without a verdict.

Read by ``python -m resnet_exp compare``, the index page and the curve reports (which draw
the reference's curve, thin, grey and dashed, beside yours).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from ..runs.planning.ladder import REPO, load_ladder, rung_of
from ..runs.rundir import RunStatus
from .results import Results, load_results, unique_runs

WITHIN, OUTSIDE, NO_SPREAD = "within the reference's seed spread", "outside the reference's seed spread", \
    "no spread to compare with (one reference seed)"


def shown(path: str | Path) -> str:
    """A path as a reader of a committed page should see it: relative to the repository."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def is_reference(results_dir: str | Path) -> bool:
    """Is this results folder one of the committed references (never compared with itself)?"""
    refs = {(REPO / r.reference).resolve() for r in load_ladder() if r.reference}
    return Path(results_dir).resolve() in refs


def reference_dir(profile: str | None) -> Path | None:
    rung = rung_of(profile)
    if rung is None or not rung.reference:
        return None
    path = REPO / rung.reference
    return path if path.is_dir() else None


def load_reference(res: Results, reference: str | Path | None = None) -> Results | None:
    """The reference for these results: ``reference`` when given, else the committed one of
    the results' profile; only its runs on the same dataset. None when there is none."""
    profiles = res.runs["profile"].dropna().unique() if len(res.runs) else []
    if reference is None:
        dirs = [d for p in profiles if (d := reference_dir(p)) is not None]
        if not dirs:
            return None
        reference = dirs[0]
    ref = load_results(reference, dataset_sha256=(res.dataset or {}).get("sha256"))
    if not len(ref.runs) or (res.dataset and (ref.dataset or {}).get("sha256") != res.dataset.get("sha256")):
        return None
    return ref


@dataclass(frozen=True)
class Comparison:
    run: str
    name: str
    profile: str
    ours_test: float
    ours_train: float
    ref_mean_test: float
    ref_std_test: float | None
    ref_mean_train: float
    ref_std_train: float | None
    ref_seeds: int
    low_test: float | None
    high_test: float | None
    low_train: float | None
    high_train: float | None
    verdict: str
    may_differ: str

    def sentence(self) -> str:
        ours = f"{self.name} ({self.run}): final test error {self.ours_test:.2f} %, training {self.ours_train:.2f} %"
        if self.verdict == NO_SPREAD:
            return (f"{ours}; the reference's one seed: {self.ref_mean_test:.2f} / {self.ref_mean_train:.2f} % "
                    f"(difference {self.ours_test - self.ref_mean_test:+.2f} test): {NO_SPREAD}.")
        ref = (f"reference {self.ref_mean_test:.2f} +- {self.ref_std_test:.2f} test, {self.ref_mean_train:.2f} +- "
               f"{self.ref_std_train:.2f} training over {self.ref_seeds} seeds, 95 % prediction interval "
               f"{self.low_test:.2f}-{self.high_test:.2f} test, {self.low_train:.2f}-{self.high_train:.2f} training")
        text = f"{ours}: {self.verdict} ({ref})."
        if self.verdict == OUTSIDE:
            text += f" What may differ: {self.may_differ}."
        return text

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def prediction_interval(values: pd.Series) -> tuple[float, float] | None:
    """95 % interval for one more seed, from these seeds (None with fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    half = stats.t.ppf(0.975, n - 1) * values.std() * math.sqrt(1 + 1 / n)
    return float(values.mean() - half), float(values.mean() + half)


def _differences(ours: pd.Series, ref: pd.DataFrame) -> str:
    parts = []
    for col, what in (("torch", "torch"), ("device", "device"), ("git_commit", "code")):
        theirs = sorted({str(v) for v in ref[col].dropna()})
        mine = ours[col] if isinstance(ours[col], str) else None
        if (mine or theirs) and mine not in theirs:
            parts.append(f"{what} (yours {ours[col]}, the reference's {', '.join(theirs) or '?'})")
    return "; ".join(parts) or ("nothing recorded differs (torch, device, code); the thread count, or a seed far "
                                "in the tail")


def _finished(res: Results) -> pd.DataFrame:
    """The finished runs, one row per identity (a run copied into two experiments counts once)."""
    return unique_runs(res.runs[res.runs["status"] == RunStatus.FINISHED.value])


def _seeds_of(ref_done: pd.DataFrame, run: Any) -> pd.DataFrame:
    """The reference's finished runs of the same row (name) and schedule (profile) as ``run``."""
    return ref_done[(ref_done["name"] == run.name) & (ref_done["profile"] == run.profile)]


def compare(res: Results, ref: Results | None) -> list[Comparison]:
    """Every finished run of ``res`` that the reference has a row of the same name for."""
    if ref is None or not len(res.runs):
        return []
    ref_done = _finished(ref)
    out = []
    for r in _finished(res).itertuples():
        seeds = _seeds_of(ref_done, r)
        if not len(seeds):
            continue  # said by without_reference
        test, train = seeds["final_test_error"], seeds["final_train_error"]
        pi_test, pi_train = prediction_interval(test), prediction_interval(train)
        if pi_test is None or pi_train is None:
            verdict = NO_SPREAD
        else:
            inside = pi_test[0] <= r.final_test_error <= pi_test[1] and pi_train[0] <= r.final_train_error <= pi_train[1]
            verdict = WITHIN if inside else OUTSIDE
        out.append(Comparison(
            r.run, r.name, r.profile, r.final_test_error, r.final_train_error, test.mean(),
            test.std() if len(test) > 1 else None, train.mean(), train.std() if len(train) > 1 else None, len(seeds),
            *(pi_test or (None, None)), *(pi_train or (None, None)), verdict,
            _differences(pd.Series(r._asdict()), seeds)))
    return out


def without_reference(res: Results, ref: Results | None) -> list[str]:
    """The row names of ``res``'s finished runs that the reference has no finished run of (a
    reference may hold only some nets, e.g. the ResNets at 1/16 and 1/8): said, not skipped."""
    if ref is None or not len(res.runs):
        return []
    ref_done = _finished(ref)
    return sorted({r.name for r in _finished(res).itertuples() if not len(_seeds_of(ref_done, r))})


def missing_sentence(names: list[str]) -> str:
    return (f"The reference has no finished run of {', '.join(names)} on this schedule: nothing to compare "
            f"{'it' if len(names) == 1 else 'them'} with.")


def reference_curves(ref: Results | None, names: list[str]) -> dict[str, pd.DataFrame]:
    """Per row name: the reference's mean curve over its seeds (iteration, train_error,
    test_error, seeds)."""
    if ref is None or not len(ref.logs):
        return {}
    out = {}
    for name in names:
        runs = unique_runs(ref.runs[(ref.runs["name"] == name) & (ref.runs["status"] == RunStatus.FINISHED.value)])
        logs = ref.logs[ref.logs["run"].isin(runs["run"])]
        if len(logs):
            curve = logs.groupby("iteration")[["train_error", "test_error"]].mean().reset_index()
            out[name] = curve.assign(seeds=runs["run"].nunique())
    return out


def compare_html(comparisons: list[Comparison], ref: Results | None, missing: list[str] | None = None) -> str:
    import html

    if ref is None:
        return ("<p>No committed reference of this schedule on this dataset to compare with (references: "
                "<code>reports/reference/</code>, one per rung of <code>runs/planning/ladder.yaml</code>).</p>")
    if not comparisons:
        return f"<p>The reference ({html.escape(shown(ref.results_dir))}) has no finished run of your rows.</p>"
    lacking = f"<p>{html.escape(missing_sentence(missing))}</p>" if missing else ""
    return ("<ul>" + "".join(f"<li>{html.escape(c.sentence())}</li>" for c in comparisons) + "</ul>" + lacking +
            f"<p style='color:#666'>Reference: {html.escape(shown(ref.results_dir))}.</p>")
