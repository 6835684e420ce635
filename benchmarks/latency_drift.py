"""Does this machine's speed hold between two `effnas latency --fit-predictor` runs? The
architectures both runs measured (joined on the architecture's name), their latency ratio (later
over earlier), and what the earlier run's k-fold predictions are worth against the later
measurements: as they are, and rescaled by the median ratio of k reference architectures measured
again (k drawn at random, 200 draws) -- a one-number recalibration a search could make before
trusting an old predictor. No new measurement: it reads the two runs' predictor.csv.

    PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/latency_drift.py EARLIER_RUN LATER_RUN [--refs 1,3,5,10]

Prints the tables with the command and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> int:
    import numpy as np
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("earlier", type=Path)
    parser.add_argument("later", type=Path)
    parser.add_argument("--refs", default="1,3,5,10", help="reference architectures measured again")
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    frames = []
    for run in (args.earlier, args.later):
        path = run / "predictor.csv"
        if not path.is_file():
            print(f"latency_drift: {path}: no such file (a finished --fit-predictor run?)", file=sys.stderr)
            return 2
        frames.append(pd.read_csv(path)[["arch", "measured_ms", "predicted_ms"]])
    both = frames[0].merge(frames[1], on="arch", suffixes=("_earlier", "_later"))
    if both.empty:
        print("latency_drift: the two runs measured no architecture in common", file=sys.stderr)
        return 2
    ratio = both["measured_ms_later"] / both["measured_ms_earlier"]
    later = both["measured_ms_later"]

    def within(pred: pd.Series) -> float:
        return float(((pred / later - 1).abs() <= 0.10).mean())

    print(f"$ {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})")
    print(f"{len(both)} architectures measured by both runs")
    q = ratio.quantile([0.1, 0.25, 0.5, 0.75, 0.9])
    print("later / earlier latency, quantiles 10/25/50/75/90%: " + " / ".join(f"{v:.3f}" for v in q))
    print(f"later within +-10% of earlier: {float(((ratio - 1).abs() <= 0.10).mean()):.0%}")
    spearman = both["measured_ms_earlier"].corr(later, method="spearman")
    print(f"Spearman, earlier vs later measurement: {spearman:.3f}")
    print()
    print("| the earlier run's k-fold predictions against the later measurements | within +-10% |")
    print("|---|---|")
    print(f"| as they are | {within(both['predicted_ms_earlier']):.0%} |")
    rng = np.random.default_rng(0)
    for k in (int(v) for v in args.refs.split(",")):
        shares = [
            within(
                both["predicted_ms_earlier"]
                * float(np.median(ratio.iloc[rng.choice(len(both), k, replace=False)]))
            )
            for _ in range(args.draws)
        ]
        lo, mid, hi = np.percentile(shares, [10, 50, 90])
        print(
            f"| rescaled by the median ratio of {k} reference arch(s) | {mid:.0%} (10-90%: {lo:.0%}-{hi:.0%}) |"
        )
    print(
        f"| for comparison: the later run's own k-fold predictions | {within(both['predicted_ms_later']):.0%} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
