"""Read finished (and unfinished) runs back from ``<results>/``: the one place where the
reports' numbers are computed. Notebooks call these functions and only draw.

Runs made from different datasets never mix: one dataset is chosen (by default the one
with the most runs) and the others are listed as excluded.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..models import parse_model_name
from ..runs.planning.experiments import ExperimentError, load_experiment, load_profiles
from ..runs.planning.ladder import rung_of
from ..runs.rundir import PROGRESS_FILE, RETRAIN_HINT, RunDir, RunStatus, run_label
from .paper import (PLAIN_NOTE, PREACT_TEST_ERROR, PROFILE_WARNINGS, REIMPLEMENTATION_TEST_ERROR,
                    TABLE6_MEAN_STD, TABLE6_NOTES, TABLE6_TEST_ERROR)


def profile_warning(profile: str) -> str:
    """What a report made from a profile other than the paper's says at its top: the written
    text (``paper.PROFILE_WARNINGS``), else, for a rung of the budget ladder
    (runs/planning/ladder.yaml), one made from it."""
    if profile in PROFILE_WARNINGS:
        return PROFILE_WARNINGS[profile]
    rung, recipe = rung_of(profile), load_profiles().get(profile)
    if rung is None or recipe is None:
        return f"{profile} profile: not the paper's recipe; not comparable with the paper's numbers."
    return (f"{profile} profile: the paper's recipe compressed to {rung.caption} ({recipe.iterations:,} iterations "
            "instead of 64,000, lr drops at 1/2 and 3/4 of the run); not comparable with the paper's numbers. "
            "Orderings and gaps between networks are what it shows.")


@dataclass
class Results:
    runs: pd.DataFrame            # one row per run
    logs: pd.DataFrame            # every log line, with the run's key columns
    dataset: dict[str, Any] | None
    excluded: list[str] = field(default_factory=list)  # runs of other datasets
    results_dir: Path = Path("results")
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (folder, what is wrong): never drawn

    def on_schedule(self, schedule: str | None) -> "Results":
        """Only the runs of one schedule (``schedule_of``): what one comparison may pool."""
        if schedule is None or not len(self.runs):
            return self
        runs = self.runs[self.runs["schedule"] == schedule]
        logs = self.logs[self.logs["run"].isin(runs["run"])] if len(self.logs) else self.logs
        return Results(runs, logs, self.dataset, self.excluded, self.results_dir, self.damaged)

    def experiment(self, name: str) -> "Results":
        keep = self.runs["experiment"] == name if len(self.runs) else []
        runs = self.runs[keep] if len(self.runs) else self.runs
        logs = self.logs[self.logs["run"].isin(runs["run"])] if len(self.logs) else self.logs
        damaged = [d for d in self.damaged if Path(d[0]).parent.name == name]
        return Results(runs, logs, self.dataset, self.excluded, self.results_dir, damaged)


def schedule_of(profile: object, precision: object) -> str:
    """A run's schedule in one word: its profile, and its precision where that is not fp32
    ("quick64", "quick64 bf16"). Seeds of two schedules are never pooled, and a row is judged
    only against its baseline's runs of its own schedule."""
    return f"{profile}" + (f" {precision}" if precision and precision != "fp32" else "")


RUN_COLUMNS = ["run", "experiment", "name", "model", "family", "depth", "shortcut", "seed", "group", "note",
               "baseline", "status", "iteration", "iterations", "params", "profile", "precision",
               "device", "torch", "git_commit", "started", "finished", "wall_time_s", "final_train_error", "final_test_error",
               "images_per_s", "dataset_sha256", "subset_per_class", "sweep_row", "sweep_values", "analyses_skipped",
               "error", "schedule", "copied_from"]


