"""The plan's estimate and the one planning pass, from numbers: no clock (the costs are given,
as the runner's measurements would be), and the GPU default made concrete without a GPU."""

from __future__ import annotations

import pytest
import torch

from resnet_exp.runs.device import DEFAULT_RUNS_PER_GPU, GPU_SHARING_SPEEDUP, sharing_slowdown
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments
from resnet_exp.runs.planning.estimate import Estimator, StepCost, job_seconds
from resnet_exp.runs.planning.planner import Request, plan_invocation, select

from .conftest import write_experiment

ROWS = "rows:\n  - {model: resnet8}\n  - {model: plain8}\n  - {model: resnet20}\n"
DATASET = {"sha256": "0" * 64, "n_train": 50_000, "n_test": 10_000}


def test_the_whole_job_spreads_runs_longest_first_over_the_slots():
    assert job_seconds([10, 5, 5], slots=1) == 20
    assert job_seconds([10, 5, 5], slots=2) == 10          # 10 on one slot, 5 + 5 on the other
    assert job_seconds([10, 5, 5], slots=2, slowdown=2) == 20
    assert job_seconds([3, 3, 3, 3, 3], slots=4) == 6      # one slot takes two runs
    assert job_seconds([], slots=4) == 0


def test_runs_sharing_a_gpu_are_slowed_by_the_measured_speedup():
    assert sharing_slowdown(1) == 1
    assert sharing_slowdown(4) == pytest.approx(4 / GPU_SHARING_SPEEDUP[4])
    assert sharing_slowdown(3) == pytest.approx(3 / GPU_SHARING_SPEEDUP[2])  # no gain assumed past what was measured
    assert sharing_slowdown(16) == pytest.approx(16 / GPU_SHARING_SPEEDUP[8])


def test_auto_keeps_every_gpu_busy_and_the_cpu_sequential():
    gpu = ExecutorChoice().resolved(torch.device("cuda"))  # a device object: no GPU needed
    assert (gpu.kind, gpu.runs_per_gpu) == ("pool", DEFAULT_RUNS_PER_GPU)
    assert gpu.slowdown(torch.device("cuda"), slots=4) == pytest.approx(sharing_slowdown(DEFAULT_RUNS_PER_GPU))
    assert ExecutorChoice().resolved(torch.device("cpu")).kind == "local"
    assert ExecutorChoice(workers=2).resolved(torch.device("cpu")).kind == "pool"
    assert ExecutorChoice(kind="local").resolved(torch.device("cuda")).kind == "local"  # asked for: kept
    assert ExecutorChoice(runs_per_gpu=2).resolved(torch.device("cuda")).runs_per_gpu == 2
    assert ExecutorChoice(kind="ray").resolved(torch.device("cuda")).runs_per_gpu == DEFAULT_RUNS_PER_GPU
    assert ExecutorChoice(workers=2).slowdown(torch.device("cpu"), slots=2) == 1.0


def test_one_planning_pass_gives_the_rung_the_runs_their_estimates_and_what_is_left_out(tmp_path):
    """A budget: every rung estimated from the given costs (each model measured once), the
    longest that fits chosen, the runs planned on it, the whole job spread over the slots,
    the left-out file planned and costed; nothing written."""
    main = write_experiment(tmp_path / "main.yaml", ROWS)
    left = write_experiment(tmp_path / "left.yaml", "rows:\n  - {model: resnet32}\n")
    measured = []

    def cost(model: str, batch: int) -> StepCost:
        measured.append(model)
        return StepCost(step_s=0.01, eval_image_s=0.0)

    request = Request((str(main),), budget_s=60.0, left_out=(str(left),))
    selection = select(request, default_profile="quick")
    assert len(selection.by_profile) > 1 and selection.rows == ["main/plain8-s1", "main/resnet20-s1", "main/resnet8-s1"]
    inv = plan_invocation(selection, tmp_path / "results", DATASET, Estimator(cost, DATASET["n_test"]), slots=2)
    assert sorted(measured) == ["plain8", "resnet20", "resnet8"]  # each once, for every rung
    # 0.01 s a step: 1/64 (1,000 it) is 10 s a run, 1/32 20 s, 1/16 40 s, plus the signal
    # measurements; three runs on two slots take two runs' time: 1/32 fits 60 s (about 40 s), 1/16 not
    assert inv.profile == "quick" and inv.choice is not None and inv.choice.fits
    assert inv.choice.next_rung.profile == "quick16" and inv.choice.next_estimate_s > 60
    # one slot: three runs' time, so 1/32 (just over 60 s with the signals) no longer fits
    alone = plan_invocation(selection, tmp_path / "results", DATASET, Estimator(cost, DATASET["n_test"]), slots=1)
    assert alone.profile == "quick64" and alone.job_s == pytest.approx(alone.total_s)
    assert [j.spec.name for j in inv.plan.jobs] == ["resnet8", "plain8", "resnet20"]
    assert inv.job_s == pytest.approx(job_seconds(list(inv.eta.values()), 2))
    assert inv.job_s < inv.total_s
    assert [p.spec.name for p in inv.left_out.runs] == ["resnet32"] and inv.left_out_s > 0
    assert not (tmp_path / "results").exists()


def test_the_plan_prints_the_whole_jobs_estimate(tiny_tar, tmp_path, capsys):
    exp = write_experiment(tmp_path / "smoke.yaml", "rows:\n  - {model: resnet8, iterations: 10, milestones: [5], "
                                                    "eval_every: 5}\n  - {model: plain8, iterations: 10, "
                                                    "milestones: [5], eval_every: 5}\n")
    assert run_experiments([str(exp)], profile="smoke", data=str(tiny_tar), device="cpu", progress=False,
                           data_dir=tmp_path / "data", results=str(tmp_path / "r"), dry_run=True,
                           executor=ExecutorChoice(workers=2, threads=1)) == 0
    out = capsys.readouterr().out
    assert "ESTIMATED TIME" in out and "the whole job about" in out and "with 2 at a time (if they scale)" in out
    assert "step: eager (CUDA graphs need a CUDA device, this run trains on cpu)" in out
