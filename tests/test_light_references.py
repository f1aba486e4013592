"""References published light (issue 54): no model.pt below the paper's schedule, its sha256
and size kept in meta.json; such a run reads as finished everywhere, never as damaged."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resnet_exp.reporting.results import load_results
from resnet_exp.runs.rundir import RunDir, RunStatus, lighten, publish_results, sha256_file
from resnet_exp.runs.training.responses import responses_current

from .fake_runs import write_run

REPO = Path(__file__).resolve().parent.parent


def test_publishing_leaves_the_weights_out_and_keeps_which_they_were(tmp_path):
    src = tmp_path / "src"
    run = write_run(src, "figure1", "plain20", 30.0, 31.0, responses=[1.0, 0.5])
    sha, size = sha256_file(run.model_path), run.model_path.stat().st_size
    assert publish_results(src, tmp_path / "dst") == 1
    (copy,) = RunDir.all_in(tmp_path / "dst")
    meta = copy.read_meta()
    assert not copy.model_path.exists() and copy.responses_path.exists() and copy.log_path.exists()
    assert meta["published_without"] == {"model.pt": {"sha256": sha, "bytes": size}}
    assert "model.pt" not in meta["files"]
    assert copy.check().ok and copy.status() == RunStatus.FINISHED
    # Figure 7's responses still name the weights they were computed from
    assert copy.model_sha256() == sha and responses_current(copy)
    # weights=True keeps them; a run of the paper's full schedule keeps them by default
    publish_results(src, tmp_path / "heavy", weights=True)
    assert next(RunDir.all_in(tmp_path / "heavy")).model_path.exists()
    meta = run.read_meta()
    meta["config"]["recipe"]["iterations"] = 64_000
    run.write_meta(meta)
    publish_results(src, tmp_path / "paper")
    assert next(RunDir.all_in(tmp_path / "paper")).model_path.exists()


def test_runs_published_into_a_reference_add_to_its_records(tmp_path):
    """Runs trained apart (the 1/128 bf16 plain-20 and ResNet-20 beside the remedies) and
    published into the reference that holds the others: the selected runs are the union, and a
    run left out by one invocation but selected by another is not 'left out on purpose'."""
    import json

    ref, new = tmp_path / "ref", tmp_path / "new"
    write_run(ref, "figure6", "plain56", 60.0, 61.0)
    (ref / ".selected.json").write_text(json.dumps({"runs": ["figure6/plain56 (seed 1)"]}))
    (ref / ".left-out.json").write_text(json.dumps({"runs": ["figure6/plain20 (seed 1)"], "hint": "--all"}))
    write_run(new, "seeds", "plain20", 30.0, 31.0)
    (new / ".selected.json").write_text(json.dumps({"runs": ["figure6/plain20 (seed 1)", "seeds/plain20 (seed 1)"]}))
    (new / ".left-out.json").write_text(json.dumps({"runs": ["seeds/resnet56 (seed 1)"], "hint": "--only"}))
    assert publish_results(new, ref) == 1
    assert json.loads((ref / ".selected.json").read_text())["runs"] == [
        "figure6/plain20 (seed 1)", "figure6/plain56 (seed 1)", "seeds/plain20 (seed 1)"]
    assert json.loads((ref / ".left-out.json").read_text()) == {"runs": ["seeds/resnet56 (seed 1)"], "hint": "--all"}
    assert len(list(RunDir.all_in(ref))) == 2
    # into a new folder the records are the source's
    publish_results(new, tmp_path / "fresh")
    assert json.loads((tmp_path / "fresh" / ".selected.json").read_text()) == json.loads((new / ".selected.json").read_text())
    assert json.loads((tmp_path / "fresh" / ".left-out.json").read_text()) == json.loads((new / ".left-out.json").read_text())


def test_a_light_run_is_finished_for_the_plan_and_the_reports_but_a_lost_model_is_damaged(tmp_path):
    src = tmp_path / "src"
    write_run(src, "figure1", "plain20", 30.0, 31.0)
    lost = write_run(src, "figure1", "plain56", 60.0, 61.0)
    published = tmp_path / "published"
    publish_results(src, published)
    light = {r.name.split("-s")[0]: r for r in RunDir.all_in(published)}
    assert all(r.check().ok for r in light.values())
    lost.model_path.unlink()  # not published light: its weights are simply gone
    assert "model.pt (the final weights) is missing" in str(lost.check())
    runs = load_results(published).runs
    assert set(runs["status"]) == {"finished"} and len(runs) == 2
    # a light run whose responses.csv names other weights is not current (recomputed, not trusted)
    r = light["plain20"]
    meta = r.read_meta()
    meta["published_without"]["model.pt"]["sha256"] = "0" * 64
    r.write_meta(meta)
    assert not responses_current(r)


def test_lightening_in_place_is_what_publishing_light_gives(tmp_path):
    src = tmp_path / "src"
    write_run(src, "seeds", "resnet20", 30.0, 31.0, responses=[1.0])
    publish_results(src, tmp_path / "light")
    publish_results(src, tmp_path / "heavy", weights=True)
    (heavy,) = RunDir.all_in(tmp_path / "heavy")
    assert lighten(heavy) and not lighten(heavy)  # the second time there is nothing to remove
    (light,) = RunDir.all_in(tmp_path / "light")
    assert heavy.read_meta() == light.read_meta() and heavy.check().ok
    assert sorted(p.name for p in heavy.path.iterdir()) == sorted(p.name for p in light.path.iterdir())
    # the command line: the same folder twice lightens in place
    publish_results(src, tmp_path / "cli", weights=True)
    out = subprocess.run([sys.executable, "-m", "resnet_exp", "publish", str(tmp_path / "cli"), str(tmp_path / "cli")],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "1 run(s) made light" in out and not next(RunDir.all_in(tmp_path / "cli")).model_path.exists()


def ladder_references() -> list[Path]:
    ladder = yaml.safe_load((REPO / "resnet_exp" / "runs" / "planning" / "ladder.yaml").read_text())
    return sorted({REPO / rung[k] for rung in ladder for k in ("reference", "reference_bf16") if rung.get(k)})


@pytest.mark.parametrize("folder", ladder_references(), ids=lambda p: p.parent.name)
def test_every_committed_reference_run_reads_finished_or_diverged(folder):
    """Light or not, no committed run reads damaged, and a light one still names its weights."""
    runs = list(RunDir.all_in(folder))
    assert runs, f"{folder} holds no run"
    for run in runs:
        assert run.check().ok, f"{run.key}: {run.check()}"
        assert run.status() in (RunStatus.FINISHED, RunStatus.DIVERGED), run.key
        if run.status() == RunStatus.FINISHED:
            assert run.model_sha256(), f"{run.key}: neither model.pt nor the sha256 of the weights it left out"


MIRROR_SHA = "87feb744388b1c45dd6757e9e8ead76b1e457ae400d1d3327751594419677c40"  # the references' data


def test_the_readme_ablation_example_copies_its_baseline_from_the_committed_reference(tmp_path):
    """Issue 55: the README's row trains its own three runs only; ResNet-20's three seeds, the
    same identity as the committed 1/64 reference's, are copied (light: no model.pt) with where
    they came from. With another dataset (the real CIFAR-10) all six train."""
    from resnet_exp.runs.planning.experiments import select_runs
    from resnet_exp.runs.planning.plan import Action, make_plan
    from resnet_exp.runs.planning.planner import copyable

    exp = tmp_path / "ablations.yaml"
    exp.write_text((REPO / "experiments" / "ablations.yaml").read_text() + "  - {name: resnet20-wd5e-4, model: resnet20, "
                   "weight_decay: 5e-4, group: my idea, baseline: figure6/resnet20}\n")
    specs = select_runs([str(exp)], "quick64", ["ablations/resnet20-wd5e-4"])
    plan = make_plan(specs, tmp_path / "results", MIRROR_SHA, elsewhere=copyable(specs, MIRROR_SHA))
    actions = {f"{p.spec.experiment}/{p.spec.name}-s{p.spec.seed}": p for p in plan.runs}
    assert {k for k, p in actions.items() if p.action == Action.NEW} == {
        f"ablations/resnet20-wd5e-4-s{s}" for s in (1, 2, 3)}
    reused = [p for p in plan.runs if p.action == Action.REUSE]
    assert sorted(p.spec.seed for p in reused) == [1, 2, 3] and len(plan.jobs) == 3
    assert all(p.source.shown.startswith("reports/reference/quick64/results/figure6/resnet20-s") for p in reused)
    for p in reused:  # what the runner does with them: a copy (light where the reference is) that reads finished
        copy = p.run.copy_from(p.source, p.spec.config())
        assert copy["copied_from"].startswith("reports/reference/quick64/") and p.run.check().ok
        assert p.run.model_path.exists() == p.source.model_path.exists()
    other = make_plan(specs, tmp_path / "other", "f" * 64, elsewhere=copyable(specs, "f" * 64))
    assert len(other.jobs) == 6
    # the row's own runs are never copied, even where a reference holds the same identity
    own = select_runs([str(REPO / "experiments" / "seeds.yaml")], "quick64", ["resnet20"])
    assert copyable(own, MIRROR_SHA) == {}