def load_results(results_dir: str | Path, dataset_sha256: str | None = None) -> Results:
    results_dir = Path(results_dir)
    runs, logs, damaged = [], [], []
    for run in RunDir.all_in(results_dir):
        health = run.check()  # a damaged folder is listed, never read as a result
        if not health.ok:
            damaged.append((str(run.path), str(health)))
            continue
        meta = run.read_meta()
        cfg, recipe = meta["config"], meta["config"].get("recipe", {})
        log = _read_log(run.log_path)
        try:  # someone else's folder may name a model or keys this version does not know
            # recorded since plug-ins (whose families the reports never import); older folders: from the name
            family, depth = (cfg["family"], int(cfg["depth"])) if "family" in cfg and "depth" in cfg else \
                (parse_model_name(cfg["model"])[0].key, parse_model_name(cfg["model"])[1])
            if missing := [k for k in ("name", "seed") if k not in cfg]:
                raise KeyError(", ".join(missing))
        except (KeyError, TypeError, ValueError) as e:
            damaged.append((str(run.path), f"meta.json's config is not one this version reads "
                                           f"({type(e).__name__}: {e})"))
            continue
        last = log.iloc[-1] if len(log) else None
        key = run.key
        runs.append({
            "run": key, "experiment": run.experiment, "name": cfg["name"], "model": cfg["model"],
            "family": family, "depth": depth, "shortcut": cfg.get("shortcut"), "seed": cfg["seed"],
            "group": cfg.get("group"), "note": cfg.get("note"), "baseline": cfg.get("baseline"),
            "status": meta.get("status", "unknown"),
            "iteration": int(last["iteration"]) if last is not None else 0,
            "iterations": recipe.get("iterations"), "params": meta.get("params"), "profile": cfg.get("profile"),
            "precision": recipe.get("precision", "fp32"),
            "device": meta.get("device"), "torch": meta.get("torch"), "git_commit": meta.get("git_commit"),
            "started": meta.get("started"), "finished": meta.get("finished"), "wall_time_s": meta.get("wall_time_s"),
            "final_train_error": float(last["train_error"]) if last is not None else None,
            "final_test_error": float(last["test_error"]) if last is not None else None,
            "images_per_s": float(log["images_per_s"].median()) if len(log) else None,
            "dataset_sha256": (meta.get("dataset") or {}).get("sha256"),
            "subset_per_class": recipe.get("train_per_class"),
            "sweep_row": (cfg.get("sweep") or {}).get("row"), "sweep_values": (cfg.get("sweep") or {}).get("values"),
            # what training/callbacks.call_hook left out of this run, and why ("" when nothing)
            "analyses_skipped": "; ".join(f"{k}: {v}" for k, v in (meta.get("analyses_skipped") or {}).items()),
            "error": meta.get("error") if meta.get("status") == RunStatus.FAILED.value else None,
            "schedule": schedule_of(cfg.get("profile"), recipe.get("precision", "fp32")),
            "copied_from": meta.get("copied_from"),  # a run of this folder, or a committed reference's path
            "_dataset": meta.get("dataset"),
        })
        if len(log):
            logs.append(log.assign(run=key))
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS + ["_dataset"])
    logs_df = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(columns=["run", "iteration"])

    dataset, excluded = None, []
    if len(runs_df):
        sha = dataset_sha256 or runs_df["dataset_sha256"].value_counts().index[0]
        other = runs_df["dataset_sha256"] != sha
        excluded = [f"{r.run} (dataset {str(r.dataset_sha256)[:12]}...)" for r in runs_df[other].itertuples()]
        runs_df = runs_df[~other]
        dataset = runs_df["_dataset"].iloc[0] if len(runs_df) else None  # none on the dataset asked for
        logs_df = logs_df[logs_df["run"].isin(runs_df["run"])]
    runs_df = runs_df.drop(columns="_dataset").reset_index(drop=True)
    return Results(runs_df, logs_df.reset_index(drop=True), dataset, excluded, results_dir, damaged)


