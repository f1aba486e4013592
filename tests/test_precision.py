"""bf16 on a CPU (issue 46): the precision as a choice (``--precision``, or the budget's on a CPU
with native bf16 where the references showed bf16 gives fp32's answer), the same identity
however it is asked for, an exact resume, each run compared with the reference of its own
precision, and the bf16-against-fp32 verdict computed from the references."""

from __future__ import annotations

import shutil

import pytest
import torch

from resnet_exp import stopping
from resnet_exp.reporting import reference as reference_module
from resnet_exp.reporting.reference import WITHIN, bf16_verdict, compare, load_reference, precision_rows, \
    without_reference
from resnet_exp.reporting.results import load_results
from resnet_exp.runs.executing import runner
from resnet_exp.runs.planning.budget import choose_precision
from resnet_exp.runs.planning.experiments import load_experiment
from resnet_exp.runs.planning.ladder import Rung
from resnet_exp.runs.training.train import RunInterrupted, default_callbacks

from .conftest import tiny_training, train_tiny, write_experiment
from .fake_runs import write_run
from .test_runner import deterministic, read_log
from .test_signals import StopAt

SHOWN, NOT_SHOWN = (lambda: (True, "shown")), (lambda: (False, "outside on plain56"))


@pytest.mark.parametrize("requested,device,native,budget,verdict,chosen,alternative", [
    ("bf16", "cpu", False, False, None, "bf16", None),      # asked for: always, even emulated
    ("fp32", "cpu", True, True, SHOWN, "fp32", None),       # --precision wins over the budget's choice
    (None, "cpu", True, True, SHOWN, "bf16", "fp32"),       # the budget's choice, fp32's rung beside it
    (None, "cpu", True, True, NOT_SHOWN, None, "bf16"),     # not shown equivalent: fp32, bf16 offered
    (None, "cpu", False, True, SHOWN, None, None),          # no native bf16: fp32, and why
    (None, "cpu", True, False, SHOWN, None, None),          # a pinned profile: its own fp32
    (None, "cuda", False, True, SHOWN, None, None),         # a GPU: the profiles' precision
])
def test_the_precision_rule(requested, device, native, budget, verdict, chosen, alternative):
    c = choose_precision(requested, device, native, budget, verdict)
    assert (c.precision, c.alternative) == (chosen, alternative)
    if device == "cpu" and budget and requested is None:
        assert c.why and ("natively" in c.why)
    if verdict is NOT_SHOWN and chosen is None and native:
        assert "outside on plain56" in c.why and "--precision bf16" in c.why


def test_precision_flag_and_row_key_give_one_identity(tmp_path):
    """`--precision bf16` and a row's `precision: bf16` are one run (one identity, trained once);
    a row that names its own precision keeps it."""
    plain = write_experiment(tmp_path / "a.yaml", "rows:\n  - {model: resnet20}\n  - {model: plain20, precision: fp32}\n")
    keyed = write_experiment(tmp_path / "b.yaml", "defaults: {precision: bf16}\nrows:\n  - {model: resnet20}\n")
    flag = {s.name: s for s in load_experiment(plain, "quick64", precision="bf16")}
    (row,) = load_experiment(keyed, "quick64")
    assert flag["resnet20"].recipe.precision == "bf16" == row.recipe.precision
    assert flag["resnet20"].identity("x" * 64) == row.identity("x" * 64)
    assert flag["plain20"].recipe.precision == "fp32"
    (fp32,) = [s for s in load_experiment(plain, "quick64") if s.name == "resnet20"]
    assert fp32.identity("x" * 64) != row.identity("x" * 64)


RECIPE = "{iterations: 12, milestones: [6], eval_every: 4, batch_size: 16, checkpoint_every_s: 0, precision: bf16}"


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory, tiny_tar):
    return tiny_training(tmp_path_factory.mktemp("bf16"), tiny_tar, RECIPE, "resnet8")


