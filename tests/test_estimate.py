"""The plan's estimate and the one planning pass, from numbers: no clock (the costs are given,
as the runner's measurements would be), and the GPU default made concrete without a GPU."""

from __future__ import annotations

import pytest
import torch

from resnet_exp.runs.device import DEFAULT_RUNS_PER_GPU, GPU_SHARING_SPEEDUP, sharing_speedup
from resnet_exp.runs.executing.executors import gpu_slots
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments
from resnet_exp.runs.planning.estimate import Estimator, Sharing, StepCost, job_seconds
from resnet_exp.runs.planning.planner import Request, plan_invocation, select

from .conftest import write_experiment

ROWS = "rows:\n  - {model: resnet8}\n  - {model: plain8}\n  - {model: resnet20}\n"
DATASET = {"sha256": "0" * 64, "n_train": 50_000, "n_test": 10_000}


def test_the_whole_job_spreads_the_runs_in_order_over_the_slots():
    assert job_seconds([10, 5, 5]) == 20                                  # one slot: the sum
    assert job_seconds([10, 5, 5], Sharing(devices=2)) == 10              # 10 on one slot, 5 + 5 on the other
    assert job_seconds([5, 5, 10], Sharing(devices=2)) == 15              # the longest last: it runs on alone
    assert job_seconds([3, 3, 3, 3, 3], Sharing(devices=4)) == 6          # one slot takes two runs
    assert job_seconds([], Sharing(devices=4)) == 0


def test_runs_sharing_a_gpu_go_at_the_measured_speedup_for_as_many_as_share_it_at_the_time():
    half = Sharing(devices=1, per_device=2, speedup=lambda n: 1.0)       # two at once: no gain at all
    assert job_seconds([10, 10], half) == pytest.approx(20)
    assert job_seconds([10, 4], half) == pytest.approx(14)                # 4 done at 8 s, then 6 s alone
    gpu = Sharing(devices=1, per_device=4, speedup=sharing_speedup)
    three = 3 / sharing_speedup(3)                                        # each of 3 sharing: this much slower
    assert job_seconds([10, 5, 5], gpu) == pytest.approx(5 * three + 5)   # the 5s end together; 10 goes on alone
    # two GPUs, two slots on each: the first runs go to the GPUs in turn, so 8 and 6 do not share
    two = Sharing(devices=2, per_device=2, speedup=lambda n: 1.5 if n == 2 else 1.0)
    assert job_seconds([8, 6], two) == pytest.approx(8)
    assert job_seconds([8, 6, 2], two) == pytest.approx(2 * 2 / 1.5 + 6)  # 8 and 2 share GPU 0 until 2 ends


def test_the_gpu_speedup_is_the_measured_one_between_the_measured_counts():
    assert sharing_speedup(1) == 1 and sharing_speedup(4) == GPU_SHARING_SPEEDUP[4]
    assert sharing_speedup(3) == pytest.approx((GPU_SHARING_SPEEDUP[2] + GPU_SHARING_SPEEDUP[4]) / 2)
    assert sharing_speedup(16) == GPU_SHARING_SPEEDUP[8]                  # no gain past what was measured


def test_gpu_slots_take_one_slot_of_each_gpu_in_turn():
    assert [s.name for s in gpu_slots("0,1", 2, threads=1)] == ["gpu0.0", "gpu1.0", "gpu0.1", "gpu1.1"]
    assert [s.cuda_visible_devices for s in gpu_slots("0,1", 2, threads=1)] == ["0", "1", "0", "1"]


def test_auto_keeps_every_gpu_busy_and_the_cpu_sequential():
    gpu = ExecutorChoice().resolved(torch.device("cuda"))  # a device object: no GPU needed
    assert (gpu.kind, gpu.runs_per_gpu) == ("pool", DEFAULT_RUNS_PER_GPU)
    sharing = gpu.sharing(torch.device("cuda"), slots=2 * DEFAULT_RUNS_PER_GPU)   # two GPUs
    assert (sharing.devices, sharing.per_device, sharing.speedup) == (2, DEFAULT_RUNS_PER_GPU, sharing_speedup)
    assert ExecutorChoice().resolved(torch.device("cpu")).kind == "local"
    assert ExecutorChoice(workers=2).resolved(torch.device("cpu")).kind == "pool"
    assert ExecutorChoice(kind="local").resolved(torch.device("cuda")).kind == "local"  # asked for: kept
    assert ExecutorChoice(runs_per_gpu=2).resolved(torch.device("cuda")).runs_per_gpu == 2
    assert ExecutorChoice(kind="ray").resolved(torch.device("cuda")).runs_per_gpu == DEFAULT_RUNS_PER_GPU
    assert ExecutorChoice(workers=2).sharing(torch.device("cpu"), slots=2) == Sharing(devices=2)


