"""Ablation rows against their baselines, with the seed-to-seed noise.

For every row of ``experiments/ablations.yaml`` and the baseline it names: the final test
and training errors as mean +- std over the finished seeds, and the difference (row minus
baseline) with a 95 % confidence interval:

- **paired** over seeds when both sides ran the same seeds (same data order and initial
  weights' seed): a one-sample t interval of the per-seed differences;
- **Welch's** interval otherwise (unequal variances).

Both come from ``scipy.stats`` (``ttest_1samp`` and ``ttest_ind(equal_var=False)``, their
``confidence_interval``), not hand-written statistics. The verdict in words: "lower error"
or "higher error" when the interval excludes 0, "within noise" when it contains 0, and
"no verdict: n seed(s)" when a side has fewer than 2 finished seeds (with the command that
adds seeds). A side whose seeds agree exactly has a zero-width interval: the difference is
then decided by its sign alone.

Swept rows (``sweep: {lr: [...]}``) are compared value by value, and summarised as final
error against the swept value (``sweep_points``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from ..runs.rundir import RunStatus
from .results import Results, unique_runs

LOWER, HIGHER, NOISE = "lower error", "higher error", "within noise"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """Row minus baseline on one metric (final test or training error, %)."""

    metric: str
    row: str                 # mean +- std (n seeds)
    baseline: str
    diff: float | None       # mean difference
    low: float | None        # 95 % interval
    high: float | None
    method: str              # "paired over seeds 1, 2, 3", "Welch", or why there is none
    verdict: str


def mean_std_n(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{pd.Series(values).mean():.2f} +- {pd.Series(values).std():.2f} ({len(values)} seeds)"


def compare(row: dict[int, float], base: dict[int, float], metric: str, add_seeds: str) -> Difference:
    """The difference row - base with its 95 % interval and verdict; ``row`` and ``base``
    map seed -> final error. ``add_seeds`` is the command that gives a side more seeds."""
    r, b = list(row.values()), list(base.values())
    shown = dict(metric=metric, row=mean_std_n(r), baseline=mean_std_n(b))
    if len(r) < 2 or len(b) < 2:
        n = min(len(r), len(b))
        return Difference(**shown, diff=(sum(r) / len(r) - sum(b) / len(b)) if r and b else None, low=None,
                          high=None, method=f"needs 2 or more seeds a side ({add_seeds})",
                          verdict=f"no verdict: {n} seed{'s' if n != 1 else ''}")
    paired = sorted(row) == sorted(base)
    if paired:
        d = [row[s] - base[s] for s in sorted(row)]
        diff = sum(d) / len(d)
        method = f"paired over seeds {', '.join(map(str, sorted(row)))} (scipy.stats.ttest_1samp)"
        spread = pd.Series(d).std()
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(CONFIDENCE) if spread > 0 else None
    else:
        diff = sum(r) / len(r) - sum(b) / len(b)
        method = "Welch, unequal variances (scipy.stats.ttest_ind); the seeds differ, so not paired"
        spread = max(pd.Series(r).std(), pd.Series(b).std())
        ci = stats.ttest_ind(r, b, equal_var=False).confidence_interval(CONFIDENCE) if spread > 0 else None
    low, high = (float(ci.low), float(ci.high)) if ci is not None else (diff, diff)  # zero spread: exact
    if math.isnan(low) or math.isnan(high):
        low, high = diff, diff
    verdict = NOISE if low <= 0 <= high else LOWER if high < 0 else HIGHER
    return Difference(**shown, diff=diff, low=low, high=high, method=method, verdict=verdict)


# --------------------------------------------------------------------------- the table
def ablation_groups(res: "Results", experiment: str = "ablations") -> list[tuple[str, list[str], list[str]]]:
    """(group, its row names, its baselines as experiment/name) in file order."""
    rows = res.runs[res.runs["experiment"] == experiment]
    out = []
    for group in dict.fromkeys(rows["group"].fillna("ungrouped")):
        g = rows[rows["group"].fillna("ungrouped") == group]
        out.append((group, list(dict.fromkeys(g["name"])), list(dict.fromkeys(g["baseline"].dropna()))))
    return out



def _finals(runs: pd.DataFrame, column: str) -> dict[int, float]:
    done = unique_runs(runs[runs["status"] == RunStatus.FINISHED.value])
    return {int(r.seed): float(getattr(r, column)) for r in done.itertuples() if pd.notna(getattr(r, column))}


def _add_seeds_hint(name: str, experiments_dir: str | Path, experiment: str = "ablations") -> str:
    f = Path(experiments_dir) / f"{experiment}.yaml"
    if f.is_absolute() and f.is_relative_to(Path.cwd()):  # as the user would type it, from where they are
        f = f.relative_to(Path.cwd())
    return (f"python -m resnet_exp run {f} --only {name} trains the row's missing seeds and its baseline's; "
            f"a row of one seed needs 'seeds: [1, 2, 3]' in {f} first")


def own_experiments(res: Results, experiments_dir: str | Path = "experiments") -> list[str]:
    """The results folder's experiments that are a user's own files (none of the suite's
    ``experiments/``) and name a baseline: their rows are ablations of the paper's nets."""
    if not len(res.runs):
        return []
    with_baseline = res.runs[res.runs["baseline"].notna()]
    return [e for e in dict.fromkeys(with_baseline["experiment"]) if not (Path(experiments_dir) / f"{e}.yaml").exists()]


