"""The remedies report's verdicts on made-up numbers with known answers: which remedies train
(their training error against their baseline's, over seeds), which diverged, the published
numbers by row, and the first/last gradient ratio of nets whose branches start at zero."""

from __future__ import annotations

import json
import math

import pandas as pd

from resnet_exp.reporting import remedies
from resnet_exp.reporting.results import load_results
from resnet_exp.reporting.signals import first_last_ratio

from .fake_runs import write_run


def test_remedies_train_or_not_by_their_training_error_and_a_diverged_one_is_named(tmp_path):
    results = tmp_path / "results"
    for seed, (plain, resnet, good, bad, fine) in enumerate([(50, 20, 30, 60, 21), (52, 21, 31, 61, 20),
                                                             (51, 22, 29, 62, 22)], start=1):
        write_run(results, "figure6", "plain56", plain, plain + 2, seed=seed)
        write_run(results, "figure6", "resnet56", resnet, resnet + 2, seed=seed)
        write_run(results, "remedies", "plain56_deltaorth", good, good + 2, seed=seed,
                  group="delta-orthogonal", baseline="figure6/plain56")
        write_run(results, "remedies", "highway56", bad, bad + 2, seed=seed, group="highway",
                  baseline="figure6/resnet56")
        write_run(results, "remedies", "rezero56", fine, fine + 2, seed=seed, group="rezero",
                  baseline="figure6/resnet56")
        nobn = write_run(results, "remedies", "resnet56_nobn", 90, 90, seed=seed, group="no BN",
                         baseline="figure6/resnet56")
        meta = json.loads(nobn.meta_path.read_text())
        nobn.meta_path.write_text(json.dumps({**meta, "status": "diverged"}))
    rows = {e["row"]: e for e in remedies.remedy_rows(load_results(results), tmp_path)}
    assert rows["plain56_deltaorth"]["trains"] is True and rows["plain56_deltaorth"]["train"].verdict == "lower error"
    assert rows["highway56"]["trains"] is False and rows["highway56"]["train"].verdict == "higher error"
    assert rows["rezero56"]["trains"] is True and rows["rezero56"]["train"].verdict == "within noise"
    assert rows["resnet56_nobn"]["trains"] is False
    assert rows["rezero56"]["published"].startswith("6.38") and rows["highway56"]["published"].startswith("Highway 32")
    assert all(e["bounded"] is None and e["predicted"] is None for e in rows.values())  # no signals recorded
    text = "\n".join(remedies.verdict_sentences(list(rows.values())))
    assert "**resnet56_nobn** (no BN): **diverged** in 3 of 3 seeds, its loss not finite by iteration 4: " in text
    assert "training error 30.00 +- 1.00 (3 seeds) against 51.00 +- 1.00 (3 seeds) for figure6/plain56 " \
           "(**lower error**)" in text
    table = remedies.remedy_table(list(rows.values()))
    assert dict(zip(table["row"], table["trains?"])) == {"plain56_deltaorth": "yes", "highway56": "no",
                                                         "rezero56": "yes", "resnet56_nobn": "no (diverged)"}
    # the sentence gives the median over seeds but judges every seed: one seed beyond 10x is "beyond"
    for bounded, words in ((False, "beyond 10x in at least one"), (True, "within 10x in every seed")):
        (line,) = remedies.verdict_sentences([dict(rows["rezero56"], bounded=bounded, ratio_start=0.364)])
        assert f"0.364x the last block's (median over seeds; {words})" in line


def test_where_every_branch_starts_at_zero_the_ratio_is_0_over_0_not_infinite():
    layers = ["layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer3.8.conv1.weight", "layer3.8.conv2.weight"]
    run = pd.DataFrame({"iteration": [0] * 4 + [10] * 4, "layer": list(range(4)) * 2, "layer_name": layers * 2,
                        "grad_norm": [0.0] * 4 + [3.0, 4.0, 1.0, 0.0]})
    ratio = first_last_ratio(run)
    assert math.isnan(ratio.iloc[0]["ratio"]) and ratio.iloc[1]["ratio"] == 5.0
    assert remedies.bounded([ratio.iloc[1]["ratio"]]) is True and remedies.bounded([11.0]) is False
    assert remedies._ratio(float("nan")) == "0/0 (branches at zero)"


def test_the_page_states_its_test_what_three_seeds_can_decide_and_which_rows_need_more(tmp_path):
    """Issue 54: the smallest decidable difference, t(0.975, n-1) sqrt(2) s / sqrt(n) at the
    baseline's spread; how many remedies decide; a row further from its baseline than the
    baseline's seed spread yet within noise is named for seeds 4 and 5."""
    from scipy import stats

    results = tmp_path / "results"
    for seed, (resnet, rezero, worse) in enumerate([(60, 35, 95), (70, 45, 96), (80, 30, 97)], start=1):
        write_run(results, "figure6", "resnet56", resnet, resnet + 1, seed=seed)
        write_run(results, "remedies", "rezero56", rezero, rezero + 1, seed=seed, group="rezero",
                  baseline="figure6/resnet56")
        write_run(results, "remedies", "fixup56", worse, worse + 1, seed=seed, group="fixup",
                  baseline="figure6/resnet56")
    res = load_results(results)
    lines = remedies.decidable(res, remedies.remedy_rows(res, tmp_path / "exps"))
    smallest = stats.t.ppf(0.975, 2) * math.sqrt(2) * 10.0 / math.sqrt(3)  # sd of 60, 70, 80 is 10
    assert lines[0].startswith("The test: each remedy's final training error minus its baseline's, seed by seed")
    assert f"the smallest difference 3 seeds can decide is about **{smallest:.1f} points**" in lines[1]
    assert "**1 of 2 remedies decide**" in lines[2] and "fixup56: higher error" in lines[2]
    # rezero: -33.3 points, beyond the baseline's 20-point spread, yet within noise (its differences vary)
    assert "rezero56 (-33.3 points, its baseline's seeds spread 20.0)" in lines[3] and "seeds: [1, 2, 3, 4, 5]" in lines[3]
