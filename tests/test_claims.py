"""Every claim's verdicts (holds, does not hold, within noise, cannot be checked) on run
folders whose numbers are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnet_exp.__main__ import main
from resnet_exp.reporting.claims import FAILS, HOLDS, NOISE, UNCHECKED, claims_for

from .fake_runs import write_run

REPO = Path(__file__).resolve().parents[1]


def verdicts(results) -> dict[str, str]:
    claims, _ = claims_for(results)
    return {c.id: c.verdict for c in claims}


def evidence(results, cid: str) -> str:
    return next(c for c in claims_for(results)[0] if c.id == cid).evidence


def test_an_empty_results_folder_checks_nothing(tmp_path):
    (tmp_path / "r").mkdir()
    assert set(verdicts(tmp_path / "r").values()) == {UNCHECKED}


def test_the_paper_s_story_holds(tmp_path):
    r = tmp_path / "r"
    # plain: deeper is worse on both; resnet: deeper is better on test and beats plain on train
    for d, (tr, te) in {20: (10, 12), 32: (12, 14), 44: (15, 17), 56: (20, 22)}.items():
        write_run(r, "figure6", f"plain{d}", tr, te, responses=[0.9, 0.8])
    for d, (tr, te) in {20: (8, 11), 32: (6, 10), 44: (5, 9.5), 56: (4, 9), 110: (3, 8.5)}.items():
        write_run(r, "figure6", f"resnet{d}", tr, te, responses=[0.5 - d / 1000, 0.4 - d / 1000])
    write_run(r, "figure6", "resnet1202", 0.05, 9.0)
    v = verdicts(r)
    assert v == {"C1": HOLDS, "C2": HOLDS, "C3": HOLDS, "C4": HOLDS, "C5": HOLDS, "C6": HOLDS, "C7": UNCHECKED, "C8": UNCHECKED}
    assert "plain20 10.00 < plain32 12.00" not in evidence(r, "C1")  # written the way the claim reads
    assert "plain32 12.00 > plain20 10.00" in evidence(r, "C1")
    assert "one seed each" in evidence(r, "C1")
    assert "quick profile" in evidence(r, "C7") and "not the real CIFAR-10" in evidence(r, "C7")
    assert "trained before signals were recorded" in evidence(r, "C8")


def test_the_paper_s_story_fails(tmp_path):
    r = tmp_path / "r"
    write_run(r, "figure1", "plain20", 20, 22, responses=[0.5])
    write_run(r, "figure1", "plain56", 15, 18, responses=[0.5])        # deeper plain is better: C1, C2 fail
    write_run(r, "figure6", "resnet20", 10, 12, responses=[0.4])
    write_run(r, "figure6", "resnet56", 16, 14, responses=[0.6])       # deeper resnet worse, and above plain56
    write_run(r, "figure6", "resnet110", 5, 9)
    write_run(r, "figure6", "resnet1202", 0.5, 8)                      # 0.5 % train, better test than 110
    v = verdicts(r)
    assert v == {"C1": FAILS, "C2": FAILS, "C3": FAILS, "C4": FAILS, "C5": FAILS, "C6": FAILS, "C7": UNCHECKED, "C8": UNCHECKED}
    assert "resnet1202 training error 0.500 % >= 0.1 %" in evidence(r, "C5")
    assert "Why: these runs train 4 iterations, 1/16000 of the paper's 64,000" in evidence(r, "C3")


def test_cannot_be_checked_names_the_missing_runs(tmp_path):
    r = tmp_path / "r"
    write_run(r, "figure1", "plain20", 20, 22)
    claims, _ = claims_for(r)
    by_id = {c.id: c for c in claims}
    assert by_id["C1"].verdict == UNCHECKED and "plain56" in by_id["C1"].missing
    assert by_id["C3"].verdict == UNCHECKED and "resnet20" in by_id["C3"].missing
    assert by_id["C4"].verdict == UNCHECKED and "resnet20" in by_id["C4"].missing
    assert by_id["C5"].missing == ["resnet110", "resnet1202"]
    assert by_id["C6"].verdict == UNCHECKED


def test_several_seeds_compare_means_and_say_within_noise(tmp_path):
    r = tmp_path / "r"
    for seed, (a, b) in enumerate([(10, 10.5), (12, 11.0), (14, 13.0)], start=1):
        write_run(r, "table6", "plain20", a, a + 1, seed=seed)   # plain20 train mean 12, std 2
        write_run(r, "table6", "plain56", b, b + 1, seed=seed)   # plain56 train mean 11.5: lower, within noise
    v = verdicts(r)
    assert v["C1"] == NOISE and v["C2"] == NOISE
    assert "within the seed spread 2.00" in evidence(r, "C1") and "(3 seeds)" in evidence(r, "C1")


def test_c7_is_judged_only_for_the_paper_profile_on_real_cifar10(tmp_path):
    r = tmp_path / "r"
    write_run(r, "figure6", "resnet20", 1, 8.80, profile="paper", dataset="real")   # 8.75: within 0.32
    write_run(r, "figure6", "resnet56", 1, 6.90, profile="paper", dataset="real")   # 6.97: within
    assert verdicts(r)["C7"] == HOLDS
    write_run(r, "figure6", "resnet110", 1, 7.50, profile="paper", dataset="real")  # mean 6.61: 0.89 off
    assert verdicts(r)["C7"] == FAILS
    assert "resnet110 7.50 vs paper 6.61 (mean): +0.89" in evidence(r, "C7")


def test_claims_use_one_profile_and_leave_ablation_rows_aside(tmp_path):
    r = tmp_path / "r"
    write_run(r, "figure1", "plain20", 10, 12)
    write_run(r, "figure1", "plain56", 20, 22)
    write_run(r, "other", "plain20", 30, 32, profile="smoke")                 # another profile: aside
    write_run(r, "ablations", "plain56-lr", 1, 2, model="plain56", lr=0.05)   # an ablation row: aside
    claims, notes = claims_for(r)
    assert claims[0].verdict == HOLDS and "plain56 20.00 > plain20 10.00" in claims[0].evidence
    assert any("of the schedule smoke left aside" in n for n in notes)


def test_the_claims_command_prints_a_table_and_json(tmp_path, capsys):
    r = tmp_path / "r"
    write_run(r, "figure1", "plain20", 10, 12)
    write_run(r, "figure1", "plain56", 20, 22)
    assert main(["claims", "--results", str(r)]) == 0
    out = capsys.readouterr().out
    assert "C1  HOLDS" in out and "C5  CANNOT BE CHECKED" in out
    assert main(["claims", "--results", str(r), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["verdict"] for c in doc["claims"]][:2] == [HOLDS, HOLDS]
    assert main(["claims", "--results", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["holds", "fails"])
def test_the_figure7_sentence_comes_from_claim_c6(tmp_path, state):
    from resnet_exp.reporting.claims import figure7_statement
    from resnet_exp.reporting.results import load_results

    r = tmp_path / "r"
    write_run(r, "figure6", "plain20", 10, 12, responses=[0.8])
    write_run(r, "figure6", "resnet20", 8, 10, responses=[0.4 if state == "holds" else 0.9])
    s = figure7_statement(load_results(r))
    assert s.startswith(f"The paper's claim (C6) {HOLDS if state == 'holds' else FAILS}")
    assert "plain20 0.800" in s


def test_the_index_page_shows_the_claims_first_and_leaves_the_cwd_alone(tmp_path, monkeypatch):
    """Built in parallel (several notebooks at once), from a relative results folder."""
    import os

    from resnet_exp.reporting.build import build_reports

    from .conftest import REPO

    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "r", "figure1", "plain20", 10, 12)
    write_run(tmp_path / "r", "figure1", "plain56", 20, 22)
    index = build_reports(results="r", out="out", experiments_dir=REPO / "experiments",
                          only=["depth", "figure1", "figure6"], parallel=3)
    assert os.getcwd() == str(tmp_path)  # papermill's cwd= used to leave the process in a report folder
    page = index.read_text()
    assert page.index("WARNING") < page.index("Which of the paper's claims held") < page.index("Reports</h2>")
    assert "python -m resnet_exp claims --results r</code>" in page and str(tmp_path) not in page
    assert "plain56 20.00 &gt; plain20 10.00" in page


def test_runs_left_out_on_purpose_are_counted_apart_from_missing_ones(tmp_path):
    """run_all.sh's CPU default leaves figure6's other depths out on purpose: the page says how
    many and which flag adds them, and lists only the runs that are really missing."""
    import json

    from resnet_exp.reporting.results import load_results, provenance_html
    from resnet_exp.runs.rundir import LEFT_OUT_FILE

    r = tmp_path / "r"
    write_run(r, "figure6", "plain20", 30.0, 31.0)
    (r / LEFT_OUT_FILE).write_text(json.dumps({"runs": [f"figure6/plain{d} (seed 1)" for d in (32, 44)],
                                               "hint": "./run_all.sh --all"}))
    page = provenance_html(load_results(r), [REPO / "experiments" / "figure6.yaml"])
    assert "2 more left out on purpose by the invocation that trained this folder" in page and "./run_all.sh --all" in page
    missing = page.split("Missing runs")[1].split("</td>")[0]
    assert "figure6/plain56 (seed 1)" in missing and "figure6/plain32 (seed 1)" not in missing


def test_an_experiment_file_never_run_in_the_folder_is_one_line_with_its_command(tmp_path):
    """A 4-net reference holds no table6 run: the page says 'not run here' with the count and the
    command, in the folder's profile, instead of listing each of table6's runs as missing."""
    from resnet_exp.reporting.results import load_results, provenance_html

    r = tmp_path / "r"
    write_run(r, "figure6", "plain20", 30.0, 31.0)
    page = provenance_html(load_results(r), [REPO / "experiments" / "figure6.yaml", REPO / "experiments" / "table6.yaml"])
    missing = page.split("Missing runs")[1].split("</td>")[0]
    not_run = page.split("Not run here")[1].split("</td>")[0]
    assert "figure6/plain56 (seed 1)" in missing and "table6/" not in missing
    assert "table6 (" in not_run and "python -m resnet_exp run experiments/table6.yaml --profile" in not_run
    assert "figure6" not in not_run


def test_the_plan_says_what_a_rung_showed_in_its_precision_or_the_nearest_evidence(tmp_path):
    """The budget's line beside its rung: the claims the rung's reference of this precision
    showed; with none in bf16, that none is committed and what the fp32 one showed, named as such."""
    from resnet_exp.reporting.claims import known_to_show
    from resnet_exp.runs.planning.ladder import Rung

    fp32 = tmp_path / "fp32"
    write_run(fp32, "figure1", "plain20", 10, 12)
    write_run(fp32, "figure1", "plain56", 20, 22)
    rung = Rung("quick", "1/32", reference=str(fp32))
    shown = known_to_show(rung, "fp32")
    assert shown.startswith("C1 holds") and shown.endswith(f"(committed reference {fp32})")
    assert known_to_show(rung, "bf16") == f"no committed bf16 measurement of this rung yet; in fp32 it showed {shown}"
    assert known_to_show(Rung("quick2", "1/2"), "bf16") == "no committed bf16 measurement of this rung yet"
    bf16 = tmp_path / "bf16"
    write_run(bf16, "figure1", "plain20", 10, 12, precision="bf16")
    write_run(bf16, "figure1", "plain56", 5, 7, precision="bf16")
    assert known_to_show(Rung("quick", "1/32", str(fp32), str(bf16)), "bf16").startswith("C1 does not hold")
