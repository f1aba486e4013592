"""The runner's phases and the local executors: a pure plan, the pool, two drivers at once.

Ray has its own file (test_ray.py), run in a loopback-only network namespace.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_exp.runs.planning.experiments import load_experiment
from resnet_exp.runs.planning.plan import Action, make_plan
from resnet_exp.runs.rundir import TIMING_COLUMNS, IdentityLock, LockHeld, RunDir, RunStatus
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments

from .conftest import write_experiment

REPO = Path(__file__).resolve().parents[1]

SMOKE = """
rows:
  - {model: resnet8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: plain8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: resnet8, name: resnet8-B, shortcut: B, iterations: 20, milestones: [10], eval_every: 10}
"""


def logs_without_timing(results: Path) -> dict[str, list[dict]]:
    out = {}
    for run in RunDir.all_in(results):
        out[run.key] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in run.read_log()]
    return out


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))} if root.exists() else {}


@pytest.fixture()
def kw(tiny_tar, tmp_path):
    return dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data",
                estimate=False)


def test_pool_of_two_gives_the_sequential_logs(kw, tmp_path):
    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    # on the CPU the numbers depend on threads per run (oneDNN): the same for both
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    assert run_experiments([str(exp)], results=str(tmp_path / "pool"),
                           executor=ExecutorChoice(kind="pool", workers=2, threads=1), **kw) == 0
    seq, pool = logs_without_timing(tmp_path / "seq"), logs_without_timing(tmp_path / "pool")
    assert len(seq) == 3 and all(len(rows) >= 2 for rows in seq.values())
    assert pool == seq
    slots = {(RunDir(p).read_meta() or {})["worker"]["slot"] for p in (tmp_path / "pool" / "smoke").iterdir()}
    assert slots <= {"cpu0", "cpu1"} and slots  # ran in the pool's worker processes
    for run in RunDir.all_in(tmp_path / "pool"):
        assert run.status() == RunStatus.FINISHED and len(run.read_meta()["attempts"]) == 1


def test_plan_is_pure_and_dry_run_writes_nothing(kw, tmp_path, capsys):
    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    # a finished run, so the plan has a folder to read
    run_experiments([str(exp)], results=str(tmp_path / "r"), only=["resnet8"], **kw)
    before = {**tree(tmp_path / "r"), **{f"data/{k}": v for k, v in tree(tmp_path / "data").items()}}
    capsys.readouterr()
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), dry_run=True, **{**kw, "estimate": True}) == 0
    out = capsys.readouterr().out
    assert "ESTIMATED TIME" in out and "2 to train, 0 reused from an identical run, 1 already done" in out
    after = {**tree(tmp_path / "r"), **{f"data/{k}": v for k, v in tree(tmp_path / "data").items()}}
    assert after == before
    # and on a results folder and data cache that do not exist yet: still nothing written
    fresh = tmp_path / "fresh"
    run_experiments([str(exp)], results=str(fresh / "r"), dry_run=True, **{**kw, "data_dir": fresh / "data"})
    assert not fresh.exists()


def test_plan_reuses_finished_identities_and_trains_duplicates_once(kw, tmp_path):
    exp = write_experiment(tmp_path / "a.yaml", SMOKE)
    other = write_experiment(tmp_path / "b.yaml", SMOKE)
    run_experiments([str(exp)], results=str(tmp_path / "r"), only=["plain8"], **kw)
    sha = json.loads(next((tmp_path / "r" / "a").glob("plain8-*/meta.json")).read_text())["dataset"]["sha256"]
    specs = load_experiment(exp, "smoke") + load_experiment(other, "smoke")
    plan = make_plan(specs, tmp_path / "r", sha)
    actions = {(p.spec.experiment, p.spec.name): p.action for p in plan.runs}
    assert actions == {("a", "resnet8"): Action.NEW, ("a", "plain8"): Action.FINISHED, ("a", "resnet8-B"): Action.NEW,
                       ("b", "resnet8"): Action.SAME_AS, ("b", "plain8"): Action.REUSE, ("b", "resnet8-B"): Action.SAME_AS}
    assert [j.spec.name for j in plan.jobs] == ["resnet8", "resnet8-B"]
    assert all(len(j.copies) == 1 and j.copies[0][0].experiment == "b" for j in plan.jobs)


def test_identity_lock_is_exclusive_and_its_with_form_locks(tmp_path):
    a, b = IdentityLock(tmp_path, "abc"), IdentityLock(tmp_path, "abc")
    with a:
        assert a.held and not b.acquire()
        with pytest.raises(LockHeld):
            with b:
                pass
    assert not a.held and b.acquire()
    b.release()


_DRIVERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_driver_outlives_its_test():
    """A test that fails half way must not leave its driver and pool workers training on (they
    once ran for an hour beside the rest of the suite): each driver has a session of its own,
    and whatever is left of it is killed, workers included."""
    yield
    import signal

    while _DRIVERS:
        proc = _DRIVERS.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the driver and its workers are all gone
            pass
        proc.wait()


def _driver(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    _DRIVERS.append(subprocess.Popen([sys.executable, "-m", "resnet_exp", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True))
    return _DRIVERS[-1]


def test_two_drivers_at_once_train_each_identity_once(tiny_tar, tmp_path):
    """Two experiment files with the same rows (figure1/plain20 is figure6/plain20),
    started together on one results folder: whatever the interleaving, every identity is
    trained by exactly one process; a rerun then completes the other file by copying."""
    a = write_experiment(tmp_path / "a.yaml", SMOKE)
    b = write_experiment(tmp_path / "b.yaml", SMOKE)
    common = ["--profile", "smoke", "--data", str(tiny_tar), "--device", "cpu", "--results", "r"]
    drivers = [_driver(["run", str(f), *common], tmp_path) for f in (a, b)]
    outs = [d.communicate()[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    for f in (a, b):  # the driver that found a run locked skipped it; now it copies it
        assert _driver(["run", str(f), *common], tmp_path).wait() == 0
    by_identity: dict[str, list[dict]] = {}
    for run in RunDir.all_in(tmp_path / "r"):
        meta = run.read_meta()
        assert meta["status"] == "finished"
        by_identity.setdefault(meta["identity"], []).append(meta)
    assert len(by_identity) == 3 and all(len(metas) == 2 for metas in by_identity.values())
    for metas in by_identity.values():
        trained = [m for m in metas if "copied_from" not in m]
        assert len(trained) == 1 and len(trained[0]["attempts"]) == 1


class _Lines:
    """The driver's output, read as it comes (a thread), so a test can act on a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
        import time

        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if any(text in line for line in list(self.lines)):
                return
            time.sleep(0.01)
        raise AssertionError(f"never printed {text!r}:\n{''.join(self.lines)}")

    def text(self) -> str:
        self.thread.join(timeout=30)
        return "".join(self.lines)


