"""One stop policy at every moment (resnet_exp/stopping.py): Ctrl-C typed into a real
pseudo-terminal, SIGTERM with kill, and a background job whose SIGINT was ignored at start.

Each moment is reached by state, never by the clock: the command runs with
RESNET_EXP_TEST_PAUSE=<moment>, prints "[moment] <moment>" there and waits for a signal
(training: the first log line on disk). Every case: no traceback, the documented exit
status (130 after SIGINT, 143 after SIGTERM), and where training had started, a rerun that
resumes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from .conftest import write_experiment

REPO = Path(__file__).resolve().parents[1]
ROWS = """defaults: {iterations: 60, milestones: [30, 45], eval_every: 10, batch_size: 16, checkpoint_every_s: 0}
rows:
  - {model: plain8}
  - {model: resnet8}
"""
LIMIT = 300  # seconds any one step may take on a loaded machine before the test gives up


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tar):
    root = tmp_path_factory.mktemp("stopping")
    exp = write_experiment(root / "stop.yaml", ROWS)
    return root, exp, tiny_tar


def run_args(setup, results: str) -> list[str]:
    root, exp, tar = setup
    return ["-m", "resnet_exp", "run", str(exp), "--profile", "smoke", "--data", str(tar), "--results",
            str(root / results), "--device", "cpu", "--threads", "1"]


def env(moment: str | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "RESNET_EXP_TEST_PAUSE"}
    e.update(PYTHONUNBUFFERED="1", **({"RESNET_EXP_TEST_PAUSE": moment} if moment else {}))
    return e


def spawn(args: list[str], moment: str | None, cwd: Path = REPO, program: str = sys.executable) -> pexpect.spawn:
    """In a pseudo-terminal of its own: sendintr() is a real Ctrl-C (the terminal driver
    sends SIGINT to the foreground process group)."""
    return pexpect.spawn(program, args, cwd=str(cwd), env=env(moment), timeout=LIMIT, encoding="utf-8",
                         dimensions=(40, 200), preexec_fn=_hangups_as_a_terminal_delivers_them)


def _hangups_as_a_terminal_delivers_them() -> None:
    """A program started at a terminal gets SIGHUP's default, whatever this test process has."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def finish(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    return child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus, out


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not predicate():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.05)


def first_log_line(root: Path, results: str) -> bool:
    return any(p.stat().st_size > 0 for p in (root / results).glob("stop/*/log.csv"))


def clean(out: str) -> None:
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.parametrize("moment", ["imports", "data", "plan", "between-runs"])
def test_ctrl_c_at_a_terminal_before_and_between_runs(setup, moment):
    results = f"r-int-{moment}"
    child = spawn(run_args(setup, results), moment)
    child.expect_exact(f"[moment] {moment}")
    child.sendintr()
    status, out = finish(child)
    clean(out)
    assert status == 130, out[-2000:]
    if moment in ("imports", "data"):  # before the runner exists: one line
        assert "SIGINT: stopped" in out
    if moment == "between-runs":  # the first run is done and kept
        assert len(list((setup[0] / results).glob("stop/plain8-*/model.pt"))) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_checkpoints_and_resumes(setup, sig):
    results = f"r-train-{sig.name}"
    child = spawn(run_args(setup, results), None)
    wait_for(lambda: first_log_line(setup[0], results), "the first log line")
    if sig == signal.SIGINT:
        child.sendintr()
    else:  # twice at once, as timeout(1) sends it (to the command, then to its group): one request
        child.kill(signal.SIGTERM)
        child.kill(signal.SIGTERM)
    status, out = finish(child)
    clean(out)
    assert status == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], out[-2000:]
    assert "interrupted" in out and f"{sig.name}: stopped" not in out  # the graceful path, not "at once"
    child = spawn(run_args(setup, results), None)
    status, out = finish(child)
    clean(out)
    assert status == 0 and "resuming at iteration" in out, out[-2000:]


@pytest.mark.parametrize("moment", ["imports", "plan"])
def test_sigterm_before_training(setup, moment):
    child = spawn(run_args(setup, f"r-term-{moment}"), moment)
    child.expect_exact(f"[moment] {moment}")
    child.kill(signal.SIGTERM)
    status, out = finish(child)
    clean(out)
    assert status == 143, out[-2000:]


def test_ctrl_c_while_the_reports_build(setup):
    root = setup[0]
    results = "r-train-SIGINT"  # finished by the test above, or trained here
    if not list((root / results).glob("stop/*/model.pt")):
        subprocess.run([sys.executable, *run_args(setup, results)], cwd=REPO, env=env(), check=True,
                       capture_output=True)
    child = spawn(["-m", "resnet_exp", "report", "--results", str(root / results), "--out", str(root / "out")],
                  "reports")
    child.expect_exact("[moment] reports")
    child.sendintr()
    status, out = finish(child)
    clean(out)
    assert status == 130 and "SIGINT: stopped" in out, out[-2000:]


