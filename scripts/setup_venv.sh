#!/usr/bin/env bash
# Create or reuse .venv at the repo root and install the package (editable) with its
# dependencies. Quick when nothing changed: a stamp holds the hash of pyproject.toml.
# Sourced by run_all.sh and run_tests.sh; afterwards $PY is the venv's python.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.resnet_exp-installed"

if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
want="$( (cat "$REPO_ROOT/pyproject.toml"; "$PY" --version) | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ] || ! "$PY" -c "import resnet_exp, torch, torchvision, papermill, pytest" 2>/dev/null; then
    echo "[setup] installing resnet_exp and its dependencies into .venv (first time: several minutes)"
    "$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install --quiet -e "$REPO_ROOT[test]"
    echo "$want" > "$STAMP"
fi
export PY
