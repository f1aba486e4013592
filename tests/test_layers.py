"""The package's layers (``.importlinter``), checked with import-linter: imports go one way,
down, and no module of a package imports another in a circle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", str(root / ".importlinter")], cwd=root, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contract_holds():
    out = lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_an_upward_import_or_a_circle_fails_naming_the_chain(tmp_path):
    """The contract is not vacuous: the leak this repository once had (the planner importing
    the reports' claims to print what a rung showed) breaks it, with the chain named."""
    shutil.copytree(REPO / "resnet_exp", tmp_path / "resnet_exp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    budget = tmp_path / "resnet_exp" / "runs" / "planning" / "budget.py"
    budget.write_text(budget.read_text() + "\n\ndef _leak():\n    from ...reporting import claims  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "resnet_exp.runs.planning.budget -> resnet_exp.reporting.claims" in out.stdout
    assert "BROKEN" in out.stdout