def test_a_background_job_keeps_sigint_ignored_and_stops_on_sigterm(setup, tmp_path):
    """Started as `cmd &` from a script: SIGINT arrives ignored and must stay so at every
    moment; SIGTERM stops it, with a checkpoint. SIGINT and SIGTERM are sent together:
    had SIGINT been honoured, the run would report SIGINT (130), not SIGTERM (143)."""
    results = "r-background"
    log = tmp_path / "out.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, *run_args(setup, results)], cwd=REPO, env=env(), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: first_log_line(setup[0], results), "the first log line")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    clean(out)
    assert status == 143 and "SIGTERM" in out and "SIGINT" not in out, out[-2000:]
    metas = [p.read_text() for p in (setup[0] / results).glob("stop/*/meta.json")]
    assert any('"interrupted"' in m for m in metas)


@pytest.mark.parametrize("sig,moment,step", [(signal.SIGINT, "setup", "set-up"), (signal.SIGTERM, "setup", "set-up"),
                                             (signal.SIGINT, "imports", "the checks")])
def test_run_all_stops_cleanly_during_set_up(sig, moment, step):
    """Set-up (bash) and the first Python step (the row check, while it imports its modules)."""
    child = spawn(["--profile", "smoke", "--dry-run"], moment, program=str(REPO / "run_all.sh"))
    child.expect_exact(f"[moment] {moment}")
    if sig == signal.SIGINT:
        child.sendintr()
    else:
        os.killpg(child.pid, signal.SIGTERM)  # the script's process group, as timeout(1) does
    status, out = finish(child)
    clean(out)
    assert status == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], out[-2000:]
    assert f"stopped by {sig.name} during {step}" in out


# --------------------------------------------------------------------------- a stop that survives its terminal
def interrupted_runs(results: Path) -> list[dict]:
    import json

    metas = [json.loads(p.read_text()) for p in results.glob("stop/*/meta.json")]
    return [m for m in metas if m.get("status") == "interrupted"]


def same_as_uninterrupted(setup, results: str) -> None:
    """Resumed to the end (output to a pipe we read), every run's log equals an uninterrupted run's."""
    from .test_runner import deterministic, read_log

    root = setup[0]
    out = subprocess.run([sys.executable, *run_args(setup, results)], cwd=REPO, env=env(), capture_output=True,
                         text=True, timeout=LIMIT)
    assert out.returncode == 0 and "resuming at iteration" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    whole = root / "r-whole"
    if not whole.exists():
        subprocess.run([sys.executable, *run_args(setup, "r-whole")], cwd=REPO, env=env(), check=True,
                       capture_output=True, timeout=LIMIT)
    for run in (root / results / "stop").iterdir():
        (twin,) = (whole / "stop").glob(run.name)  # the same identity: the same folder name
        assert deterministic(read_log(run)) == deterministic(read_log(twin)), run.name


def checkpointed_where_it_stopped(results: Path) -> None:
    """The interrupted run's checkpoint is the one meta.json names (its checksum, its iteration):
    saved when it stopped, and the folder is whole."""
    import torch

    from resnet_exp.runs.rundir import RunDir

    (meta,) = interrupted_runs(results)
    (run,) = [r for r in RunDir.all_in(results) if (r.read_meta() or {}).get("status") == "interrupted"]
    state = torch.load(run.checkpoint_path, weights_only=False)
    assert state["iteration"] == meta["iteration"] > 0 and run.check().ok


def test_ctrl_c_after_the_pipe_s_reader_died_saves_first_and_resumes_exactly(setup):
    """`run ... | tee log` and Ctrl-C: tee dies first, so every later write of ours meets a closed
    pipe. The run still checkpoints, is marked interrupted, exits 130, and resumes exactly."""
    results = "r-pipe"
    proc = subprocess.Popen([sys.executable, *run_args(setup, results)], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: first_log_line(setup[0], results), "the first log line")
        proc.stdout.close()  # the reader is gone
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=LIMIT) == 130
    finally:  # never left training beside the rest of the suite
        proc.kill()
        proc.wait()
    assert len(interrupted_runs(setup[0] / results)) == 1
    checkpointed_where_it_stopped(setup[0] / results)
    same_as_uninterrupted(setup, results)


def test_a_vanished_terminal_s_sighup_saves_first_and_resumes_exactly(setup):
    """The terminal closes (an ssh session drops): the kernel sends SIGHUP and every later write
    to it fails. The same clean stop as Ctrl-C, exit 129."""
    results = "r-hup"
    child = spawn(run_args(setup, results), None)
    wait_for(lambda: first_log_line(setup[0], results), "the first log line")
    os.close(child.child_fd)  # hang up: the pty's master closes, the kernel signals the session
    pid, status = os.waitpid(child.pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 129, status
    assert len(interrupted_runs(setup[0] / results)) == 1
    checkpointed_where_it_stopped(setup[0] / results)
    same_as_uninterrupted(setup, results)
