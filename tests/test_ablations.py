"""Ablation statistics on made-up numbers with known answers, sweeps, the baseline-seeds
rule, and the ablations report with one seed and with three."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from resnet_exp.__main__ import main
from resnet_exp.reporting.ablations import HIGHER, LOWER, NOISE, ablation_rows, compare, sweep_points
from resnet_exp.reporting.results import load_results
from resnet_exp.runs.planning.experiments import ExperimentError, explain_only, load_experiment, select_runs

from .conftest import REPO, write_experiment
from .fake_runs import write_run

HINT = "add seeds"


def test_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    d = compare({1: 10.0, 2: 12.0, 3: 14.0}, {1: 11.0, 2: 12.5, 3: 15.0}, "test", HINT)
    # differences -1, -0.5, -1: mean -5/6, sd 0.288675, se sd/sqrt(3), t(0.975, 2) = 4.302653
    half = 4.302653 * 0.288675 / math.sqrt(3)
    assert d.diff == pytest.approx(-5 / 6)
    assert (d.low, d.high) == (pytest.approx(-5 / 6 - half, abs=1e-4), pytest.approx(-5 / 6 + half, abs=1e-4))
    assert d.verdict == LOWER and d.method.startswith("paired over seeds 1, 2, 3")
    assert d.row == "12.00 +- 2.00 (3 seeds)"


def test_welch_interval_when_the_seeds_differ():
    d = compare({1: 10.0, 2: 12.0}, {4: 11.0, 5: 13.0, 6: 15.0}, "test", HINT)
    # Welch by hand: variances 2 and 4, se^2 = 2/2 + 4/3, Welch-Satterthwaite degrees of freedom
    v1, v2 = 2 / 2, 4 / 3
    df = (v1 + v2) ** 2 / (v1 ** 2 / 1 + v2 ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(v1 + v2)
    assert d.diff == pytest.approx(-2.0)
    assert (d.low, d.high) == (pytest.approx(-2 - half), pytest.approx(-2 + half))
    assert d.verdict == NOISE and d.method.startswith("Welch")


@pytest.mark.parametrize("row,base,verdict", [
    ({1: 10.0, 2: 10.0}, {1: 11.0, 2: 11.0}, LOWER),     # a zero-width spread: the sign decides
    ({1: 12.0, 2: 12.0}, {1: 11.0, 2: 11.0}, HIGHER),
    ({1: 11.0, 2: 11.0}, {1: 11.0, 2: 11.0}, NOISE),     # no difference at all
    ({1: 10.0, 2: 13.0}, {1: 11.0, 2: 12.0}, NOISE),     # differences -1, +1
    ({1: 10.0}, {1: 11.0, 2: 12.0}, "no verdict: 1 seed"),
    ({1: 10.0, 2: 11.0, 3: 12.0}, {}, "no verdict: 0 seeds"),  # the baseline's seeds are missing
])
def test_verdicts_at_the_edges(row, base, verdict):
    d = compare(row, base, "test", HINT)
    assert d.verdict == verdict
    if verdict.startswith("no verdict"):
        assert d.low is None and HINT in d.method


def test_rows_and_baselines_from_run_folders(tmp_path, capsys):
    r = tmp_path / "r"
    for seed, (a, b) in enumerate([(10.0, 11.0), (12.0, 12.5), (14.0, 15.0)], start=1):
        write_run(r, "figure6", "resnet20", 1.0, b, seed=seed)
        write_run(r, "ablations", "resnet20-B", 1.0, a, seed=seed, model="resnet20", shortcut="B",
                  baseline="figure6/resnet20", group="shortcut option")
    write_run(r, "ablations", "plain110", 50.0, 60.0, baseline="figure6/plain56", group="plain depth")
    rows = {e["row"]: e for e in ablation_rows(load_results(r), tmp_path / "exps")}
    assert rows["resnet20-B"]["test"].verdict == LOWER
    assert rows["plain110"]["test"].verdict == "no verdict: 0 seeds"  # its baseline never ran
    assert "--only plain110" in rows["plain110"]["test"].method
    assert main(["ablations", "--results", str(r), "--experiments-dir", str(tmp_path / "exps")]) == 0
    out = capsys.readouterr().out
    assert "resnet20-B vs figure6/resnet20" in out and "LOWER ERROR" in out and "paired over seeds 1, 2, 3" in out
    assert main(["ablations", "--results", str(r), "--json"]) == 0
    assert '"verdict": "lower error"' in capsys.readouterr().out


def test_a_sweep_expands_to_one_run_per_value_with_its_own_identity(tmp_path):
    f = write_experiment(tmp_path / "ablations.yaml", """
