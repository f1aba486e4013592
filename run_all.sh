#!/usr/bin/env bash
# The whole reproduction in one command: set up .venv, train what is not trained yet
# (figure1, figure6, ablations, table6 on a GPU; plain-20/56 and ResNet-20/56 on a CPU),
# build the HTML reports, print which of the paper's claims held and the index's path.
# Safe to rerun and to interrupt: finished runs are skipped, interrupted ones resume.
# Stop it with Ctrl-C, or SIGTERM to its process group (kill -TERM -- -PGID, timeout(1)): the
# same at every moment, exit 130 / 143. Started in the background (&, nohup), SIGINT stays
# ignored: use SIGTERM (docs/reliability.md, "Stopping").
#
# Usage: ./run_all.sh [EXPERIMENT.yaml ...] [options]
#   EXPERIMENT.yaml ...           train these experiment files, every row, instead of the default
#                                 set (e.g. experiments/remedies.yaml; on a CPU the budget still
#                                 picks the rung) [figure1, figure6, ablations, table6 with CUDA;
#                                 their CPU_ROWS without]
#
# Options (defaults in brackets):
#   --budget TIME                 training time you have (90s, 45m, 2h, 1h30m): the longest rung of the
#                                 ladder (runs/planning/ladder.yaml: 1/128 ... 1 of the paper's schedule) whose
#                                 estimate here fits [60m on a CPU (docs/ladder.md: why), none with CUDA]
#   --profile NAME                pin a recipe, over any budget: paper, quick, quick128 ... quick2, smoke
#                                 [paper with CUDA; the budget's rung without]
#   --data PATH                   a CIFAR-10 folder or archive [$RESNET_EXP_DATA, else data/]
#   --only NAME ...               only these rows [every row that is not opt-in]
#   --device auto|cpu|cuda        [auto]
#   --precision fp32|tf32|bf16    every run's arithmetic [fp32; on a CPU with native bf16 the budget
#                                 chooses bf16 where the committed references showed it gives fp32's answer]
#   --results DIR                 [results/, or results-mini/ for the bundled mini subset]
#   --out DIR                     reports [reports/]
#   --all                         the whole reproduction even without CUDA [on a CPU: plain20 plain56
#                                 resnet20 resnet56, the degradation and its cure]
#   --dry-run                     print the plan (runs, estimated time, what is left out) and stop
#   --include-opt-in              also the opt-in rows (resnet1202, ...)
#   --retrain-damaged             train damaged runs again (old folders kept in .damaged/)
#   --executor auto|local|pool|ray  [auto: with CUDA a pool over every GPU, --runs-per-gpu on each;
#                                 on a CPU one run after another]
#   --workers N                   pool on the CPU: N runs at a time [1]
#   --gpus all|0,1,3              pool on GPUs [none]
#   --runs-per-gpu K              runs sharing a GPU (pool, ray) [4: where sharing stops paying on
#                                 an H200, resnet_exp/runs/device.py]
#   --ray-address auto|ADDR       an existing Ray cluster [a local Ray instance]
#   --ray-storage auto|shared|driver  where runs write: a shared results folder, or the
#                                 driver's (files back through Ray) [auto: shared if every node sees it]
#   --cpus-per-run C              Ray: CPUs each run reserves [1]
#   --threads N                   torch threads per run [CPUs / runs at a time]
#
# Examples:
#   ./run_all.sh                                   # the default for this machine
#   ./run_all.sh --profile smoke                   # every report from tiny runs: checks the plumbing
#   ./run_all.sh --budget 2h                       # the longest schedule that trains in 2 hours here
#   ./run_all.sh experiments/remedies.yaml --budget 3h  # the remedies for degradation, side by side
#   ./run_all.sh --gpus 0,1 --runs-per-gpu 2       # two GPUs, 2 runs on each (the default: all, 4)
#   ./run_all.sh --executor ray --ray-address auto # a Ray cluster (docs/scale-out.md)
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# Stop policy (docs/reliability.md, "Stopping"): Ctrl-C or SIGTERM at any moment ends with one line and exit
# 130 / 143; the Python steps below apply the same policy themselves (resnet_exp/stopping.py).
# Where SIGINT was ignored when this script started (a background job), it stays ignored
# (bash cannot trap it) and SIGTERM stops it. A trap runs once the step in progress has ended.
stopped() { echo "[run_all] stopped by $1 during $STEP: finished runs are kept; run ./run_all.sh again to go on" >&2; exit "$2"; }
STEP="set-up"
trap 'stopped SIGINT 130' INT
trap 'stopped SIGTERM 143' TERM
trap 'stopped SIGHUP 129' HUP
# `./run_all.sh | tee log` and Ctrl-C: tee is gone before we are. A write to the closed pipe must
# fail (and be dropped), not kill this script before the run below has saved its checkpoint.
trap '' PIPE
die() { echo "run_all.sh: $1" >&2; echo "run ./run_all.sh --help for the options" >&2; exit 2; }
# an option's value: present, and not another option
value() { [ $# -ge 2 ] && [[ "$2" != --* ]] || die "$1 needs a value"; printf '%s' "$2"; }

PROFILE="${PROFILE:-}"
BUDGET=""
# The CPU default's budget for training. Set-up, decoding the data and the reports took 2.5 to
# 5 min on 2-core machines and the estimate came within 3 % (1/32) to 14 % (1/128), so the whole
# default ends within 90 min wherever a rung fits 60 min; where none does, 1/128 is trained
# anyway: 76.6 min in all on the slowest machine seen, GEMM 94-101 GFLOP/s (docs/ladder.md, "The CPU default").
DEFAULT_CPU_BUDGET=60m
DATA="${RESNET_EXP_DATA:-}"
RESULTS=""
OUT="reports"
PASS=()
EXTRAS=""
ALL=0
DRY=0
# The CPU default (configuration, not code): Figure 1's pair and their residual twins, so a
# laptop run shows the degradation *and* its cure, in about an hour on 2 cores (docs/ladder.md).
CPU_ROWS=(plain20 plain56 resnet20 resnet56)
USER_FILES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="$(value "$@")"; shift 2 ;;
        --budget) BUDGET="$(value "$@")"; shift 2 ;;
        --data) DATA="$(value "$@")"; shift 2 ;;
        --results) RESULTS="$(value "$@")"; shift 2 ;;
        --out) OUT="$(value "$@")"; shift 2 ;;
        --device|--precision|--workers|--gpus|--runs-per-gpu|--ray-address|--ray-storage|--cpus-per-run|--threads)
            PASS+=("$1" "$(value "$@")"); shift 2 ;;
        --executor) v="$(value "$@")"; PASS+=(--executor "$v"); [ "$v" = ray ] && EXTRAS=ray; shift 2 ;;
        --include-opt-in|--retrain-damaged) PASS+=("$1"); shift ;;
        --dry-run) DRY=1; shift ;;
        --all) ALL=1; shift ;;
        --only) [ $# -ge 2 ] && [[ "$2" != --* ]] || die "--only needs at least one row name"
            ALL=1; shift; PASS+=(--only); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do PASS+=("$1"); shift; done ;;
        -h|--help) usage; exit 0 ;;
        *.yaml|*.yml) [ -f "$1" ] || die "no experiment file '$1' (the shipped ones are in experiments/)"
            USER_FILES+=("$1"); shift ;;
        *) die "unknown argument '$1'" ;;
    esac
