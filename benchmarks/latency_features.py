"""Which features carry a `--fit-predictor` run's latencies? Refits the run's measured
architectures (its measurements.csv; nothing is measured) 5-fold with the predictor's features
(`search_spaces.latency_predictor.features`) in groups: all of them, the table's sums alone, the
table-free ones alone (counts, MACs, params, activations), and all plus channel-alignment shares
(how many of the layers' widths are multiples of 8 and 16: vectorised kernels block channels so);
then how far the run's re-measured architectures moved between their two measurements (the log's
`[i/n] name: X ms (table ...)` and `[i/n] name: Y ms, CV` lines). Why: onnxruntime on an Intel
Xeon VM fitted to 54% within +-10% where the same protocol reached 88% on an AMD EPYC VM
(docs/latency.md).

    PYTHONPATH=. .venv/bin/python benchmarks/latency_features.py RUN [--table TABLE] [--log LOG]

Prints a table and the command.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path


def alignment(arch: object) -> list[float]:
    from search_spaces.plan import layer_plan

    _, layers, _ = layer_plan(arch)
    widths = [w for la in layers for w in (la.in_ch, la.out_ch, la.in_ch * la.expand)]
    return [sum(w % 8 == 0 for w in widths) / len(widths), sum(w % 16 == 0 for w in widths) / len(widths)]


def moved(log: Path, run: str) -> str:
    """How far the re-measured architectures of the run logged in `log` moved (again / first)."""
    text = log.read_text()
    start = text.find(f"run directory {run}")
    text = text[start : text.find("\n== ", start) if "\n== " in text[start:] else None]
    first = {m[1]: float(m[2]) for m in re.finditer(r"\] (mnas_\w+): ([\d.]+) ms \(table", text)}
    again = {m[1]: float(m[2]) for m in re.finditer(r"\] (mnas_\w+): ([\d.]+) ms, CV", text)}
    ratios = [again[k] / first[k] for k in again if k in first]
    if not ratios:
        return "no re-measured architectures in the log"
    over = sum(abs(r - 1) > 0.1 for r in ratios)
    return (
        f"{len(ratios)} re-measured: again / first median {statistics.median(ratios):.3f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}, {over} moved more than 10%"
    )


def main() -> int:
    import numpy as np
    import pandas as pd
    from omegaconf import OmegaConf

    from search_spaces.latency import LatencyTable
    from search_spaces.latency_predictor import LatencyPredictor, agreement, out_of_fold
    from search_spaces.latency_predictor import features as features_of
    from search_spaces.mnasnet import MnasNetSpace

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a --fit-predictor run directory")
    parser.add_argument(
        "--table", help="another latency table to read the features from (default: the run's)"
    )
    parser.add_argument("--log", type=Path, help="the log the run printed to (for the re-measured ones)")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "measurements.csv").is_file():
        parser.error(f"{run} holds no measurements.csv (a --fit-predictor run directory?)")
    predictor = LatencyPredictor.load(run)
    table = LatencyTable.load(args.table) if args.table else predictor.table
    space = MnasNetSpace.from_config(OmegaConf.load(run / ".hydra" / "config.yaml").space)
    rows = pd.read_csv(run / "measurements.csv")
    archs = [space.decode(tuple(int(c) for c in str(s).split())) for s in rows["choices"]]
    x = np.asarray([features_of(a, table, predictor.stages, **predictor.kw) for a in archs])
    y = rows["measured_ms"].to_numpy(dtype=float)
    sums = 2 + predictor.stages  # table_sum, stem_head, one per stage
    groups = {
        "all": x,
        "the table's sums alone": x[:, :sums],
        "table-free: counts, MACs, params, activations": np.c_[x[:, -3:-2], x[:, sums:]],  # MACs first
        "all + channel alignment (multiples of 8, 16)": np.c_[x, [alignment(a) for a in archs]],
    }
    print(f"{len(y)} architectures of {run} ({predictor.runtime}, {predictor.machine.get('cpu')}), 5-fold")
    print("| features | linear: within +-10%, Spearman | boosted: within +-10%, Spearman |")
    print("|---|---|---|")
    for name, xs in groups.items():
        cells = []
        for kind in ("linear", "boosted"):  # boosted reads column 0 as its base (table_sum or MACs)
            a = agreement(list(y), list(out_of_fold(kind, xs, y, 5, 0)))
            cells.append(f"{a['within_10pct']:.0%}, {a['spearman']:.3f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    if args.log:
        print(moved(args.log, str(run)))
    print(f"command: PYTHONPATH=. python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
