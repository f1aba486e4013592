"""Experiment rows, the runner and the training loop on tiny nets and generated data."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_exp.data.cifar10 import load_cifar10
from resnet_exp.runs.planning.experiments import ExperimentError, load_experiment, load_profiles, select_runs
from resnet_exp.runs.rundir import TIMING_COLUMNS, IdentityLock
from resnet_exp.runs.executing.runner import run_experiments
from resnet_exp.runs.training.train import load_checkpoint, lr_at

from .conftest import write_experiment

REPO = Path(__file__).resolve().parents[1]


def read_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def deterministic(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def run_dirs(results: Path, experiment: str) -> dict[str, Path]:
    return {p.name.split("-s")[0]: p for p in (results / experiment).iterdir() if p.is_dir()}


# --------------------------------------------------------------------------- rows
@pytest.mark.parametrize("rows,match", [
    ("- {model: resnet20, lrr: 0.1}", r"row 1 \(resnet20\): unknown key 'lrr'"),
    ("- {model: resnet21}", r"row 1 \(resnet21\): key 'model'.*6n\+2"),
    ("- {model: vgg16}", r"key 'model': unknown model 'vgg16'"),
    ("- {model: resnet20}\n- {model: plain20, shortcut: B}", r"row 2 \(plain20\): key 'shortcut'.*no shortcuts"),
    ("- {model: resnet20, shortcut: D}", r"key 'shortcut' must be one of 'A', 'B' or 'C', got 'D'"),
    ("- {model: resnet20, lr: -1}", r"key 'lr' must be > 0"),
    ("- {model: resnet20, batch_size: 12.5}", r"key 'batch_size' must be an integer"),
    ("- {model: resnet20, milestones: [30, 20]}", r"key 'milestones' must be increasing"),
    ("- {model: resnet20, iterations: 10}", r"'milestones'.*must lie below iterations"),
    ("- {model: resnet20, augment: maybe}", r"key 'augment' must be true or false"),
    ("- {model: resnet20, seeds: []}", r"key 'seeds'"),
    ("- {shortcut: A}", r"row 1: missing key 'model'"),
    ("- resnet20", r"row 1: expected a mapping"),
    ("- {model: resnet20}\n- {model: resnet20}", r"row 2 \(resnet20\): run name 'resnet20'.*already used"),
])
def test_bad_rows_are_rejected_naming_file_row_and_key(tmp_path, rows, match):
    f = write_experiment(tmp_path / "bad.yaml", "rows:\n" + rows + "\n")
    with pytest.raises(ExperimentError, match=match) as e:
        load_experiment(f, "smoke")
    assert "bad.yaml" in str(e.value)


def test_bad_files_are_rejected(tmp_path):
    for text, match in [("rows: [", "not valid YAML"), ("rows: []", "non-empty list"),
                        ("rowz:\n- {model: resnet20}", "non-empty list"),
                        ("rows:\n- {model: resnet20}\nextra: 1", "unknown top-level key")]:
        with pytest.raises(ExperimentError, match=match):
            load_experiment(write_experiment(tmp_path / "f.yaml", text), "smoke")
    with pytest.raises(ExperimentError, match="unknown profile 'fast'.*paper, quick, quick128, quick64, quick16, quick8, quick4, quick2, first2k, smoke"):
        load_experiment(write_experiment(tmp_path / "g.yaml", "rows:\n- {model: resnet20}"), "fast")


def test_numbers_read_as_a_person_writes_them(tmp_path):
    """5e-4 is a number (YAML 1.1 would read a string, and the row would be refused)."""
    f = write_experiment(tmp_path / "n.yaml", "rows:\n- {model: resnet20, weight_decay: 5e-4, lr: .1e0}\n")
    [spec] = load_experiment(f, "smoke")
    assert spec.recipe.weight_decay == 0.0005 and spec.recipe.lr == 0.1
    with pytest.raises(ExperimentError, match="key 'iterations' must be an integer, got 1000.0"):
        load_experiment(write_experiment(tmp_path / "m.yaml", "rows:\n- {model: resnet20, iterations: 1e3}\n"), "smoke")


def test_rows_expand_seeds_and_override_the_profile(tmp_path):
    f = write_experiment(tmp_path / "e.yaml", """
