"""Export the trained architectures of a search run as a small, self-describing table (the
surrogate benchmark's training data, committed under benchmarks/data/).

    python benchmarks/export_collection.py results/search/<run> benchmarks/data/cifar10_mnasnet_proxy.csv

One row per trained trial: choices (the space's indices), the block strings, MACs, params,
activations (deployment model, 224 px, 1000 classes), proxy accuracy, seconds, the training seed,
the space's fingerprint, and the proxy budget (data and proxy keys that decide what a trial
saw). The collection itself is a random search, so its trials spread over the space's MACs up to
the search's reject_above x T:

    effnas search --target-flops 400M --trials 230 data=cifar10 data.root=../shared/datasets/cifar10 \
        data.max_train=5000 data.val_fraction=0.02 proxy=default proxy.epochs=1 ray.num_cpus=2
    effnas search --resume results/search/<run>      # after an interruption: no trial lost or redone
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from search_spaces.mnasnet import MnasNetSpace

BUDGET_KEYS = (
    "data.name",
    "data.max_train",
    "data.val_fraction",
    "proxy.epochs",
    "proxy.images",
    "proxy.batch_size",
    "proxy.resolution",
    "proxy.stem_stride",
    "proxy.lr",
)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    manifest = json.loads((run / "manifest.json").read_text())
    space = MnasNetSpace.from_config(cfg.space)
    trials = pd.read_csv(run / "trials.csv")
    ok = trials[trials.status == "ok"].copy()
    table = ok[["id", "choices", "arch", "macs", "params", "activations", "accuracy", "seconds"]].copy()
    table["seed"] = int(cfg.run.seed)
    table["space"] = space.fingerprint()
    budget = ";".join(f"{k}={OmegaConf.select(cfg, k)}" for k in BUDGET_KEYS)
    table["budget"] = budget
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(
        f"{len(table)} trained architectures ({len(trials) - len(ok)} rejected/failed rows left out) "
        f"from {run} (dataset fingerprint {manifest.get('dataset', {}).get('fingerprint', '?')[:12]}) "
        f"-> {out}\nbudget: {budget}\nMACs {table.macs.min() / 1e6:.0f}M-{table.macs.max() / 1e6:.0f}M, "
        f"accuracy {table.accuracy.min():.3f}-{table.accuracy.max():.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
