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


def by_kind(arch: object, resolution: int, stem_stride: int | None) -> list[float]:
    """Work split by the kind of kernel that does it (millions): 1x1 MACs, depthwise MACs per
    kernel size (3, 5, 7), full-conv MACs, and the elements each layer's tensors hold (its input,
    inner and output widths x their pixels: memory traffic). Why: an optimized runtime fuses a
    conv with its BN and activation and runs each kind on its own kernel, so one MAC is not one
    MAC's time across kinds, and a layer's cost may be bandwidth, not arithmetic."""
    from search_spaces.cost import _out
    from search_spaces.plan import layer_plan

    _, layers, _ = layer_plan(arch)
    res = _out(resolution, arch.stem_stride if stem_stride is None else stem_stride)
    res = _out(res, 2) if arch.stem_pool else res
    pointwise = full = traffic = 0.0
    depthwise = {3: 0.0, 5: 0.0, 7: 0.0}
    for la in layers:
        out = _out(res, la.stride)
        mid = la.mid
        if la.op in ("conv", "bneck"):
            full += out * out * mid * (la.in_ch if la.op == "conv" else mid) * la.kernel**2
            pointwise += (res * res * la.in_ch * mid + out * out * mid * la.out_ch) if la.op == "bneck" else 0
        else:
            pointwise += (res * res * la.in_ch * mid if la.expand != 1 else 0) + out * out * mid * la.out_ch
            depthwise[min(depthwise, key=lambda k: abs(k - la.kernel))] += out * out * mid * la.kernel**2
        traffic += res * res * (la.in_ch + mid) + out * out * (mid + la.out_ch)
        res = out
    return [v / 1e6 for v in (pointwise, *depthwise.values(), full, traffic)]


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
    resolution = predictor.kw.get("resolution")
    kinds = [by_kind(a, int(resolution or a.resolution), predictor.kw.get("stem_stride")) for a in archs]
    sums = 2 + predictor.stages  # table_sum, stem_head, one per stage
    groups = {
        "all": x,
        "the table's sums alone": x[:, :sums],
        "table-free: counts, MACs, params, activations": np.c_[x[:, -3:-2], x[:, sums:]],  # MACs first
        "all + channel alignment (multiples of 8, 16)": np.c_[x, [alignment(a) for a in archs]],
        "all + MACs by kind (1x1, depthwise 3/5/7, full) and tensor traffic": np.c_[x, kinds],
        "table-free + MACs by kind and traffic": np.c_[x[:, -3:-2], x[:, sums:], kinds],
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
