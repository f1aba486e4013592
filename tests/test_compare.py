"""Your runs against the reference of the same schedule (reporting/reference.py, `compare`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from resnet_exp.reporting.reference import NO_SPREAD, OUTSIDE, WITHIN, compare, load_reference, without_reference
from resnet_exp.reporting.results import load_results

from .fake_runs import write_run

REPO = Path(__file__).resolve().parents[1]


def reference(root: Path) -> Path:
    ref = root / "reference"
    for seed, (train, test) in enumerate([(30.0, 31.0), (31.0, 32.0), (32.0, 33.0)], start=1):
        write_run(ref, "seeds", "plain20", train, test, seed=seed, profile="quick64")
    write_run(ref, "seeds", "resnet20", 25.0, 26.0, profile="quick64")  # one seed: no spread
    return ref


def test_inside_outside_and_one_seed(tmp_path):
    ref_dir = reference(tmp_path)
    mine = tmp_path / "mine"
    write_run(mine, "figure1", "plain20", 31.5, 32.5, seed=7, profile="quick64")   # inside
    write_run(mine, "figure6", "resnet20", 24.0, 25.0, seed=7, profile="quick64")
    res = load_results(mine)
    found = {c.name: c for c in compare(res, load_reference(res, ref_dir))}
    assert found["plain20"].verdict == WITHIN and "within the reference's seed spread" in found["plain20"].sentence()
    # the 95 % prediction interval for one more seed: 32 +- t(0.975, 2) * 1 * sqrt(4/3) = 32 +- 4.97
    assert abs(found["plain20"].low_test - (32.0 - 4.96827)) < 1e-4
    assert found["resnet20"].verdict == NO_SPREAD and "+-1.00" not in found["resnet20"].sentence()
    assert without_reference(res, load_reference(res, ref_dir)) == []
    far = tmp_path / "far"
    write_run(far, "figure1", "plain20", 45.0, 46.0, seed=7, profile="quick64")
    res = load_results(far)
    (c,) = compare(res, load_reference(res, ref_dir))
    assert c.verdict == OUTSIDE and "What may differ" in c.sentence()
    # another schedule is never compared with this reference
    other = tmp_path / "other"
    write_run(other, "figure1", "plain20", 31.5, 32.5, seed=7, profile="quick")
    res = load_results(other)
    assert compare(res, load_reference(res, ref_dir)) == []


def test_another_dataset_has_no_reference(tmp_path):
    ref_dir = reference(tmp_path)
    mine = tmp_path / "mine"
    write_run(mine, "figure1", "plain20", 31.5, 32.5, seed=7, profile="quick64", dataset="real")
    assert load_reference(load_results(mine), ref_dir) is None


def test_the_command(tmp_path):
    ref_dir = reference(tmp_path)
    mine = tmp_path / "mine"
    write_run(mine, "figure1", "plain20", 45.0, 46.0, seed=7, profile="quick64")
    write_run(mine, "figure1", "plain56", 70.0, 71.0, seed=7, profile="quick64")  # a row the reference lacks
    command = [sys.executable, "-m", "resnet_exp", "compare", "--results", str(mine), "--reference", str(ref_dir)]
    out = json.loads(subprocess.run(command + ["--json"], cwd=REPO, capture_output=True, text=True, check=True).stdout)
    assert [r["verdict"] for r in out["runs"]] == [OUTSIDE] and out["without_reference"] == ["plain56"]
    text = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "The reference has no finished run of plain56 on this schedule" in text


def test_a_published_reference_keeps_done_runs_and_no_machine_paths(tmp_path):
    from resnet_exp.runs.rundir import RunDir, publish_results

    src = tmp_path / "src"
    run = write_run(src, "figure1", "plain20", 30.0, 31.0)
    meta = run.read_meta()
    meta["dataset"]["path"] = "/home/someone/data/cifar10-jpeg-q75.tar.gz"
    run.write_meta(meta)
    unfinished = write_run(src, "figure1", "plain56", 60.0, 61.0)
    unfinished.update_meta(status="interrupted")
    diverged = write_run(src, "remedies", "resnet56_nobn", 90.0, 90.0)
    diverged.update_meta(status="diverged")  # done, not retried: a result the remedies page reports
    (src / ".left-out.json").write_text('{"runs": ["figure1/plain32 (seed 1)"], "hint": "--all"}')
    assert publish_results(src, tmp_path / "dst", only_done=True) == 2
    copies = {r.name.split("-s")[0]: r for r in RunDir.all_in(tmp_path / "dst")}
    assert set(copies) == {"plain20", "resnet56_nobn"} and copies["resnet56_nobn"].status() == "diverged"
    copy = copies["plain20"]
    assert copy.read_meta()["dataset"]["path"] == "cifar10-jpeg-q75.tar.gz" and copy.check().ok
    # the record of what its invocation left out goes with it: its pages do not list those as missing
    assert json.loads((tmp_path / "dst" / ".left-out.json").read_text()) == json.loads((src / ".left-out.json").read_text())


def test_a_finished_run_s_line_names_its_verdict(tmp_path, monkeypatch):
    """The line `run` prints as each run ends: within or outside the reference's seeds, from the
    reference of the run's own rung and precision; nothing where none holds its row."""
    from resnet_exp.reporting import reference as reference_module
    from resnet_exp.reporting.reference import verdict_of_run

    ref_dir = reference(tmp_path)
    monkeypatch.setattr(reference_module, "reference_dir",
                        lambda profile, precision="fp32": ref_dir if (profile, precision) == ("quick64", "fp32") else None)
    near = write_run(tmp_path / "mine", "figure1", "plain20", 31.5, 32.5, seed=7, profile="quick64").read_meta()
    far = write_run(tmp_path / "mine", "figure6", "plain20", 45.0, 46.0, seed=8, profile="quick64").read_meta()
    assert verdict_of_run(near).startswith(WITHIN) and "3 seeds" in verdict_of_run(near)
    assert verdict_of_run(far).startswith(OUTSIDE)
    one = write_run(tmp_path / "mine", "figure6", "resnet20", 24.0, 25.0, seed=7, profile="quick64").read_meta()
    assert verdict_of_run(one) == "-1.00 test error against its one seed"
    bf16 = write_run(tmp_path / "mine", "figure1", "plain20", 31.5, 32.5, seed=9, profile="quick64",
                     precision="bf16").read_meta()
    other = write_run(tmp_path / "mine", "figure1", "plain56", 31.5, 32.5, seed=7, profile="quick64").read_meta()
    assert verdict_of_run(bf16) is None and verdict_of_run(other) is None