def _read_log(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame()


# --------------------------------------------------------------------------- expectations
def expected_rows(experiment_file: str | Path, profile: str) -> list[tuple[str, int]]:
    """(name, seed) of every non-opt-in run an experiment file asks for."""
    try:
        return [(s.name, s.seed) for s in load_experiment(experiment_file, profile) if not s.opt_in]
    except ExperimentError:
        return []


def missing_runs(res: Results, experiment_file: str | Path) -> list[str]:
    """The runs an experiment file asks for that the results folder lacks."""
    name = Path(experiment_file).stem
    runs = res.runs[res.runs["experiment"] == name]
    profile = runs["profile"].mode().iloc[0] if len(runs) else "quick"
    have = {(r.name, r.seed) for r in runs.itertuples()}
    return [run_label(name, n, s) for n, s in expected_rows(experiment_file, profile) if (n, s) not in have]


# --------------------------------------------------------------------------- tables
FINAL_COLUMNS = ["name", "model", "family", "depth", "shortcut", "params", "profile", "schedule", "seeds", "finished",
                 "test_mean", "test_std", "test_best", "train_mean", "train_std", "status"]


def unique_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per identity: the same run copied into two experiments (figure6/resnet110-s1
    is table6/resnet110-s1) has the same folder name and counts once."""
    if not len(runs):
        return runs
    return runs.assign(_folder=runs["run"].str.split("/").str[-1]).drop_duplicates("_folder").drop(columns="_folder")


def final_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row name: seeds (n), finished seeds, mean/std/best final test error, mean/std
    final train error, over the finished runs when there are any (else the runs so far).
    The same columns whatever the state, an empty table included."""
    if not len(runs):
        return pd.DataFrame(columns=FINAL_COLUMNS)
    out = []
    # a line per row and schedule: seeds of two schedules are never one mean
    for (name, schedule), g in unique_runs(runs).groupby(["name", "schedule"], sort=False):
        done = g[g["status"] == RunStatus.FINISHED.value]
        use = done if len(done) else g
        first = g.iloc[0]
        out.append({
            "name": name, "model": first["model"], "family": first["family"], "depth": first["depth"],
            "shortcut": first["shortcut"], "params": first["params"], "profile": first["profile"],
            "schedule": schedule, "seeds": len(g), "finished": len(done),
            "test_mean": use["final_test_error"].mean(), "test_std": use["final_test_error"].std(),
            "test_best": use["final_test_error"].min(), "train_mean": use["final_train_error"].mean(),
            "train_std": use["final_train_error"].std(),
            "status": RunStatus.FINISHED.value if len(done) == len(g) else ", ".join(sorted(set(g["status"]))),
        })
    return pd.DataFrame(out, columns=FINAL_COLUMNS)


def mean_std(mean: float, std: float, n: int) -> str:
    """``6.61 +- 0.16 (5 runs)``, or ``6.61 (1 run)``: the paper's way of writing it."""
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f} (1 run)" if n == 1 or pd.isna(std) else f"{mean:.2f} +- {std:.2f} ({n} runs)"


def table6(runs: pd.DataFrame) -> pd.DataFrame:
    """Our final test errors beside the paper's Table 6, like with like: our mean +- std
    over seeds beside the paper's mean +- std where it gives one (ResNet-110), our best
    beside its best. The difference column only for runs of the paper's recipe."""
    t = final_errors(runs)
    rows = []
    for r in t.sort_values(["family", "depth"]).itertuples():
        paper = TABLE6_TEST_ERROR.get(r.name) if r.shortcut in (None, "A") else None
        paper = PREACT_TEST_ERROR.get(r.name, paper)
        paper_stats = TABLE6_MEAN_STD.get(r.name) if paper is not None else None
        n = int(r.finished) or int(r.seeds)
        comparable = r.profile == "paper" and r.finished > 0
        # like with like: their mean with our mean when they give one, else their number
        # (a single run, or the best of several) with our best
        ours_vs = r.test_mean if paper_stats else r.test_best
        rows.append({
            "network": r.name, "params": f"{int(r.params):,}" if pd.notna(r.params) else "",
            "test error % (ours, mean +- std)": mean_std(r.test_mean, r.test_std, n),
            "ours: best": f"{r.test_best:.2f}" if pd.notna(r.test_best) else "-",
            "paper: mean +- std": mean_std(*paper_stats) if paper_stats else "-",
            "paper: reported": f"{paper:.2f}" if paper is not None else "-",
            "difference (ours - paper)": (f"{ours_vs - paper_stats[0]:+.2f} (means)" if paper_stats else
                                          f"{ours_vs - paper:+.2f} (best)") if comparable and paper is not None
            else "-",
            "reimplementation %": f"{REIMPLEMENTATION_TEST_ERROR[r.name]:.2f}" if r.name in REIMPLEMENTATION_TEST_ERROR else "-",
            "train error % (ours)": mean_std(r.train_mean, r.train_std, n), "status": r.status,
            "note": PLAIN_NOTE if r.family == "plain" else TABLE6_NOTES.get(r.name, ""),
        })
    return pd.DataFrame(rows)


