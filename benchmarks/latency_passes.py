"""How much of a learned latency predictor's miss is the measurement's? Several `--fit-predictor`
runs of the same architectures (the same space and seed: the same first N), each a sweep measured
at another time: how far one sweep agrees with another once each is divided by its own median,
and the k-fold agreement of the predictor fitted on each sweep alone against the same predictor
fitted on their combination (`search_spaces.latency_predictor.combine_passes`: each sweep over its
median, the median over sweeps, what `effnas latency --fit-predictor N passes=K` fits on). Reads
the runs' measurements.csv and the first run's table; measures nothing.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_passes.py RUN RUN [RUN ...]
    PYTHONPATH=. .venv/bin/python benchmarks/latency_passes.py RUN:ratio RUN:ratio RUN   # anchored runs

`RUN:COLUMN` reads another column of measurements.csv than `measured_ms`: `ratio` (a run with
`anchor=true`: the ratio to the anchor timed beside it) or `fastest_ms`.

Prints a table, the command and the load average.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path


def main() -> int:
    import pandas as pd

    from search_spaces.latency_predictor import LatencyPredictor, combine_passes, features, fit
    from search_spaces.mnasnet import MnasNetSpace, SpaceConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="--fit-predictor runs of the same space and seed")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    if len(args.runs) < 2:
        print("latency_passes: needs at least two runs", file=sys.stderr)
        return 2
    print(f"$ PYTHONPATH=. python {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})")
    from omegaconf import OmegaConf

    runs = [r.rsplit(":", 1) if ":" in r else [r, "measured_ms"] for r in args.runs]
    frames = [pd.read_csv(Path(r) / "measurements.csv").set_index("arch") for r, _ in runs]
    for (run, column), frame in zip(runs, frames):
        if column not in frame.columns or frame[column].isna().any():
            print(f"latency_passes: {run}: no {column} for every architecture", file=sys.stderr)
            return 2
    args.runs = [r for r, _ in runs]
    names = [n for n in frames[0].index if all(n in f.index for f in frames[1:])]
    predictor = LatencyPredictor.load(args.runs[0])
    schema = OmegaConf.structured(SpaceConfig)
    space = MnasNetSpace.from_config(OmegaConf.merge(schema, OmegaConf.load("conf/space/mnasnet.yaml")))
    if space.fingerprint() != predictor.space_fingerprint:
        print("latency_passes: the runs are not of the default mnasnet space", file=sys.stderr)
        return 2
    archs = [space.decode(tuple(int(c) for c in str(frames[0].loc[n, "choices"]).split())) for n in names]
    x = [features(a, predictor.table, predictor.stages, **predictor.kw) for a in archs]
    sweeps = [[float(f.loc[n, column]) for n in names] for f, (_, column) in zip(frames, runs)]
    print(f"{len(names)} architectures in all {len(frames)} runs\n")

    print("| sweep against sweep (each over its median) | within +-10% | 10-90% of the ratio |")
    print("|---|---|---|")
    for (i, a), (j, b) in itertools.combinations(enumerate(sweeps), 2):
        ratio = pd.Series(b) / pd.Series(a)
        ratio = ratio / ratio.median()
        within = float(((ratio - 1).abs() <= 0.10).mean())
        print(f"| {i + 1} vs {j + 1} | {within:.0%} | {ratio.quantile(0.1):.3f}-{ratio.quantile(0.9):.3f} |")

    print("\n| fitted on | within +-10% (k-fold) | Spearman | table refit |")
    print("|---|---|---|---|")
    targets = {f"sweep {i + 1} ({args.runs[i]}, {runs[i][1]})": s for i, s in enumerate(sweeps)}
    targets[f"the {len(sweeps)} combined (combine_passes)"] = combine_passes(sweeps)
    errors = []
    for name, y in targets.items():
        _, chosen, oof, scores = fit(x, y, kind="auto", folds=args.folds, seed=0)
        best = scores["auto"]
        errors.append(pd.Series(oof["auto"]) / pd.Series(y) - 1)
        print(
            f"| {name}: {chosen} | {best['within_10pct']:.0%} | {best['spearman']:.3f} | "
            f"{scores['table']['within_10pct']:.0%} |"
        )
    # an architecture the predictor misses on every sweep is the model's miss; on one, the sweep's
    pairs = itertools.combinations(range(len(sweeps)), 2)
    print(
        "\ncorrelation of the k-fold errors between the predictors of two sweeps: "
        + ", ".join(f"{i + 1}-{j + 1} {errors[i].corr(errors[j]):.2f}" for i, j in pairs)
    )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
