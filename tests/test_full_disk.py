"""A full disk: with the results folder on a 2 MB filesystem, the invocation stops at the
first "no space left" with one message (where, how much is free, nothing lost, what to do),
no traceback and exit status 3, whichever executor runs; after space is freed the same
command finishes every run, and each log equals that of a run that never hit the wall.

The small filesystem is a real tmpfs, mounted inside a private mount namespace
(``unshare -m``, root) so it vanishes with the test; skipped where that is not allowed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from resnet_exp.runs.rundir import TIMING_COLUMNS

ROWS = """defaults: {iterations: 4, milestones: [2], eval_every: 2, batch_size: 10}
rows:
  - {model: resnet8, seeds: [1, 2, 3, 4]}
"""


def _can_mount(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    d = tmp_path / "probe"
    d.mkdir()
    ok = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {d}"],
                        capture_output=True).returncode == 0
    d.rmdir()
    return ok


def _logs(results: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_csv(p).drop(columns=list(TIMING_COLUMNS)) for p in results.glob("e/*/log.csv")}


@pytest.mark.parametrize("executor", [["--executor", "local"], ["--executor", "pool", "--workers", "2"]],
                         ids=["local", "pool"])
def test_a_full_disk_stops_cleanly_and_resumes_exactly(tmp_path, tiny_tar, executor):
    if not _can_mount(tmp_path):
        pytest.skip("needs root and unshare -m to mount a small tmpfs")
    exp = tmp_path / "e.yaml"
    exp.write_text(ROWS)
    run = [sys.executable, "-m", "resnet_exp", "run", str(exp), "--profile", "smoke", "--data", str(tiny_tar),
           "--device", "cpu", "--threads", "1", *executor]
    # the reference: the same runs on a disk with room
    ref = subprocess.run([*run, "--results", str(tmp_path / "ref")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    small = tmp_path / "small"
    small.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size=2m tmpfs {small}
{' '.join(run)} --results {small}/r > {tmp_path}/first.out 2>&1; echo $? > {tmp_path}/first.rc
cp -a {small}/r {tmp_path}/after-first   # what the full disk left, for the checks below
mount -o remount,size=64m {small}         # space is freed
{' '.join(run)} --results {small}/r > {tmp_path}/second.out 2>&1; echo $? > {tmp_path}/second.rc
cp -a {small}/r {tmp_path}/after-second
"""
    subprocess.run(["unshare", "-m", "bash", "-c", script], cwd=tmp_path, timeout=900, check=True)
    first = (tmp_path / "first.out").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "3", first
    assert "Traceback" not in first
    assert first.count("NO SPACE LEFT ON DEVICE") == 1, first
    assert f"{small}/r" in first and "free there" in first and "Nothing finished was lost" in first
    assert "WARNING" in first and "free where the results go" in first  # the plan saw it coming

    finished_first = {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in (tmp_path / "after-first").glob("e/*/model.pt")}
    second = (tmp_path / "second.out").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", second
    assert "Traceback" not in second
    after = tmp_path / "after-second"
    for name, sha in finished_first.items():  # nothing finished was lost or retrained
        assert hashlib.sha256((after / "e" / name / "model.pt").read_bytes()).hexdigest() == sha
    logs, ref_logs = _logs(after), _logs(tmp_path / "ref")
    assert sorted(logs) == sorted(ref_logs) and len(logs) == 4
    for name in logs:
        pd.testing.assert_frame_equal(logs[name], ref_logs[name])
