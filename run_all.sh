#!/usr/bin/env bash
# The whole reproduction in one command: set up .venv, train what is not trained yet
# (figure1, figure6, ablations), build the HTML reports, print the index's path.
# Safe to rerun and to interrupt: finished runs are skipped, interrupted ones resume.
#
#   ./run_all.sh                       # paper profile on a GPU, quick on a CPU
#   ./run_all.sh --profile smoke       # a few minutes on a laptop: checks the plumbing
#   ./run_all.sh --data PATH           # a CIFAR-10 folder or archive (or RESNET_EXP_DATA)
#   ./run_all.sh --only plain20 plain56 --device cuda --results DIR --out DIR
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

PROFILE="${PROFILE:-}"
DATA="${RESNET_EXP_DATA:-}"
RESULTS=""
OUT="reports"
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --device) PASS+=(--device "$2"); shift 2 ;;
        --include-opt-in) PASS+=(--include-opt-in); shift ;;
        --only) shift; PASS+=(--only); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do PASS+=("$1"); shift; done ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

# 1. set-up: the same .venv as ./run_tests.sh
source scripts/setup_venv.sh

# 2. profile: paper where CUDA is available, quick otherwise
if [ -z "$PROFILE" ]; then
    PROFILE="$("$PY" -c 'import torch; print("paper" if torch.cuda.is_available() else "quick")')"
fi
echo "[run_all] profile: $PROFILE"

# 3. data: the real CIFAR-10 (data/ or torchvision's download), else the bundled mini subset
MINI=0
if [ -z "$DATA" ]; then
    probe_log="$(mktemp)"
    if ! "$PY" -c 'from resnet_exp.data import load_cifar10; load_cifar10(None)' >"$probe_log" 2>&1; then
        cat "$probe_log"
        DATA="assets/cifar10-mini-jpeg.tar.gz"
        MINI=1
    fi
    rm -f "$probe_log"
fi
if [ "$MINI" = 1 ]; then
    cat <<'BANNER'

##########################################################################################
#  NO REAL CIFAR-10 COULD BE HAD (no network?). FALLING BACK TO THE BUNDLED MINI SUBSET:   #
#  12,000 lossy JPEG images (assets/cifar10-mini-jpeg.tar.gz). Results go to              #
#  results-mini/ and every report says so. They show the shape of the experiment only,    #
#  NOT numbers comparable with the paper. For real results: put CIFAR-10 in data/ or pass #
#  --data PATH (see README.md).                                                           #
##########################################################################################

BANNER
fi
RESULTS="${RESULTS:-$([ "$MINI" = 1 ] && echo results-mini || echo results)}"

# 4. train (finished runs are skipped)
status=0
"$PY" -m resnet_exp run experiments/figure1.yaml experiments/figure6.yaml experiments/ablations.yaml \
    --profile "$PROFILE" --results "$RESULTS" ${DATA:+--data "$DATA"} ${PASS[@]+"${PASS[@]}"} || status=$?
if [ "$status" -eq 2 ]; then
    exit 2  # bad input (experiment file, dataset): the message above says what to fix
elif [ "$status" -ne 0 ]; then
    echo "[run_all] some runs failed (exit $status); building the reports from what there is" >&2
fi

# 5. reports
"$PY" -m resnet_exp report --results "$RESULTS" --out "$OUT"
if [ "$MINI" = 1 ]; then
    echo "[run_all] REMINDER: these reports come from the bundled MINI SUBSET, not CIFAR-10."
fi
echo "[run_all] open $(cd "$OUT" && pwd)/index.html"
exit "$status"
