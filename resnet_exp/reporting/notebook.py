"""What every report notebook calls: one header, and helpers that never fail on a state
of the results (empty, unfinished, damaged, one seed or five).

    res = open_report(results_dir, experiments_dir, experiments)   # the first code cell

``build.py`` passes each notebook its parameters (``experiments`` included), so the list
of experiment files a report reads lives in one place: ``report.REPORTS``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from IPython.display import HTML, Markdown, display

from .results import Results, load_results, provenance_html


def open_report(results_dir: str | Path, experiments_dir: str | Path, experiments: list[str]) -> Results:
    """Load every run, show the provenance block (dataset, profile warnings, missing,
    unfinished and damaged runs), and return the results for the notebook to draw."""
    res = load_results(results_dir)
    display(HTML(provenance_html(res, [Path(experiments_dir) / f"{e}.yaml" for e in experiments])))
    return res


def reference_curves_for(res: Results, names: list[str]) -> dict[str, pd.DataFrame]:
    """The committed reference's mean curves of these rows, for the same schedule and
    dataset (``reference.py``), with a line naming the reference and its provenance; {} when
    there is none (or these results are that reference)."""
    from .reference import is_reference, load_reference, reference_curves, shown

    if is_reference(res.results_dir):
        return {}
    ref = load_reference(res)
    curves = reference_curves(ref, names)
    if curves and ref is not None:
        r = ref.runs
        say(f"*Grey dashed: the committed reference of this schedule ({shown(ref.results_dir)}; torch "
            f"{', '.join(sorted(set(map(str, r['torch'].dropna()))))}, {', '.join(sorted(set(map(str, r['device'].dropna()))))}, "
            f"commit {', '.join(sorted(set(map(str, r['git_commit'].dropna()))))}), mean over its seeds. "
            "`python -m resnet_exp compare` says whether your runs fall within its seed spread.*")
    return curves


def say(text: str) -> None:
    display(Markdown(text))


def has_curves(res: Results, names: list[str]) -> bool:
    """Is there at least one logged evaluation to draw for these rows?"""
    runs = res.runs[res.runs["name"].isin(names)]
    return bool(len(res.logs)) and res.logs["run"].isin(runs["run"]).any()


def show_table(table: pd.DataFrame, out_dir: str | Path, name: str, empty: str = "No runs yet.") -> None:
    """Save a table as CSV next to the report and show it (or say why there is none)."""
    table.to_csv(Path(out_dir) / f"{name}.csv", index=False)
    if not len(table):
        say(f"*{empty}*")
        return
    display(HTML(table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}")))
