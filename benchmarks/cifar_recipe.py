"""The CIFAR-10 recipe: EfficientNet-B0 from scratch at 32 px with `conf/proxy/cifar_recipe.yaml`.

Runs `effnas train` (a normal run directory: metrics.csv per epoch, summary.json, model.pt) and
prints test accuracy, wall time and throughput. The target (issue 4) is >= 80% test accuracy in
<= 30 minutes of training on the 2-core CPU; it only means something on an otherwise idle
machine. `--quick` runs the same pipeline on a tiny budget (a smoke test, seconds).

    python benchmarks/cifar_recipe.py [--root ../shared/datasets/cifar10] [--threads 2]
        [--epochs N] [--run-root results] [--quick] [extra hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from effnas.cli import main as effnas

REPO = Path(__file__).resolve().parents[1]
RECIPE = [
    "proxy=cifar_recipe",
    "data=cifar10",
    "data.val_fraction=0.02",  # 1,000 held-out images to watch; the test split is the report
    "data.use_test=true",
    "arch=efficientnet_b0",
    "arch.dropout=0.1",  # B0's 0.2 / 0.2 regularise for 350 epochs; 15 epochs underfit first
    "arch.drop_path=0.1",
]
QUICK = ["data.max_train=512", "proxy.epochs=1", "proxy.report_every=0.5", "save_weights=false"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    ap.add_argument("--run-root", default="results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline only")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides")
    args = ap.parse_args()

    overrides = [*RECIPE, f"data.root={args.root}", f"run.threads={args.threads}"]
    overrides += [f"run.root={args.run_root}", f"run.seed={args.seed}"]
    if args.quick:
        overrides += QUICK
    if args.epochs is not None:
        overrides.append(f"proxy.epochs={args.epochs}")
    overrides += args.overrides
    print(f"$ python {' '.join(sys.argv)}")
    print(f"= effnas train {' '.join(overrides)}")
    print(f"load average at start {os.getloadavg()[0]:.2f} (the target assumes an idle machine)")
    t0 = time.perf_counter()
    code = effnas(["train", *overrides])
    wall = time.perf_counter() - t0
    runs = sorted((Path(args.run_root) / "train").iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((runs[-1] / "summary.json").read_text())
    print(f"\n{'epochs':>7s} {'train s':>8s} {'wall s':>7s} {'img/s':>7s} {'val acc':>8s} {'test acc':>9s}")
    print(
        f"{summary['epochs']:7.2f} {summary['seconds']:8.0f} {wall:7.0f} {summary['images_per_second']:7.0f} "
        f"{summary['val_accuracy']:8.4f} {summary['test_accuracy']:9.4f}"
    )
    print(f"run directory: {runs[-1]}  (load average at end {os.getloadavg()[0]:.2f})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
