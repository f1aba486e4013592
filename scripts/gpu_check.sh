#!/usr/bin/env bash
# The one prepared check a GPU machine runs first (about 9 minutes, no network):
#
#   bash scripts/gpu_check.sh DATA OUT_DIR              # on a CUDA machine
#   bash scripts/gpu_check.sh --cpu DATA OUT_DIR        # every step on the CPU, tiny sizes (a dry run)
#   bash scripts/gpu_check.sh --continue PARTS DATA OUT_DIR   # only step 3, resumed from a first call's parts
#
# DATA: a CIFAR-10 folder or archive (e.g. cifar10-jpeg-q75.tar.gz). OUT_DIR receives at most 8
# files, each under 15 MB, written as the check goes (a call cut short still returns what it had):
#   check.log            everything printed
#   check.json           the verdicts of step 1, with the numbers behind them (and what
#                        `deterministic` costs per model: the graphed runs' step seconds)
#   bench.json           step 2: ms per step, eager / graph / graph-tf32 / graph-bf16 / textbook
#   concurrent.json      step 2: K runs at once on the GPU (graphed), K = 1, 2, 4, 8
#   concurrent-mps.json  the same with the CUDA MPS daemon (where nvidia-cuda-mps-control exists)
#   paper.tar.gz.part-*  step 3's results folder, checkpoints included (at most 3 parts)
#
# Steps, each with a deadline (a share of GPU_CHECK_LIMIT_S, default 530 s): a command still
# running at its step's deadline is stopped by SIGTERM (a run checkpoints and says so), the
# log says what was cut, and the check goes on, so that every later step runs and the whole
# check ends within the limit. check.json calls a run that was cut "incomplete", never "pass".
#   1. correctness (by 50 % of the limit): a replay after the lr was changed without a new
#      capture keeps the captured lr (scripts/gpu_check_probe.py); 300 steps of ResNet-20 and
#      plain-56 with every capture a run makes (the warm-up, its end, two milestones), eager
#      against graph: under `deterministic` log.csv and the final weights and BN buffers
#      identical, ResNet-20 in bf16 too; without it, the difference is compared with eager's own
#      run-to-run spread; each capture's count and GPU memory reserved; one pool worker training
#      both graphed runs back to back, each identical to its run alone; deterministic mode: two
#      runs of one seed and a resumed one give identical logs; a smoke run of Figure 1; SIGTERM
#      during a graphed run, then resume
#   2. speed (by 90 %): `bench` of resnet20, resnet56, resnet110 (eager, graph, graph-tf32, graph-bf16
#      columns; each model's row is written as it comes); the plan's estimate for Figure 6 at
#      the paper's schedule on this machine (a dry run: one run after another, and the whole
#      job with the default runs per GPU); K runs at once with and without MPS
#   3. with the time left (if 30 s or more): the `paper` profile of plain-20, plain-56, ResNet-20
#      and ResNet-56 at once, stopped by SIGTERM in time to pack its results; `--continue`
#      resumes them (or, given a folder without parts, starts them: a call of step 3 alone)
#
# Needs: torch, torchvision, numpy, pandas, scipy, pyyaml, pydantic, filelock, tqdm, pillow,
# importable (the package itself from this checkout: PYTHONPATH is set here).
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
MODE=gpu
PARTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --cpu|--dry-run) MODE=cpu; shift ;;
        --continue) PARTS="${2:?--continue needs the folder holding the paper.tar.gz.part-* files of a first call}"; shift 2 ;;
        --*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || { echo "usage: bash scripts/gpu_check.sh [--cpu] [--continue PARTS] DATA OUT_DIR (see --help)" >&2; exit 2; }
DATA="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
OUT_DIR="$2"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LIMIT="${GPU_CHECK_LIMIT_S:-530}"  # seconds for the whole check, packing included
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$OUT_DIR/check.log") 2>&1
say() { echo "[gpu_check $(date +%H:%M:%S) +${SECONDS}s] $*"; }
END1=$(( LIMIT * 50 / 100 )); END2=$(( LIMIT * 90 / 100 )); PACK_S=40  # the steps' deadlines; packing's share

