"""scripts/gpu_check.sh, the check a GPU machine runs first: its usage, and its first act,
the imports, named in one line when missing (the H200's image lacked pydantic). The whole
check runs on a GPU; `--cpu` walks every step on a CPU (minutes: not part of the suite)."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_help_says_how_to_call_it():
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "bash scripts/gpu_check.sh DATA OUT_DIR" in out.stdout and "--cpu" in out.stdout
    assert "at most 8" in out.stdout


def test_a_missing_package_is_named_in_one_line_before_anything_runs(tmp_path):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python without torch, pydantic, ...
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data.tar.gz"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                           "PYTHON": str(bare / "bin" / "python")})
    assert out.returncode == 2
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing Python packages:" in lines[0]
    assert "torch" in lines[0] and "pydantic" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["check.log"]  # the log, nothing else


def test_wrong_arguments_are_refused_with_the_usage(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), "only-one-argument"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage: bash scripts/gpu_check.sh" in out.stderr
    out = subprocess.run(["bash", str(SCRIPT), "--bogus", "a", "b"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr


# --------------------------------------------------------------------------- step 1's verdicts
def _verdicts_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_verdicts", REPO / "scripts" / "gpu_check_verdicts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _step1_folders(work: Path) -> None:
    """What step 1 leaves when everything agrees: each folder's runs with the same numbers and
    the same final weights (a real state dict: the verdicts compare them bit for bit)."""
    import json

    import torch

    from tests.fake_runs import write_run

    def run(folder: str, experiment: str, name: str) -> None:
        r = write_run(work / folder, experiment, name, 10.0, 20.0)
        torch.save({"conv.weight": torch.ones(2, 2), "bn.running_mean": torch.zeros(2)}, r.model_path)

    for folder in ("eq-false-true", "eq-true-true", "eq-false-false", "eq-true-false", "eq-again"):
        for name in ("resnet8", "plain8", *(("resnet8-bf16",) if folder.endswith("-true") else ())):
            run(folder, "eq", name)
    for folder in ("det-a", "det-b", "det-resumed", "smoke"):
        run(folder, "det" if folder != "smoke" else "figure1", "plain8")
    for name in ("resnet8", "plain8"):
        run("pool", "pool", name)
        _meta(work, "pool", name, worker={"executor": "pool", "slot": "cpu0", "pid": 42})
    resumed = next((work / "det-resumed").glob("*/*/meta.json"))
    meta = json.loads(resumed.read_text())
    meta["attempts"] = [{"from_iteration": 0}, {"from_iteration": 3}]  # stopped at 3 and resumed
    resumed.write_text(json.dumps(meta))
    (work / "probe.json").write_text(json.dumps({"capture": "StandIn", "kept_captured_lr": True, "update_ratio": 1.0}))


def _meta(work: Path, folder: str, name: str, **fields) -> None:
    import json

    path = next((work / folder).glob(f"*/{name}-s*/meta.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _edit(work: Path, folder: str, name: str, loss_shift: float = 0.0, **meta_fields) -> None:
    import csv
    import json

    run = next((work / folder).glob(f"*/{name}-s*"))
    if loss_shift:
        with open(run / "log.csv") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["train_loss"] = str(float(row["train_loss"]) + loss_shift)
        with open(run / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if meta_fields:
        meta = json.loads((run / "meta.json").read_text())
        (run / "meta.json").write_text(json.dumps({**meta, **meta_fields}))


def test_step1_verdicts_pass_when_everything_agrees_and_name_each_check(tmp_path):
    import json
    import sys

    _step1_folders(tmp_path)
    _edit(tmp_path, "eq-true-true", "plain8", wall_time_s=3.0)  # deterministic and graphed: 1.5x the time
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check_verdicts.py"), str(tmp_path),
                          str(tmp_path / "check.json"), "--models", "resnet8", "plain8", "--det-models", "plain8",
                          "--bf16-models", "resnet8-bf16", "--captures", "4"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "check.json").read_text())
    assert res["all_pass"] and set(res["checks"].values()) == {"pass", "skipped"}
    # eager vs graph x2 modes x2 models, the bf16 row (deterministic), reruns, smoke, a pool
    # worker's two runs, the lr probe: "pass"; each graphed run's captures: a GPU's check, "skipped"
    assert [k for k, v in res["checks"].items() if v == "pass"] == [
        "eager vs graph, resnet8 deterministic=true", "eager vs graph, plain8 deterministic=true",
        "eager vs graph, resnet8-bf16 deterministic=true", "eager vs graph, resnet8 deterministic=false",
        "eager vs graph, plain8 deterministic=false", "deterministic reruns and resume, plain8", "Figure 1 smoke, plain8",
        "a pool worker trains two graphed runs in a row", "a replay after a changed lr keeps the captured lr"]
    assert len([v for v in res["checks"].values() if v == "skipped"]) == 3 + 2 + 2  # eq-true-true, eq-true-false, pool
    assert res["deterministic"]["plain8"]["stopped_at"] == [3] and res["deterministic"]["plain8"]["sigterm_landed_mid_run"]
    assert res["deterministic_cost"]["plain8"]["ratio"] == 1.5
    assert "PASS        eager vs graph, plain8 deterministic=true" in out.stdout


def test_step1_verdicts_fail_on_a_difference_and_never_pass_an_unfinished_run(tmp_path):
    v = _verdicts_module()
    _step1_folders(tmp_path)
    # not deterministic: the graphed run may differ by up to twice eager's own run-to-run spread
    _edit(tmp_path, "eq-again", "resnet8", loss_shift=0.01)
    _edit(tmp_path, "eq-true-false", "resnet8", loss_shift=0.015)
    _edit(tmp_path, "eq-again", "plain8", loss_shift=0.001)
    _edit(tmp_path, "eq-true-false", "plain8", loss_shift=0.01)
    # deterministic: any difference fails; a resumed run that differs fails
    _edit(tmp_path, "eq-true-true", "resnet8", loss_shift=1e-6)
    _edit(tmp_path, "det-resumed", "plain8", loss_shift=1e-6)
    res = v.verdicts(tmp_path, ["resnet8", "plain8"], ["plain8"])
    assert res["checks"]["eager vs graph, resnet8 deterministic=false"] == "pass"   # 0.015 <= 2 x 0.01
    assert res["checks"]["eager vs graph, plain8 deterministic=false"] == "fail"    # 0.01 > 2 x 0.001
    assert res["checks"]["eager vs graph, resnet8 deterministic=true"] == "fail"
    assert res["checks"]["deterministic reruns and resume, plain8"] == "fail"
    assert res["deterministic"]["plain8"]["two_runs_identical"] and not res["deterministic"]["plain8"]["resumed_identical"]
    assert not res["all_pass"]

    _step1_folders(tmp_path / "cut")
    _edit(tmp_path / "cut", "eq-true-true", "plain8", status="interrupted")  # its deadline stopped it
    _edit(tmp_path / "cut", "det-b", "plain8", status="failed")
    import shutil

    shutil.rmtree(tmp_path / "cut" / "smoke")  # never reached
    res = v.verdicts(tmp_path / "cut", ["resnet8", "plain8", "resnet20"], ["plain8"])
    assert res["checks"]["eager vs graph, plain8 deterministic=true"] == "incomplete"
    assert res["checks"]["eager vs graph, resnet20 deterministic=false"] == "incomplete"  # asked for, absent
    assert res["checks"]["deterministic reruns and resume, plain8"] == "fail"
    assert res["checks"]["Figure 1 smoke"] == "incomplete"
    assert res["checks"]["eager vs graph, resnet8 deterministic=true"] == "pass" and not res["all_pass"]
    assert res["deterministic_cost"]["plain8"]["ratio"] is None  # no cost from a run that did not finish


def test_on_a_gpu_a_graphed_run_that_fell_back_to_eager_fails(tmp_path):
    v = _verdicts_module()
    _step1_folders(tmp_path)
    for name in ("resnet8", "plain8"):
        _edit(tmp_path, "eq-true-true", name, step="cuda graph, captured again at each new lr", step_captures=3)
        _edit(tmp_path, "eq-true-false", name, step="cuda graph, captured again at each new lr", step_captures=3)
        _edit(tmp_path, "pool", name, step="cuda graph, captured again at each new lr", step_captures=3)
    _edit(tmp_path, "eq-true-false", "plain8", step="eager (the capture failed: RuntimeError: operation not permitted)")
    res = v.verdicts(tmp_path, ["resnet8", "plain8"], ["plain8"], cuda=True)
    assert res["checks"]["eager vs graph, plain8 deterministic=false"] == "fail"   # same numbers, but never graphed
    assert res["checks"]["eager vs graph, resnet8 deterministic=false"] == "pass"
    assert res["checks"]["eager vs graph, plain8 deterministic=true"] == "pass"
    assert v.verdicts(tmp_path, ["plain8"], ["plain8"])["checks"]["eager vs graph, plain8 deterministic=false"] == "pass"


def _perturb_weights(work: Path, folder: str, name: str) -> None:
    import torch

    path = next((work / folder).glob(f"*/{name}-s*/model.pt"))
    state = torch.load(path, weights_only=True)
    state["bn.running_mean"][0] += 1e-7  # a BN buffer one ulp-ish away: the log cannot show it
    torch.save(state, path)


def test_the_new_checks_fail_on_what_they_guard(tmp_path):
    """Weights or BN buffers that differ while the logs agree; a pool's run that differs from
    its run alone, or ran in two workers; a capture made beside another alive, or one too few;
    a probe whose replay read the new lr, or that never ran."""
    v = _verdicts_module()
    _step1_folders(tmp_path)
    _perturb_weights(tmp_path, "eq-true-true", "resnet8-bf16")
    _perturb_weights(tmp_path, "pool", "plain8")
    res = v.verdicts(tmp_path, ["resnet8", "plain8"], ["plain8"], bf16_models=["resnet8-bf16"])
    assert res["eager_vs_graph"]["resnet8-bf16 deterministic=true"]["identical"]  # the logs agree...
    assert res["checks"]["eager vs graph, resnet8-bf16 deterministic=true"] == "fail"  # ...the weights do not
    assert res["checks"]["a pool worker trains two graphed runs in a row"] == "fail"
    assert res["pool_worker_two_runs"]["identical_to_alone"] == {"resnet8": True, "plain8": False}

    _step1_folders(tmp_path / "b")
    _meta(tmp_path / "b", "pool", "plain8", worker={"executor": "pool", "slot": "cpu1", "pid": 43})
    (tmp_path / "b" / "probe.json").write_text('{"capture": "StandIn", "kept_captured_lr": false, "update_ratio": 1230.0}')
    graph = "cuda graph, captured again at each new lr"
    for folder in ("eq-true-true", "eq-true-false", "pool"):
        for name in ("resnet8", "plain8"):
            log = [{"call": 3 + i, "lr": lr, "memory_reserved": 2 ** 20, "other_captures_alive": 0}
                   for i, lr in enumerate((0.01, 0.1, 0.01, 0.001))]
            _meta(tmp_path / "b", folder, name, step=graph, step_captures=4, step_capture_log=log)
    _meta(tmp_path / "b", "eq-true-false", "resnet8", step=graph, step_captures=3)
    _meta(tmp_path / "b", "pool", "resnet8", step=graph, step_captures=4, step_capture_log=[
        {"call": 3, "lr": 0.01, "memory_reserved": 2 ** 20, "other_captures_alive": 1}])
    res = v.verdicts(tmp_path / "b", ["resnet8", "plain8"], ["plain8"], cuda=True, expected_captures=4)
    assert res["checks"]["a pool worker trains two graphed runs in a row"] == "fail"  # two workers
    assert res["checks"]["a replay after a changed lr keeps the captured lr"] == "fail"
    assert res["checks"]["captures, eq-true-false resnet8"] == "fail"            # one capture short
    assert res["checks"]["captures, pool resnet8"] == "fail"                     # another graph alive
    assert res["checks"]["captures, eq-true-true plain8"] == "pass"
    assert res["captures"]["eq-true-true plain8"]["memory_reserved"] == [2 ** 20] * 4
    (tmp_path / "b" / "probe.json").unlink()
    assert v.verdicts(tmp_path / "b", ["resnet8"], ["plain8"])["checks"][
        "a replay after a changed lr keeps the captured lr"] == "incomplete"
