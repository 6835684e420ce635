"""Benchmark of the on-disk store (`data.storage=disk`) against the resident path: training
images/s of the same proxy run on CIFAR-10, and the trainer's peak memory.

    nice -n 19 .venv/bin/python benchmarks/bench_store.py [CIFAR10_ROOT] [--steps 30] [--repeats 2]
    # the memory measure (a store >= 4 GB: CIFAR-10's 60,000 images stored at 160 px = 4.6 GB):
    nice -n 19 .venv/bin/python benchmarks/bench_store.py --memory --image-size 160 --images 500

Speed: both storages load from one cache directory (decoded once, `--cache-dir`, default a
directory under /tmp that is kept), then alternate (memory, disk, memory, disk, ...) so a load
change on a shared machine hits both; each run times `--steps` training steps of B0 (32 px, stem
stride 1, batch 128) after 3 warm-up steps. Memory: the disk store (and with `--resident` the
resident path, which needs about 10x the decoded bytes) trains `--images` images in a
child process and reports its peak RSS (ru_maxrss: it counts the pages of the store the process
touched, reclaimable page cache included). Prints a table, the command and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared/datasets/cifar10"


def data_config(root: Path, cache: Path, storage: str, image_size: int) -> SimpleNamespace:
    return SimpleNamespace(
        name="cifar10", root=str(root), image_size=image_size, val_fraction=0.02, test_fraction=0.2,
        split_seed=0, max_train=None, cache_dir=str(cache), storage=storage, download=False,
    )  # fmt: skip


def proxy(image_size: int, **changes: object) -> object:
    from training.proxy_config import load_proxy

    stem = 1 if image_size <= 64 else 2
    return load_proxy("default", resolution=image_size, stem_stride=stem, compile="off", **changes)


def timed_run(data: object, image_size: int, steps: int, threads: int) -> float:
    """Training images/s over `steps` steps after 3 warm-up steps."""
    import torch

    from search_spaces.official import official
    from training.proxy import ProxyTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    trainer = ProxyTrainer(official("efficientnet_b0"), proxy(image_size), data, seed=0, device="cpu")
    try:
        for step in range(3):
            trainer.step(step)
        tic = time.perf_counter()
        for step in range(3, 3 + steps):
            trainer.step(step)
        return steps * trainer.batch / (time.perf_counter() - tic)
    finally:
        trainer.close()


def memory_child(args: argparse.Namespace, storage: str) -> dict:
    """In this (child) process: load, train `--images` images, score val; peak RSS."""
    import torch

    from search_spaces.official import official
    from training.data import load_dataset
    from training.proxy import evaluate

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_dataset(data_config(args.root, args.cache_dir, storage, args.image_size))
    load_s = time.perf_counter() - t0
    p = proxy(args.image_size, images=args.images, batch_size=args.batch, micro_batch=0, bn_calibration=256)
    result = evaluate(official("efficientnet_b0"), p, data, seed=0, threads=args.threads, device="cpu")
    return {
        "storage": storage,
        "status": result.status,
        "train_images": len(data.train),
        "load_s": round(load_s, 1),
        "train_s": round(result.seconds, 1),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def store_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*.npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/effnas-bench-store"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="peak RSS per storage instead of speed")
    parser.add_argument("--images", type=int, default=500, help="--memory: training images")
    parser.add_argument("--resident", action="store_true", help="--memory: also the resident path")
    parser.add_argument("--batch", type=int, default=32, help="--memory: images per step")
    parser.add_argument("--child", choices=("memory", "disk"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory_child(args, args.child)))
        return
    command = " ".join(["python", *sys.argv])
    print(f"# {command}\n# {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    if args.memory:
        rows = []
        # the resident path of a >= 4 GB store would need about 10x that (docs/train.md): opt in
        for storage in ("disk", "memory") if args.resident else ("disk",):
            child = [sys.executable, *sys.argv, "--child", storage]
            out = subprocess.run(
                child, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
            )
            if out.returncode != 0:
                rows.append({"storage": storage, "status": out.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"store on disk: {store_bytes(args.cache_dir) / 1e9:.2f} GB under {args.cache_dir}")
        print(
            f"{'storage':8} {'status':10} {'train imgs':>10} {'load s':>8} {'train s':>8} {'peak RSS GB':>12}"
        )
        for r in rows:
            print(
                f"{r['storage']:8} {r['status'][:60]:10} {r.get('train_images', ''):>10} "
                f"{r.get('load_s', ''):>8} {r.get('train_s', ''):>8} {r.get('peak_rss_gb', 0):>12.2f}"
            )
        print(f"# load average at the end {os.getloadavg()}")
        return

    from training.data import load_dataset

    datasets = {
        s: load_dataset(data_config(args.root, args.cache_dir, s, args.image_size))
        for s in ("memory", "disk")
    }
    speeds: dict[str, list[float]] = {"memory": [], "disk": []}
    for _ in range(args.repeats):
        for storage in ("memory", "disk"):
            speeds[storage].append(timed_run(datasets[storage], args.image_size, args.steps, args.threads))
    mem, disk = (sum(speeds[s]) / len(speeds[s]) for s in ("memory", "disk"))
    print(f"{'storage':8} {'images/s (each run)':>32} {'mean':>8}")
    for storage in ("memory", "disk"):
        runs = ", ".join(f"{v:.0f}" for v in speeds[storage])
        print(f"{storage:8} {runs:>32} {sum(speeds[storage]) / len(speeds[storage]):>8.0f}")
    print(f"disk / memory: {disk / mem:.1%}   (B0, {args.image_size} px, batch 128, {args.threads} threads)")
    print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