defaults: {weight_decay: 0.0005}
rows:
  - {model: resnet20, seeds: [1, 2, 3]}
  - {model: resnet20, shortcut: B, lr: 0.05}
""")
    specs = load_experiment(f, "paper")
    assert [(s.name, s.seed) for s in specs] == [("resnet20", 1), ("resnet20", 2), ("resnet20", 3), ("resnet20-B", 1)]
    assert specs[3].recipe.lr == 0.05 and specs[0].recipe.lr == 0.1
    assert all(s.recipe.weight_decay == 0.0005 for s in specs)
    assert specs[0].identity("d") != specs[1].identity("d")           # seed
    assert specs[0].identity("d") != specs[0].identity("other data")  # dataset


def test_shipped_experiments_and_profiles_are_valid():
    profiles = load_profiles()
    p = profiles["paper"]
    assert (p.lr, p.momentum, p.weight_decay, p.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (p.iterations, p.milestones, p.warmup_lr, p.warmup_min_depth) == (64000, (32000, 48000), 0.01, 110)
    q = profiles["quick"]  # the paper's recipe compressed to 1/32: drops at 1/2 and 3/4 of the run
    assert (q.iterations * 32, q.milestones) == (p.iterations, (q.iterations // 2, q.iterations * 3 // 4))
    assert (profiles["first2k"].iterations, profiles["first2k"].milestones) == (2000, ())  # lr 0.1 throughout
    assert {k: v for k, v in q.model_dump().items() if k not in ("iterations", "milestones", "eval_every")} == \
        {k: v for k, v in p.model_dump().items() if k not in ("iterations", "milestones", "eval_every")}
    names = {f.stem: {s.name for s in load_experiment(f, "paper")} for f in (REPO / "experiments").glob("*.yaml")}
    assert names["figure1"] == {"plain20", "plain56"}
    assert {"plain56", "resnet110", "resnet1202"} <= names["figure6"]
    assert {"resnet20-B", "resnet56-B", "preresnet110", "plain110", "resnet56-noaug"} <= names["ablations"]


def test_paper_schedule():
    r = load_profiles()["paper"]
    assert lr_at(0, r, warming_up=True) == 0.01
    assert [lr_at(i, r, False) for i in (0, 31999, 32000, 48000, 63999)] == [0.1, 0.1, 0.01, 0.001, 0.001]


# --------------------------------------------------------------------------- runs
TINY = """
rows:
  - {model: resnet8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: plain8, iterations: 30, milestones: [20], eval_every: 10, val_split: 50}
"""


def test_runs_finish_skip_and_are_reproducible(tiny_tar, tmp_path, capsys):
    exp = write_experiment(tmp_path / "tiny.yaml", TINY)
    kw = dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data")
    assert run_experiments([str(exp)], results=str(tmp_path / "r1"), **kw) == 0
    dirs = run_dirs(tmp_path / "r1", "tiny")
    meta = json.loads((dirs["resnet8"] / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["params"] == 75_290
    assert meta["dataset"]["source"] == "image-folder-tar" and meta["config"]["recipe"]["iterations"] == 30
    rows = read_log(dirs["resnet8"])
    assert [r["iteration"] for r in rows] == ["10", "20", "30"]
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1, 0.01]
    assert set(rows[0]) >= {"iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                            "elapsed_s", "images_per_s"}
    assert "val_error" in read_log(dirs["plain8"])[0]
    assert (dirs["resnet8"] / "model.pt").exists()

    # a second invocation trains nothing
    mtime = (dirs["resnet8"] / "log.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert run_experiments([str(exp)], results=str(tmp_path / "r1"), **kw) == 0
    assert "0 to train, 0 reused from an identical run, 2 already done" in capsys.readouterr().out
    assert (dirs["resnet8"] / "log.csv").stat().st_mtime_ns == mtime

    # same row, same seed: the same log, bit for bit (the wall-clock columns aside)
    assert run_experiments([str(exp)], results=str(tmp_path / "r2"), **kw) == 0
    again = run_dirs(tmp_path / "r2", "tiny")
    assert deterministic(read_log(again["resnet8"])) == deterministic(rows)

    # the same row in another experiment file is copied, not trained again
    other = write_experiment(tmp_path / "other.yaml", TINY)
    capsys.readouterr()
    run_experiments([str(other)], results=str(tmp_path / "r1"), **kw)
    out = capsys.readouterr().out
    assert "copied instead of trained" in out and "0 to train, 2 reused from an identical run, 0 already done" in out
    copied = run_dirs(tmp_path / "r1", "other")
    assert read_log(copied["resnet8"]) == rows
    assert json.loads((copied["resnet8"] / "meta.json").read_text())["config"]["experiment"] == "other"

    # ... also when both files are in one invocation: trained once, then copied
    capsys.readouterr()
    run_experiments([str(exp), str(write_experiment(tmp_path / "third.yaml", TINY))],
                    results=str(tmp_path / "r3"), **kw)
    out = capsys.readouterr().out
    assert "2 to train, 2 reused from an identical run" in out and out.count("same as tiny/") == 2
    third = run_dirs(tmp_path / "r3", "third")
    assert deterministic(read_log(third["resnet8"])) == deterministic(rows)
    assert json.loads((third["resnet8"] / "meta.json").read_text())["copied_from"].startswith("tiny/")

    # a changed row is a new run
    write_experiment(exp, TINY.replace("plain8, iterations: 30", "plain8, lr: 0.05, iterations: 30"))
    capsys.readouterr()
    run_experiments([str(exp)], results=str(tmp_path / "r1"), dry_run=True, **kw)
    assert "1 to train, 0 reused from an identical run, 1 already done" in capsys.readouterr().out


def test_divergence_is_recorded_and_the_suite_goes_on(tiny_tar, tmp_path):
    exp = write_experiment(tmp_path / "div.yaml", """
