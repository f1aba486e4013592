"""Your runs beside the committed reference of the same schedule.

For every finished run whose rung (profile) has a committed reference (``runs/planning/ladder.yaml``,
``reports/reference/<profile>/results``) trained on the same dataset (same sha256), its final
errors are set against the reference's seeds of the same row name: *within the reference's
seed spread* when they fall inside the 95 % prediction interval for one more seed,
mean +- t(0.975, n-1) * s * sqrt(1 + 1/n) over the reference's n seeds (``scipy.stats.t``),
*outside* otherwise (then: what may differ, from both runs' provenance). With one reference
seed there is no spread: the difference is given, without a verdict. A run is compared with
the reference of its own precision (``Rung.reference_for``: bf16 runs with the bf16 one).

``precision_rows`` / ``bf16_verdict``: the committed bf16 references against the fp32 ones of
the same rung, net by net: the bf16 seeds' mean against the fp32 seeds' 95 % prediction interval
for the mean of that many more seeds, mean +- t(0.975, n-1) * s * sqrt(1/m + 1/n). The budget
trains in bf16 on a CPU only where every net at every rung with both references is within it.

Read by ``python -m resnet_exp compare``, the index page and the curve reports (which draw
the reference's curve, thin, grey and dashed, beside yours).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from ..runs.planning.ladder import REPO, load_ladder, rung_of
from ..runs.rundir import RunStatus
from .results import Results, load_results, schedule_of, unique_runs

WITHIN, OUTSIDE, NO_SPREAD = "within the reference's seed spread", "outside the reference's seed spread", \
    "no spread to compare with (one reference seed)"


def shown(path: str | Path) -> str:
    """A path as a reader of a committed page should see it: relative to the repository."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def is_reference(results_dir: str | Path) -> bool:
    """Is this results folder one of the committed references (never compared with itself)?"""
    refs = {(REPO / ref).resolve() for r in load_ladder() for ref in r.references}
    return Path(results_dir).resolve() in refs


def reference_dir(profile: str | None, precision: str | None = "fp32") -> Path | None:
    rung = rung_of(profile)
    if rung is None or not rung.reference_for(precision):
        return None
    path = REPO / rung.reference_for(precision)
    return path if path.is_dir() else None


REFERENCE_SEEDS = 3  # seeds a net needs in a reference for the default to call its rung judged


@functools.lru_cache(maxsize=64)
def coverage(profile: str, precision: str, nets: tuple[str, ...], dataset_sha256: str) -> tuple[bool, str]:
    """Does the committed reference of this rung, in this precision, hold every one of ``nets``
    (row names: plain20, resnet56, ...) with ``REFERENCE_SEEDS`` finished seeds on this data?
    (covered, the plan's REFERENCE line in words). Handed by the command line to the budget
    (``run --needs-reference``): the default trains a rung it can judge its runs against."""
    where = reference_dir(profile, precision)
    if where is None:
        return False, f"none: rung {profile} has no committed {precision} reference"
    ref = load_results(where, dataset_sha256=dataset_sha256)
    runs = ref.runs
    if len(runs):
        runs = unique_runs(runs[(runs["status"] == RunStatus.FINISHED.value)
                                & (runs["schedule"] == schedule_of(profile, precision))
                                & (runs["dataset_sha256"] == dataset_sha256)])
    seeds = {n: int(runs[runs["name"] == n]["seed"].nunique()) if len(runs) else 0 for n in nets}
    short = [f"{n} ({k} seed{'s' if k != 1 else ''})" for n, k in seeds.items() if k < REFERENCE_SEEDS]
    if short:
        return False, (f"none complete: {shown(where)} holds {', '.join(short)} on this data "
                       f"(a net needs {REFERENCE_SEEDS} seeds)")
    return True, f"compared with {shown(where)}: {', '.join(nets)}, {REFERENCE_SEEDS} seeds each or more"


def load_reference(res: Results, reference: str | Path | None = None) -> Results | None:
    """The reference for these results: ``reference`` when given, else the committed one of
    the results' profile and precision (the first pair found); only its runs on the same
    dataset. None when there is none."""
    pairs = res.runs[["profile", "precision"]].dropna().drop_duplicates().itertuples(index=False) \
        if len(res.runs) else []
    if reference is None:
        dirs = [d for p, q in pairs if (d := reference_dir(p, q)) is not None]
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


