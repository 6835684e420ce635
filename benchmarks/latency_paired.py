"""Does measuring each architecture beside an anchor cancel this machine's drift? The noise check's
21 models (B0 and 20 random architectures of the default space), `rounds` measurements each,
round-robin, each measurement taken right after one of a fixed anchor architecture. Reports, per
model, the coefficient of variation of the latency in milliseconds and of its ratio to the anchor
measured just before (and to the mean of the anchors just before and just after), of the fastest
of each measurement's runs (the same timings, a second statistic), and the ceiling
each puts on a predictor (`deploy.latency_fit.noise_ceiling`: one measurement against the median
of the model's others; within +-10% and Spearman). It also reads the CPU time the hypervisor
took from this VM (`steal` in /proc/stat) over each round. If the ratio's spread is far below the
milliseconds', a predictor of latency in anchor units (the anchor measured on the day converts it
back) escapes most of the drift; if not, the drift is not one factor over a few seconds.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_paired.py [--rounds 10] [--anchor B0|random:SEED] [--interleave]

With `--interleave` the model's and the anchor's timed runs alternate one by one (each ratio is
the model's median over the anchor's median of the same stretch of time).

About 2 x 21 x rounds measurements (~4 minutes at 10 rounds); run it on an otherwise idle machine.
Prints the table, the command and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path


def steal_jiffies() -> tuple[int, int]:
    """(steal, total) CPU jiffies of the whole VM since boot, from /proc/stat; (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def main() -> int:
    from omegaconf import OmegaConf

    from deploy.latency_fit import noise_ceiling
    from search_spaces.arch import Arch
    from search_spaces.mnasnet import MnasNetSpace, SpaceConfig
    from training.timing import Setup, cv, measure, model_runner, paired, pin_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--archs", type=int, default=20, help="random architectures beside B0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anchor", default="B0", help="B0, or random:<seed> for a random architecture")
    parser.add_argument(
        "--interleave", action="store_true", help="alternate the model's and the anchor's runs one by one"
    )
    args = parser.parse_args()
    if args.rounds < 2:  # a CV and a ceiling need two rounds of each model
        parser.error(f"--rounds must be at least 2 (got {args.rounds})")
    print(f"$ PYTHONPATH=. python {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})", flush=True)

    schema = OmegaConf.structured(SpaceConfig)
    space = MnasNetSpace.from_config(OmegaConf.merge(schema, OmegaConf.load("conf/space/mnasnet.yaml")))
    b0 = Arch.from_yaml(Path("conf/arch/efficientnet_b0.yaml").read_text())
    rng = random.Random(args.seed)
    models = [("B0", b0)] + [(f"random{i}", space.decode(space.sample(rng))) for i in range(args.archs)]
    if args.anchor == "B0":
        anchor = b0
    else:
        anchor = space.decode(space.sample(random.Random(int(args.anchor.split(":")[1]))))
    setup = Setup(batch=1, threads=1, runs=20, warmup=5, runtime="torch", device="cpu", channels_last=True)
    pin_threads(1, True)
    calls = [model_runner(a, setup, a.resolution, 1000, None) for _, a in models]
    anchor_call = model_runner(anchor, setup, anchor.resolution, 1000, None)

    lows: list[list[float]] = [[] for _ in models]  # the fastest of each measurement's runs

    def once(call: object, low: list[float] | None = None) -> float:
        times = measure(call, setup.runs, setup.warmup)
        if low is not None:
            low.append(min(times))
        return statistics.median(times)

    def interleaved(call: object, low: list[float]) -> tuple[float, float]:
        """(the model's median, the anchor's median) over `runs` pairs taken run by run, model
        then anchor, after `warmup` of each (`training.timing.paired`, one repeat)."""
        both = paired(call, anchor_call, setup)
        low.append(both.model.lows[0])
        return both.model.medians[0], both.anchor.medians[0]

    once(anchor_call)  # thrown away: the first measurement of a process
    ms: list[list[float]] = [[] for _ in models]
    before: list[list[float]] = [[] for _ in models]
    after: list[list[float]] = [[] for _ in models]
    t0 = time.perf_counter()
    steal_shares = []
    a_prev = once(anchor_call)
    for r in range(args.rounds):
        s0, tot0 = steal_jiffies()
        for i, call in enumerate(calls):
            if args.interleave:  # the anchor's runs between the model's: before and after are one
                m, a_next = interleaved(call, lows[i])
                a_prev = a_next
            else:
                m = once(call, lows[i])
                a_next = once(anchor_call)
            ms[i].append(m)
            before[i].append(a_prev)
            after[i].append(a_next)
            a_prev = a_next
        s1, tot1 = steal_jiffies()
        steal = (s1 - s0) / (tot1 - tot0) if tot1 > tot0 else 0.0
        steal_shares.append(steal)
        print(
            f"round {r + 1}/{args.rounds}: {time.perf_counter() - t0:.0f}s, anchor median this round "
            f"{statistics.median(row[-1] for row in after):.2f} ms, "
            f"steal {steal:.1%} of the VM's CPU time (load {os.getloadavg()[0]:.2f})",
            flush=True,
        )

    ratio_before = [[m / a for m, a in zip(row, b)] for row, b in zip(ms, before)]
    ratio_both = [[m / ((a + c) / 2) for m, a, c in zip(row, b, c_)] for row, b, c_ in zip(ms, before, after)]
    kinds = {
        "milliseconds (median of the runs)": ms,
        "milliseconds, the fastest run of each": lows,
        "/ anchor before": ratio_before,
        "/ mean of anchors around": ratio_both,
    }
    how = "interleaved run by run" if args.interleave else "measured after each model"
    print(f"\n{len(models)} models x {args.rounds} rounds, anchor {args.anchor} ({anchor.name}), {how}")
    print("| measured as | median CV over rounds | max CV | ceiling: within +-10% | Spearman |")
    print("|---|---|---|---|---|")
    for kind, values in kinds.items():
        cvs = [cv(v) or 0.0 for v in values]
        ceiling = noise_ceiling(values, 1)
        print(
            f"| {kind} | {statistics.median(cvs):.1%} | {max(cvs):.1%} | "
            f"{ceiling['ceiling1_within_10pct']:.0%} | {ceiling['ceiling1_spearman']} |"
        )
    anchors = [a for row in before for a in row]
    print(
        f"\nanchor: {len(anchors)} measurements, median {statistics.median(anchors):.2f} ms, "
        f"CV {cv(anchors):.1%}, min {min(anchors):.2f}, max {max(anchors):.2f}; "
        f"steal per round {', '.join(f'{s:.1%}' for s in steal_shares)}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}; {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
