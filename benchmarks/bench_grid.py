"""Sizing the compound grid: how many (alpha, beta, gamma) points each step/tolerance keeps, and
what one proxy trial of the grid's default budget costs, to predict `effnas grid --phi 1`'s wall.

Prints the candidate counts per (step, tol, bounds), whether the paper's (1.2, 1.1, 1.15) is on
the grid, and with --time the seconds of one proxy trial (conf/grid.yaml's proxy, 1 thread) for
the unscaled B0 and the paper point, extrapolated to the default subset at `--workers` at a time.
Usage: python benchmarks/bench_grid.py [--time] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

from scaling.compound import PAPER_COEFFICIENTS, enumerate_candidates, scale_arch
from search_spaces.official import efficientnet_b0

GRIDS = [  # (step, tol, max_alpha, max_beta, max_gamma)
    (0.05, 0.1, 2.0, 1.5, 1.5),  # effnas default (the whole feasible region)
    (0.05, 0.05, 2.0, 1.5, 1.5),
    (0.05, 0.1, 1.4, 1.4, 1.4),
    (0.1, 0.1, 2.0, 1.5, 1.5),  # the NNI example's grid (REFERENCE.md)
    (0.025, 0.1, 2.0, 1.5, 1.5),
]


def counts() -> None:
    print(f"{'step':>6} {'tol':>5} {'bounds':>15} {'points':>7} {'paper point':>12}")
    for step, tol, a, b, g in GRIDS:
        found = enumerate_candidates(step, a, b, g, 2.0, tol)
        has = PAPER_COEFFICIENTS in {(c.alpha, c.beta, c.gamma) for c in found}
        print(f"{step:>6g} {tol:>5g} {f'{a:g}/{b:g}/{g:g}':>15} {len(found):>7} {'yes' if has else 'no':>12}")


def timing(workers: int) -> None:
    from effnas.config import compose
    from training.data import load_dataset
    from training.proxy import evaluate

    cfg = compose("grid", [])
    data = load_dataset(cfg.data)
    b0 = efficientnet_b0()
    seconds = {}
    for label, coeffs in (("baseline", (1.0, 1.0, 1.0)), ("paper point", PAPER_COEFFICIENTS)):
        arch = scale_arch(b0, *coeffs, cfg.phi)
        res = scale_arch(b0, *coeffs, cfg.phi, base_resolution=cfg.proxy.resolution).resolution
        r = evaluate(arch, cfg.proxy, data, resolution=res, threads=1)
        seconds[label] = r.seconds
        print(
            f"{label:>12}: {r.seconds:6.1f} s at {res} px ({r.images_per_second:.0f} img/s), val acc {r.accuracy}"
        )
    trials = cfg.max_candidates + int(cfg.include_baseline)
    est = (seconds["baseline"] + (trials - 1) * seconds["paper point"]) / workers
    print(f"default grid: {trials} trials, {workers} at a time -> about {est / 60:.1f} min of training")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--time", action="store_true", help="also time one proxy trial per kind")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"# python benchmarks/bench_grid.py {' '.join(sys.argv[1:])}")
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    counts()
    if args.time:
        timing(args.workers)


if __name__ == "__main__":
    main()