def prediction_interval(values: pd.Series, more: int = 1) -> tuple[float, float] | None:
    """95 % interval for the mean of ``more`` more seeds (one: a single run), from these seeds
    (None with fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    half = stats.t.ppf(0.975, n - 1) * values.std() * math.sqrt(1 / more + 1 / n)
    return float(values.mean() - half), float(values.mean() + half)


def _inside(test: float, train: float, pi_test: tuple[float, float], pi_train: tuple[float, float]) -> bool:
    """Both final errors inside their intervals: the one rule of every verdict in this module."""
    return pi_test[0] <= test <= pi_test[1] and pi_train[0] <= train <= pi_train[1]


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
    """The reference's finished runs of the same row (name), schedule (profile) and precision
    as ``run``."""
    return ref_done[(ref_done["name"] == run.name) & (ref_done["profile"] == run.profile)
                    & (ref_done["precision"] == run.precision)]


def compare(res: Results, ref: Results | None) -> list[Comparison]:
    """Every finished run of ``res`` that the reference has a row of the same name for."""
    if ref is None or not len(res.runs):
        return []
    ref_done = _finished(ref)
    out = []
    # a run copied in from a committed reference (a baseline the plan did not train again) is
    # that reference's own run: never judged against it
    mine = _finished(res)
    from_ref = mine["copied_from"].fillna("").astype(str).str.startswith("reports/reference/")
    for r in mine[~from_ref].itertuples():
        seeds = _seeds_of(ref_done, r)
        if not len(seeds):
            continue  # said by without_reference
        test, train = seeds["final_test_error"], seeds["final_train_error"]
        pi_test, pi_train = prediction_interval(test), prediction_interval(train)
        if pi_test is None or pi_train is None:
            verdict = NO_SPREAD
        else:
            verdict = WITHIN if _inside(r.final_test_error, r.final_train_error, pi_test, pi_train) else OUTSIDE
        out.append(Comparison(
            r.run, r.name, r.profile, r.final_test_error, r.final_train_error, test.mean(),
            test.std() if len(test) > 1 else None, train.mean(), train.std() if len(train) > 1 else None, len(seeds),
            *(pi_test or (None, None)), *(pi_train or (None, None)), verdict,
            _differences(pd.Series(r._asdict()), seeds)))
    return out


@functools.lru_cache(maxsize=8)
def _reference_runs(path: str, sha256: str | None) -> pd.DataFrame:
    return _finished(load_results(path, dataset_sha256=sha256))


def verdict_of_run(meta: dict[str, Any]) -> str | None:
    """A run that just finished against the committed reference of its rung and precision on
    its dataset, in a few words (the line ``run`` prints as each run ends); None where no
    reference holds its row. Never raises: a reference that cannot be read gives no verdict."""
    cfg, final = meta.get("config") or {}, meta.get("final") or {}
    sha = (meta.get("dataset") or {}).get("sha256")
    precision = (cfg.get("recipe") or {}).get("precision", "fp32")
    ref_dir = reference_dir(cfg.get("profile"), precision)
    if ref_dir is None or "test_error" not in final or "train_error" not in final:
        return None
    try:
        ref = _reference_runs(str(ref_dir), sha)
    except (OSError, ValueError, KeyError):
        return None
    run = SimpleNamespace(name=cfg.get("name"), profile=cfg.get("profile"), precision=precision)
    seeds = _seeds_of(ref, run) if len(ref) else ref
    if not len(seeds) or (ref["dataset_sha256"].dropna() != sha).any():
        return None
    test, train = seeds["final_test_error"], seeds["final_train_error"]
    pi_test, pi_train = prediction_interval(test), prediction_interval(train)
    if pi_test is None or pi_train is None:
        return f"{final['test_error'] - test.mean():+.2f} test error against its one seed"
    inside = _inside(final["test_error"], final["train_error"], pi_test, pi_train)
    return (f"{WITHIN if inside else OUTSIDE} ({len(seeds)} seeds, test {test.mean():.2f} %, "
            f"interval {pi_test[0]:.2f}-{pi_test[1]:.2f})")


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


# --------------------------------------------------------------------------- bf16 against fp32
@dataclass(frozen=True)
class PrecisionRow:
    """One net at one rung: the bf16 reference's seeds' mean against the fp32 reference's interval."""

    fraction: str
    profile: str
    name: str
    bf16_seeds: int
    fp32_seeds: int
    bf16_test: float
    bf16_train: float
    fp32_test: float
    fp32_train: float
    low_test: float
    high_test: float
    low_train: float
    high_train: float

    @property
    def within(self) -> bool:
        return _inside(self.bf16_test, self.bf16_train, (self.low_test, self.high_test), (self.low_train, self.high_train))

    def sentence(self) -> str:
        return (f"{self.fraction} {self.name}: bf16 {self.bf16_test:.2f} / {self.bf16_train:.2f} % (test / training, "
                f"mean of {self.bf16_seeds}), fp32 {self.fp32_test:.2f} / {self.fp32_train:.2f} % (mean of "
                f"{self.fp32_seeds}; 95 % interval for a mean of {self.bf16_seeds}: {self.low_test:.2f}-"
                f"{self.high_test:.2f} / {self.low_train:.2f}-{self.high_train:.2f}): "
                f"{'within' if self.within else 'OUTSIDE'}")


