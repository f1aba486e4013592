#!/usr/bin/env bash
# One chunk of the GPU reference reproduction (Figure 1 + Figure 6, paper profile), for a
# machine where a command may run only ~10 minutes (the device tool). Runs resume, so
# call it again until every run is finished.
#
# Before the first chunk, on the local machine (paths are git-ignored):
#   mkdir -p .devdata .devresults && cp ../shared/data/cifar10-jpeg-q75.tar.gz .devdata/
# Each chunk, on the device machine (carry: .devdata .devresults):
#   bash scripts/device_chunk.sh 540 "$OUT"
# After each chunk, locally: bash scripts/device_collect.sh FOLDER_WITH_THE_PARTS
#
# The GPU image already has torch, torchvision, pyyaml, tqdm, pillow: no install needed.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT="${1:-540}"
OUT_DIR="${2:-${OUT:-out}}"
ORDER=(plain20 plain56 resnet20 resnet56 plain32 plain44 resnet32 resnet44 resnet110)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# SIGTERM at the limit: the runner checkpoints at its next log line and exits cleanly.
for name in "${ORDER[@]}"; do
    left=$(( LIMIT - SECONDS ))
    [ "$left" -gt 20 ] || break
    timeout -s TERM "$left" python3 -m resnet_exp run experiments/figure1.yaml experiments/figure6.yaml \
        --profile paper --data .devdata/cifar10-jpeg-q75.tar.gz --results .devresults --device cuda \
        --only "$name" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]$' || true
done
mkdir -p "$OUT_DIR"
# Everything (checkpoints included, so the next chunk can resume) in parts of 15 MB.
tar czf - -C .devresults . | split -b 15m - "$OUT_DIR/results.tar.gz.part-"
ls -la "$OUT_DIR"
