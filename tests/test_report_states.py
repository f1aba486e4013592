"""Every report renders, for every state a results folder can be in.

The states are cut from the runs the session fixture trained (``built_reports``): copies
of some of their folders, some of them damaged on purpose. Each state's reports are
built as ``report`` builds them (papermill executes the notebooks), and no notebook may
hold an error output.
"""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from resnet_exp.reporting.build import REPORTS, build_reports



def _copy(src: Path, dst: Path, pattern: str) -> list[Path]:
    out = []
    for run in sorted(src.glob(pattern)):
        target = dst / run.parent.name / run.name
        shutil.copytree(run, target)
        out.append(target)
    return out


def _interrupt(run: Path) -> None:
    """Make a finished run a consistent unfinished one (interrupted at its first line)."""
    meta = json.loads((run / "meta.json").read_text())
    meta.update(status="interrupted", iteration=int((run / "log.csv").read_text().splitlines()[1].split(",")[0]))
    meta.pop("files", None)
    (run / "meta.json").write_text(json.dumps(meta))
    lines = (run / "log.csv").read_text().splitlines()
    (run / "log.csv").write_text("\n".join(lines[:2]) + "\n")
    for f in ("checkpoint.pt", "model.pt", "responses.csv"):
        (run / f).unlink(missing_ok=True)


def add_part(part: str, src: Path, dst: Path) -> None:
    """Copy into ``dst`` the runs of one situation a results folder can be in."""
    if part == "only-unfinished":
        for run in _copy(src, dst, "figure*/plain*-*"):
            _interrupt(run)
    elif part == "one-finished":  # ...trained before signals were recorded: no signals.csv
        for run in _copy(src, dst, "figure1/plain20-*"):
            meta = json.loads((run / "meta.json").read_text())
            del meta["files"]["signals.csv"], meta["signals"]
            (run / "meta.json").write_text(json.dumps(meta))
            (run / "signals.csv").unlink()
    elif part == "diverged":  # plain-110 diverges in the fixture's four iterations
        _copy(src, dst, "ablations/plain110-*")
    elif part == "only-plain":
        _copy(src, dst, "figure*/plain*-*")
    elif part == "only-resnets":
        _copy(src, dst, "figure6/resnet*-*")
    elif part == "several-seeds":
        _copy(src, dst, "table6/resnet110-*")
    elif part == "damaged":
        cut, not_json, unclosed = _copy(src, dst, "figure6/plain*-*")[:3]  # plain20, 32, 44; plain56 intact
        lines = (cut / "log.csv").read_text().splitlines()
        (cut / "log.csv").write_text("\n".join(lines[:2]) + "\n")
        (not_json / "meta.json").write_text("{ this is not json")
        (unclosed / "log.csv").write_text((unclosed / "log.csv").read_text() + '3,"unclosed,quote\n')
        _copy(src, dst, "figure6/resnet20-*")
    else:
        raise ValueError(part)


# A state is the situations it holds. Situations that do not hide one another share a state,
# because every state costs a build of all seven reports (about a minute on a slow CPU): a
# damaged figure6, a diverged ablations row and table6's five seeds sit in different
# experiments. The "only" states and the empty one stand alone: what they test is absence.
STATES = {"empty": [], "only-unfinished": ["only-unfinished"], "one-finished": ["one-finished"],
          "only-plain": ["only-plain"], "only-resnets": ["only-resnets"],
          "damaged+diverged+several-seeds": ["damaged", "diverged", "several-seeds"]}


def make_state(name: str, src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for part in STATES[name]:
        add_part(part, src, dst)
    return dst


@pytest.mark.parametrize("state", STATES)
def test_every_report_renders_in_every_state(built_reports, tmp_path, state):
    root, _ = built_reports
    results = make_state(state, root / "results", tmp_path / "results")
    index = build_reports(results=results, out=tmp_path / "out", experiments_dir=root / "experiments")
    page = index.read_text()
    assert "<table>" in page and "Traceback" not in page
    for rep in REPORTS:
        executed = nbformat.read(tmp_path / "out" / rep.name / f"{rep.name}.ipynb", as_version=4)
        errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{state}/{rep.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
        html = (tmp_path / "out" / f"{rep.name}.html").read_text()
        assert "Traceback" not in html and "provenance" in html
    signals = (tmp_path / "out" / "signals.html").read_text()
    if state == "empty":
        assert "No runs yet in the results folder" in page
    if state in ("empty", "one-finished"):
        assert "No finished run has layer signals yet" in signals and "signals.csv" in signals
        assert "C8" in page and "cannot be checked" in signals
    if state == "only-plain":  # Figure 6's ResNet panels say "not run" with the command, on the page
        figure6 = (tmp_path / "out" / "figure6.html").read_text()
        assert "ResNet-110 and ResNet-1202: not run" in figure6
        assert "python -m resnet_exp run experiments/figure6.yaml --only resnet110 resnet1202" in figure6
    if state == "one-finished":
        assert "Finished runs without signals.csv" in signals and "trained before signals were recorded" in signals
    if "damaged" in STATES[state]:
        damaged = (tmp_path / "out" / "figure6.html").read_text()
        assert damaged.count("DAMAGED") == 1 and damaged.count("plain") >= 3
        for part in ("meta.json is missing or not JSON", "log.csv"):
            assert part in damaged
    if "diverged" in STATES[state]:  # plain-110 diverges in the fixture's four iterations
        ablations = (tmp_path / "out" / "ablations.html").read_text()
        assert "ablations/plain110 (seed 1): diverged" in ablations
    if "several-seeds" in STATES[state]:
        t6 = (tmp_path / "out" / "table6" / "table6.csv").read_text()
        assert "(5 runs)" in t6


def test_the_index_counts_every_run_folder_and_says_why_each_unfinished_one_stopped(tmp_path):
    """Issue 55: a failed, a diverged and an interrupted run, and a run of the user's own
    experiment file, each appear on the index, with their reason and how far they got."""
    from resnet_exp.reporting.build import write_index
    from resnet_exp.runs.rundir import RunStatus

    from .conftest import REPO
    from .fake_runs import write_run

    results = tmp_path / "results"
    write_run(results, "figure6", "resnet20", 30.0, 31.0)
    write_run(results, "figure6", "plain56", 60.0, 61.0).update_meta(status=RunStatus.DIVERGED.value)
    write_run(results, "figure6", "plain20", 40.0, 41.0).update_meta(status=RunStatus.INTERRUPTED.value)
    write_run(results, "figure6", "resnet56", 40.0, 41.0).update_meta(
        status=RunStatus.FAILED.value, error="RuntimeError: out of memory")
    own = write_run(results, "mine", "lsnet8", 35.0, 36.0, model="lsnet8")
    meta = own.read_meta()
    meta["config"].update(family="lsnet", depth=8)
    meta["analyses_skipped"] = {"responses": "Figure 7's responses: LSNet offers no response_modules()"}
    own.write_meta(meta)
    page = write_index(tmp_path / "out", results, REPO / "experiments", {}).read_text()
    assert "5 (2 finished); your own experiment files: mine" in page
    assert "figure6/resnet56 (seed 1): failed, 4/4 iterations: RuntimeError: out of memory" in page
    assert "figure6/plain56 (seed 1): diverged, 4/4 iterations" in page
    assert "figure6/plain20 (seed 1): interrupted, 4/4 iterations" in page
    assert "Analyses left out" in page and "LSNet offers no response_modules()" in page
