"""The move into subpackages (models/, data/, runs/, reporting/) changed no identity and no
file: a results folder trained before it (tests/fixtures/pre_layout/, commit 00b2d23) is
still planned as finished, passes its check and is read by the reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from resnet_exp.reporting.results import load_results
from resnet_exp.runs.planning.experiments import load_experiment
from resnet_exp.runs.planning.plan import Action, make_plan
from resnet_exp.runs.rundir import RunDir

FIXTURE = Path(__file__).parent / "fixtures" / "pre_layout"


def _copy(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", results)
    return results


def test_a_results_folder_from_before_the_move_is_planned_as_finished(tmp_path):
    results = _copy(tmp_path)
    metas = [json.loads(p.read_text()) for p in sorted(results.glob("tiny/*/meta.json"))]
    sha = {m["dataset"]["sha256"] for m in metas}
    assert len(metas) == 2 and len(sha) == 1
    specs = load_experiment(FIXTURE / "tiny.yaml", "smoke")
    plan = make_plan(specs, results, sha.pop())
    assert [(p.spec.name, p.action) for p in plan.runs] == [("plain8", Action.FINISHED), ("resnet8", Action.FINISHED)]
    assert [p.identity for p in plan.runs] == [m["identity"] for m in metas]  # identities unchanged
    assert plan.jobs == []


def test_a_results_folder_from_before_the_move_passes_its_check_and_is_reported(tmp_path):
    results = _copy(tmp_path)
    for run in RunDir.all_in(results):
        assert run.check().ok, run.check()
    res = load_results(results)
    assert sorted(res.runs["name"]) == ["plain8", "resnet8"]
    assert set(res.runs["status"]) == {"finished"}
