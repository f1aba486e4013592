#!/usr/bin/env bash
# Unpack a chunk's results (scripts/device_chunk.sh) into .devresults/ (to carry to the
# next chunk) and copy logs, meta.json and final weights into reports/reference/results/,
# then rebuild the reference reports.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS="${1:?usage: device_collect.sh FOLDER_WITH_results.tar.gz.part-*}"
mkdir -p .devresults reports/reference/results
cat "$PARTS"/results.tar.gz.part-* | tar xzf - -C .devresults
source scripts/setup_venv.sh
"$PY" -c 'import sys; from resnet_exp.runs.rundir import publish_results as p; print(p(*sys.argv[1:]), "runs")' \
    .devresults reports/reference/results
"$PY" -m resnet_exp report --results reports/reference/results --out reports/reference
