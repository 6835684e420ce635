#!/usr/bin/env bash
# The test suite under a concurrent training load (issue 22): RUNS times, CI exactly as
# ../shared/tools/fresh-clone-check runs it (a fresh clone of the committed branch, CI=true),
# with an `effnas train` of B0 on CIFAR-10 (cifar_recipe, 32 px, run.threads=2: both cores)
# training beside it from before the clone until the check ends. Prints, per run: exit code,
# wall seconds, pytest's summary line and the load average before and after; each run's CI log
# tail goes to $OUT/run<N>.log.
#
#   (setsid nohup benchmarks/suite_under_load.sh > results/suite_under_load.log 2>&1 &)
#   RUNS=1 LOAD=none benchmarks/suite_under_load.sh     # the same, quiet
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}
LOAD=${LOAD:-train}
OUT=${OUT:-results/suite_under_load}
DATA=${DATA:-../shared/datasets/cifar10}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
echo "\$ RUNS=$RUNS LOAD=$LOAD $0 at $(git rev-parse --short HEAD), $(nproc) cores"
for i in $(seq 1 "$RUNS"); do
  load=
  if [ "$LOAD" = train ]; then
    dir=$OUT/load$i; rm -rf "$dir"
    setsid "$PY" -m effnas train proxy=cifar_recipe data=cifar10 "data.root=$DATA" arch=efficientnet_b0 \
      proxy.epochs=100 run.threads=2 save_weights=false "run.dir=$dir" > "$OUT/load$i.log" 2>&1 &
    load=$!
    sleep 60  # the load is training (data decoded, first steps) before the clone starts
  fi
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  SECONDS=0
  ../shared/tools/fresh-clone-check > "$OUT/run$i.log" 2>&1; code=$?
  wall=$SECONDS
  after=$(cut -d' ' -f1-3 /proc/loadavg)
  if [ -n "$load" ]; then
    alive=yes; kill -0 "$load" 2>/dev/null || alive="no (see $OUT/load$i.log)"
    kill -- -"$load" 2>/dev/null; wait "$load" 2>/dev/null
  fi
  summary=$(grep -E "[0-9]+ (passed|failed)" "$OUT/run$i.log" | tail -1)
  echo "run $i: exit $code, ${wall}s, load $before -> $after, training alongside: ${alive:-none}; $summary"
done