def test_one_planning_pass_gives_the_rung_the_runs_their_estimates_and_what_is_left_out(tmp_path):
    """A budget: every rung estimated from the given costs (each model measured once), the
    longest that fits chosen, the runs planned on it, the whole job spread over the slots,
    the left-out file planned and costed; nothing written."""
    main = write_experiment(tmp_path / "main.yaml", ROWS)
    left = write_experiment(tmp_path / "left.yaml", "rows:\n  - {model: resnet32}\n")
    measured = []

    def cost(model: str, batch: int, precision: str) -> StepCost:
        measured.append(model)
        return StepCost(step_s=0.01, eval_image_s=0.0)

    request = Request((str(main),), budget_s=60.0, left_out=(str(left),))
    selection = select(request, default_profile="quick")
    assert len(selection.by_profile) > 1 and selection.rows == ["main/plain8-s1", "main/resnet20-s1", "main/resnet8-s1"]
    inv = plan_invocation(selection, tmp_path / "results", DATASET, Estimator(cost, DATASET["n_test"]),
                          Sharing(devices=2))
    assert sorted(measured) == ["plain8", "resnet20", "resnet8"]  # each once, for every rung
    # 0.01 s a step: 1/64 (1,000 it) is 10 s a run, 1/32 20 s, 1/16 40 s, plus the signal
    # measurements; three runs on two slots take two runs' time: 1/32 fits 60 s (about 40 s), 1/16 not
    assert inv.profile == "quick" and inv.choice is not None and inv.choice.fits
    assert inv.choice.next_rung.profile == "quick16" and inv.choice.next_estimate_s > 60
    # one slot: three runs' time, so 1/32 (just over 60 s with the signals) no longer fits
    alone = plan_invocation(selection, tmp_path / "results", DATASET, Estimator(cost, DATASET["n_test"]))
    assert alone.profile == "quick64" and alone.job_s == pytest.approx(alone.total_s)
    assert [j.spec.name for j in alone.plan.jobs] == ["resnet8", "plain8", "resnet20"]  # one slot: the file's order
    assert [j.spec.name for j in inv.plan.jobs] == ["resnet8", "plain8", "resnet20"]    # equal estimates: kept
    assert inv.job_s == pytest.approx(job_seconds(list(inv.eta.values()), Sharing(devices=2)))
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


def test_with_several_slots_the_longest_run_starts_first(tmp_path):
    """The executor takes the plan's jobs in order: with more than one slot, longest first (by
    the estimate, or by FLOPs x images left without one), so the longest does not run on alone
    at the end; with one slot the file's order stays."""
    main = write_experiment(tmp_path / "main.yaml", ROWS)
    selection = select(Request((str(main),), profile="quick"), default_profile="quick")
    seconds = {"resnet8": 0.01, "plain8": 0.03, "resnet20": 0.02}
    estimator = Estimator(lambda model, batch, precision: StepCost(seconds[model], 0.0), DATASET["n_test"])
    inv = plan_invocation(selection, tmp_path / "r", DATASET, estimator, Sharing(devices=2))
    assert [j.spec.name for j in inv.plan.jobs] == ["plain8", "resnet20", "resnet8"]
    assert inv.job_s == pytest.approx(job_seconds([inv.eta[j] for j in inv.plan.jobs], Sharing(devices=2)))
    unestimated = plan_invocation(selection, tmp_path / "r", DATASET, None, Sharing(devices=2))
    assert [j.spec.name for j in unestimated.plan.jobs] == ["resnet20", "resnet8", "plain8"]  # FLOPs: 20 > 8
    one = plan_invocation(selection, tmp_path / "r", DATASET, estimator)
    assert [j.spec.name for j in one.plan.jobs] == ["resnet8", "plain8", "resnet20"]


def test_timing_the_models_says_which_it_times_and_how_many_are_left(tmp_path):
    """The minutes of timing before the plan are not silent: one call per model timed, as
    `timing 3 models for the estimate: k/3 (name)`; a model timed once is not timed again."""
    main = write_experiment(tmp_path / "main.yaml", ROWS + "  - {model: resnet8, name: again, seed: 2}\n")
    selection = select(Request((str(main),), profile="quick"), default_profile="quick")
    said = []
    estimator = Estimator(lambda model, batch, precision: StepCost(0.01, 0.0), DATASET["n_test"],
                          progress=lambda k, n, model: said.append((k, n, model)))
    plan_invocation(selection, tmp_path / "r", DATASET, estimator)
    assert said == [(1, 3, "resnet8"), (2, 3, "plain8"), (3, 3, "resnet20")]
    plan_invocation(selection, tmp_path / "r", DATASET, estimator)
    assert len(said) == 3


def test_a_timing_is_kept_a_day_and_a_busy_one_is_taken_again_once_quiet(tmp_path):
    """Issue 55: the second plan does not time the models again (an injected clock and load)."""
    import torch

    from resnet_exp.runs.planning.estimate import StepCost
    from resnet_exp.runs.training.timing import KEEP_S, kept_step_cost

    calls = []

    def measure(model, batch, device, precision):
        calls.append((model, precision))
        return StepCost(len(calls) / 10, 0.001)

    now, busy = [1000.0], [False]
    kw = dict(measure=measure, clock=lambda: now[0], busy=lambda: busy[0], folder=tmp_path)
    cpu = torch.device("cpu")
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.1
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.1 and len(calls) == 1  # kept
    assert kept_step_cost("resnet20", 128, cpu, "bf16", **kw).step_s == 0.2  # another precision: its own
    now[0] += KEEP_S + 1  # a day later: taken again
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.3
    busy[0] = True  # taken beside a job: marked, used while the CPU stays busy ...
    now[0] += KEEP_S + 1
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.4
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.4
    busy[0] = False  # ... and taken again once it is quiet
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.5
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.5 and len(calls) == 5
    (tmp_path / "step-timings.json").write_text("not json")  # damaged: measured again, never an error
    assert kept_step_cost("resnet20", 128, cpu, **kw).step_s == 0.6
