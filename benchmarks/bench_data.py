"""Benchmark of the data layer: CIFAR-10 cold and cached load, augment_batch and resize_batch per batch.

    .venv/bin/python benchmarks/bench_data.py [CIFAR10_ROOT] [--repeats N]

The cold load decodes into a fresh temporary cache (the OS may still hold the JPEGs in its page
cache); the cached load is a second `load_dataset` on the same config. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from training.data import augment_batch, load_dataset, resize_batch

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10"


def per_call_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="CIFAR-10 directory")
    parser.add_argument("--repeats", type=int, default=50, help="batches timed per transform (median)")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    cache = tempfile.mkdtemp(prefix="effnas-bench-cache-")
    try:
        cfg = SimpleNamespace(
            name="cifar10", root=args.root, image_size=32, val_fraction=0.1, cache_dir=cache
        )
        for label in ("cold (decode + cache write)", "cached (second load)"):
            start = time.perf_counter()
            data = load_dataset(cfg)
            rows.append((f"load CIFAR-10, {label}", f"{time.perf_counter() - start:.2f} s"))
        sizes = f"train {len(data.train)} / val {len(data.val)} / test {len(data.test)}"
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    x = torch.from_numpy(data.train.x[:128].copy())
    g = torch.Generator().manual_seed(0)
    rows.append(
        (
            "augment_batch, 128x3x32x32 uint8",
            f"{per_call_ms(lambda: augment_batch(x, g), args.repeats):.2f} ms",
        )
    )
    xf = x.float()
    rows.append(
        (
            "augment_batch, 128x3x32x32 float32",
            f"{per_call_ms(lambda: augment_batch(xf, g), args.repeats):.2f} ms",
        )
    )
    rows.append(
        (
            "resize_batch 32 -> 48, 128 uint8",
            f"{per_call_ms(lambda: resize_batch(x, 48), args.repeats):.2f} ms",
        )
    )
    rows.append(
        (
            "resize_batch 32 -> 48, 128 float32",
            f"{per_call_ms(lambda: resize_batch(xf, 48), args.repeats):.2f} ms",
        )
    )

    print(f"$ {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CIFAR-10 {sizes}"
    )
    width = max(len(name) for name, _ in rows)
    print(f"| {'what':<{width}} | time      |")
    print(f"|{'-' * (width + 2)}|-----------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value:>9} |")


if __name__ == "__main__":
    main()
