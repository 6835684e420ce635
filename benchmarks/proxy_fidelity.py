"""Proxy fidelity: does the short proxy rank architectures as a longer run does?

Trains each architecture twice with the same seed - once on the short budget (the proxy search and
grid use) and once on a longer one - and prints both accuracies per architecture, the Kendall tau
and Spearman rho between the two rankings, and the time of each budget. The architectures are
the official family (B0, B1, ... width/depth scaled; each trained at the proxy resolution scaled
by its own resolution / 224, as the grid does) plus random samples of the MnasNet space
(conf/space/mnasnet.yaml), so the ranking spans both scaling and block choices.

    python benchmarks/proxy_fidelity.py [--official 4] [--random 6] [--short-epochs E]
        [--long-epochs 4E] [--threads 2] [--csv out.csv] [hydra overrides: data=cifar10 ...]

The proxy and data come from `--stage`'s composed config (default: search's), so the figure
is the fidelity of the budget the search actually uses. Overrides are that config's (`data=cifar10 data.root=DIR data.max_train=10000
proxy.batch_size=64 ...`); the default data is the embedded digits. `--quick` is a smoke test.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time

from omegaconf import OmegaConf
from scipy.stats import kendalltau, spearmanr

from effnas.config import CONF_DIR, compose
from search_spaces.mnasnet import MnasNetSpace
from search_spaces.official import OFFICIAL_TABLE, official
from training.data import load_dataset
from training.proxy import evaluate

QUICK = ["proxy.resolution=16", "proxy.batch_size=32", "proxy.augment=false"]  # digits-sized


def architectures(n_official: int, n_random: int, seed: int) -> list:
    archs = [official(name) for name in list(OFFICIAL_TABLE)[:n_official]]
    space = MnasNetSpace.from_config(OmegaConf.load(CONF_DIR / "space" / "mnasnet.yaml"))  # its defaults
    rng = random.Random(seed)
    for i in range(n_random):
        archs.append(space.decode(space.sample(rng)).scaled(name=f"mnasnet_random{i}"))
    return archs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=int, default=4, help="B0.. in order (B4+ are slow on a CPU)")
    ap.add_argument("--random", type=int, default=6, help="random MnasNet-space samples")
    ap.add_argument("--short-epochs", type=float, default=None, help="default: the proxy's epochs")
    ap.add_argument("--long-epochs", type=float, default=None, help="default: 4x the short budget")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: check the script only")
    ap.add_argument(
        "--stage", default="search", choices=("search", "grid", "train"), help="whose proxy and data config"
    )
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    overrides = [*(QUICK if args.quick else []), *args.overrides]
    cfg = compose(args.stage, overrides)
    short = float(args.short_epochs or (1.0 if args.quick else cfg.proxy.epochs))
    long = float(args.long_epochs or (3.0 if args.quick else 4 * short))
    data = load_dataset(cfg.data)
    archs = architectures(args.official, args.random, args.seed)
    base_res = int(cfg.proxy.resolution)
    print(f"$ python {' '.join(sys.argv)}")
    print(
        f"data {data.name}: {len(data.train)} train / {len(data.val)} val; proxy {base_res} px, batch "
        f"{cfg.proxy.batch_size}; short {short:g} epochs vs long {long:g} epochs; {len(archs)} architectures; "
        f"threads {args.threads}, load average {os.getloadavg()[0]:.2f} (shared machine: times are noisy)"
    )
    rows = []
    header = f"{'arch':18s} {'MACs@224':>9s} {'res':>4s} {'short acc':>9s} {'short s':>8s} {'long acc':>9s} {'long s':>7s}"
    print(header)
    for arch in archs:
        res = max(8, round(base_res * arch.resolution / 224))
        row = {"arch": arch.name, "blocks": " ".join(arch.to_dict()["blocks"]), "resolution": res}
        for label, epochs in (("short", short), ("long", long)):
            proxy = OmegaConf.merge(cfg.proxy, {"epochs": epochs, "images": None})
            t = time.perf_counter()
            r = evaluate(arch, proxy, data, resolution=res, seed=args.seed, threads=args.threads)
            row.update({f"{label}_accuracy": r.accuracy, f"{label}_seconds": time.perf_counter() - t})
            row["macs"] = r.macs
        rows.append(row)
        print(
            f"{arch.name:18s} {row['macs'] / 1e6:8.0f}M {res:4d} {_acc(row['short_accuracy'])} "
            f"{row['short_seconds']:8.1f} {_acc(row['long_accuracy'])} {row['long_seconds']:7.1f}",
            flush=True,
        )
    ok = [r for r in rows if r["short_accuracy"] is not None and r["long_accuracy"] is not None]
    a, b = [r["short_accuracy"] for r in ok], [r["long_accuracy"] for r in ok]
    if len(set(a)) > 1 and len(set(b)) > 1:
        agreement = (
            f"Kendall tau {kendalltau(a, b).statistic:.3f}, Spearman rho {spearmanr(a, b).statistic:.3f}"
        )
    else:
        agreement = "undefined (one budget gave every architecture the same accuracy)"
    print(
        f"\nrank agreement over {len(ok)} architectures: {agreement}; "
        f"short budget {sum(r['short_seconds'] for r in rows):.0f} s in all, long "
        f"{sum(r['long_seconds'] for r in rows):.0f} s"
    )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


def _acc(value: float | None) -> str:
    return f"{value:9.4f}" if value is not None else f"{'failed':>9s}"


if __name__ == "__main__":
    raise SystemExit(main())