def ablation_rows(res: Results, experiments_dir: str | Path = "experiments",
                  experiment: str | None = None) -> list[dict[str, Any]]:
    """One entry per ablation run name (each value of a swept row is one), with its
    baseline, both metrics' differences and verdicts. ``experiment``: one experiment's rows;
    by default ``ablations`` and every one of the user's own files (``own_experiments``),
    whose rows are named ``<experiment>/<name>``."""
    if experiment is None:
        return ablation_rows(res, experiments_dir, "ablations") + [
            {**entry, "row": f"{exp}/{entry['row']}"} for exp in own_experiments(res, experiments_dir)
            for entry in ablation_rows(res, experiments_dir, exp)]
    runs = res.runs[res.runs["experiment"] == experiment] if len(res.runs) else res.runs
    several = len(set(res.runs["schedule"])) > 1 if len(res.runs) else False
    out = []
    # one entry per row and schedule: a row is judged against its baseline's runs of its own schedule
    for (name, schedule), group in (runs.groupby(["name", "schedule"], sort=False) if len(runs) else []):
        first = group.iloc[0]
        base_exp, _, base_name = (first["baseline"] or "/").partition("/")
        base_runs = res.runs[(res.runs["experiment"] == base_exp) & (res.runs["name"] == base_name)
                             & (res.runs["schedule"] == schedule)]
        hint = _add_seeds_hint(first["sweep_row"] if pd.notna(first.get("sweep_row")) else name, experiments_dir,
                               experiment)
        entry = {"group": first["group"] or "-", "row": f"{name} [{schedule}]" if several else name, "name": name,
                 "baseline": first["baseline"] or "-", "schedule": schedule,
                 "sweep_row": first.get("sweep_row"), "sweep_values": first.get("sweep_values"),
                 "status": ", ".join(sorted(set(group["status"]))), "note": first["note"] or ""}
        waiting = len(base_runs) and not (base_runs["status"] == RunStatus.FINISHED.value).any()
        if first["baseline"] and waiting:  # judged against nothing else meanwhile
            entry["status"] += "; baseline still training"
        for metric, column in (("test", "final_test_error"), ("train", "final_train_error")):
            if not first["baseline"]:
                entry[metric] = None
                continue
            entry[metric] = compare(_finals(group, column), _finals(base_runs, column), metric, hint)
        out.append(entry)
    return out