done

# 1. set-up: the same .venv as ./run_tests.sh (plus Ray for --executor ray)
if [ "${RESNET_EXP_TEST_PAUSE:-}" = setup ]; then echo "[moment] setup"; sleep 120; fi  # tests only
export EXTRAS
source scripts/setup_venv.sh
STEP="the checks"

# every experiment row checked first, before torch or the data are touched: a mistake shows at once
ALL_FILES=(experiments/figure1.yaml experiments/figure6.yaml experiments/ablations.yaml experiments/table6.yaml)
# the smoke profile checks the plumbing of every report and path: the remedies and a plug-in too
SMOKE_FILES=("${ALL_FILES[@]}" experiments/remedies.yaml experiments/plugin_example.yaml)
# the files of this invocation, decided once: named ones or the smoke set (every row, on any
# device: WHOLE=1), else the reproduction's (its CPU_ROWS only on a CPU, below)
WHOLE=1
if [ ${#USER_FILES[@]} -gt 0 ]; then JOB_FILES=("${USER_FILES[@]}")
elif [ "$PROFILE" = smoke ]; then JOB_FILES=("${SMOKE_FILES[@]}")
else JOB_FILES=("${ALL_FILES[@]}"); WHOLE=0; fi
"$PY" -m resnet_exp run "${JOB_FILES[@]}" --check ${PROFILE:+--profile "$PROFILE"} ${BUDGET:+--budget "$BUDGET"} > /dev/null || {
    s=$?; [ "$s" -ge 128 ] && exit "$s"; exit 2; }  # 130/143: stopped; else a bad row, the message says which

# 2. the job: everything with CUDA; on a CPU, the CPU_ROWS of figure1 and figure6 (what fits
#    in about an hour on a laptop and shows both halves of the paper), the rest listed with
#    its cost and --all. The smoke profile is cheap everywhere: it always runs everything.
#    Experiment files named on the command line: all their rows, nothing else.
CUDA="$([ "$("$PY" -m resnet_exp device)" = cuda ] && echo 1 || echo 0)"
for a in ${PASS[@]+"${PASS[@]}"}; do [ "$a" = cpu ] && CUDA=0; done
ONLY=()
JUDGED=()  # --needs-reference, for the CPU default alone (below)
if [ "$WHOLE" = 1 ] || [ "$CUDA" = 1 ] || [ "$ALL" = 1 ]; then
    FILES=("${JOB_FILES[@]}"); LEFT=()
else
    FILES=("${ALL_FILES[@]:0:2}"); LEFT=("${ALL_FILES[@]:1}"); ONLY=(--only "${CPU_ROWS[@]}")
fi
if [ -z "$PROFILE" ] && [ -z "$BUDGET" ]; then
    if [ "$CUDA" = 1 ]; then PROFILE=paper; elif [ "$ALL" = 1 ]; then PROFILE=quick; else
        # the default trains a rung it can judge: one whose committed reference holds its nets
        # with three seeds in the precision it trains (an explicit --budget takes any rung that fits)
        BUDGET="$DEFAULT_CPU_BUDGET"; JUDGED=(--needs-reference)
    fi
fi
[ -n "$PROFILE" ] && BUDGET=""  # a profile pins the schedule, over any budget
echo "[run_all] ${PROFILE:+profile: $PROFILE}${BUDGET:+budget: $BUDGET of training (the plan picks the rung)}; experiments: ${FILES[*]}${ONLY[@]+ (rows: ${ONLY[*]:1})}"

STEP="data"
# 3. data: the real CIFAR-10 (data/ or torchvision's download), else the bundled mini subset
MINI=0
if [ -z "$DATA" ]; then
    s=0; "$PY" -m resnet_exp data || s=$?
    [ "$s" -ge 128 ] && exit "$s"  # stopped (the line above says so)
    if [ "$s" -ne 0 ]; then
        DATA="assets/cifar10-mini-jpeg.tar.gz"
        MINI=1
    fi
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

# 4. train (finished runs are skipped). Ctrl-C: the runs checkpoint and stop within a few
#    seconds; a second Ctrl-C stops at once. Either way, no reports are built.
STEP="training"
trap 'INTERRUPTED=130' INT
trap 'INTERRUPTED=143' TERM
trap 'INTERRUPTED=129' HUP
INTERRUPTED=0
status=0
"$PY" -m resnet_exp run "${FILES[@]}" ${PROFILE:+--profile "$PROFILE"} ${BUDGET:+--budget "$BUDGET"} \
    --results "$RESULTS" ${DATA:+--data "$DATA"} \
    ${ONLY[@]+"${ONLY[@]}"} ${LEFT[@]+--left-out "${LEFT[@]}" --left-out-hint "./run_all.sh --all"} ${JUDGED[@]+"${JUDGED[@]}"} \
    ${PASS[@]+"${PASS[@]}"} $([ "$DRY" = 1 ] && echo --dry-run) || status=$?
trap 'stopped SIGINT 130' INT
trap 'stopped SIGTERM 143' TERM
trap 'stopped SIGHUP 129' HUP
if [ "$status" -eq 129 ] || [ "$status" -eq 130 ] || [ "$status" -eq 143 ] || [ "$INTERRUPTED" != 0 ]; then
    [ "$INTERRUPTED" != 0 ] && status="$INTERRUPTED"
    echo "[run_all] interrupted: finished runs are kept and interrupted ones resume where they stopped;" \
         "run ./run_all.sh again to go on (reports: python -m resnet_exp report --results $RESULTS)" >&2
    exit "$status"
elif [ "$status" -eq 3 ]; then
    echo "[run_all] stopped: the disk is full (the message above says where); no reports were built" >&2
    exit 3
elif [ "$status" -eq 2 ]; then
    exit 2  # bad input (experiment file, dataset): the message above says what to fix
elif [ "$status" -ne 0 ]; then
    echo "[run_all] some runs failed (exit $status); building the reports from what there is" >&2
fi

[ "$DRY" = 1 ] && exit "$status"

STEP="reports"
# 5. reports, and the paper's claims in words (the same table heads the index page)
"$PY" -m resnet_exp report --results "$RESULTS" --out "$OUT"
echo
# last on the terminal, so it is what a person sees: the claims one line each, what this run
# trained with its verdicts, where the reports are (the numbers: python -m resnet_exp claims)
"$PY" -m resnet_exp summary --results "$RESULTS" --out "$OUT" || true
if [ "$MINI" = 1 ]; then
    echo "[run_all] REMINDER: these reports come from the bundled MINI SUBSET, not CIFAR-10."
fi
echo "[run_all] open $(cd "$OUT" && pwd)/index.html"
exit "$status"
