"""Does an architecture's latency depend on glibc malloc's state? Measures one architecture in
`--processes` fresh processes per mode, alternating: `default` (glibc as it starts: its mmap
threshold rises as the process frees large blocks) and `steady` (`training.timing.steady_allocator`:
the threshold fixed, no trimming). Each process builds the model, runs the latency protocol's
warm-up, then reports the median of `--runs` forward passes and the minor page faults per pass.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_malloc.py [--run RUN --arch NAME] [--processes 4]

The architecture is read from a latency run's measurements.csv (default: the --check-predictor
run where it measured 25 ms, against 51 ms in another check). Prints a table, the command and
the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

RUN = Path("results/latency/issue25/check_fit_anchor")


def child(choices: str, mode: str, runs: int) -> None:
    from omegaconf import OmegaConf

    from search_spaces.mnasnet import MnasNetSpace, SpaceConfig
    from training.timing import Setup, measure, model_runner, steady_allocator

    if mode == "steady":
        assert steady_allocator()
    import torch

    torch.set_num_threads(1)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    schema = OmegaConf.structured(SpaceConfig)
    space = MnasNetSpace.from_config(OmegaConf.merge(schema, OmegaConf.load("conf/space/mnasnet.yaml")))
    arch = space.decode(tuple(int(c) for c in choices.split()))
    setup = Setup(batch=1, threads=1, runs=runs, warmup=5, runtime="torch", device="cpu", channels_last=True)
    call = model_runner(arch, setup, arch.resolution, 1000, None)
    measure(call, 0, setup.warmup)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = statistics.median(measure(call, runs, 0))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / runs
    print(f"{ms:.3f} {faults:.0f}")


def main() -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=RUN)
    parser.add_argument("--arch", default="mnas_35a87442")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # CHOICES MODE
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.runs)
        return 0
    path = args.run / "measurements.csv"
    if not path.is_file():
        print(f"latency_malloc: {path}: no such file", file=sys.stderr)
        return 2
    rows = pd.read_csv(path).set_index("arch")
    if args.arch not in rows.index:
        print(f"latency_malloc: {args.arch} is not in {path}", file=sys.stderr)
        return 2
    choices = str(rows.loc[args.arch, "choices"])
    print(f"$ PYTHONPATH=. python {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})", flush=True)
    print(f"{args.arch}: {rows.loc[args.arch, 'blocks']}\n")
    results: dict[str, list[tuple[float, float]]] = {"default": [], "steady": []}
    print("| process | malloc | median ms | minor page faults per forward |")
    print("|---|---|---|---|")
    for i in range(args.processes):
        for mode in results:
            cmd = [sys.executable, __file__, "--runs", str(args.runs), "--child", choices, mode]
            ms, faults = (
                float(v)
                for v in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            )
            results[mode].append((ms, faults))
            print(f"| {i + 1} | {mode} | {ms:.2f} | {faults:.0f} |", flush=True)
    print()
    for mode, got in results.items():
        ms = [m for m, _ in got]
        print(
            f"{mode}: {min(ms):.2f}-{max(ms):.2f} ms, faults {min(f for _, f in got):.0f}-{max(f for _, f in got):.0f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
