"""Does a proxy budget tell architectures apart? Accuracy spread, seed noise and rank agreement.

A search can only prefer one architecture to another when their proxy accuracies differ by more
than a re-run with another seed moves them. This trains the same N random architectures of the
search space (the ones a search would train: MACs at most `reject_above` x T, as the driver
rejects the rest) under each budget in `--epochs`, and prints per budget: the median accuracy and
its interquartile range (IQR) over the architectures, the seed noise (median |acc(seed) -
acc(seed+1)| over the architectures, when `--replicate` names that budget), the Spearman rho of the
two seeds' rankings and of the budget's ranking against the longest budget's, and the seconds it
took. Rows land in `--csv` as they finish; a rerun with the same CSV skips what is there
(resumable), and `--shard K/N` trains every N-th architecture from the K-th so two processes can
share a machine.

    python benchmarks/budget_spread.py --archs 50 --epochs 4,1 --replicate 1 --threads 1 \\
        --csv spread.csv [--shard 0/2] [--stage search] [hydra overrides of that stage]
    python benchmarks/budget_spread.py --csv spread.csv --table   # the table of what is there

The proxy and data are `--stage`'s composed config (default: search's, i.e. the embedded digits
with proxy=digits); `--epochs` replaces its epochs.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from effnas.config import compose
from foundation.units import parse_flops
from search_spaces.cost import count
from search_spaces.mnasnet import MnasNetSpace

FIELDS = ["arch", "epochs", "seed", "accuracy", "seconds", "macs", "blocks"]


def architectures(cfg, n: int, seed: int) -> list:
    """The first `n` samples of the space a search would train (seeded; MACs within reject_above x T)."""
    space = MnasNetSpace.from_config(cfg.space)
    limit = float(cfg.reject_above or float("inf")) * parse_flops(cfg.target_flops)
    rng, archs = random.Random(seed), []
    while len(archs) < n:
        arch = space.decode(space.sample(rng))
        if count(arch).macs <= limit:
            archs.append(arch.scaled(name=f"random{len(archs)}"))
    return archs


def done_keys(path: Path) -> set[tuple[str, float, int]]:
    if not path.is_file() or not path.stat().st_size:
        return set()
    rows = pd.read_csv(path)
    return {(r.arch, float(r.epochs), int(r.seed)) for r in rows.itertuples()}


def table(path: Path) -> pd.DataFrame:
    rows = pd.read_csv(path).dropna(subset=["accuracy"])
    longest = rows.epochs.max()
    base_seed = rows.seed.min()
    main = rows[rows.seed == base_seed].pivot(index="arch", columns="epochs", values="accuracy")
    out = []
    for epochs in sorted(main.columns):
        acc = main[epochs].dropna()
        q1, q3 = acc.quantile(0.25), acc.quantile(0.75)
        line = {
            "epochs": epochs,
            "archs": len(acc),
            "median": acc.median(),
            "IQR": q3 - q1,
            "min": acc.min(),
            "max": acc.max(),
            "seconds/arch": rows[(rows.epochs == epochs) & (rows.seed == base_seed)].seconds.mean(),
        }
        both = main[[epochs, longest]].dropna()
        line[f"rho vs {longest:g} ep"] = (
            spearmanr(both[epochs], both[longest]).statistic if epochs != longest and len(both) > 2 else None
        )
        other = rows[(rows.epochs == epochs) & (rows.seed != base_seed)].set_index("arch").accuracy
        if len(other):
            pair = pd.concat([acc, other], axis=1, join="inner")
            line["seed noise"] = (pair.iloc[:, 0] - pair.iloc[:, 1]).abs().median()
            line["rho seed vs seed"] = spearmanr(pair.iloc[:, 0], pair.iloc[:, 1]).statistic
        out.append(line)
    return pd.DataFrame(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=50)
    ap.add_argument("--epochs", default="4,1", help="budgets, comma-separated (epochs of the train split)")
    ap.add_argument("--replicate", default="", help="budgets also trained with seed+1 (seed noise)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shard", default="0/1", help="K/N: train architectures K, K+N, K+2N, ...")
    ap.add_argument("--stage", default="search", choices=("search", "grid"))
    ap.add_argument("--csv", required=True)
    ap.add_argument("--table", action="store_true", help="print the table of --csv and stop")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    budgets = [float(e) for e in args.epochs.split(",") if e]
    replicate = [float(e) for e in args.replicate.split(",") if e]
    path = Path(args.csv)
    if not args.table:
        from training.data import load_dataset
        from training.proxy import evaluate

        k, n = (int(x) for x in args.shard.split("/"))
        cfg = compose(args.stage, args.overrides)
        data = load_dataset(cfg.data)
        archs = architectures(compose("search", []), args.archs, args.seed)[k::n]  # the default space and T
        done = done_keys(path)
        print(f"$ python {' '.join(sys.argv)}", flush=True)
        print(
            f"data {data.name}: {len(data.train)} train / {len(data.val)} val; proxy {cfg.proxy.resolution} px, "
            f"batch {cfg.proxy.batch_size}; budgets {budgets} epochs; {len(archs)} architectures in this shard; "
            f"threads {args.threads}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        jobs = [(a, e, args.seed) for a in archs for e in budgets]
        jobs += [(a, e, args.seed + 1) for a in archs for e in replicate]
        for i, (arch, epochs, seed) in enumerate(jobs):
            if (arch.name, epochs, seed) in done:
                continue
            proxy = OmegaConf.merge(cfg.proxy, {"epochs": epochs, "images": None})
            t = time.perf_counter()
            r = evaluate(arch, proxy, data, seed=seed, threads=args.threads)
            row = {
                "arch": arch.name,
                "epochs": epochs,
                "seed": seed,
                "accuracy": r.accuracy,
                "seconds": round(time.perf_counter() - t, 2),
                "macs": r.macs,
                "blocks": " ".join(arch.to_dict()["blocks"]),
            }
            new = not path.is_file() or not path.stat().st_size
            with path.open("a", newline="") as f:  # one appended line per row: a kill loses at most one
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(
                f"[{i + 1}/{len(jobs)}] {arch.name:10s} {epochs:g} ep seed {seed}: acc {r.accuracy} "
                f"({row['seconds']} s, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    result = table(path)
    print(f"\n$ python {' '.join(sys.argv)}   (load average now {os.getloadavg()[0]:.2f})")
    print(result.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
