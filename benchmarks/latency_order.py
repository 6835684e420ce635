"""Does an architecture's latency depend on what the process measured before it? Measures the
architectures of a `--check-predictor` (or `--fit-predictor`) run again, in the run's order, in
one process, exactly as the run did (`training.timing.model_latency`: the process pinned, one
thread, `repeat` x the median of `runs` after `warmup`), with or without an anchor timed beside
each (`--anchor`), and prints each beside what the run measured; then the ones named in
`--again` once more at the end. Why: the same architecture measured 25 ms in one check and 51 ms
in another, an hour apart, while B0 timed beside it held at 28 ms (docs/latency.md).

    PYTHONPATH=. .venv/bin/python benchmarks/latency_order.py RUN [--first 0] [--last 99] [--anchor] [--fresh]

`--fresh` builds and measures each architecture in a new process instead (the cold state).
Prints a table, the command and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path


def space_of_default() -> object:
    from omegaconf import OmegaConf

    from search_spaces.mnasnet import MnasNetSpace, SpaceConfig

    schema = OmegaConf.structured(SpaceConfig)
    return MnasNetSpace.from_config(OmegaConf.merge(schema, OmegaConf.load("conf/space/mnasnet.yaml")))


def one(choices: str, anchor: bool) -> tuple[float, float | None]:
    """(the architecture's median ms, the anchor's or None) measured in this process."""
    from search_spaces.official import efficientnet_b0
    from training.timing import Setup, model_latency, model_runner, paired_latency

    setup = Setup(
        batch=1, threads=1, runs=20, warmup=5, runtime="torch", device="cpu", channels_last=True, repeat=3
    )
    arch = space_of_default().decode(tuple(int(c) for c in choices.split()))
    if not anchor:
        return model_latency(arch, setup, arch.resolution, 1000, None).median_ms, None
    b0 = efficientnet_b0()
    both = paired_latency(
        arch, model_runner(b0, setup, b0.resolution, 1000, None), setup, arch.resolution, 1000, None
    )
    return both.model.median_ms, both.anchor.median_ms


def main() -> int:
    import pandas as pd

    from training.timing import pin_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--last", type=int, default=99)
    parser.add_argument("--anchor", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="each architecture in a new process")
    parser.add_argument("--again", default="", help="comma-separated ids measured once more at the end")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # --fresh's child: one architecture's choices
    args = parser.parse_args()
    if args.one:
        pin_threads(1, True)
        ms, anchor_ms = one(args.one, args.anchor)
        print(f"{ms:.4f} {anchor_ms if anchor_ms is not None else ''}")
        return 0
    path = args.run / "measurements.csv"
    if not path.is_file():
        print(f"latency_order: {path}: no such file", file=sys.stderr)
        return 2
    print(f"$ PYTHONPATH=. python {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})", flush=True)
    rows = pd.read_csv(path).set_index("id")
    order = [i for i in rows.index if args.first <= i <= args.last]
    order += [int(i) for i in args.again.split(",") if i]
    pin_threads(1, True)
    print("| id | arch | then ms | now ms | now / then | anchor now |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for i in order:
        choices = str(rows.loc[i, "choices"])
        if args.fresh:
            cmd = [sys.executable, __file__, str(args.run), "--one", choices] + (
                ["--anchor"] if args.anchor else []
            )
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            ms, anchor_ms = float(out[0]), (float(out[1]) if len(out) > 1 else None)
        else:
            ms, anchor_ms = one(choices, args.anchor)
        then = float(rows.loc[i, "measured_ms"])
        ratios.append(ms / then)
        print(
            f"| {i} | {rows.loc[i, 'arch']} | {then:.2f} | {ms:.2f} | {ms / then:.3f} | "
            f"{'' if anchor_ms is None else f'{anchor_ms:.2f}'} |",
            flush=True,
        )
    print(
        f"\nnow / then: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; "
        f"load average after {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
