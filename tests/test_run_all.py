"""./run_all.sh as a user meets it: option errors, --help, and Ctrl-C (a real SIGINT to its
process group, as a terminal sends it)."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from resnet_exp.runs.planning.experiments import select_runs

REPO = Path(__file__).resolve().parents[1]


def run_all(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "run_all.sh"), *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.parametrize("args,message", [
    (["--profile"], "--profile needs a value"),
    (["--only", "--profile", "smoke"], "--only needs at least one row name"),
    (["--workers"], "--workers needs a value"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
])
def test_option_errors_are_usage_errors(args, message):
    proc = run_all(*args)
    assert proc.returncode == 2 and message in proc.stderr and "unbound variable" not in proc.stderr


def test_help_lists_every_option_with_its_default():
    out = run_all("--help").stdout
    assert "set -euo" not in out
    for option in ("--profile", "--data", "--only", "--device", "--results", "--out", "--all", "--executor",
                   "--workers", "--gpus", "--runs-per-gpu", "--ray-address", "--threads", "--retrain-damaged"):
        assert option in out
    assert "Examples:" in out and "[" in out


def test_experiment_files_named_on_the_command_line_are_what_it_plans(tmp_path):
    """`./run_all.sh experiments/remedies.yaml` hands `run` that file alone, which plans every row
    of it and its baselines' seeds, nothing else; `--profile smoke` alone hands it every shipped
    report's file, the remedies' and a plug-in's included; a file that is not there is a usage
    error naming it. (The data path is wrong on purpose: each call stops at the data, after the
    line naming the job's files, before timing a dozen models for an estimate not tested here.)"""
    def job_files(*args: str) -> list[str]:
        out = run_all(*args, "--data", str(tmp_path / "no-such-data"), "--results", str(tmp_path / "r"),
                      "--dry-run")
        assert out.returncode == 2 and "no-such-data" in out.stdout + out.stderr, out.stdout + out.stderr
        line = next(line for line in out.stdout.splitlines() if line.startswith("[run_all] profile: smoke"))
        assert "(rows:" not in line  # no --only: every row of the files
        return line.split("experiments: ")[1].split()

    assert job_files("experiments/remedies.yaml", "--profile", "smoke") == ["experiments/remedies.yaml"]
    planned = {f"{s.experiment}/{s.name}" for s in select_runs([str(REPO / "experiments/remedies.yaml")], "smoke")}
    assert "remedies/fixup56" in planned  # and the seeds of its baselines, which it is judged against
    assert {p for p in planned if not p.startswith("remedies/")} == {"figure6/plain56", "figure6/resnet56"}
    assert job_files("--profile", "smoke") == [f"experiments/{e}.yaml" for e in (
        "figure1", "figure6", "ablations", "table6", "remedies", "plugin_example")]
    missing = run_all("experiments/nope.yaml")
    assert missing.returncode == 2 and "no experiment file 'experiments/nope.yaml'" in missing.stderr


def _start(tiny_tar: Path, tmp_path: Path) -> subprocess.Popen:
    # quick profile, one row: minutes of work, so a stop must come from the signal
    return subprocess.Popen([str(REPO / "run_all.sh"), "--profile", "quick", "--only", "plain20", "--data",
                             str(tiny_tar), "--results", str(tmp_path / "r"), "--out", str(tmp_path / "out"),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_training(results: Path, proc: subprocess.Popen) -> Path:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        for meta in results.glob("*/*/meta.json"):
            try:
                if json.loads(meta.read_text()).get("status") == "running":
                    return meta.parent
            except ValueError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"training never started:\n{proc.communicate()[0] if proc.poll() is not None else ''}")


def test_ctrl_c_stops_within_seconds_with_a_checkpoint_and_says_interrupted(tiny_tar, tmp_path):
    proc = _start(tiny_tar, tmp_path)
    run = _wait_training(tmp_path / "r", proc)
    time.sleep(1.0)  # a few iterations in, far from the first log line (iteration 125)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    out = proc.communicate(timeout=120)[0]
    seconds = time.monotonic() - t0
    assert proc.returncode == 130, out
    assert seconds < 30, f"took {seconds:.1f} s to stop"
    assert "[run_all] interrupted" in out and "Traceback" not in out and "failed" not in out
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted" and 0 < meta["iteration"] < 125  # did not wait for a log line
    assert (run / "checkpoint.pt").exists()
    assert not (tmp_path / "out" / "index.html").exists()  # no reports after an interrupt


def test_a_second_ctrl_c_stops_at_once(tiny_tar, tmp_path):
    proc = _start(tiny_tar, tmp_path)
    _wait_training(tmp_path / "r", proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.5)  # a person's second press, not a repeat of the same one (stopping.REPEAT_WINDOW_S)
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "[run_all] interrupted" in out and "Traceback" not in out