def test_a_bf16_run_resumes_exactly_and_says_how_it_computed(tiny_bf16, monkeypatch):
    whole, meta = train_tiny(tiny_bf16, "whole")
    assert meta["precision"] == "bf16" and isinstance(meta["cpu_bf16_native"], bool)
    monkeypatch.setattr(stopping, "STOP_FILE_POLL_S", 0.0)
    stop = tiny_bf16[0] / "stop"
    with pytest.raises(RunInterrupted):
        train_tiny(tiny_bf16, "resumed", callbacks=[*default_callbacks(), StopAt(7, stop)], stop_file=stop)
    stop.unlink()
    resumed, meta = train_tiny(tiny_bf16, "resumed")
    assert len(meta["attempts"]) == 2 and resumed.check().ok
    assert deterministic(read_log(resumed.path)) == deterministic(read_log(whole.path))
    a, b = (torch.load(r.model_path, weights_only=True) for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_is_compared_with_the_reference_of_its_own_precision(tmp_path):
    ref = tmp_path / "ref"
    for seed, err in enumerate([30.0, 31.0, 32.0], start=1):
        write_run(ref, "seeds", "plain20", err, err, seed=seed, profile="quick64")
        write_run(ref, "seeds", "plain20", err + 10, err + 10, seed=seed, profile="quick64", precision="bf16")
    mine = tmp_path / "mine"
    write_run(mine, "figure1", "plain20", 41.0, 41.0, seed=7, profile="quick64", precision="bf16")
    res = load_results(mine)
    (c,) = compare(res, load_reference(res, ref))
    assert c.verdict == WITHIN and abs(c.ref_mean_test - 41.0) < 1e-9  # the bf16 seeds, not the fp32 ones
    only_fp32 = tmp_path / "fp32"
    for seed in (1, 2):
        write_run(only_fp32, "seeds", "plain20", 30.0 + seed, 30.0, seed=seed, profile="quick64")
    assert compare(res, load_reference(res, only_fp32)) == [] and without_reference(res, load_reference(res, only_fp32))


def _references(root, shift: dict[tuple[str, str], float]) -> list[Rung]:
    """Two rungs, each with fp32 and bf16 references of the four nets, 3 seeds; the bf16 seeds
    moved by ``shift[(profile, name)]`` points."""
    rungs = []
    for profile, fraction in (("quick64", "1/64"), ("quick", "1/32")):
        for precision in ("fp32", "bf16"):
            for name in ("plain20", "plain56", "resnet20", "resnet56"):
                for seed, err in enumerate([30.0, 31.0, 32.0], start=1):
                    d = err + (shift.get((profile, name), 0.0) if precision == "bf16" else 0.0)
                    write_run(root / profile / precision, "seeds", name, d, d, seed=seed, profile=profile,
                              precision=precision)
        rungs.append(Rung(profile, fraction, str(root / profile / "fp32"), str(root / profile / "bf16")))
    return rungs


def test_the_bf16_verdict_is_computed_from_the_references(tmp_path, monkeypatch):
    same = _references(tmp_path / "same", {})
    monkeypatch.setattr(reference_module, "load_ladder", lambda: same)
    rows = precision_rows()
    assert len(rows) == 8 and all(r.within for r in rows)
    # the mean of 3 more seeds: 31 +- t(0.975, 2) * 1 * sqrt(1/3 + 1/3) = 31 +- 3.5131
    assert abs(rows[0].high_test - (31.0 + 3.513101)) < 1e-4
    shown, evidence = bf16_verdict()
    assert shown and "all 8 nets" in evidence
    far = _references(tmp_path / "far", {("quick", "plain56"): 4.0})
    monkeypatch.setattr(reference_module, "load_ladder", lambda: far)
    shown, evidence = bf16_verdict()
    assert not shown and "1/32 plain56" in evidence and "1/64" not in evidence
    one = _references(tmp_path / "one", {})[:1]
    monkeypatch.setattr(reference_module, "load_ladder", lambda: one)
    shown, evidence = bf16_verdict()
    assert not shown and "1 of the 2 rungs" in evidence
    partial = _references(tmp_path / "partial", {})
    for run in (tmp_path / "partial" / "quick" / "bf16").rglob("resnet56-s3*"):
        shutil.rmtree(run)  # a reference still training: ResNet-56 has 2 of its 3 bf16 seeds
    monkeypatch.setattr(reference_module, "load_ladder", lambda: partial)
    assert len(precision_rows()) == 8
    shown, evidence = bf16_verdict()
    assert not shown and "1 of the 2 rungs" in evidence and "3 seeds" in evidence


def test_the_budget_on_a_native_bf16_cpu_plans_in_bf16_and_names_fp32s_rung(tmp_path, tiny_tar, capsys, monkeypatch):
    monkeypatch.setattr(runner, "cpu_native_bf16", lambda: True)
    f = write_experiment(tmp_path / "e.yaml", "rows:\n  - {model: resnet8}\n")
    code = runner.run_experiments([str(f)], data=str(tiny_tar), results=str(tmp_path / "results"), device="cpu",
                                  dry_run=True, progress=False, data_dir=tmp_path / "data", budget=3600.0,
                                  bf16_verdict=SHOWN)
    out = capsys.readouterr().out
    assert code == 0 and "PRECISION bf16: this CPU computes it natively and shown" in out
    assert "in fp32 the budget would train rung" in out and "arithmetic: bf16 autocast" in out
    monkeypatch.setattr(runner, "cpu_native_bf16", lambda: False)
    runner.run_experiments([str(f)], data=str(tiny_tar), results=str(tmp_path / "results"), device="cpu",
                           dry_run=True, progress=False, data_dir=tmp_path / "data", budget=3600.0,
                           bf16_verdict=SHOWN)
    out = capsys.readouterr().out
    assert "PRECISION fp32: this CPU does not compute bf16 natively" in out and "arithmetic: fp32" in out
