#!/usr/bin/env bash
# Train the Figure 6 rows with every executor and check that their logs agree.
#
#   bash scripts/compare_executors.sh [DATA] [PROFILE]     (default: the bundled mini subset, smoke)
#
# Runs sequential, a pool of 2, a local Ray instance and a two-node Ray cluster (two
# `ray start` on 127.0.0.1), each into its own folder under .compare/, one thread per
# run (on the CPU the numbers depend on threads per run), then compares every log.csv
# (wall-clock columns aside). It re-executes itself in a network namespace that holds
# only loopback, so Ray never binds or reaches another address (needs root: unshare -n).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-assets/cifar10-mini-jpeg.tar.gz}"
PROFILE="${2:-smoke}"
if [ "${COMPARE_IN_NS:-}" != 1 ]; then
    EXTRAS=ray source scripts/setup_venv.sh
    exec unshare -n env COMPARE_IN_NS=1 PY="$PY" RAY_USAGE_STATS_ENABLED=0 bash -c \
        'ip link set lo up && exec bash "$0" "$@"' "$0" "$DATA" "$PROFILE"
fi
RAY="$(dirname "$PY")/ray"
# Ray >= 2.5x authenticates cluster members with a token: one for this throw-away cluster,
# given to both nodes and the driver (nothing read from or written to ~/.ray).
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
rm -rf .compare && mkdir -p .compare
run() {  # name, then the executor options
    local name="$1"; shift
    local t0=$SECONDS
    "$PY" -m resnet_exp run experiments/figure6.yaml --profile "$PROFILE" --data "$DATA" --device cpu \
        --results ".compare/$name" --threads 1 "$@" > ".compare/$name.log" 2>&1
    echo "$name: $((SECONDS - t0)) s (exit $?)" | tee -a .compare/times.txt
}
run sequential
run pool2 --workers 2
run ray-local --executor ray
trap '"$RAY" stop --force > /dev/null 2>&1' EXIT
"$RAY" start --head --port=6391 --node-ip-address=127.0.0.1 --num-cpus=1 --include-dashboard=false \
    --disable-usage-stats > .compare/ray-start.log 2>&1
"$RAY" start --address=127.0.0.1:6391 --node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats \
    >> .compare/ray-start.log 2>&1
run ray-2nodes --executor ray --ray-address 127.0.0.1:6391
"$PY" - <<'PY'
from pathlib import Path
from resnet_exp.runs.rundir import TIMING_COLUMNS, RunDir
def logs(d):
    return {r.key: [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in r.read_log()]
            for r in RunDir.all_in(d)}
ref = logs(".compare/sequential")
print(f"sequential: {len(ref)} runs, {sum(len(v) for v in ref.values())} log lines")
for name in ("pool2", "ray-local", "ray-2nodes"):
    other = logs(f".compare/{name}")
    same = other == ref
    nodes = {(r.read_meta() or {}).get("worker", {}).get("node") or (r.read_meta() or {}).get("worker", {}).get("slot")
             for r in RunDir.all_in(f".compare/{name}")}
    print(f"{name}: {len(other)} runs, logs identical to sequential: {same}; ran on {len(nodes)} slot(s)/node(s)")
    assert same, name
PY