def ablation_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The report's table: one line per row, test and training error side by side."""
    cols = ["group", "row", "baseline", "test error % (row)", "test error % (baseline)",
            "test difference [95 % CI]", "test verdict", "train error % (row)", "train error % (baseline)",
            "train difference [95 % CI]", "train verdict", "interval", "status", "note"]
    lines = []
    for e in rows:
        line = {"group": e["group"], "row": e["row"], "baseline": e["baseline"], "status": e["status"],
                "note": e["note"], "interval": "-"}
        for metric in ("test", "train"):
            d: Difference | None = e[metric]
            line[f"{metric} error % (row)"] = d.row if d else "-"
            line[f"{metric} error % (baseline)"] = d.baseline if d else "-"
            line[f"{metric} difference [95 % CI]"] = _diff_text(d)
            line[f"{metric} verdict"] = d.verdict if d else "no baseline"
            if d:
                line["interval"] = d.method
        lines.append(line)
    return pd.DataFrame(lines, columns=cols)


def _diff_text(d: Difference | None) -> str:
    if d is None or d.diff is None:
        return "-"
    if d.low is None:
        return f"{d.diff:+.2f}"
    return f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def ablations_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, **{m: asdict(e[m]) if e[m] else None for m in ("test", "train")}} for e in rows]


def ablations_text(rows: list[dict[str, Any]]) -> str:
    """For the terminal: one block per row."""
    if not rows:
        return "No ablation runs in this results folder yet."
    out = []
    for e in rows:
        out.append(f"{e['group']}: {e['row']} vs {e['baseline']} ({e['status']})")
        for metric in ("test", "train"):
            d = e[metric]
            if d is None:
                out.append(f"  {metric:<5} no baseline named")
                continue
            out.append(f"  {metric:<5} {d.row} vs {d.baseline}: {_diff_text(d)} -> {d.verdict.upper()}")
        if e["test"]:
            out.append(f"        interval: {e['test'].method}")
    return "\n".join(out)


# --------------------------------------------------------------------------- sweeps
def sweep_points(res: Results, experiment: str = "ablations") -> pd.DataFrame:
    """Final errors against the swept value, per swept row and key: one line per value with
    mean, std, min, max over its finished seeds (for error bars), and the baseline's."""
    cols = ["sweep_row", "key", "value", "metric", "mean", "std", "min", "max", "seeds", "baseline"]
    runs = res.runs[(res.runs["experiment"] == experiment)] if len(res.runs) else res.runs
    if not len(runs) or "sweep_row" not in runs or runs["sweep_row"].isna().all():
        return pd.DataFrame(columns=cols)
    done = unique_runs(runs[runs["sweep_row"].notna() & (runs["status"] == RunStatus.FINISHED.value)])
    lines = []
    for r in done.itertuples():
        for key, value in (r.sweep_values or {}).items():
            for metric, column in (("test", "final_test_error"), ("train", "final_train_error")):
                lines.append({"sweep_row": r.sweep_row, "key": key, "value": value, "metric": metric,
                              "error": getattr(r, column), "baseline": r.baseline})
    if not lines:
        return pd.DataFrame(columns=cols)
    d = pd.DataFrame(lines)
    g = d.groupby(["sweep_row", "key", "value", "metric", "baseline"], sort=True)["error"]
    return g.agg(mean="mean", std="std", min="min", max="max", seeds="count").reset_index()[cols]


def baseline_points(res: Results, baseline: str | None) -> pd.DataFrame | None:
    """The baseline's final errors (mean over its finished seeds), drawn beside a sweep."""
    experiment, _, name = (baseline or "/").partition("/")
    b = res.runs[(res.runs["experiment"] == experiment) & (res.runs["name"] == name)] if len(res.runs) else res.runs
    b = unique_runs(b[b["status"] == RunStatus.FINISHED.value]) if len(b) else b
    if not len(b):
        return None
    return pd.DataFrame([{"metric": m, "mean": b[c].mean(), "seeds": len(b)}
                         for m, c in (("test", "final_test_error"), ("train", "final_train_error"))])