by() {  # by DEADLINE WHAT CMD...: run CMD, stopped by SIGTERM (KILL 20 s later) at DEADLINE seconds
    local deadline=$1 what=$2; shift 2
    local left=$(( deadline - SECONDS ))
    if [ "$left" -lt 5 ]; then say "SKIPPED, its step's time is spent: $what"; return 124; fi
    timeout -s TERM -k 20 "$left" "$@"; local rc=$?
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && say "CUT at its step's deadline (+${deadline}s): $what"
    return "$rc"
}
quiet() { tr '\r' '\n' | grep -v 'it/s\]$'; }  # progress bars out of the log

# ---- 0. imports first: one line naming what is missing
NEED="torch torchvision numpy pandas scipy yaml pydantic filelock tqdm PIL"
missing="$("$PY" -c "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))" $NEED)"
if [ -n "$missing" ]; then
    echo "gpu_check.sh: missing Python packages: $missing (pip install them, or carry their wheels)"; exit 2
fi
[ -e "$DATA" ] || { echo "gpu_check.sh: no data at $DATA"; exit 2; }
if [ "$MODE" = gpu ]; then
    [ "$("$PY" -m resnet_exp device)" = cuda ] || { echo "gpu_check.sh: no CUDA device here; --cpu walks the steps on the CPU"; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    DEV=cuda; STEPS=300; LONG=600; MODELS=(resnet20 plain56); BENCH=(resnet20 resnet56 resnet110); ITERS=200
    KS=(1 2 4 8); CONC=(resnet20 resnet56); PAPER=paper; ROWS=(plain20 plain56 resnet20 resnet56)
    POOL=(--executor pool --gpus all --runs-per-gpu 4); PLAN_ONLY=(); ONE_SLOT=(--executor pool --gpus 0 --runs-per-gpu 1)
else
    DEV=cpu; STEPS=30; LONG=150; MODELS=(resnet8 plain8); BENCH=(resnet8); ITERS=3
    KS=(1 2); CONC=(resnet8); PAPER=smoke; ROWS=(plain20 resnet20)
    POOL=(--executor pool --workers 2); PLAN_ONLY=(--only plain20 resnet20); ONE_SLOT=(--executor pool --workers 1)
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
RUN=("$PY" -m resnet_exp run --device "$DEV" --data "$DATA" --data-dir "$WORK/data")
PAPER_RESULTS="$WORK/paper"

pack() {  # step 3's results folder, checkpoints included, in parts of 14 MB (at most 3)
    rm -f "$OUT_DIR"/paper.tar.gz.part-*
    tar czf - -C "$PAPER_RESULTS" . | split -b 14m -a 1 - "$OUT_DIR/paper.tar.gz.part-"
    n=$(ls "$OUT_DIR"/paper.tar.gz.part-* | wc -l)
    [ "$n" -le 3 ] || say "WARNING: $n parts: more than the 8 files a device call returns"
    ls -la "$OUT_DIR"
}

paper() {  # train step 3's four nets at once until the limit, then pack
    local left=$(( LIMIT - SECONDS - PACK_S ))
    if [ "$left" -lt 30 ]; then say "step 3: no time left (${left}s)"; return; fi
    say "step 3: profile $PAPER, ${ROWS[*]} at once, ${left}s"
    timeout -s TERM -k 20 "$left" "${RUN[@]}" experiments/figure1.yaml experiments/figure6.yaml --profile "$PAPER" \
        --only "${ROWS[@]}" --results "$PAPER_RESULTS" "${POOL[@]}" \
        2>&1 | quiet
    pack
}

if [ -n "$PARTS" ]; then
    mkdir -p "$PAPER_RESULTS"
    if ls "$PARTS"/paper.tar.gz.part-* >/dev/null 2>&1; then
        cat "$PARTS"/paper.tar.gz.part-* | tar xzf - -C "$PAPER_RESULTS" || { say "the parts in $PARTS do not unpack"; exit 2; }
        say "continuing step 3 from $PARTS"
    else
        say "no paper.tar.gz.part-* in $PARTS: step 3 starts afresh"
    fi
    "$PY" -m resnet_exp data --data "$DATA" --data-dir "$WORK/data"
    paper
    exit 0
fi

# ---- 1. correctness
"$PY" -m resnet_exp data --data "$DATA" --data-dir "$WORK/data"   # decode and cache once
exp() {  # exp NAME STEPS OVERRIDES ROW...: an experiment file, each ROW the inside of a YAML mapping
    # The schedule makes every capture a run makes: the warm-up's lr on every depth
    # (warmup_min_depth 0), the end of the warm-up (its first check, below 95 % error), two milestones.
    local file="$WORK/$1.yaml" n="$2"; shift 2
    printf 'defaults: {iterations: %s, milestones: [%s, %s], eval_every: 25, checkpoint_every_s: 0, test_per_class: 100, ' \
        "$n" $(( n / 2 )) $(( n * 3 / 4 )) > "$file"
    printf 'warmup_lr: 0.01, warmup_min_depth: 0, warmup_check_every: %s, warmup_until_train_error: 95.0%s}\nrows:\n' \
        $(( n / 6 )) "$1" >> "$file"; shift
    for r in "$@"; do echo "  - {$r}" >> "$file"; done
    echo "$file"
}
CAPTURES=4  # a graphed run's captures under that schedule: 0.01, 0.1 at the warm-up's end, 0.01, 0.001
EQ=("model: ${MODELS[0]}" "model: ${MODELS[1]}")
BF16="model: ${MODELS[0]}, name: ${MODELS[0]}-bf16, precision: bf16"  # bf16 graphs, deterministic files only
say "step 1a: eager against graph, ${STEPS} steps of ${MODELS[*]} (and ${MODELS[0]} in bf16 under deterministic)"
by "$END1" "lr probe" "$PY" scripts/gpu_check_probe.py "$WORK/probe.json" --device "$DEV"  # a replay after a changed lr
for det in true false; do
    rows=("${EQ[@]}"); [ "$det" = true ] && rows+=("$BF16")
    for graph in false true; do
        f="$(exp "eq-$graph-$det" "$STEPS" ", cuda_graph: $graph, deterministic: $det" "${rows[@]}")"
        by "$END1" "eq-$graph-$det" "${RUN[@]}" "$f" --profile paper --results "$WORK/eq-$graph-$det" --executor local 2>&1 | quiet | tail -4
    done
done
f="$(exp "eq-false-false" "$STEPS" ", cuda_graph: false, deterministic: false" "${EQ[@]}")"
by "$END1" eq-again "${RUN[@]}" "$f" --profile paper --results "$WORK/eq-again" --executor local 2>&1 | quiet | tail -2   # eager's own spread
say "step 1a: one pool worker trains ${MODELS[*]} graphed, back to back (each must equal its run alone)"
f="$(exp "pool" "$STEPS" ", cuda_graph: true, deterministic: true" "${EQ[@]}")"
by "$END1" "pool worker" "${RUN[@]}" "$f" --profile paper --results "$WORK/pool" "${ONE_SLOT[@]}" 2>&1 | quiet | tail -3

say "step 1b: deterministic mode: a second run of one seed, and one stopped by SIGTERM and resumed"
f="$(exp "det" "$LONG" ", deterministic: true" "model: ${MODELS[1]}")"
by "$END1" det-a "${RUN[@]}" "$f" --profile paper --results "$WORK/det-a" --executor local 2>&1 | quiet | tail -2
by "$END1" det-b "${RUN[@]}" "$f" --profile paper --results "$WORK/det-b" --executor local 2>&1 | quiet | tail -2
if [ $(( END1 - SECONDS )) -ge 5 ]; then
    # started by timeout directly (not through `by`, a subshell): the SIGTERM below goes to
    # timeout, which hands it to the run
    timeout -s TERM -k 20 $(( END1 - SECONDS )) \
        "${RUN[@]}" "$f" --profile paper --results "$WORK/det-resumed" --executor local > "$WORK/resumed.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 2400); do  # SIGTERM once the run has logged 2 lines: mid-run, graphed
        n=$(cat "$WORK"/det-resumed/det/*/log.csv 2>/dev/null | wc -l)
        [ "$n" -ge 3 ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05
    done
    kill -TERM "$pid" 2>/dev/null; wait "$pid"; status=$?
    say "SIGTERM mid-run: exit $status ($(tail -1 "$WORK/resumed.out"))"
fi
by "$END1" det-resumed "${RUN[@]}" "$f" --profile paper --results "$WORK/det-resumed" --executor local 2>&1 | quiet | tail -2

say "step 1c: a smoke run of Figure 1"
by "$END1" "Figure 1 smoke" "${RUN[@]}" experiments/figure1.yaml --profile smoke --results "$WORK/smoke" 2>&1 | quiet | tail -4
"$PY" scripts/gpu_check_verdicts.py "$WORK" "$OUT_DIR/check.json" --models "${MODELS[@]}" --det-models "${MODELS[1]}" \
    --bf16-models "${MODELS[0]}-bf16" --captures "$CAPTURES" \
    $([ "$DEV" = cuda ] && echo --cuda)   # on a GPU a graphed run that fell back to eager fails


# ---- 2. speed: bench by 35 % of the step's time, the plan by 50 %, K at once by 75 % (by its end without MPS)
say "step 2: bench (eager, graph, graph-tf32, graph-bf16) and K runs at once"
MPS=no; command -v nvidia-cuda-mps-control >/dev/null 2>&1 && [ "$DEV" = cuda ] && MPS=yes
share=$(( END2 - SECONDS ))
END_BENCH=$(( SECONDS + share * 35 / 100 )); END_PLAN=$(( SECONDS + share * 50 / 100 )); END_K=$END2
[ "$MPS" = yes ] && END_K=$(( SECONDS + share * 75 / 100 ))
by "$END_BENCH" bench "$PY" -m resnet_exp bench --device "$DEV" --models "${BENCH[@]}" --iters "$ITERS" \
    --modes eager graph graph-tf32 graph-bf16 --data "$DATA" --out "$OUT_DIR/bench.json"
say "step 2b: the plan's estimate for Figure 6 at the paper's schedule here (a dry run; executor: the default)"
by "$END_PLAN" "Figure 6 plan" "${RUN[@]}" experiments/figure6.yaml --profile paper --dry-run "${PLAN_ONLY[@]}" \
    --results "$WORK/plan" 2>&1 | quiet | grep -E "^Plan|~|step:|ESTIMATED"
by "$END_K" "K runs at once" "$PY" -m resnet_exp bench --device "$DEV" --models "${CONC[@]}" \
    --iters "$ITERS" --concurrent "${KS[@]}" --modes graph --out "$OUT_DIR/concurrent.json"
if [ "$MPS" = yes ]; then
    export CUDA_MPS_PIPE_DIRECTORY="$WORK/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps-log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then
        say "MPS daemon started"
        by "$END2" "K runs at once under MPS" "$PY" -m resnet_exp bench --device "$DEV" --models "${CONC[@]}" --iters "$ITERS" \
            --concurrent "${KS[@]}" --modes graph --out "$OUT_DIR/concurrent-mps.json"
        echo quit | timeout 20 nvidia-cuda-mps-control; say "MPS daemon stopped (exit $?)"
    else
        say "MPS: the daemon did not start"
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else
    say "MPS: skipped (no nvidia-cuda-mps-control or no GPU)"
fi

# ---- 3. the paper's schedule, with the time left
paper
say "done in ${SECONDS}s"
