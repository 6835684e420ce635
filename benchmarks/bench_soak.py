"""Soak test of the search driver: a long run of tiny trials, watching the driver for leaks.

Runs `effnas search` in this process (the driver, as a user runs it) with the cheapest proxy on
the embedded digits (64 images per trial at 8 px), by default on Ray with 2 CPUs, and samples the
driver's resident memory (VmRSS) and open file descriptors as trials finish. Prints them at the
checkpoints (first trial, 50, 100, ... the last), the growth between trial 50 and the end, and
what is left after the run: this process's descendants (Ray's raylet, GCS, workers) and whether
Ray is still initialised. Linux only (/proc).

    python benchmarks/bench_soak.py [--trials 300] [--ray | --no-ray] [--cpus 2] [--root results/soak]
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import threading
import time
from pathlib import Path

PROXY = [  # the cheapest proxy that still trains: 64 images, 8 px, 16 per batch, no compile
    "proxy.images=64",
    "proxy.batch_size=16",
    "proxy.resolution=8",
    "proxy.bn_calibration=64",
    "proxy.compile=off",
    "run.threads=1",
]


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command) of every live process below `pid`."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces; ppid is the 2nd field after it
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        names[int(entry)] = cmd or stat.split("(", 1)[1].split(")")[0]
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += [(c, names[c]) for c in kids]
        frontier += kids
    return out


def trained(trials_csv: Path) -> int:
    """Trials that ended (ok, stopped or failed; rejected samples are not trained)."""
    try:
        with trials_csv.open() as f:
            return sum(1 for r in csv.DictReader(f) if r.get("status") in ("ok", "stopped", "failed"))
    except (OSError, csv.Error):
        return 0


class Sampler(threading.Thread):
    """Every `every` seconds: trials ended so far, this process's RSS and open fds."""

    def __init__(self, trials_csv: Path, every: float = 1.0, trials: int = 300) -> None:
        super().__init__(daemon=True)
        self.trials_csv, self.every = trials_csv, every
        self.samples: list[tuple[float, int, float, int]] = []
        self.done = threading.Event()
        self.t0 = time.time()

        # --tracemalloc: snapshots in the run (Tune frees its trials at the end), at a quarter
        # of the trials and at the last poll before the end
        self.marks = (max(1, trials // 4), max(2, trials * 9 // 10))
        self.snapshots: dict[int, object] = {}

    def run(self) -> None:
        import tracemalloc

        while not self.done.wait(self.every):
            n = trained(self.trials_csv)
            self.samples.append((time.time() - self.t0, n, rss_mb(), open_fds()))
            due = not self.snapshots or (n >= self.marks[1] and len(self.snapshots) == 1)
            if tracemalloc.is_tracing() and n >= self.marks[0] and due:
                self.snapshots[n] = tracemalloc.take_snapshot()


def at(samples: list[tuple[float, int, float, int]], n: int) -> tuple[float, int, float, int] | None:
    """The first sample with at least n trials ended."""
    return next((s for s in samples if s[1] >= n), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True, help="Ray Tune trials")
    ap.add_argument("--cpus", type=int, default=2, help="ray.num_cpus")
    ap.add_argument("--root", default="results/soak", help="where the search run directory goes")
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also print where the driver's Python memory grew during the run (slow; RSS then counts tracemalloc's own)",
    )
    args = ap.parse_args()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)

    from effnas.cli import main as effnas

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path(args.root) / f"search_{stamp}"
    ray = [f"ray.num_cpus={args.cpus}"] if args.ray else ["ray.enabled=false"]
    argv = ["search", "--trials", str(args.trials), *PROXY, *ray, f"run.dir={run_dir}"]
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"  = effnas {' '.join(argv)}", flush=True)
    before = (rss_mb(), open_fds())
    sampler = Sampler(run_dir / "trials.csv", trials=args.trials)
    sampler.start()
    t0 = time.time()
    code = effnas(argv)
    wall = time.time() - t0
    if args.tracemalloc and len(sampler.snapshots) == 2:
        (n0, start), (n1, end) = sampler.snapshots.items()
        grew = end.compare_to(start, "traceback")  # type: ignore[attr-defined]
        total = sum(stat.size_diff for stat in grew) / 1024
        print(f"\nPython allocations from trial {n0} to trial {n1}, during the run: {total:+.1f} KiB; top 8:")
        for stat in grew[:8]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            for line in stat.traceback.format()[-6:]:
                print(f"      {line}")
    sampler.done.set()
    sampler.join()
    time.sleep(2.0)  # let Ray's processes finish exiting after ray.shutdown()
    after = (rss_mb(), open_fds())
    left = descendants(os.getpid())
    import ray as ray_mod

    n = trained(run_dir / "trials.csv")
    marks = sorted({1, *range(50, n + 1, 50), n})
    print(f"\neffnas exit code {code}; {n} trials ended in {wall:.0f} s; load average {os.getloadavg()}")
    print(f"{'trials':>7} {'seconds':>8} {'RSS MB':>8} {'open fds':>9}")
    print(f"{'before':>7} {0:>8} {before[0]:>8.1f} {before[1]:>9}")
    for m in marks:
        s = at(sampler.samples, m)
        if s:
            print(f"{s[1]:>7} {s[0]:>8.0f} {s[2]:>8.1f} {s[3]:>9}")
    print(f"{'after':>7} {wall:>8.0f} {after[0]:>8.1f} {after[1]:>9}")
    s50, last = at(sampler.samples, 50), (sampler.samples[-1] if sampler.samples else None)
    if s50 and last and last[1] > s50[1]:
        per100 = 100 / (last[1] - s50[1])
        print(
            f"growth from trial {s50[1]} to {last[1]}: RSS {last[2] - s50[2]:+.1f} MB "
            f"({(last[2] - s50[2]) * per100:+.2f} MB per 100 trials), fds {last[3] - s50[3]:+d}"
        )
    print(f"processes left below the driver: {len(left)}")
    for pid, cmd in left:
        print(f"  {pid} {cmd[:120]}")
    print(f"ray initialised after the run: {ray_mod.is_initialized()}")
    print(f"run directory: {run_dir}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
