"""A time budget chooses the rung (runs/planning/budget.py): a table of timings and budgets, no clock."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from resnet_exp.runs.planning.ladder import Rung, load_ladder
from resnet_exp.runs.planning.budget import (BudgetError, choose_rung, keep_choice, parse_budget,
                                    read_record, write_record)
from resnet_exp.runs.planning.experiments import load_profiles

REPO = Path(__file__).resolve().parents[1]
LADDER = load_ladder()
MIN = 60.0


def estimates(*minutes: float) -> list[tuple[Rung, float]]:
    return [(rung, m * MIN) for rung, m in zip(LADDER, minutes)]


def test_the_ladder_is_the_papers_recipe_compressed():
    profiles = load_profiles()
    assert [r.fraction for r in LADDER] == ["1/128", "1/64", "1/32", "1/16", "1/8", "1/4", "1/2", "1"]
    paper = profiles["paper"]
    for rung in LADDER:
        r = profiles[rung.profile]
        n = int(paper.iterations * Fraction(rung.fraction))
        assert r.iterations == n and list(r.milestones) == [n // 2, n * 3 // 4]
        assert len(range(r.eval_every, n + 1, r.eval_every)) >= 15  # at least 15 evaluations a curve
        assert r.model_dump(exclude={"iterations", "milestones", "eval_every"}) == \
            paper.model_dump(exclude={"iterations", "milestones", "eval_every"})


# (estimated minutes of each rung, shortest first; budget in minutes) -> the rung chosen, does it fit
@pytest.mark.parametrize("minutes,budget,chosen,fits", [
    ((10, 20, 40, 80, 160, 320, 640, 1280), 45, "quick", True),      # 1/32 fits, 1/16 does not
    ((10, 20, 40, 80, 160, 320, 640, 1280), 40, "quick", True),      # exactly the budget fits
    ((10, 20, 40, 80, 160, 320, 640, 1280), 39.9, "quick64", True),
    ((15, 30, 60, 120, 240, 480, 960, 1920), 45, "quick64", True),   # a 1.5x slower machine: one rung down
    ((10, 20, 40, 80, 160, 320, 640, 1280), 5000, "paper", True),    # everything fits: the paper's schedule
    ((0.5, 1, 2, 4, 8, 16, 32, 64), 10, "quick8", True),              # a GPU: Figure 6 in 10 minutes
    ((10, 20, 40, 80, 160, 320, 640, 1280), 19.9, "quick128", True),
    ((10, 20, 40, 80, 160, 320, 640, 1280), 10, "quick128", True),  # only the shortest fits
    ((10, 20, 40, 80, 160, 320, 640, 1280), 5, "quick128", False),  # nothing fits: the shortest, said so
    # this project's slowest 2-core machine so far (GEMM 94 GFLOP/s), the CPU default's 60 min:
    # 1/64 estimated at 96 min, so 1/128 (without it the default would train 1/64 anyway)
    ((48, 96, 192, 384, 768, 1536, 3072, 6144), 60, "quick128", True),
])
def test_the_longest_rung_that_fits(minutes, budget, chosen, fits):
    c = choose_rung(estimates(*minutes), budget * MIN)
    assert (c.rung.profile, c.fits) == (chosen, fits)
    i = [r.profile for r in LADDER].index(chosen)
    assert c.estimate_s == minutes[i] * MIN
    if i + 1 < len(LADDER):
        assert c.next_rung == LADDER[i + 1] and c.next_estimate_s == minutes[i + 1] * MIN


def test_a_rerun_keeps_its_rung_when_the_estimate_moves(tmp_path):
    rows = ["figure1/plain20-s1", "figure1/plain56-s1"]
    fast, slow = estimates(10, 20, 40, 80, 160, 320, 640, 1280), estimates(15, 30, 60, 120, 240, 480, 960, 1920)
    first = keep_choice(fast, 45 * MIN, {}, read_record(tmp_path), rows)
    assert first.rung.profile == "quick" and first.kept is None
    write_record(tmp_path, 45 * MIN, rows, first.rung)
    # interrupted, then rerun on a busier machine: the estimate no longer fits, the rung stays
    again = keep_choice(slow, 45 * MIN, {"quick": 1}, read_record(tmp_path), rows)
    assert again.rung.profile == "quick" and "unfinished" in again.kept and not again.fits
    # finished; rerun with the same budget and rows: still the recorded rung (nothing new trains)
    again = keep_choice(slow, 45 * MIN, {}, read_record(tmp_path), rows)
    assert again.rung.profile == "quick" and "earlier invocation" in again.kept
    # another budget, or other rows, choose afresh
    assert keep_choice(slow, 200 * MIN, {}, read_record(tmp_path), rows).rung.profile == "quick16"
    assert keep_choice(slow, 45 * MIN, {}, read_record(tmp_path), rows[:1]).kept is None


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("45", 2700),
                                          ("1.5h", 5400)])
def test_budgets_parse(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "abc", "0m", "5x", "1m1m", ""])
def test_bad_budgets_are_refused(text):
    with pytest.raises(BudgetError, match="--budget"):
        parse_budget(text)


@pytest.mark.parametrize("text", ["0", "-5m", "abc"])
def test_a_bad_budget_is_one_line_before_anything_loads(text):
    out = subprocess.run([sys.executable, "-m", "resnet_exp", "run", "experiments/figure1.yaml", f"--budget={text}",
                          "--check"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--budget" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_estimate_counts_steps_evaluations_and_signal_measurements():
    """What the budget compares: a 1/128 run is 500 steps, 16 evaluations of the 10,000 test
    images (at the evaluation's measured cost per image) and 21 layer-signal measurements (a
    forward and backward pass of 256 probe images); a resumed run only what is left."""
    import torch
    from types import SimpleNamespace

    from resnet_exp.runs.planning.estimate import Estimator, StepCost

    recipe = load_profiles()["quick128"]
    estimator = Estimator(lambda model, batch, precision: StepCost(1.0, 0.002), n_test=10_000)
    cost = StepCost(step_s=1.0, eval_image_s=0.002)
    fresh = SimpleNamespace(spec=SimpleNamespace(recipe=recipe), remaining_iterations=500)
    assert estimator._run_seconds(fresh, cost) == pytest.approx(500 + 16 * 10_000 * 0.002 + 21 * 256 / 128)
    resumed = SimpleNamespace(spec=SimpleNamespace(recipe=recipe), remaining_iterations=250)
    # left: 250 steps, 8 evaluations, the signals at 256, 288, ..., 480 and 500
    assert estimator._run_seconds(resumed, cost) == pytest.approx(250 + 8 * 10_000 * 0.002 + 9 * 256 / 128)
    # a held-out validation split is evaluated beside the test set at every evaluation
    with_val = SimpleNamespace(spec=SimpleNamespace(recipe=recipe.model_copy(update={"val_split": 5000})),
                               remaining_iterations=500)
    assert estimator._run_seconds(with_val, cost) == pytest.approx(500 + 16 * 15_000 * 0.002 + 21 * 256 / 128)


def test_the_estimate_times_the_evaluation_it_will_run():
    """The evaluation's cost per image is measured with ``evaluate`` itself, in its batches on
    this device (on a CPU it is no fixed fraction of a training image: benchmarks/eval_batch.py)."""
    import torch

    from resnet_exp.data.loader import eval_batch_size
    from resnet_exp.runs.training import timing as runner

    seen = []
    real = runner.evaluate

    def spy(model, x, y, *args, **kwargs):
        seen.append(len(x))
        return real(model, x, y, *args, **kwargs)

    runner.evaluate = spy
    try:
        cost = runner.time_step_cost("resnet8", 8, torch.device("cpu"))
    finally:
        runner.evaluate = real
    assert cost.step_s > 0 and cost.eval_image_s > 0
    assert len(seen) >= 3 and set(seen) == {eval_batch_size(torch.device("cpu"))}


def test_the_default_trains_the_longest_rung_it_can_judge():
    """--needs-reference (issue 54): among the rungs that fit, the longest with a complete
    reference; the longer one that fits without one is named; none judged: every rung."""
    from resnet_exp.runs.planning.budget import describe

    minutes = (10, 20, 40, 80, 160, 320, 640, 1280)
    with_reference = {"quick128", "quick64", "quick"}  # 1/16 fits 90 min but has none
    c = choose_rung(estimates(*minutes), 90 * MIN, judged=lambda r: r.profile in with_reference)
    assert c.rung.profile == "quick" and c.fits and c.unjudged.profile == "quick16" and c.unjudged_estimate_s == 80 * MIN
    lines = describe(c, 90 * MIN)
    assert any("rung quick16 (1/16 of the paper's schedule) also fits" in line and "./run_all.sh --budget 1h30m" in line
               for line in lines), lines
    # an explicit budget (no judged): the longest that fits, nothing named
    plain = choose_rung(estimates(*minutes), 90 * MIN)
    assert plain.rung.profile == "quick16" and plain.unjudged is None
    # no rung with a reference fits: the longest that fits all the same
    none = choose_rung(estimates(*minutes), 90 * MIN, judged=lambda r: False)
    assert none.rung.profile == "quick16" and none.unjudged is None
    # bf16 and fp32 each look at their own references: the predicate is the caller's, per precision
    bf16 = {"quick128", "quick64", "quick", "quick16"}
    assert choose_rung(estimates(*minutes), 90 * MIN, judged=lambda r: r.profile in bf16).rung.profile == "quick16"


def test_a_rung_is_judged_only_with_three_seeds_of_each_net_in_its_own_precision(tmp_path, monkeypatch):
    from resnet_exp.reporting import reference as reference_module

    from .fake_runs import DATASETS, write_run

    ref = tmp_path / "ref"
    for seed in (1, 2, 3):
        write_run(ref, "seeds", "plain20", 40.0, 41.0, seed=seed, profile="quick64")
        write_run(ref, "seeds", "resnet20", 30.0, 31.0, seed=seed, profile="quick64")
    write_run(ref, "seeds", "plain56", 70.0, 71.0, seed=1, profile="quick64")
    monkeypatch.setattr(reference_module, "reference_dir",
                        lambda profile, precision="fp32": ref if (profile, precision) == ("quick64", "fp32") else None)
    sha = DATASETS["mirror"]["sha256"]
    reference_module.coverage.cache_clear()
    ok, text = reference_module.coverage("quick64", "fp32", ("plain20", "resnet20"), sha)
    assert ok and text.startswith("compared with") and "plain20, resnet20, 3 seeds each" in text
    ok, text = reference_module.coverage("quick64", "fp32", ("plain20", "plain56"), sha)
    assert not ok and "plain56 (1 seed)" in text
    assert not reference_module.coverage("quick64", "bf16", ("plain20",), sha)[0]  # fp32 runs are not bf16's
    assert not reference_module.coverage("quick64", "fp32", ("plain20",), "another-sha")[0]  # the real CIFAR-10
    reference_module.coverage.cache_clear()
