"""Zero-cost pre-ranking: do naswot / synflow at initialization rank architectures as the trained
proxy does, and does pre-ranking beat plain random search at an equal training budget?

Scores every trained architecture of a collected table (or search runs) with each zero-cost
proxy on one batch of the run's data, at the proxy's resolution, stem stride and class count,
and prints Spearman / Kendall against the trained proxy accuracy (and against the reward), with
params and MACs as the baselines every zero-cost paper reports. Then replays searches on the
table: random search trains N uniformly drawn architectures; pre-ranked search draws K candidates
per training slot and trains the best-scored one. Both at the same N trainings, `--repeats`
times; prints the mean and median best reward and how often pre-ranking wins.

    python benchmarks/bench_zero_cost.py --table benchmarks/data/cifar10_mnasnet_proxy.csv \
        [--candidates 10] [--budgets 10,25,50] [--repeats 2000] [--scores out.csv] \
        data=cifar10 data.root=../shared/datasets/cifar10 data.max_train=5000 proxy=default
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr

from effnas.config import compose
from search_spaces.mnasnet import MnasNetSpace
from training.data import load_dataset
from training.zero_cost import PROXIES, batch_of, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="CSV with choices, accuracy, macs (trained rows)")
    ap.add_argument("--candidates", type=int, default=10, help="K: candidates scored per training")
    ap.add_argument("--budgets", default="10,25,50")
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--scores", default=None, help="write the per-architecture scores here")
    ap.add_argument("--w", type=float, default=-0.07)
    ap.add_argument("--target", type=float, default=400e6)
    ap.add_argument("overrides", nargs="*", help="search config overrides (data, proxy)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    cfg = compose("search", args.overrides)
    space = MnasNetSpace.from_config(cfg.space)
    table = pd.read_csv(args.table)
    if "status" in table:
        table = table[table.status == "ok"]
    table = table[table.accuracy.notna()].reset_index(drop=True)
    data = load_dataset(cfg.data)
    images = batch_of(data, args.batch, int(cfg.proxy.resolution), seed=int(cfg.run.seed))
    t0 = time.time()
    for proxy in PROXIES:
        table[proxy] = [
            score(
                space.decode(tuple(int(c) for c in text.split())),
                proxy,
                images,
                num_classes=data.num_classes,
                stem_stride=cfg.proxy.stem_stride,
                seed=int(cfg.run.seed),
            )
            for text in table.choices
        ]
    seconds = (time.time() - t0) / len(table)
    table["reward"] = table.accuracy * (table.macs / args.target) ** args.w
    load = os.getloadavg()[0]
    print(
        f"{len(table)} trained architectures from {args.table}; one batch of {args.batch} {cfg.data.name} "
        f"images at {cfg.proxy.resolution} px; {seconds:.2f} s per architecture for both scores, "
        f"load average {load:.2f}"
    )
    print(f"\n{'score':<10} {'Spearman acc':>13} {'Kendall acc':>12} {'Spearman reward':>16}")
    baselines = ["params"] if "params" in table else []
    for col in [*PROXIES, *baselines, "macs"]:
        ok = np.isfinite(table[col])
        rho = spearmanr(table[col][ok], table.accuracy[ok]).statistic
        tau = kendalltau(table[col][ok], table.accuracy[ok]).statistic
        rho_r = spearmanr(table[col][ok], table.reward[ok]).statistic
        print(f"{col:<10} {rho:13.3f} {tau:12.3f} {rho_r:16.3f}")

    rng = np.random.default_rng(0)
    reward = table.reward.to_numpy()
    n = len(table)
    print(f"\nequal training budget, {args.repeats} replays, K = {args.candidates} candidates per training")
    print(f"{'budget':>6} {'method':<18} {'mean best':>10} {'median':>8} {'P(beats random)':>16}")
    for budget in [int(b) for b in args.budgets.split(",")]:
        plain = np.array([reward[rng.choice(n, budget, replace=False)].max() for _ in range(args.repeats)])
        print(f"{budget:>6} {'random':<18} {plain.mean():10.4f} {np.median(plain):8.4f} {'':>16}")
        for proxy in PROXIES:
            s = np.nan_to_num(table[proxy].to_numpy(), nan=-np.inf)
            best = []
            for _ in range(args.repeats):
                draws = rng.choice(n, (budget, args.candidates), replace=True)
                picked = draws[np.arange(budget), np.argmax(s[draws], axis=1)]
                best.append(reward[picked].max())
            best = np.array(best)
            wins = float(np.mean(best > plain)) + 0.5 * float(np.mean(best == plain))
            print(
                f"{budget:>6} {proxy + ' pre-ranked':<18} {best.mean():10.4f} {np.median(best):8.4f} {wins:16.3f}"
            )
    if args.scores:
        table.to_csv(args.scores, index=False)
    print("command: python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
