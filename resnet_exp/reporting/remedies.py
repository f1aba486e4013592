"""The remedies report (notebooks/remedies.ipynb): every row of experiments/remedies.yaml against
its baseline, with the ablations' paired intervals and verdicts (``ablations.py``), the
published numbers where the remedy's paper has one, and the layer signals of each: does the
remedy keep the gradient of the first block within ``BOUND`` of the last block's once training
starts (the first point recorded after initialisation), and does that predict which nets train?
The ratio at initialisation is shown as a fact beside it, not judged: where every branch starts
at zero (Fixup, SkipInit, ReZero, zero-init) no branch weight has a gradient yet (0/0), and
plain nets with BN start with the gradient exploding toward the input (signals.py).

"Trains" is read off the training error, the degradation's own measure: a remedy trains when
its final training error is not higher than its baseline's (verdict "lower error" or "within
noise" over seeds) and it did not diverge. For a plain-net remedy the baseline is plain-56,
so "trains" means "trains at least as well as the degraded plain net"; the table also gives
each row's training error beside ResNet-56's, the net the paper cures it with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.rundir import RunStatus
from .ablations import HIGHER, NOISE, LOWER, ablation_rows
from .results import Results
from .signals import first_last_ratio, load_signals  # noqa: F401  (the notebook draws with them)

EXPERIMENT = "remedies"
BOUND = 10.0  # the first block's gradient within 10x (one order of magnitude) of the last block's

# CIFAR-10 test error (%) that the remedy's paper (or He et al.) reports, by row name, at the row's
# depth or the nearest one it reports; what it is compared with in that paper.
PUBLISHED: dict[str, str] = {
    "resnet56": "6.97 (He et al. 2016, Table 6)",
    "rezero56": "6.38, against 7.74 for their ResNet-56 (Bachlechner et al. 2020, as cited in issue 43)",
    "highway56": "Highway 32 layers: 8.80; 19 layers: 7.54 (He et al. 2016, Table 6)",
    "preresnet56": "pre-activation ResNet-110: 6.37 against 6.61 (He et al. 2016b)",
    "plain56": "no number: Figures 1 and 6 show it above ResNet-56 and plain-20",
}


def grad_ratio_points(res: Results, names: list[str]) -> pd.DataFrame:
    """Per row and seed: the first block's gradient norm over the last block's at initialisation
    (iteration 0) and at the first point recorded after it ("after training starts")."""
    signals = load_signals(res, names)
    rows = []
    for (name, seed), run in signals.groupby(["name", "seed"], sort=False) if len(signals) else []:
        ratio = first_last_ratio(run)
        if not len(ratio):
            continue
        later = ratio[ratio["iteration"] > 0]
        rows.append({"name": name, "seed": seed, "init": float(ratio.iloc[0]["ratio"]),
                     "start": float(later.iloc[0]["ratio"]) if len(later) else None,
                     "start_iteration": int(later.iloc[0]["iteration"]) if len(later) else None})
    return pd.DataFrame(rows, columns=["name", "seed", "init", "start", "start_iteration"])


def bounded(values: list[float]) -> bool | None:
    values = [v for v in values if v is not None and pd.notna(v)]
    if not values:
        return None
    return all(1 / BOUND <= v <= BOUND for v in values)


def remedy_rows(res: Results, experiments_dir: str | Path = "experiments") -> list[dict[str, Any]]:
    """One entry per remedy row: the ablation entry (differences and verdicts against its
    baseline), its gradient ratios, whether they stay bounded, whether it trains, and
    whether the first predicts the second."""
    entries = ablation_rows(res, experiments_dir, experiment=EXPERIMENT)
    names = [e["name"] for e in entries] + sorted({e["baseline"].partition("/")[2] for e in entries})
    ratios = grad_ratio_points(res, names)
    runs = res.runs[res.runs["experiment"] == EXPERIMENT]
    out = []
    for e in entries:
        mine = ratios[ratios["name"] == e["name"]]
        seeds = runs[(runs["name"] == e["name"]) & (runs["schedule"] == e["schedule"])]
        gone = seeds[seeds["status"] == RunStatus.DIVERGED.value]
        diverged = "diverged" in e["status"]
        train = e["train"]
        if diverged:
            trains: bool | None = False
        elif train is None or train.verdict not in (LOWER, NOISE, HIGHER):  # no verdict yet (one seed, none)
            trains = None
        else:
            trains = train.verdict in (LOWER, NOISE)
        keeps = bounded(list(mine["start"]))
        out.append({**e, "trains": trains, "bounded": keeps,
                    "ratio_init": float(mine["init"].median(skipna=False)) if len(mine) else None,
                    "ratio_start": float(mine["start"].dropna().median()) if mine["start"].notna().any() else None,
                    "predicted": None if trains is None or keeps is None else keeps == trains,
                    # seeds that diverged of those run, and the last iteration any of them reached
                    "diverged_seeds": (len(gone), seeds["seed"].nunique(),
                                       int(gone["iteration"].max()) if gone["iteration"].notna().any() else None),
                    "published": PUBLISHED.get(e["row"], "-")})
    return out


def _ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return "0/0 (branches at zero)" if pd.isna(v) else f"{v:.3g}"


def _yes(v: bool | None, yes: str, no: str) -> str:
    return "-" if v is None else yes if v else no


def _mean(text: str) -> str:
    """"87.92 +- 1.72 (3 seeds)" -> "87.92 +- 1.72": the seeds have a column of their own."""
    return re.sub(r"\s*\(\d+ seeds?\)$", "", text)


def remedy_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The report's first table: one line per remedy, its verdicts first; few columns, so that
    no number wraps at a laptop's width."""
    lines = []
    for e in rows:
        tr, te = e["train"], e["test"]
        lines.append({
            "remedy": e["group"], "row": e["row"], "against": e["baseline"],
            "trains?": _yes(e["trains"], "yes", "no (diverged)" if "diverged" in e["status"] else "no"),
            "train error %, row | baseline": f"{_mean(tr.row)} | {_mean(tr.baseline)}" if tr and tr.diff is not None else "-",
            "train verdict": tr.verdict if tr else "-",
            "test error %, row | baseline": f"{_mean(te.row)} | {_mean(te.baseline)}" if te and te.diff is not None else "-",
            "test difference [95 % CI]": (f"{te.diff:+.2f} [{te.low:+.2f}, {te.high:+.2f}]" if te and te.low is not None
                                          else f"{te.diff:+.2f}" if te and te.diff is not None else "-"),
            "test verdict": te.verdict if te else "-",
            "grad first/last: init": _ratio(e["ratio_init"]), "after start": _ratio(e["ratio_start"]),
            "bounded?": _yes(e["bounded"], "yes", "no"),
            "published (CIFAR-10 test %)": e["published"], "runs": e["status"]})
    return pd.DataFrame(lines)


