"""Agreement and speed of the analytic cost model against fvcore on the built model.

Prints, per official model and per other baseline of the paper (MobileNetV1/V2, ResNet-50/101/152;
each at its own resolution) and over N random architectures (random choices of every block token),
the largest relative difference per operator kind and the time of each counter; the baselines
also against their published params and MACs. Usage:
python benchmarks/bench_cost.py [--random 100] [--seed 0] [--skip-official]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time

import torch

from search_spaces.builder import fvcore_count
from search_spaces.cost import count
from search_spaces.official import (
    BASELINE_MACS,
    BASELINE_PARAMS,
    BASELINES,
    OFFICIAL_PARAMS,
    OFFICIAL_TABLE,
    baseline,
    official,
)
from search_spaces.random_arch import random_arch


def compare(arch, resolution=None, num_classes=1000):
    t0 = time.perf_counter()
    cost = count(arch, resolution=resolution, num_classes=num_classes)
    t_analytic = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, by_op = fvcore_count(arch, resolution=resolution, num_classes=num_classes)
    t_fvcore = time.perf_counter() - t0
    worst = max(abs(cost.by_op.get(k, 0) - v) / max(v, 1) for k, v in by_op.items())
    if set(by_op) != set(cost.by_op):
        worst = float("inf")
    return cost, params, worst, t_analytic, t_fvcore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-official", action="store_true", help="leave out B0..B7")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"$ python {' '.join(sys.argv)}")
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"{'model':<16}{'res':>5}{'params':>12}{'ref params':>12}{'macs (G)':>10}{'fvcore (G)':>11}"
        f"{'max op diff':>12}{'analytic ms':>12}{'fvcore ms':>10}{'speed-up':>9}{'acts (M)':>9}"
    )
    ta_all, tf_all = 0.0, 0.0
    for name in [] if args.skip_official else OFFICIAL_TABLE:
        arch = official(name)
        cost, params, worst, ta, tf = compare(arch)
        ta_all, tf_all = ta_all + ta, tf_all + tf
        ok = "=" if params == cost.params == OFFICIAL_PARAMS[name] else "!"
        print(
            f"{name:<16}{arch.resolution:>5}{cost.params:>12,}{OFFICIAL_PARAMS[name]:>11,}{ok}"
            f"{cost.macs / 1e9:>10.4f}{cost.fvcore_total / 1e9:>11.4f}{worst:>12.2e}"
            f"{ta * 1e3:>12.3f}{tf * 1e3:>10.1f}{tf / ta:>8.0f}x{cost.activations / 1e6:>9.2f}"
        )
    print(
        f"\n{'baseline':<16}{'res':>5}{'params':>12}{'ref params':>12}{'macs (G)':>10}{'ref macs':>10}"
        f"{'diff':>8}{'fvcore (G)':>11}{'max op diff':>12}{'fvcore ms':>10}{'acts (M)':>9}"
    )
    for name in BASELINES:
        arch = baseline(name)
        cost, params, worst, ta, tf = compare(arch)
        ok = "=" if params == cost.params == BASELINE_PARAMS[name] else "!"
        ref = BASELINE_MACS[name]
        print(
            f"{name:<16}{arch.resolution:>5}{cost.params:>12,}{BASELINE_PARAMS[name]:>11,}{ok}"
            f"{cost.macs / 1e9:>10.4f}{ref / 1e9:>10.4f}{cost.macs / ref - 1:>+8.2%}"
            f"{cost.fvcore_total / 1e9:>11.4f}{worst:>12.2e}{tf * 1e3:>10.1f}{cost.activations / 1e6:>9.2f}"
        )
    rng = random.Random(args.seed)
    worst_all, mismatched_params = 0.0, 0
    ta_r, tf_r = 0.0, 0.0
    for _ in range(args.random):
        arch = random_arch(rng)
        cost, params, worst, ta, tf = compare(arch, num_classes=rng.choice((10, 100, 1000)))
        worst_all = max(worst_all, worst)
        mismatched_params += params != cost.params
        ta_r, tf_r = ta_r + ta, tf_r + tf
    print(
        f"{args.random} random archs: max per-operator relative difference {worst_all:.2e}, "
        f"param mismatches {mismatched_params}, analytic {ta_r / args.random * 1e3:.3f} ms/arch, "
        f"fvcore {tf_r / args.random * 1e3:.1f} ms/arch, speed-up {tf_r / ta_r:.0f}x"
    )
    if ta_all:
        print(
            f"official family: analytic {ta_all * 1e3:.2f} ms total, fvcore {tf_all:.2f} s total, "
            f"speed-up {tf_all / ta_all:.0f}x"
        )


if __name__ == "__main__":
    main()
