#!/usr/bin/env bash
# The paper's question on CIFAR-10 at budgets that can settle it (issue 21; docs/scaling_study.md):
#   1. grid:  `effnas grid --phi 1 --seeds 3` from B0, 8 candidates spread over the constraint
#             surface (the paper's point among them) + the unscaled baseline, 1 epoch of a
#             10,000-image subset (docs/proxy.md: Spearman 0.90 against 8 epochs), judged on a
#             5,000-image validation hold-out;
#   2. study: B0 at 2x MACs, seven arms (six methods, compound with the grid's coefficients, and
#             compound_paper with the paper's), 3 seeds, 2 and 8 epochs, judged on the 10,000-image
#             test split;
#   3. sweeps (Figure 3): width, depth and resolution alone at ~4x MACs, 8 epochs, 3 seeds.
# Resumable: run it again and every step continues where it stopped (a finished step is skipped).
# On 2 CPU cores: grid ~45 min, study ~1 h at 2 epochs + ~4 h at 8, sweeps ~3 h (9 trainings at ~4x MACs).
#
#   benchmarks/paper_question.sh            # OUT=results/cifar CIFAR=../shared/datasets/cifar10
#   nohup benchmarks/paper_question.sh > results/cifar/log 2>&1 &
#   STEPS=sweeps nohup benchmarks/paper_question.sh > results/cifar/sweeps.log 2>&1 &
set -uo pipefail
OUT=${OUT:-results/cifar}
PY=${PYTHON:-.venv/bin/python}
CIFAR=${CIFAR:-../shared/datasets/cifar10}
DATA=(data=cifar10 "data.root=$CIFAR" data.max_train=10000)
RUN=(ray.enabled=false "run.threads=${THREADS:-2}")
mkdir -p "$OUT"

status() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('status',''))" "$1/manifest.json" 2>/dev/null; }

# step NAME RESUME_COMMAND... -- START_ARGS...
step() {
  local name=$1 dir=$OUT/$1; shift
  local resume=() start=()
  while [ "$1" != "--" ]; do resume+=("$1"); shift; done; shift
  start=("$@")
  echo "== $name: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$(status "$dir")" = done ]; then echo "== $name: done already"; return 0; fi
  if [ -d "$dir" ]; then
    "$PY" -m effnas "${resume[@]}" --resume "$dir"
  else
    "$PY" -m effnas "${start[@]}" "run.dir=$dir"
  fi
  local rc=$?
  echo "== $name: exit $rc at $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  return $rc
}

want() { [[ " ${STEPS:-grid study sweeps} " == *" $1 "* ]]; }  # STEPS="sweeps": only those
! want grid || step grid grid -- grid --phi 1 --seeds 3 max_candidates=8 "${DATA[@]}" data.val_fraction=0.1 \
  proxy=default proxy.epochs=1 "${RUN[@]}" || exit $?

ARMS=baseline,depth,width,resolution,compound,compound_paper,dwr
! want study || step study study scaling -- study scaling --arch efficientnet_b0 --flops 2x --from "$OUT/grid" \
  --seeds 3 --budgets 2,8 --methods $ARMS "${DATA[@]}" data.val_fraction=0.02 proxy=default \
  "${RUN[@]}" || exit $?

# Figure 3: each dimension alone at ~4x B0's MACs (width 2 -> 3.76x, depth 4 -> 4.08x, resolution
# 2 -> 3.99x); the 1x and ~2x points of the same curves are the study's baseline, width, depth and
# resolution arms (same data, split, seeds and budget), so each sweep trains only its 4x point.
want sweeps && for dim in width:2 depth:4 resolution:2; do
  step "sweep8_${dim%%:*}" study scaling -- study scaling --arch efficientnet_b0 --sweep "${dim%%:*}" \
    --multipliers "${dim##*:}" --seeds 3 --budgets 8 "${DATA[@]}" data.val_fraction=0.02 proxy=default \
    "${RUN[@]}" || exit $?
done