def precision_rows() -> list[PrecisionRow]:
    """Every net of every rung with both a committed fp32 and a bf16 reference."""
    rows = []
    for rung in load_ladder():
        if not (rung.reference and rung.reference_bf16 and (REPO / rung.reference_bf16).is_dir()):
            continue
        fp32, bf16 = (_finished(load_results(REPO / d)) for d in (rung.reference, rung.reference_bf16))
        for name in sorted(set(bf16["name"])):
            ours, ref = bf16[bf16["name"] == name], fp32[fp32["name"] == name]
            pi_test = prediction_interval(ref["final_test_error"], len(ours))
            pi_train = prediction_interval(ref["final_train_error"], len(ours))
            if pi_test is None or pi_train is None:
                continue  # one fp32 seed: no interval to judge by
            rows.append(PrecisionRow(rung.fraction, rung.profile, name, len(ours), len(ref),
                                     ours["final_test_error"].mean(), ours["final_train_error"].mean(),
                                     ref["final_test_error"].mean(), ref["final_train_error"].mean(),
                                     *pi_test, *pi_train))
    return rows


BF16_NETS = 4  # the nets of experiments/seeds.yaml: what both references must hold at a rung to judge it
BF16_RUNGS = 2  # 1/64 and 1/32, the rungs a CPU's budget chooses between
BF16_SEEDS = 3  # a net counts once its bf16 reference has all three seeds, so a reference still
                # training (or published in part) cannot turn the budget to bf16


def bf16_verdict() -> tuple[bool, str]:
    """(bf16 gives fp32's answer, the evidence in words): every net of ``BF16_RUNGS`` rungs with
    both references within the fp32 interval. Handed by the command line to the budget."""
    rows = [r for r in precision_rows() if r.bf16_seeds >= BF16_SEEDS]
    rungs = {r.fraction for r in rows if sum(o.fraction == r.fraction for o in rows) >= BF16_NETS}
    if len(rungs) < BF16_RUNGS:
        return False, (f"the committed bf16 references cover {len(rungs)} of the {BF16_RUNGS} rungs needed "
                       f"({BF16_NETS} nets each, {BF16_SEEDS} seeds) to show it gives fp32's answer")
    outside = [r for r in rows if not r.within]
    if outside:
        return False, ("the committed bf16 references fell outside the fp32 references' 95 % intervals on "
                       + "; ".join(f"{r.fraction} {r.name} ({r.bf16_test:.2f} test, {r.low_test:.2f}-{r.high_test:.2f};"
                                   f" {r.bf16_train:.2f} training, {r.low_train:.2f}-{r.high_train:.2f})"
                                   for r in outside))
    return True, (f"the committed bf16 references were within the fp32 references' 95 % intervals on all "
                  f"{len(rows)} nets of rungs {', '.join(sorted(rungs))} (python -m resnet_exp compare --precisions)")