def verdict_sentences(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per remedy, then one on whether bounded signals predicted training."""
    out = []
    for e in rows:
        tr, te = e["train"], e["test"]
        if "diverged" in e["status"] and (tr is None or tr.diff is None):
            k, n, last = e["diverged_seeds"]
            when = f", its loss not finite by iteration {last}" if last is not None else ""
            out.append(f"**{e['row']}** ({e['group']}): **diverged** in {k} of {n} seed{'s' if n != 1 else ''}{when}: "
                       f"it does not train at the recipe's learning rate, where {e['baseline']} does.")
            continue
        if tr is None or tr.diff is None:
            out.append(f"**{e['row']}** ({e['group']}): no finished run against {e['baseline']} yet.")
            continue
        # the median over seeds, judged seed by seed: one seed beyond the bound is "beyond"
        sig = ("" if e["bounded"] is None else
               f"; once training starts its first block's gradient is {e['ratio_start']:.3g}x the last block's "
               f"(median over seeds; {'within' if e['bounded'] else 'beyond'} {BOUND:g}x "
               f"{'in every seed' if e['bounded'] else 'in at least one'})")
        out.append(f"**{e['row']}** ({e['group']}): training error {tr.row} against {tr.baseline} for "
                   f"{e['baseline']} (**{tr.verdict}**), test error {te.row} against {te.baseline} "
                   f"(**{te.verdict}**){sig}.")
    judged = [e for e in rows if e["predicted"] is not None]
    if judged:
        right = sum(e["predicted"] for e in judged)
        wrong = [e["row"] for e in judged if not e["predicted"]]
        out.append(f"Bounded signals predicted which nets train for **{right} of {len(judged)}** remedies"
                   + (f"; not for {', '.join(wrong)}." if wrong else "."))
    return out


def decidable(res: Results, rows: list[dict[str, Any]]) -> list[str]:
    """What the page's test can decide with these seeds, in words: the test (a paired t-test
    over seeds on the final training error, ``ablations.compare``), the smallest difference it
    can call at each baseline's seed spread, how many remedies it decided, and the rows whose
    difference is larger than their baseline's spread yet within noise (the case for seeds 4
    and 5). The smallest decidable difference is the interval's half-width when a remedy's
    seeds vary as much as its baseline's and independently of them:
    t(0.975, n-1) * sqrt(2) * s / sqrt(n), s the baseline's standard deviation over its n seeds."""
    from scipy import stats

    out = ["The test: each remedy's final training error minus its baseline's, seed by seed (paired over the "
           "seeds both have; Welch where they differ), with a 95 % t interval (scipy.stats); **lower** or "
           "**higher error** when the interval excludes zero, **within noise** when it holds it."]
    def finished_baseline(baseline: str, schedule: str) -> pd.DataFrame:
        exp, _, name = baseline.partition("/")
        return res.runs[(res.runs["experiment"] == exp) & (res.runs["name"] == name)
                        & (res.runs["schedule"] == schedule) & (res.runs["status"] == RunStatus.FINISHED.value)]

    for baseline, schedule in dict.fromkeys((e["baseline"], e["schedule"]) for e in rows if e["baseline"] != "-"):
        runs = finished_baseline(baseline, schedule)
        n, sd = runs["seed"].nunique(), runs["final_train_error"].std()
        if n >= 2 and pd.notna(sd):
            smallest = stats.t.ppf(0.975, n - 1) * 2 ** 0.5 * sd / n ** 0.5
            out.append(f"Against {baseline} ({schedule}; its {n} seeds' training errors spread with a standard "
                       f"deviation of {sd:.2f} points), the smallest difference {n} seeds can decide is about "
                       f"**{smallest:.1f} points**.")
    judged = [e for e in rows if e["train"] is not None and e["train"].diff is not None]
    decided = [e for e in judged if e["train"].verdict in (LOWER, HIGHER)]
    if judged:
        out.append(f"**{len(decided)} of {len(judged)} remedies decide** on the training error"
                   + (" (" + ", ".join(f"{e['row']}: {e['train'].verdict}" for e in decided) + ")." if decided else "."))
    close = []
    for e in judged:
        base = finished_baseline(e["baseline"], e["schedule"])
        spread = base["final_train_error"].max() - base["final_train_error"].min() if len(base) > 1 else None
        if e["train"].verdict == NOISE and spread is not None and abs(e["train"].diff) > spread:
            close.append(f"{e['row']} ({e['train'].diff:+.1f} points, its baseline's seeds spread {spread:.1f})")
    if close:
        out.append("Differing from their baseline by more than its seeds' spread, yet within noise: "
                   + "; ".join(close) + ". Two more seeds a side would decide them: set `seeds: [1, 2, 3, 4, 5]` "
                   "on the row in experiments/remedies.yaml and run it with `--only <row>` (its baseline's seeds 4 "
                   "and 5 train with it).")
    return out


def finished(res: Results, name: str) -> bool:
    runs = res.runs[res.runs["name"] == name]
    return bool(len(runs)) and (runs["status"] == RunStatus.FINISHED.value).any()
