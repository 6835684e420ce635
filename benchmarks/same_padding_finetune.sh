#!/usr/bin/env bash
# What a padding mismatch costs after fine-tuning (issue 24, docs/weights.md): timm's tf_ weights
# were trained with TF "SAME" padding; loading them into a symmetric-padding network (torchvision's
# layout) is the mistake this measures. No TF weights can be downloaded here, so the "TF
# checkpoint" is made here the same way: B0 with `padding: same` trained on CIFAR-10 classes 0-4
# (10,000 images, 3 epochs, as benchmarks/transfer.py's source), then fine-tuned on classes 5-9
# (500 images, 20 epochs, 3 seeds) twice: with the padding it was trained with (same) and with
# symmetric padding (the same weights through `--init FILE`: the keys and shapes are identical).
# Prints the test accuracy per seed and the paired verdict (foundation/verdict.py).
# Resumable (each training is its own run directory); ~6 min on 2 quiet cores.
#
#   benchmarks/same_padding_finetune.sh          # OUT=results/transfer/same_padding
set -euo pipefail
OUT=${OUT:-results/transfer/same_padding}
PY=${PYTHON:-.venv/bin/python}
CIFAR=${CIFAR:-../shared/datasets/cifar10}
SEEDS=${SEEDS:-3}
mkdir -p "$OUT"
for pad in same symmetric; do
  { grep -v '^#' conf/arch/efficientnet_b0.yaml | sed "s/^name: .*/name: efficientnet_b0_$pad/"; echo "padding: $pad"; } > "$OUT/b0_$pad.yaml"
done
DATA=(data=cifar10 "data.root=$CIFAR" data.val_fraction=0.02 proxy=default data.use_test=true run.threads=2 ray.enabled=false)
done_() { [ -f "$1/summary.json" ] && grep -q '"status": "done"' "$1/manifest.json"; }
train() {  # DIR ARGS...
  local dir=$1; shift
  if done_ "$dir"; then return 0; fi
  if [ -f "$dir/manifest.json" ]; then "$PY" -m effnas train --resume "$dir"; else "$PY" -m effnas train "$@" "run.dir=$dir"; fi
}
echo "== source: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
train "$OUT/source_same" "$OUT/b0_same.yaml" "${DATA[@]}" "data.classes=[0,1,2,3,4]" data.max_train=10000 proxy.epochs=3 run.seed=0
# a bare state_dict file, outside the run directory: a run's model.pt is read as that run (its arch
# recorded, so another padding is refused), a file is checked by keys and shapes only
cp "$OUT/source_same/model.pt" "$OUT/source_same_weights.pt"
for seed in $(seq 0 $((SEEDS - 1))); do
  for pad in same symmetric; do
    echo "== $pad seed $seed: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
    train "$OUT/ft_${pad}_s$seed" "$OUT/b0_$pad.yaml" "${DATA[@]}" "data.classes=[5,6,7,8,9]" data.max_train=500 \
      proxy.epochs=20 proxy.report_every=5 --init "$OUT/source_same_weights.pt" train.new_classifier=true "run.seed=$seed"
  done
done
echo "== done: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH=. "$PY" - "$OUT" "$SEEDS" <<'EOF'
import sys
from pathlib import Path

from foundation import per_image, verdict

out, seeds = Path(sys.argv[1]), int(sys.argv[2])
arms = {p: verdict.Scores.of([per_image.load(out / f"ft_{p}_s{s}", "test") for s in range(seeds)]) for p in ("same", "symmetric")}
for p, sc in arms.items():
    print(f"fine-tuned with {p:9s} padding: test accuracy {sc.mean:.4f}  seeds {', '.join(f'{a:.4f}' for a in sc.accuracies)}")
print("same - symmetric:", verdict.describe(verdict.compare(arms["same"], arms["symmetric"])))
EOF
