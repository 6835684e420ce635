"""Proxy-trainer throughput against a plain eager NCHW training loop of the same model.

Each variant runs in its own process (its own allocator state, thread pool and oneDNN caches;
effnas's allocator setting must not speed up the plain loops), and the processes take turns,
a few steps each, round-robin, so a noisy, shared machine slows them alike; the table gives the
median and the best step of each. Rows:
- plain eager NCHW: the model, SGD-nesterov, cross-entropy, float batches already in memory
  (no augmentation, no data pipeline: it is favoured);
- plain eager channels-last: the same loop, channels-last (isolates that one change);
- effnas trainer: `training.proxy.ProxyTrainer.step` - the real path, data pipeline included
  (uint8 gather, batched crop+flip, normalise), exactly what search/grid trials run, with its
  default proxy.micro_batch=64 (two cache-sized passes per 128-image step);
- effnas trainer, no C kernels: the same with proxy.cpu_kernels=false (PyTorch's ops only, the
  default allocator);
- effnas trainer, whole batch: the same without micro-batches (proxy.micro_batch=0);
- effnas trainer, micro-batches in turn: the two micro-batches one after the other with all
  threads each, instead of side by side with one thread each (proxy.parallel_micro_batches=false);
- effnas trainer, compiled (with --compile): the same with torch.compile; its first step is
  the compile time, from which the compile-vs-budget table follows.

Also: fp32 matmul FLOP/s of the same process and threads (2048^3 sgemm, best of 10), and the
trainer's efficiency defined as
    training MACs x 2 x images/s / matmul FLOP/s,   training MACs = 3 x forward MACs
(forward MACs: the analytic count of the trained network at the proxy resolution, 10 classes,
the proxy's stem stride; 3x = forward + backward w.r.t. activations + w.r.t. weights);
and the data-time share: batching + augmentation + normalisation / trainer step.

    python benchmarks/bench_trainer.py [--threads 2] [--batch 128] [--steps 4] [--rounds 3]
        [--stem-stride 1] [--compile] [--arch efficientnet_b0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from search_spaces.builder import build_model
from search_spaces.cost import count
from search_spaces.official import official
from training.data import Dataset, Split
from training.proxy import ProxyTrainer, compile_pays_off
from training.proxy_config import load_proxy


def synthetic_cifar(n_train: int, n_val: int, size: int, seed: int = 0) -> Dataset:
    """CIFAR-10-shaped random uint8 data: throughput does not depend on the pixel values."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        x = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
        return Split(x, rng.integers(0, 10, n).astype(np.int64))

    classes = tuple(f"c{i}" for i in range(10))
    return Dataset("synthetic", split(n_train), split(n_val), None, 10, classes, "synthetic")


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def plain_loop(arch, batch: int, res: int, stem_stride: int, channels_last: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, num_classes=10, stem_stride=stem_stride).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)
    x = torch.randn(batch, 3, res, res).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN primitive creation
    return step


