#!/usr/bin/env bash
# The paired experiment (sparse_only against crac, one seed = a training seed and an
# annotation draw) at the paper's widths on one GPU: every seed its own process, all
# at once on the same device, sampling in worker processes; then one summary of all
# runs with the minutes the whole took (benchmarks/time_to_claim.py --summarize).
#
#   bash benchmarks/gpu_paired.sh                       # the GPU run (sized for about 8 minutes of an H200; not yet run on one)
#   ITERATIONS=2 SEEDS="0 1" SETTINGS="--set dataset=synthetic --set widths=4,8 --set patch=4,32,32 \
#       --set min_size=1 --set voxel_budget=0.2" WORKERS=1 bash benchmarks/gpu_paired.sh   # CPU rehearsal
#
# Writes NAME.csv and NAME.json under OUT (default data/reference/time_to_claim) and the
# log of every seed under runs/gpu_paired/. Sizing (benchmarks/results/gpu_check_h200.log): at the
# paper scale a crac step took 526 ms with in-process sampling, of which 299 ms sampling and about
# 100 ms the networks; with workers drawing ahead, five processes sharing one GPU should reach
# about 400 iterations per run in 6 minutes, scoring included. Nothing is downloaded; the data are what
# AFFCONS_DATA_DIR holds (the real FIB-SEM volume on this project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NAME=${NAME:-paper_widths_gpu}
ITERATIONS=${ITERATIONS:-400}
SEEDS=${SEEDS:-0 1 2 3 4}
WORKERS=${WORKERS:-3}
OUT=${OUT:-data/reference/time_to_claim}
# the paper's widths and patch, notebook 01's annotation (time_to_claim.py's base) and schedule
SETTINGS=${SETTINGS:---set widths=28,36,48,64,80 --set patch=18,160,160 --set lr=0.001}
COMMON="--set iterations=$ITERATIONS --set lr_schedule=cosine --set warmup=0.1 --set workers=$WORKERS $SETTINGS"
WORK=runs/gpu_paired/$NAME
rm -rf "$WORK" && mkdir -p "$WORK"

start=$(date +%s)
pids=()
for seed in $SEEDS; do
    # shellcheck disable=SC2086  # COMMON is a list of options
    "$PY" benchmarks/time_to_claim.py "${NAME}_seed$seed" --seeds "$seed" $COMMON --out "$WORK/parts" \
        --runs "$WORK/runs" > "$WORK/seed$seed.log" 2>&1 &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [ "$failed" -ne 0 ]; then
    echo "a seed's run failed; its log is under $WORK" >&2
    tail -n 20 "$WORK"/seed*.log >&2
    exit 1
fi
minutes=$("$PY" -c "print(($(date +%s) - $start) / 60)")
"$PY" -c "import pandas as pd, sys; pd.concat(pd.read_csv(f) for f in sys.argv[2:]).to_csv(sys.argv[1], index=False)" \
    "$WORK/$NAME.csv" "$WORK"/parts/*.csv
threads=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['threads'])" "$(ls "$WORK"/parts/*.json | head -1)")
# shellcheck disable=SC2086
"$PY" benchmarks/time_to_claim.py "$NAME" $COMMON --summarize "$WORK/$NAME.csv" --minutes "$minutes" \
    --threads "$threads" --out "$OUT"
