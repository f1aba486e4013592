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