def worker(conn, args: argparse.Namespace, variant: str, overrides: dict) -> None:
    """One variant in its own process (its own allocator state and thread pool): builds it, then
    runs `steps` commands from the parent until told to stop."""
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    arch = official(args.arch)
    first = 0.0
    if variant.startswith("plain"):
        f = plain_loop(arch, args.batch, args.resolution, args.stem_stride, "channels-last" in variant)
        trainer = None
    else:
        data = synthetic_cifar(max(4 * args.batch, 1024), 256, args.resolution)
        proxy = load_proxy(
            "default",
            batch_size=args.batch,
            resolution=args.resolution,
            stem_stride=args.stem_stride,
            **{"compile": "off", **overrides},
        )
        torch.manual_seed(0)
        trainer = ProxyTrainer(arch, proxy, data, seed=0, device="cpu")
        counter = iter(range(10**9))
        t = time.perf_counter()
        trainer.step(next(counter))  # first step: oneDNN primitives, or the whole compile
        first = time.perf_counter() - t

        def f() -> None:
            trainer.step(next(counter))

    conn.send(("ready", first, (trainer.result.cpu_kernels, trainer.result.lanes) if trainer else (0, 1)))
    while True:
        cmd, n = conn.recv()
        if cmd == "steps":
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            conn.send(ts)
        elif cmd == "data":  # batching + augmentation + normalisation alone
            order = torch.randperm(len(trainer.train_y))
            t = time.perf_counter()
            for i in range(n):
                trainer.batch_at(order, i % trainer.steps_per_epoch)
            conn.send((time.perf_counter() - t) / n)
        else:
            conn.send(None)
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--only",
        default="",
        help="variant names to run besides the NCHW loop and the trainer, separated by ; (default: all)",
    )
    ap.add_argument("--arch", default="efficientnet_b0")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    arch = official(args.arch)
    res, batch, ss = args.resolution, args.batch, args.stem_stride
    print(f"$ python {' '.join(sys.argv)}")
    print(
        f"host: {platform.node()} {os.cpu_count()} cpus, torch {torch.__version__}, threads "
        f"{args.threads}, load average at start {os.getloadavg()[0]:.2f} (shared machine: noisy)"
    )
    flops = matmul_flops()
    fwd_macs = count(arch, resolution=res, num_classes=10, stem_stride=ss).macs
    train_macs = 3 * fwd_macs
    print(
        f"{arch.name} at {res}x{res}, stem stride {ss}, batch {batch}: forward {fwd_macs / 1e6:.1f}M MACs/image, "
        f"training {train_macs / 1e6:.1f}M; fp32 matmul {flops / 1e9:.1f} GFLOP/s"
    )

    names = {
        "plain eager NCHW": {},
        "plain eager channels-last": {},
        "effnas trainer, no C kernels": {"cpu_kernels": False},
        "effnas trainer, whole batch": {"micro_batch": 0},
        "effnas trainer, micro-batches in turn": {"parallel_micro_batches": False},
        "effnas trainer": {},
    }
    if args.compile:
        names["effnas trainer, compiled"] = {"compile": "on"}
    if args.only:
        keep = {"plain eager NCHW", "effnas trainer", *(n.strip() for n in args.only.split(";"))}
        names = {k: v for k, v in names.items() if k in keep}
    ctx = mp.get_context("spawn")
    workers, first, swapped, lanes = {}, {}, 0, 1
    for name, overrides in names.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, args, name, overrides), daemon=True)
        proc.start()
        _, first[name], (k, n) = parent.recv()  # built one at a time: builds do not overlap the timing
        swapped = max(swapped, k)
        if name == "effnas trainer":
            lanes = n
        workers[name] = (proc, parent)

    # round-robin, one variant running at a time: a noisy machine slows them alike
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(args.rounds):
        for name, (_, conn) in workers.items():
            conn.send(("steps", args.steps))
            times[name] += conn.recv()

    base = statistics.median(times["plain eager NCHW"])
    print(
        f"\n{'variant':38s} {'median ms':>10s} {'best ms':>9s} {'img/s':>8s} {'x NCHW':>7s} {'of matmul':>10s}"
    )
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        ips = batch / med
        eff = train_macs * 2 * ips / flops
        print(f"{name:38s} {med * 1e3:10.1f} {best * 1e3:9.1f} {ips:8.1f} {base / med:7.2f} {eff:10.1%}")

    conn = workers["effnas trainer"][1]
    conn.send(("data", 50))
    data_s = conn.recv()
    for proc, c in workers.values():
        c.send(("quit", 0))
        c.recv()
        proc.join()
    step_s = statistics.median(times["effnas trainer"])
    # paired: each round's NCHW and trainer steps ran minutes apart at most, under the same noise
    k = args.steps
    per_round = [
        statistics.median(times["plain eager NCHW"][r * k : (r + 1) * k])
        / statistics.median(times["effnas trainer"][r * k : (r + 1) * k])
        for r in range(args.rounds)
    ]
    print(
        f"\ntrainer vs plain eager NCHW round by round: median {statistics.median(per_round):.2f}x, "
        f"range {min(per_round):.2f}-{max(per_round):.2f}x over {args.rounds} rounds"
    )
    print(f"data time per batch {data_s * 1e3:.2f} ms = {data_s / step_s:.1%} of the trainer's step")
    print(f"layers on effnas's C kernels: {swapped}; the trainer's micro-batches side by side: {lanes}")

    compile_seconds = first.get("effnas trainer, compiled")
    if compile_seconds is not None:
        eager, comp = step_s, statistics.median(times["effnas trainer, compiled"])
        gain = eager - comp
        print(
            f"\ntorch.compile: first compiled step {compile_seconds:.1f} s (compile), "
            f"step {eager * 1e3:.0f} -> {comp * 1e3:.0f} ms ({gain / eager:+.1%} saved)"
        )
        print(f"{'budget (images)':>16s} {'eager s':>9s} {'compiled s':>11s} {'faster':>9s} {'auto':>9s}")
        for images in (10_000, 50_000, 225_000, 1_000_000, 5_000_000):
            steps = images / batch
            e, c = steps * eager, compile_seconds + steps * comp
            auto = compile_pays_off(fwd_macs, images, "cpu", len(build_model(arch).blocks))
            print(
                f"{images:16,d} {e:9.0f} {c:11.0f} {'compiled' if c < e else 'eager':>9s} "
                f"{'compile' if auto else 'eager':>9s}"
            )
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
