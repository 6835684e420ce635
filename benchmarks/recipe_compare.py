"""The paper's training recipe (`proxy=efficientnet`) against effnas's CIFAR-10 recipe
(`proxy=cifar_recipe`) on CIFAR-10 B0 at 32 px, for the same number of epochs (so about the same
wall time: each arm's is printed), and the paper recipe's EMA against the weights it averages.

    nice -n 19 .venv/bin/python benchmarks/recipe_compare.py [--epochs 5] [--threads 2]
        [--seed 0] [--root ../shared/datasets/cifar10] [--out results/recipe_compare] [--quick]

Arms run one after the other, each a normal `effnas train` run directory under `--out`; an arm
whose run finished is not trained again, and one that was killed is continued with
`effnas train --resume`, so the command can be rerun until it prints the table. What each arm
changes from its config, and why:
- both: CIFAR-10 from `--root` (1,000 training images held out for validation, the 10,000-image
  test split scored at the end), B0 at 32 px with stem stride 1 (stride 2 leaves a 1x1 map after
  stage 6 at 32 px: conf/proxy/cifar_recipe.yaml), `--epochs` epochs;
- cifar_recipe: as `benchmarks/cifar_recipe.py` runs it (dropout and drop path 0.1);
- efficientnet: the paper's recipe as conf/proxy/efficientnet.yaml has it (RMSProp, lr 0.016 per
  256 images, 5 warm-up epochs, the 350-epoch schedule's x0.97 decays compressed into the budget,
  AutoAugment, random-resized crop from 37 px, EMA 0.9999, B0's own dropout 0.2 and drop path 0.2),
  at 32 px with stem stride 1 instead of 224 px and stride 2, and its 5 warm-up epochs compressed
  with the rest of the schedule (5/350 of the budget): the decays already are (training/proxy.py
  `lr_at`), and 5 warm-up epochs of a 5-epoch budget would leave no schedule at all.

The table: each arm's test accuracy (the EMA's for `efficientnet`, and its raw weights' beside
it), the paired difference over the 10,000 test images (foundation/verdict.py; one seed per arm,
so the seed spread is not in the interval: the call says so), wall and training time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cifar_recipe import RECIPE  # noqa: E402
from effnas.cli import main as effnas  # noqa: E402
from foundation import per_image  # noqa: E402
from foundation.verdict import Scores, compare, describe  # noqa: E402

COMMON = ["data=cifar10", "data.val_fraction=0.02", "data.use_test=true", "arch=efficientnet_b0"]
ARMS = {
    "cifar_recipe": RECIPE,
    "efficientnet": ["proxy=efficientnet", *COMMON, "proxy.resolution=32", "proxy.stem_stride=1"],
}
PAPER_WARMUP, PAPER_EPOCHS = 5, 350  # conf/proxy/efficientnet.yaml (tensorflow/tpu warmup_epochs, paper §5.2)
QUICK = ["data.max_train=512", "proxy.report_every=0.5", "save_weights=false"]


def run_arm(name: str, overrides: list[str], run: Path) -> float:
    """Train (or continue) one arm into `run`; -> this call's wall seconds."""
    t0 = time.perf_counter()
    if (run / "summary.json").exists():
        return 0.0
    if run.exists():
        print(f"= effnas train --resume {run}", flush=True)
        code = effnas(["train", "--resume", str(run)])
    else:
        print(f"= effnas train {' '.join(overrides)} run.dir={run}", flush=True)
        code = effnas(["train", *overrides, f"run.dir={run}"])
    if code != 0:
        sys.exit(f"{name}: effnas train exited {code}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/recipe_compare")
    ap.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline only")
    args = ap.parse_args()

    out = Path(args.out)
    load0 = os.getloadavg()
    walls = {}
    for name, arm in ARMS.items():
        overrides = [*arm, f"data.root={args.root}", f"proxy.epochs={args.epochs}"]
        if name == "efficientnet":  # the paper's 5 warm-up epochs of 350, at this budget's scale
            overrides.append(f"proxy.warmup_epochs={PAPER_WARMUP * args.epochs / PAPER_EPOCHS:.4f}")
        overrides += [f"run.threads={args.threads}", f"run.seed={args.seed}"]
        if args.quick:
            overrides += QUICK
        walls[name] = run_arm(name, overrides, out / name)
    load1 = os.getloadavg()

    summaries = {name: json.loads((out / name / "summary.json").read_text()) for name in ARMS}
    records = {name: per_image.load(out / name, "test") for name in ARMS}
    print(f"\n$ {' '.join(sys.argv)}")
    print(f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end")
    head = f"{'arm':14s} {'epochs':>6s} {'train s':>8s} {'img/s':>6s} {'test acc':>9s} {'raw test':>9s}"
    print(head + "  weights")
    for name, s in summaries.items():
        raw = s.get("raw_test_accuracy")
        print(
            f"{name:14s} {s['epochs']:6.2f} {s['seconds']:8.0f} {s['images_per_second']:6.0f} "
            f"{s['test_accuracy']:9.4f} {'' if raw is None else f'{raw:.4f}':>9s}  {s['weights']}"
        )
    a, b = (Scores.of([records[name]]) for name in ("efficientnet", "cifar_recipe"))
    print(f"efficientnet - cifar_recipe on {a.images:,} test images: {describe(compare(a, b))}")
    paper = summaries["efficientnet"]
    if paper.get("raw_test_accuracy") is not None:
        print(f"EMA - raw weights (efficientnet): {paper['test_accuracy'] - paper['raw_test_accuracy']:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
