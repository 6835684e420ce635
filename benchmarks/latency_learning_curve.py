"""Would measuring more architectures make the learned latency predictor better? The k-fold
agreement of `effnas latency --fit-predictor` refitted on the first n of a finished fit's
measurements, for growing n (no new measurement: it reads the run's measurements.csv, the
table and the config it recorded).

    PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/latency_learning_curve.py results/latency/<fit run> [--sizes 50,100,200,400]

Prints a table (n, within +-10%, Spearman, median |error|, for the learned predictor and the
table refit on the same folds) with the command and the load average; writes
learning_curve.csv and learning_curve.png into the run directory (atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    import numpy as np
    import pandas as pd
    from omegaconf import OmegaConf

    from foundation.figures import axes, close
    from foundation.runfiles import atomic_write
    from search_spaces.latency import LatencyTable
    from search_spaces.latency_predictor import agreement, features, out_of_fold
    from search_spaces.mnasnet import MnasNetSpace

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished `effnas latency --fit-predictor` run directory")
    p.add_argument("--sizes", default="50,100,200,300,400", help="numbers of architectures, comma-separated")
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args()
    run = args.run
    need = [run / "measurements.csv", run / "latency_table.json", run / ".hydra" / "config.yaml"]
    missing = [str(f) for f in need if not f.is_file()]
    if missing:
        print(f"latency_learning_curve: {missing[0]} not found: not a --fit-predictor run", file=sys.stderr)
        return 2
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    space = MnasNetSpace.from_config(cfg.space)
    table = LatencyTable.load(str(run / "latency_table.json"))
    rows = pd.read_csv(run / "measurements.csv")
    kw = {"num_classes": int(cfg.num_classes), "stem_stride": cfg.stem_stride}
    stages = len(space.base.stages)
    archs = [space.decode(tuple(int(c) for c in str(ch).split())) for ch in rows["choices"]]
    x_all = np.array([features(a, table, stages, **kw) for a in archs], dtype=float)
    y_all = rows["measured_ms"].to_numpy(dtype=float)
    sizes = sorted({min(int(s), len(y_all)) for s in args.sizes.split(",")})
    out = []
    for n in sizes:
        x, y = x_all[:n], y_all[:n]
        for kind, label in ((str(cfg.predictor_model), "learned"), ("table", "table refit")):
            a = agreement(list(y), list(out_of_fold(kind, x, y, args.folds, int(cfg.run.seed))))
            out.append({"n": n, "predictor": label, **a})
            print(
                f"  n={n:4d} {label:12s} within +-10% {a['within_10pct']:.0%}  Spearman {a['spearman']:.3f}",
                flush=True,
            )
    df = pd.DataFrame(out)
    atomic_write(run / "learning_curve.csv", df.to_csv(index=False))
    fig, (ax,) = axes(1)
    for label, part in df.groupby("predictor"):
        ax.plot(part["n"], part["within_10pct"], marker="o", label=label)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--", label="goal 90%")
    ax.set(xlabel="architectures measured", ylabel="k-fold share within +-10%", title=run.name)
    ax.legend()
    tmp = run / ".learning_curve.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, run / "learning_curve.png")
    close(fig)
    print(df.to_string(index=False))
    print(f"# python benchmarks/latency_learning_curve.py {run} --sizes {args.sizes}; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
