#!/usr/bin/env bash
# Unpack a chunk's results (scripts/device_chunk.sh) into .devresults/ (to carry to the
# next chunk) and copy logs, meta.json and final weights into reports/reference/results/,
# then rebuild the reference reports.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS="${1:?usage: device_collect.sh FOLDER_WITH_results.tar.gz.part-*}"
mkdir -p .devresults reports/reference/results
cat "$PARTS"/results.tar.gz.part-* | tar xzf - -C .devresults
tar -C .devresults --exclude=checkpoint.pt --exclude=.lock -cf - . | tar -C reports/reference/results -xf -
source scripts/setup_venv.sh
"$PY" -m resnet_exp report --results reports/reference/results --out reports/reference
