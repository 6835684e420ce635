"""Ray Train data-parallel workers against one process on the same cores: training images/s of
the same `effnas train` run, and where the time goes.

    nice -n 19 .venv/bin/python benchmarks/bench_workers.py [--repeats 1] [--epochs 1] [effnas overrides...]

Alternates (one process x 2 threads at batch 2b, then 2 Ray Train workers x 1 thread at batch b
each: the same global batch, steps and learning rate) so a load change on a shared machine hits
both. images/s is `summary.json`'s: training images over the training steps' time (rank 0's
clock for the workers; evaluations, start-up and Ray's scheduling excluded), the wall time is the
whole command's. Prints a table, the command and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(args: list[str], run: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "effnas", "train", *args, f"run.dir={run}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"effnas train {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads((run / "summary.json").read_text())["images_per_second"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64, help="per worker; the process trains 2x it")
    known, extra = parser.parse_known_args()
    common = [
        "arch=efficientnet_b0", "proxy=digits", f"proxy.epochs={known.epochs}", "proxy.compile=off",
        "proxy.report_every=0", "run.device=cpu", *extra,
    ]  # fmt: skip
    workers = ["train.workers=2", "ray.num_cpus=2", "ray.cpus_per_trial=1", "ray.object_store_mb=100"]
    arms = {
        "1 process x 2 threads": [*common, f"proxy.batch_size={2 * known.batch}", "run.threads=2"],
        "2 workers x 1 thread": [*common, f"proxy.batch_size={known.batch}", *workers, "run.threads=1"],
    }
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(known.repeats):
            for name, args in arms.items():
                results[name].append(train(args, Path(tmp) / f"{name.split()[0]}-{r}"))
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    print(f"$ {' '.join(sys.argv)}")
    print(
        f"B0, proxy=digits {' '.join(extra) or '(digits, 16 px)'}, global batch {2 * known.batch}, "
        f"{known.epochs:g} epoch(s); {os.cpu_count()} cores"
    )
    print(f"{'arm':24s} {'images/s (each run)':>22s} {'mean':>8s} {'wall s':>8s}")
    means = {}
    for name, runs in results.items():
        ips = [r[0] for r in runs]
        means[name] = sum(ips) / len(ips)
        each = ", ".join(f"{v:.0f}" for v in ips)
        print(f"{name:24s} {each:>22s} {means[name]:8.1f} {sum(r[1] for r in runs) / len(runs):8.0f}")
    a, b = means["2 workers x 1 thread"], means["1 process x 2 threads"]
    print(f"workers / process: {100 * a / b:.1f}%   load average {' '.join(load0)} -> {' '.join(load1)}")


if __name__ == "__main__":
    main()
