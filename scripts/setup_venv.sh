#!/usr/bin/env bash
# Create or reuse .venv at the repo root and install the package (editable) with its
# dependencies and the extras in $EXTRAS (e.g. "test,ray"). Quick when nothing changed:
# a stamp holds the hash of pyproject.toml, the python version and the extras.
# Sourced by run_all.sh and run_tests.sh; afterwards $PY is the venv's python.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.resnet_exp-installed"
EXTRAS="${EXTRAS:-}"

if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
# Extras already installed stay installed: the stamp records every extra seen so far.
have_extras="$(sed -n 2p "$STAMP" 2>/dev/null || true)"
all_extras="$(printf '%s\n' ${have_extras//,/ } ${EXTRAS//,/ } | sort -u | paste -sd, -)"
want="$( (cat "$REPO_ROOT/pyproject.toml"; "$PY" --version; echo "$all_extras") | sha256sum | cut -d' ' -f1)"
have="$(sed -n 1p "$STAMP" 2>/dev/null || true)"
# found, not imported (importing torch alone takes seconds at every start)
mods="resnet_exp torch torchvision papermill pydantic filelock"
case ",$all_extras," in *,test,*) mods="$mods pytest hypothesis" ;; esac
case ",$all_extras," in *,ray,*) mods="$mods ray" ;; esac
probe="import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in '$mods'.split()))"
if [ "$want" != "$have" ] || ! "$PY" -c "$probe" 2>/dev/null; then
    echo "[setup] installing resnet_exp${all_extras:+[$all_extras]} into .venv (first time: several minutes)"
    "$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install --quiet -e "$REPO_ROOT${all_extras:+[$all_extras]}"
    printf '%s\n%s\n' "$want" "$all_extras" > "$STAMP"
fi
export PY