def depth_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Final train/test error against depth, for plain nets and option-A ResNets."""
    cols = ["family", "depth", "seeds", "finished", "train_mean", "train_std", "test_mean", "test_std", "status"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    t = final_errors(runs[runs["family"].isin(["plain", "resnet"]) & runs["shortcut"].isin([None, "A"])])
    return t[cols].sort_values(["family", "depth"]).reset_index(drop=True)


def compare_statement(runs: pd.DataFrame, shallow: str, deep: str) -> str:
    """One sentence: is the deeper net better or worse than the shallower one, on
    training and on test error? (Degradation: worse on both.)"""
    if len(runs):  # the schedule with the most runs: one sentence compares like with like
        runs = runs[runs["schedule"] == runs["schedule"].value_counts().index[0]]
    t = final_errors(runs).set_index("name")
    if shallow not in t.index or deep not in t.index:
        return f"{shallow} or {deep} has no run yet, so there is nothing to compare."
    a, b = t.loc[shallow], t.loc[deep]
    if pd.isna(a.test_mean) or pd.isna(b.test_mean):
        return f"{shallow} or {deep} has not logged an evaluation yet, so there is nothing to compare."
    word = lambda deeper, shallower: "higher" if deeper > shallower else "lower"  # noqa: E731
    unfinished = "" if (a.status == b.status == RunStatus.FINISHED.value) else \
        " Some of these runs are unfinished: their last logged line is compared."
    return (f"{deep}: {b.train_mean:.2f} % training / {b.test_mean:.2f} % test error; "
            f"{shallow}: {a.train_mean:.2f} % / {a.test_mean:.2f} %. The deeper net has the "
            f"{word(b.train_mean, a.train_mean)} training error and the {word(b.test_mean, a.test_mean)} "
            f"test error.{unfinished}")


# --------------------------------------------------------------------------- provenance
def provenance_html(res: Results, experiment_files: list[str | Path], part: str = "all",
                    every_run: bool = False) -> str:
    """The block every report starts with: the warnings (lossy data, a subset, a short
    schedule), then the facts (dataset, profile, device, versions, gaps). ``part``: "warnings"
    or "facts" alone, for the index, which puts the claims' verdicts between them.
    ``every_run`` (the index): count and list every run folder of the results, a user's own
    experiment files' too, not only those of ``experiment_files``."""
    ds = res.dataset or {}
    suite = [Path(f).stem for f in experiment_files]
    runs = res.runs if every_run else res.runs[res.runs["experiment"].isin(suite)]
    e = html.escape
    warnings = []
    if ds.get("lossy"):
        warnings.append("This report was made from a LOSSY JPEG copy of CIFAR-10 (quality 75), not the real "
                        "dataset. Absolute errors are NOT comparable with the paper's; orderings and gaps "
                        "between networks are what it can show.")
    if ds.get("subset") or runs["subset_per_class"].notna().any():
        n = runs["subset_per_class"].dropna()
        per = f" ({int(n.iloc[0])} training images per class)" if len(n) else ""
        warnings.append(f"This report was made from a SUBSET of CIFAR-10{per} (the bundled mini subset or a "
                        "smoke profile): errors are far above the paper's and only the shape of the curves means "
                        "anything.")
    for profile in dict.fromkeys(runs["profile"].dropna()):
        if profile != "paper":
            warnings.append(profile_warning(profile))
    if len(schedules := list(dict.fromkeys(runs["schedule"].dropna()))) > 1:
        warnings.append(f"This folder holds runs of {len(schedules)} schedules ({', '.join(schedules)}). Each "
                        "verdict, table line and curve uses one schedule: seeds of different schedules are "
                        "never pooled, and a row is judged only against its baseline's runs of its own schedule.")
    if not ds:
        warnings.append("No runs yet in the results folder: nothing can be drawn. Train with ./run_all.sh "
                        "(or python -m resnet_exp run ...) and build the reports again.")
    missing, unfinished, not_run = [], [], []
    for f in experiment_files:
        m = missing_runs(res, f)
        if m and not (res.runs["experiment"] == Path(f).stem).any():
            not_run.append((f, len(m)))  # a whole file never run here: one line, not each of its runs
            continue
        missing += m
    for r in runs.itertuples():  # every run that is not finished, with how far it got and why
        if r.status != RunStatus.FINISHED.value:
            why = f": {r.error}" if isinstance(r.error, str) and r.error else ""
            unfinished.append(f"{r.experiment}/{r.name} (seed {r.seed}): {r.status}, {r.iteration}/{r.iterations} "
                              f"iterations{why}")
    boxes = "".join(f'<div class="warn" style="border:2px solid #c00;background:#fee;padding:8px;'
                    f'margin:6px 0;font-weight:bold">WARNING: {e(w)}</div>' for w in warnings)

    def vals(col: str) -> str:
        v = [str(x) for x in runs[col].dropna().unique()]
        return e(", ".join(v)) if v else "-"

    subset = runs["subset_per_class"].dropna()
    # the dataset's size and what the runs used of it, in one line: the warning above says the
    # same (a page once said "10,000 training" above a warning of 50 per class)
    used = f" (the runs used at most {int(subset.max())} training images per class)" if len(subset) else ""
    own = sorted(set(runs["experiment"]) - set(suite)) if every_run else []  # a user's files, on the index
    items = [
        ("Dataset", f"{e(str(ds.get('name', '-')))}: {ds.get('n_train', '?'):,} training / "
                    f"{ds.get('n_test', '?'):,} test images{used}" if ds else "-"),
        ("Source", e(f"{ds.get('source', '-')}: {ds.get('path', '-')}")),
        ("sha256", f"<code>{e(str(ds.get('sha256', '-')))}</code>"),
        ("Profile", vals("profile")), ("Precision", vals("precision")), ("Device", vals("device")), ("torch", vals("torch")),
        ("Git commit", vals("git_commit")),
        ("Runs", f"{len(runs)} ({(runs['status'] == 'finished').sum()} finished)"
                 + (f"; your own experiment files: {e(', '.join(own))}" if own else "")),
        ("Report made", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("Missing runs", missing_html(res, missing)),
        ("Not run here", not_run_html(not_run, runs)),
        ("Unfinished runs", e("; ".join(unfinished)) or "none"),
    ]
    if (skipped := runs[runs["analyses_skipped"].fillna("") != ""]).shape[0]:
        items.append(("Analyses left out", "<br>".join(f"{e(r.run)}: {e(r.analyses_skipped)}"
                                                       for r in skipped.itertuples())))
    if res.excluded:
        items.append(("Excluded (other dataset)", e("; ".join(res.excluded))))
    if res.damaged:  # listed, never drawn: what is wrong with each and the fix
        items.append(("DAMAGED runs (not drawn)", "<br>".join(f"<code>{e(path)}</code>: {e(problem)}"
                                                              for path, problem in res.damaged)
                      + f"<br><i>Fix: {e(RETRAIN_HINT)} (python -m resnet_exp run ... --retrain-damaged)</i>"))
    rows = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{k}</th>"
                   f"<td style='text-align:left'>{v}</td></tr>" for k, v in items)
    if part == "warnings":
        return f'<div class="provenance">{boxes}</div>'
    if part == "facts":
        return f'<div class="provenance"><table>{rows}</table></div>'
    return f'<div class="provenance">{boxes}<table>{rows}</table></div>'