def _both_running(tmp_path: Path, proc: subprocess.Popen) -> None:
    import time

    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        metas = [RunDir(p).read_meta() or {} for p in (tmp_path / "r" / "long").glob("*")]
        if len(metas) == 2 and all(m.get("status") == "running" for m in metas):
            time.sleep(1.0)  # a few iterations in
            return
        time.sleep(0.05)
    raise AssertionError("the runs never started")


# When the SIGINT lands: while the plan is timed and the pool is built (workers not yet
# started, or importing torch); when the first worker has taken a job but may not watch the
# stop file yet; and in the middle of training.
MOMENTS = {
    "pool-start": lambda lines, proc, tmp_path: lines.wait_for("ESTIMATED TIME", proc),
    "first-job": lambda lines, proc, tmp_path: lines.wait_for("[start]", proc),
    "training": lambda lines, proc, tmp_path: _both_running(tmp_path, proc),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_on_the_driver_stops_the_pool_workers_at_a_checkpoint(tiny_tar, tmp_path, moment):
    """SIGINT to the driver alone (not its process group), at several moments of start-up:
    the workers learn of it through the driver's stop file; a run that started checkpoints
    and stops, one that did not is left untouched; the driver exits 130 within seconds,
    with no traceback; the next invocation resumes."""
    import signal

    exp = write_experiment(tmp_path / "long.yaml", """
rows:
  - {model: resnet8, iterations: 100000, milestones: [90000], eval_every: 50000, batch_size: 16}
  - {model: plain8, iterations: 100000, milestones: [90000], eval_every: 50000, batch_size: 16}
""")
    args = ["run", str(exp), "--profile", "smoke", "--data", str(tiny_tar), "--device", "cpu",
            "--results", "r", "--workers", "2", "--threads", "1"]
    driver = _driver(args, tmp_path)
    lines = _Lines(driver)
    MOMENTS[moment](lines, driver, tmp_path)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=300)  # seconds when quiet; the margin is for a loaded machine
    out = lines.text()
    assert driver.returncode == 130, out
    assert "Traceback" not in out, out
    runs = [RunDir(p) for p in (tmp_path / "r" / "long").glob("*")]
    for run in runs:
        meta = run.read_meta()
        assert meta["status"] == "interrupted", (meta["status"], out)
        assert run.has_checkpoint() and 0 <= meta["iteration"] < 100000
    if moment == "training":
        assert "interrupt: every run checkpoints" in out and len(runs) == 2
        assert all(r.read_meta()["iteration"] > 0 for r in runs)
    assert not list((tmp_path / "r" / ".stop").glob("*"))  # the driver removed its stop file
    # the next invocation's plan takes up where this one stopped (then it is stopped too)
    again = _driver(args, tmp_path)
    lines = _Lines(again)
    lines.wait_for("[start]", again)
    again.send_signal(signal.SIGINT)
    again.wait(timeout=300)
    plan = lines.text()
    assert again.returncode == 130 and "Traceback" not in plan
    for run in runs:
        if (at := run.read_meta()["iteration"]) > 0:
            assert f"resume at {at}" in plan, plan


