"""A neighbour on another core while a latency measurement runs pinned to its own: `memory`
copies a large array into another over and over (memory bandwidth and the shared cache),
`compute` multiplies two small matrices that stay in cache over and over (the core's vector
units, which a host may share with another tenant's vCPU). Runs for `--seconds` or until
SIGTERM, then prints how much work it did. Pin it with taskset:

    taskset -c 1 .venv/bin/python benchmarks/neighbour.py [--kind memory|compute] [--seconds 600]

Used by benchmarks/latency_predictor.sh (check_fit_anchor_loaded) and by hand beside
benchmarks/latency_order.py (docs/latency.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main() -> int:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core's worth
        os.environ.setdefault(var, "1")
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("memory", "compute"), default="memory")
    parser.add_argument("--mb", type=int, default=256, help="memory: the size of each of the two arrays")
    parser.add_argument("--seconds", type=float, default=3600.0)
    args = parser.parse_args()
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if args.kind == "memory":
        a = np.ones(args.mb * 2**20 // 8)
        b = np.empty_like(a)
        work, unit = (lambda: np.copyto(b, a)), 2 * args.mb / 1024  # GB moved per call
    else:
        m = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
        work, unit = (lambda: m @ m), 2 * 256**3 / 1e9  # GFLOP per call
    t0, calls = time.perf_counter(), 0
    while not stop and time.perf_counter() - t0 < args.seconds:
        work()
        calls += 1
    spent = time.perf_counter() - t0
    what = "GB/s moved" if args.kind == "memory" else "GFLOP/s"
    print(f"neighbour ({args.kind}): {calls} calls in {spent:.0f}s: {calls * unit / spent:.1f} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