def missing_html(res: Results, missing: list[str]) -> str:
    """Runs really missing: selected by an invocation that wrote here (<results>/.selected.json;
    a folder without that record, from an older version, counts every run its files ask for)
    and not there. Those an invocation left out on purpose (run_all.sh's CPU default, or rows
    ``--only`` did not select: <results>/.left-out.json) are only counted, on one line with
    what adds them; a run nobody selected is not missing."""
    import json

    from ..runs.rundir import LEFT_OUT_FILE, SELECTED_FILE

    try:
        record = json.loads((Path(res.results_dir) / LEFT_OUT_FILE).read_text())
        on_purpose, hint = set(record["runs"]), str(record.get("hint") or "")
    except (OSError, ValueError, KeyError, TypeError):
        on_purpose, hint = set(), ""
    try:
        selected: set[str] | None = set(json.loads((Path(res.results_dir) / SELECTED_FILE).read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        selected = None
    left = [m for m in missing if m in on_purpose]
    really = [m for m in missing if m not in on_purpose and (selected is None or m in selected)]
    text = html.escape("; ".join(really)) or "none"
    if left:
        text += (f" <i>({len(left)} more left out on purpose by the invocation that trained this folder"
                 f"{', added by <code>' + html.escape(hint) + '</code>' if hint else ''})</i>")
    return text


def not_run_html(not_run: list[tuple[str | Path, int]], runs: pd.DataFrame) -> str:
    """The experiment files of which this folder holds no run at all, one line each with what
    trains them (in the folder's own profile): a 4-net reference is not 'missing' table6's 25 runs."""
    if not not_run:
        return "none"
    profiles = runs["profile"].dropna()
    flag = f" --profile {profiles.mode().iloc[0]}" if len(profiles) else ""
    return "; ".join(f"{html.escape(Path(f).stem)} ({n} run{'s' if n != 1 else ''}: <code>python -m resnet_exp run "
                     f"{html.escape(Path(Path(f).parent.name, Path(f).name).as_posix())}{html.escape(flag)}</code>)"
                     for f, n in not_run)


# --------------------------------------------------------------------------- Figure 7
def load_responses(res: Results, names: list[str]) -> pd.DataFrame:
    """Layer response stds (responses.csv) of the finished runs of these rows, from any
    experiment, one row per (run, layer); several seeds of a row are averaged by layer
    in ``responses_by_name``. Only responses computed from the run's current weights."""
    from ..runs.training.responses import responses_current

    frames = []
    runs = unique_runs(res.runs[(res.runs["name"].isin(names)) & (res.runs["status"] == RunStatus.FINISHED.value)])
    for r in runs.itertuples():
        run = RunDir(res.results_dir / r.run)
        if responses_current(run) and (d := _read_responses(run.responses_path)) is not None:
            frames.append(d.assign(run=r.run, name=r.name, family=r.family, depth=r.depth))
    cols = ["run", "name", "family", "depth", "layer", "module", "std"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _read_responses(path: Path) -> pd.DataFrame | None:
    """responses.csv with its columns and a finite std per layer, or None (left out, not drawn)."""
    try:
        d = pd.read_csv(path)
        d["std"] = pd.to_numeric(d["std"], errors="raise")
        d["layer"] = pd.to_numeric(d["layer"], errors="raise")
        return d[["layer", "module", "std"]] if d["std"].notna().all() and len(d) else None
    except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def responses_by_name(resp: pd.DataFrame) -> pd.DataFrame:
    """Per row name and layer: the std averaged over its seeds."""
    if not len(resp):
        return pd.DataFrame(columns=["name", "family", "depth", "layer", "std", "seeds"])
    g = resp.groupby(["name", "family", "depth", "layer"], sort=False)
    return g["std"].agg(["mean", "count"]).reset_index().rename(columns={"mean": "std", "count": "seeds"})


def runs_without_responses(res: Results) -> list[str]:
    from ..runs.training.responses import responses_current

    done = unique_runs(res.runs[res.runs["status"] == RunStatus.FINISHED.value])
    return [r.run for r in done.itertuples() if not responses_current(RunDir(res.results_dir / r.run))]


def responses_summary(resp: pd.DataFrame) -> pd.DataFrame:
    by = responses_by_name(resp)
    if not len(by):
        return pd.DataFrame(columns=["network", "layers", "seeds", "mean std", "median std", "max std"])
    rows = []
    for name, g in by.groupby("name", sort=False):
        rows.append({"network": name, "layers": len(g), "seeds": int(g["seeds"].max()), "mean std": g["std"].mean(),
                     "median std": g["std"].median(), "max std": g["std"].max()})
    return pd.DataFrame(rows)


def last_job(results_dir: str | Path) -> list[dict[str, Any]]:
    """The events of the last invocation of ``run`` on this results folder (from its last
    "job" event in ``progress.jsonl``); [] when there is none. Lines that do not parse are
    skipped: a log, never trusted to be whole."""
    import json

    try:
        lines = (Path(results_dir) / PROGRESS_FILE).read_text().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events = [event] if event.get("event") == "job" else events + [event]
    return events
