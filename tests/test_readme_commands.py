"""Every command the README shows runs as written (issue 55): extracted from its bash blocks
and inline code spans, each one either run here, as a new user would type it after the
README's `source .venv/bin/activate`, in a clean environment from a clone-like folder that
holds a trained results/, or named below with why it is not (it trains, or follows a job)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

STARTS = ("./run_all.sh", "./run_tests.sh", "python -m resnet_exp", "resnet-exp", "tail ", "source ")
# What the test does not run, and why (matched on the command's start)
NOT_RUN = {
    "./run_all.sh": "sets up .venv and trains (tests/test_run_all.py runs its dry run and smoke path)",
    "./run_tests.sh": "this test suite itself",
    "python -m resnet_exp run": "trains (tests/test_runner.py and tests/test_plugins.py train tiny runs)",
    "tail -f": "follows a running job until interrupted",
    "source .venv/bin/activate": "the shell's own; the clean environment below is what it sets",
}
CHEAP = ("report", "summary", "claims", "compare", "ablations", "models", "device")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(STARTS):
                commands.append(line)
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        if span.startswith(STARTS) and "..." not in span:  # "python -m resnet_exp ..." is prose
            commands.append(span.strip())
    return list(dict.fromkeys(commands))


def kind(command: str) -> str:
    for start in NOT_RUN:
        if command.startswith(start):
            return "not run"
    words = shlex.split(command)
    sub = words[3] if words[:3] == ["python", "-m", "resnet_exp"] else words[1] if words[0] == "resnet-exp" else None
    if sub in CHEAP or "--help" in words:
        return "run"
    return "unknown"


def test_the_readme_says_how_its_commands_find_the_environment():
    text = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    assert [c for c in readme_commands() if kind(c) == "unknown"] == [], \
        "a README command this test neither runs nor names in NOT_RUN with why"


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory) -> dict[str, str]:
    """What `source .venv/bin/activate` gives a fresh shell, and nothing of this process's."""
    venv = Path(sys.prefix)
    return {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": str(venv),
            "HOME": str(tmp_path_factory.mktemp("home")), "LANG": "C.UTF-8",
            **{k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}


@pytest.mark.parametrize("command", [c for c in readme_commands() if kind(c) == "run"])
def test_each_cheap_readme_command_runs_as_written(command, built_reports, clean_env):
    root, _ = built_reports  # a clone-like folder: experiments/, a trained results/
    out = subprocess.run(command, shell=True, cwd=root, env=clean_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
