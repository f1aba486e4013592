#!/usr/bin/env bash
# The test command: sets up .venv (see scripts/setup_venv.sh), then runs pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k models -x
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test,ray source scripts/setup_venv.sh
exec "$PY" -m pytest "$@"