rows:
  - {model: resnet20, name: r20, sweep: {lr: [0.05, 0.1], weight_decay: [0.0001, 0.0005]}, seeds: [1, 2]}
  - {model: resnet20}
""")
    specs = load_experiment(f, "smoke")
    swept = [s for s in specs if s.sweep]
    assert sorted({s.name for s in swept}) == ["r20-lr0.05-weight_decay0.0001", "r20-lr0.05-weight_decay0.0005",
                                                "r20-lr0.1-weight_decay0.0001", "r20-lr0.1-weight_decay0.0005"]
    assert len(swept) == 8 and len({s.identity("d") for s in swept}) == 8
    same = next(s for s in swept if s.name == "r20-lr0.1-weight_decay0.0001" and s.seed == 1)
    plain = next(s for s in specs if s.name == "resnet20")
    assert same.identity("d") == plain.identity("d")  # the paper's values: the very run of the plain row
    assert same.sweep == {"row": "r20", "values": {"lr": 0.1, "weight_decay": 0.0001}}
    assert {s.name for s in select_runs([str(f)], "smoke", ["r20"])} == {s.name for s in swept}


@pytest.mark.parametrize("sweep,match", [
    ("{lr: [0.1, -1]}", r"sweep lr=-1: key 'lr' must be > 0"),
    ("{lr: []}", "a list of distinct values"),
    ("{momentom: [0.9]}", "must sweep recipe fields"),
    ("{lr: [0.1, 0.1]}", "distinct"),
])
def test_a_bad_swept_value_is_refused_before_the_data_is_read(tmp_path, sweep, match, capsys):
    f = write_experiment(tmp_path / "ablations.yaml", f"rows:\n  - {{model: resnet20, sweep: {sweep}}}\n")
    with pytest.raises(ExperimentError, match=match):
        load_experiment(f, "smoke")
    # the run command stops before it looks for data (this path does not exist)
    assert main(["run", str(f), "--data", str(tmp_path / "no-such-data"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no-such-data" not in err and "row 1" in err


def test_baselines_get_the_seeds_of_the_rows_that_name_them():
    specs = select_runs([str(REPO / "experiments/ablations.yaml")], "paper", ["resnet20-B"])
    assert sorted((s.experiment, s.name, s.seed) for s in specs) == [
        ("ablations", "resnet20-B", 1), ("ablations", "resnet20-B", 2), ("ablations", "resnet20-B", 3),
        ("figure6", "resnet20", 1), ("figure6", "resnet20", 2), ("figure6", "resnet20", 3)]
    figure6 = {s.seed: s for s in load_experiment(REPO / "experiments/figure6.yaml", "paper") if s.name == "resnet20"}
    base1 = next(s for s in specs if s.experiment == "figure6" and s.seed == 1)
    assert base1.identity("d") == figure6[1].identity("d")  # seed 1 is figure6's own run: never trained twice
    # without an ablation row, figure6 keeps one seed a net (the CPU default is untouched)
    cpu = select_runs([str(REPO / f"experiments/{e}.yaml") for e in ("figure1", "figure6")], "quick",
                      ["plain20", "plain56", "resnet20", "resnet56"])
    assert len(cpu) == 6 and {s.seed for s in cpu} == {1}


def test_the_plan_says_what_each_only_matched_and_why_more_came():
    """`--only resnet20` names a row of several files; an ablation pulls in its baseline's seeds:
    the plan says both before the estimate."""
    files = [str(REPO / f"experiments/{e}.yaml") for e in ("figure1", "figure6", "ablations", "table6")]
    lines = explain_only(["resnet20"], select_runs(files, "paper", ["resnet20"]))
    assert lines == ["--only resnet20: figure6/resnet20 (seed 1), table6/resnet20 (seeds 1, 2, 3, 4, 5)"]
    lines = explain_only(["ablations/resnet20-B"], select_runs(files, "paper", ["ablations/resnet20-B"]))
    assert lines == ["--only ablations/resnet20-B: ablations/resnet20-B (seeds 1, 2, 3)",
                     "added: figure6/resnet20 (seeds 1, 2, 3), the baseline of selected rows, trained with their "
                     "seeds (an ablation is read against the same seeds of its baseline)"]


def test_sweep_points_for_the_report(tmp_path):
    r = tmp_path / "r"
    for lr, errs in ((0.05, (9.0, 10.0)), (0.1, (8.0, 8.5)), (0.2, (11.0, 12.0))):
        for seed, e in enumerate(errs, start=1):
            run = write_run(r, "ablations", f"resnet56-lrsweep-lr{lr}", 1.0, e, seed=seed, model="resnet56",
                            baseline="figure6/resnet56", lr=lr)
            import json
            meta = json.loads(run.meta_path.read_text())
            meta["config"]["sweep"] = {"row": "resnet56-lrsweep", "values": {"lr": lr}}
            run.meta_path.write_text(json.dumps(meta))
    p = sweep_points(load_results(r))
    test = p[p["metric"] == "test"].set_index("value")
    assert list(test.index) == [0.05, 0.1, 0.2]
    assert test.loc[0.1, "mean"] == pytest.approx(8.25) and test.loc[0.2, "min"] == 11.0
    assert set(test["seeds"]) == {2}


def test_the_ablations_report_with_one_seed_a_row(tmp_path):
    from resnet_exp.reporting.build import build_reports

    r = tmp_path / "r"
    write_run(r, "figure6", "resnet20", 5.0, 10.0)
    write_run(r, "ablations", "resnet20-B", 5.0, 9.0, model="resnet20", shortcut="B",
              baseline="figure6/resnet20", group="shortcut option")
    build_reports(results=r, out=tmp_path / "out", experiments_dir=REPO / "experiments", only=["ablations"])
    page = (tmp_path / "out" / "ablations.html").read_text()
    assert "no verdict: 1 seed" in page and "--only resnet20-B" in page


def test_runs_of_two_schedules_are_never_pooled_or_judged_against_each_other(tmp_path):
    """Issue 55: the README's two paths in one folder (smoke, then a 1/64 row while its 1/64
    baseline still trains): the row waits for its own schedule's baseline, the smoke row is
    judged against the smoke baseline, and the claims use one schedule and name the other."""
    from resnet_exp.reporting.claims import check_claims
    from resnet_exp.reporting.results import provenance_html

    r = tmp_path / "results"
    for seed in (1, 2, 3):
        write_run(r, "figure6", "resnet20", 79.0 + seed, 79.5 + seed, seed=seed, profile="smoke")
        write_run(r, "ablations", "resnet20-wd", 78.0 + seed, 78.5 + seed, seed=seed, profile="smoke", model="resnet20",
                  baseline="figure6/resnet20", group="my idea")
        write_run(r, "ablations", "resnet20-wd", 34.0 + seed, 34.5 + seed, seed=seed, profile="quick64",
                  model="resnet20", baseline="figure6/resnet20", group="my idea")
    write_run(r, "figure6", "resnet20", 35.0, 36.0, seed=1, profile="quick64").update_meta(status="interrupted")
    rows = {e["row"]: e for e in ablation_rows(load_results(r), REPO / "experiments")}
    assert set(rows) == {"resnet20-wd [smoke]", "resnet20-wd [quick64]"}
    assert rows["resnet20-wd [smoke]"]["test"].verdict == LOWER  # 1 point lower in every seed
    late = rows["resnet20-wd [quick64]"]
    assert "baseline still training" in late["status"] and late["test"].verdict.startswith("no verdict")
    res = load_results(r)
    claims, notes = check_claims(res)
    assert notes[0].startswith("schedule smoke: 1 nets finished (resnet20 x3)")
    assert not any("quick64" in n for n in notes)  # its only quick64 net of the claims is unfinished
    assert "This folder holds runs of 2 schedules (smoke, quick64)" in provenance_html(res, [], every_run=True)