rows:
  - {model: resnet8, name: boom, lr: 1.0e+12, iterations: 30, milestones: [20], eval_every: 10}
  - {model: resnet8, iterations: 20, milestones: [10], eval_every: 10}
""")
    code = run_experiments([str(exp)], profile="smoke", data=str(tiny_tar), device="cpu", progress=False,
                           results=str(tmp_path / "r"), data_dir=tmp_path / "data")
    assert code == 0
    dirs = run_dirs(tmp_path / "r", "div")
    boom = json.loads((dirs["boom"] / "meta.json").read_text())
    assert boom["status"] == "diverged" and boom["iteration"] < 30
    assert read_log(dirs["boom"])  # the log is kept
    assert json.loads((dirs["resnet8"] / "meta.json").read_text())["status"] == "finished"


def _cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "resnet_exp", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_tar, tmp_path):
    exp = write_experiment(tmp_path / "k.yaml", """
rows:
  - {model: resnet8, iterations: 240, milestones: [120, 200], eval_every: 20, batch_size: 16}
""")
    args = ["run", str(exp), "--profile", "smoke", "--data", str(tiny_tar), "--device", "cpu"]
    # 1) killed with SIGKILL once a few lines are logged, then run again to the end
    proc = _cli(args + ["--results", "killed"], tmp_path)
    log = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        logs = list((tmp_path / "killed").glob("k/*/log.csv"))
        if logs and len(logs[0].read_text().splitlines()) >= 4:  # header + 3 lines
            log = logs[0]
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines_at_kill = len(log.read_text().splitlines()) - 1
    assert lines_at_kill < 12
    out = _cli(args + ["--results", "killed"], tmp_path).communicate()[0]
    assert "resuming at iteration" in out
    # 2) uninterrupted
    assert _cli(args + ["--results", "clean"], tmp_path).wait() == 0
    killed = read_log(log.parent)
    clean = read_log(next((tmp_path / "clean").glob("k/*")))
    assert [r["iteration"] for r in killed] == [str(i) for i in range(20, 241, 20)]  # no duplicates, no gaps
    assert deterministic(killed) == deterministic(clean)
    assert json.loads((log.parent / "meta.json").read_text())["status"] == "finished"


def test_a_locked_run_is_not_trained_twice(tiny_tar, tmp_path, capsys):
    exp = write_experiment(tmp_path / "l.yaml", "rows:\n  - {model: resnet8, iterations: 20, milestones: [10]}\n")
    kw = dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data",
              results=str(tmp_path / "r"))
    spec = load_experiment(exp, "smoke")[0]
    sha = load_cifar10(tiny_tar, data_dir=tmp_path / "data", verbose=False).provenance["sha256"]
    run_dir = tmp_path / "r" / "l" / spec.run_dir_name(sha)
    lock = IdentityLock(tmp_path / "r", spec.identity(sha))
    assert lock.acquire()  # "another invocation" holds it
    capsys.readouterr()
    run_experiments([str(exp)], **kw)
    assert "being trained by another process" in capsys.readouterr().out
    assert not (run_dir / "log.csv").exists()
    lock.release()
    run_experiments([str(exp)], **kw)
    assert (run_dir / "log.csv").exists()


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    exp = write_experiment(tmp_path / "bad.yaml", "rows:\n  - {model: resnet20, lrr: 1}\n")
    proc = _cli(["run", str(exp), "--data", str(tmp_path / "none.tar.gz")], tmp_path)
    out = proc.communicate()[0]
    assert proc.returncode == 2 and "unknown key 'lrr'" in out and "Traceback" not in out


def test_sigterm_stops_at_the_next_iteration_and_resumes_bit_exact(tiny_tar, tmp_path):
    exp = write_experiment(tmp_path / "t.yaml", """