def test_the_local_executor_says_where_the_whole_job_is(kw, tmp_path, capsys):
    """A line before each run and one after it with its errors, each with the whole job's
    position (runs done of all, elapsed, the time left at the speed so far), and the same
    events as JSON lines in the results folder: the whole job followed without a pool's board."""
    import json

    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), executor=ExecutorChoice(threads=1), **kw) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    starts = [line for line in lines if line.startswith("[start] ")]
    assert [s.split(" ")[1] for s in starts] == ["smoke/resnet8-s1", "smoke/plain8-s1", "smoke/resnet8-B-s1"]
    assert [s.split("(")[1].split(",")[0] for s in starts] == ["0/3 done", "1/3 done", "2/3 done"]
    assert "left" not in starts[0] and all(", about " in s and s.endswith(" left)") for s in starts[1:])
    ends = [line for line in lines if line.startswith("[finished] ")]
    assert len(ends) == 3 and all(" % / test " in e for e in ends) and ends[-1].endswith("3/3 done, " +
                                                                                          ends[-1].split(", ")[-1])
    assert lines.index(ends[0]) < lines.index(starts[1])  # each run's result before the next run starts
    events = [json.loads(line) for line in (tmp_path / "r" / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["job", "start", "end", "start", "end", "start", "end", "done"]
    assert events[0]["runs"] == 3 and [e["run"] for e in events if e["event"] == "end"] == [
        "smoke/resnet8-s1", "smoke/plain8-s1", "smoke/resnet8-B-s1"]
    assert all(e["status"] == "finished" and e["test_error"] is not None for e in events if e["event"] == "end")
    assert events[-1]["status"] == "ended" and events[-1]["runs_ended"] == 3


def test_a_resumed_runs_lines_past_its_checkpoint_are_not_progress(tmp_path):
    """A run killed between checkpoints left log lines past the one it resumes from: until its
    trainer trims them, the job's time left is the plan's (no "about 0 s left" at its start),
    and after the trim its log counts again."""
    from types import SimpleNamespace

    from resnet_exp.runs.executing.progress import JobProgress
    from resnet_exp.runs.planning.plan import Job

    class Run:
        logged = 750  # the killed attempt logged to 750; its last checkpoint was at 313

        def last_logged_iteration(self) -> int:
            return self.logged

    run = Run()
    job = Job(SimpleNamespace(label="seeds/resnet56-s2", recipe=SimpleNamespace(iterations=2000)), run, "id", 313)
    progress = JobProgress([job], None, {job: 600.0})
    assert progress.fraction_done() == 0.0 and progress.left_s() == 600.0
    run.logged = 250  # the trainer kept the lines its checkpoint covers
    assert progress.fraction_done() == 0.0
    run.logged = 1000  # and trained on from 313
    assert abs(progress.fraction_done() - (1000 - 313) / 1687) < 1e-12


def test_only_says_what_it_matched_and_records_the_rest_as_left_out(kw, tmp_path, capsys):
    """`--only plain8`: the plan says what it matched; the rows it did not select are recorded as
    left out on purpose, so the reports count them on one line instead of listing them missing."""
    import json

    from resnet_exp.reporting.results import load_results, missing_html, missing_runs

    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), only=["plain8"], **kw) == 0
    assert "  --only plain8: smoke/plain8 (seed 1)" in capsys.readouterr().out
    record = json.loads((tmp_path / "r" / ".left-out.json").read_text())
    assert record == {"runs": ["smoke/resnet8 (seed 1)", "smoke/resnet8-B (seed 1)"],
                      "hint": "the same command without --only"}
    res = load_results(tmp_path / "r")
    missing = missing_runs(res, exp)
    assert sorted(missing) == record["runs"]
    assert missing_html(res, missing).startswith("none <i>(2 more left out on purpose")
    # a selected ablation adds its baseline's run, which trains now: not left out
    (tmp_path / "b").mkdir()
    with_baseline = write_experiment(tmp_path / "b" / "smoke.yaml",
                                     SMOKE.replace("shortcut: B,", "shortcut: B, baseline: smoke/resnet8,"))
    assert run_experiments([str(with_baseline)], results=str(tmp_path / "b" / "r"), only=["resnet8-B"], **kw) == 0
    assert "added: smoke/resnet8 (seed 1)" in capsys.readouterr().out
    record = json.loads((tmp_path / "b" / "r" / ".left-out.json").read_text())
    assert record["runs"] == ["smoke/plain8 (seed 1)"]
