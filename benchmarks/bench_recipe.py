"""What the paper recipe's parts cost per step: the batched augmentation (`proxy.crop`,
`proxy.augment_policy`) per batch, and a B0 training step with and without the recipe's
augmentation and EMA.

    nice -n 19 .venv/bin/python benchmarks/bench_recipe.py [--threads 1] [--repeats 5] [--steps 6]

Part 1 times `training.data.augment.BatchAugment` on random uint8 batches (the cost of these
operations hardly depends on the pixels): the proxies' pad crop + flip, the random-resized crop,
and that crop followed by RandAugment or AutoAugment, at 32 px (stored at 37) and 224 px (stored
at 256); the median of `--repeats` calls after one warm-up. Part 2 trains B0 (stem stride 1,
32 px, batch 128, digits upsampled: images/s do not depend on the content) for `--steps` steps
after 2 warm-up steps with the default proxy and with the recipe's augmentation + EMA 0.9999,
alternating the two `--repeats` times so a load change on a shared machine hits both. Prints
tables, the command and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AUGMENTS = {
    "pad crop + flip (proxies)": {"crop": "pad"},
    "random-resized crop + flip": {"crop": "random_resized"},
    "  + RandAugment n2 m9": {"crop": "random_resized", "policy": "randaugment"},
    "  + AutoAugment (ImageNet)": {"crop": "random_resized", "policy": "autoaugment"},
}
RECIPE = {"crop": "random_resized", "augment_policy": "autoaugment", "ema_decay": 0.9999}


def time_augment(size: int, batch: int, repeats: int) -> dict[str, float]:
    import torch

    from training.data.augment import BatchAugment

    stored = round(size / 0.875)
    out = {}
    for name, kw in AUGMENTS.items():
        aug = BatchAugment(size, pad=round(4 * size / 32), **kw)  # the trainer's pad at this size
        side = size if kw["crop"] == "pad" else stored
        x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)
        g = torch.Generator().manual_seed(0)
        aug(x, g)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            aug(x, g)
            times.append(time.perf_counter() - t)
        out[name] = 1000 * statistics.median(times)
    return out


def time_training(recipe: bool, steps: int) -> float:
    import torch
    from omegaconf import OmegaConf

    from search_spaces.official import official
    from training.data import load_dataset
    from training.proxy import ProxyTrainer
    from training.proxy_config import load_proxy

    arch = official("efficientnet_b0")
    data = load_dataset(OmegaConf.create({"name": "digits", "image_size": 37 if recipe else 32}))
    overrides = {"batch_size": 128, "compile": "off", "epochs": 1}
    proxy = load_proxy("default", **overrides, **(RECIPE if recipe else {}))
    torch.manual_seed(0)
    trainer = ProxyTrainer(arch, proxy, data)
    trainer.model.train()
    for step in range(2):
        trainer.step(step)
    t = time.perf_counter()
    for step in range(2, 2 + steps):
        trainer.step(step)
    trainer.close()
    return steps * trainer.batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_recipe.py " + " ".join(sys.argv[1:])
    print(f"# {command}\n# {platform.node()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"load average {os.getloadavg()}")  # fmt: skip

    print("\nms per batch (median of", args.repeats, "calls)")
    cols = {(32, 128): time_augment(32, 128, args.repeats), (224, 32): time_augment(224, 32, args.repeats)}
    print(f"{'augmentation':32s} {'32 px x 128':>12s} {'224 px x 32':>12s}")
    for name in AUGMENTS:
        print(f"{name:32s} {cols[(32, 128)][name]:12.1f} {cols[(224, 32)][name]:12.1f}")

    print(f"\nB0 training images/s (32 px, stem stride 1, batch 128, {args.steps} steps after 2 warm-up)")
    runs: dict[str, list[float]] = {"default proxy": [], "+ recipe aug + EMA": []}
    for _ in range(args.repeats if args.repeats <= 3 else 2):
        runs["default proxy"].append(time_training(False, args.steps))
        runs["+ recipe aug + EMA"].append(time_training(True, args.steps))
    for name, values in runs.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:24s} {shown:>16s}   mean {statistics.mean(values):.0f}")
    ratio = statistics.mean(runs["+ recipe aug + EMA"]) / statistics.mean(runs["default proxy"])
    print(f"recipe / default: {100 * ratio:.1f}%")
    print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