rows:
  - {model: resnet8, iterations: 240, milestones: [200], eval_every: 40, batch_size: 16, checkpoint_every_s: 3600}
""")
    args = ["run", str(exp), "--profile", "smoke", "--data", str(tiny_tar), "--device", "cpu"]
    proc = _cli(args + ["--results", "r"], tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "r").glob("t/*/log.csv")):
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside the second interval
    proc.send_signal(signal.SIGTERM)  # what `timeout` sends
    out = proc.communicate()[0]
    assert proc.returncode == 143, out  # 128 + SIGTERM, as a shell reports it (stopping.py)
    assert "Traceback" not in out and "interrupted" in out
    run_dir = next((tmp_path / "r").glob("t/*"))
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    logged = read_log(run_dir)
    assert int(logged[-1]["iteration"]) <= ckpt["iteration"] < 240  # checkpoint_every_s was an hour
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    # the checkpoint carries the partial interval: the resumed log equals an uninterrupted one
    assert _cli(args + ["--results", "r"], tmp_path).wait() == 0
    assert _cli(args + ["--results", "clean"], tmp_path).wait() == 0
    clean = read_log(next((tmp_path / "clean").glob("t/*")))
    assert deterministic(read_log(run_dir)) == deterministic(clean)


@pytest.mark.parametrize("name,match", [("x" * 300, "is 300 bytes long, at most 200"),
                                        ("a/b", "becomes a folder name"), ("-x", "becomes a folder name"),
                                        ("plain net", "becomes a folder name")])
def test_names_that_cannot_be_folders_are_refused_at_check(tmp_path, name, match):
    f = write_experiment(tmp_path / "names.yaml", f"rows:\n  - {{model: resnet20, name: '{name}'}}\n")
    out = subprocess.run([sys.executable, "-m", "resnet_exp", "run", str(f), "--check", "--results",
                          str(tmp_path / "results")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and match in out.stderr and "key 'name'" in out.stderr and "names.yaml" in out.stderr
    assert out.stderr.count("\n") == 1 and not (tmp_path / "results").exists()
    # a sweep that makes a run name too long is refused the same way
    f.write_text(f"rows:\n  - {{model: resnet20, name: {'y' * 195}, sweep: {{lr: [0.05, 0.1]}}}}\n")
    with pytest.raises(ExperimentError, match="the run name is 2.. bytes long"):
        load_experiment(f, "smoke")


def test_only_takes_experiment_slash_name_to_pick_one_file_s_row(tmp_path):
    a = write_experiment(tmp_path / "a.yaml", "rows:\n- {model: resnet8}\n")
    b = write_experiment(tmp_path / "b.yaml", "rows:\n- {model: resnet8, seeds: [2, 3]}\n")
    runs = lambda only: sorted((s.experiment, s.seed) for s in select_runs([str(a), str(b)], "smoke", only))  # noqa: E731
    assert runs(["resnet8"]) == [("a", 1), ("b", 2), ("b", 3)]
    assert runs(["a/resnet8"]) == [("a", 1)] and runs(["b/resnet8"]) == [("b", 2), ("b", 3)]
    with pytest.raises(ExperimentError, match=r"--only c/resnet8: no such row; rows are resnet8 \(or experiment/name\)"):
        runs(["c/resnet8"])
