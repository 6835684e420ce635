"""Do a random network's BN statistics change its latency? The architectures a `--check-predictor`
(or `--fit-predictor`) run missed most in each direction, and two near its median error, built
with the same random weights and timed twice in each runtime: with BN statistics as built (mean
0, variance 1: `bn=init`, how effnas timed networks before 2026-12-05) and re-estimated on random
images (`bn=calibrated`, `training.timing.calibrated_bn`). Beside each: the scale of its last
activation (the median |x| entering the head's pooling) under each. Then onnxruntime's own
profile (per operator type, the median of its runs) of the architecture whose time moved most.
Why: the onnxruntime predictor on the Intel Xeon VM missed 30% of 200 unseen architectures by
more than 10%, and the misses were repeatable (the same in new sessions and new processes), so
the cause was in the networks timed, not in the timing.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_denormals.py RUN [--each 3] [--runs 20]

Takes a few minutes (each architecture timed 4 times, 20 runs after 5 warm-up); run it on an
otherwise idle machine. Prints the tables, the command and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any


def last_activation(model: Any, resolution: int) -> float:
    """Median |x| of what enters the head's global pooling, for one N(0, 1) image."""
    import torch

    seen: list[float] = []
    pools = [m for m in model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    handle = pools[-1].register_forward_hook(lambda m, inp, out: seen.append(float(inp[0].abs().median())))
    with torch.no_grad():
        model(torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(1)))
    handle.remove()
    return seen[0]


def ort_profile(model: Any, resolution: int, runs: int) -> dict[str, float]:
    """Milliseconds per onnxruntime operator type (the sum over its nodes of each node's median)."""
    import torch

    from training.onnx_io import export_onnx_module, onnx_session

    x = torch.randn(1, 3, resolution, resolution)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx_module(model.eval(), x, path)
        session = onnx_session(path, 1, profile_prefix=str(Path(folder) / "profile"))
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    kind: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"] / 1e3)
            kind[e["name"]] = e["args"].get("op_name", "?")
    by_kind: dict[str, float] = defaultdict(float)
    for name, ms in per_node.items():
        by_kind[kind[name]] += statistics.median(ms[len(ms) // 4 :])  # the first quarter warms up
    return dict(by_kind)


def main() -> int:
    import pandas as pd
    import torch

    from effnas.lifecycle import compose_config
    from search_spaces.builder import build_model
    from search_spaces.mnasnet import MnasNetSpace
    from training.timing import Setup, calibrated_bn, measure, pinned, runner, steady_allocator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a --check-predictor or --fit-predictor run directory")
    parser.add_argument("--each", type=int, default=3, help="architectures from each end of the errors")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = pd.read_csv(args.run / "measurements.csv")
    if "predicted_ms" not in rows:
        predicted = pd.read_csv(args.run / "predictor.csv")  # a fit run: its out-of-fold predictions
        rows = rows.merge(predicted[["arch", "predicted_ms"]], on="arch")
    anchor = json.loads((args.run / "summary.json").read_text()).get("anchor") or {}
    # an anchored run predicts milliseconds at the anchor's reference speed: its ratio x that
    ms = rows["ratio"] * anchor["reference_ms"] if anchor else rows["measured_ms"]
    rows["error"] = ms / rows["predicted_ms"] - 1
    rows = rows.sort_values("error").reset_index(drop=True)
    mid = len(rows) // 2
    picks = pd.concat([rows.tail(args.each)[::-1], rows.iloc[mid - 1 : mid + 1], rows.head(args.each)])
    space = MnasNetSpace.from_config(compose_config("latency", []).space)
    steady_allocator()

    def build(choices: str, bn: str) -> tuple[Any, int]:
        arch = space.decode([int(c) for c in choices.split()])
        torch.manual_seed(0)  # the same random weights under both statistics
        model = build_model(arch, num_classes=1000, stem_stride=None, input_size=arch.resolution).eval()
        return (calibrated_bn(model, arch.resolution) if bn == "calibrated" else model), arch.resolution

    print(
        f"{'arch':15} {'error':>7} {'run ms':>7} | {'ort init':>8} {'ort cal':>8} {'x':>5} | "
        f"{'torch init':>10} {'torch cal':>9} {'x':>5} | {'last |x| init':>13} {'cal':>7}"
    )
    moved = []
    with pinned(1, True):
        for _, row in picks.iterrows():
            timed, scale = {}, {}
            for bn in ("init", "calibrated"):
                for rt in ("onnxruntime", "torch"):
                    model, res = build(row["choices"], bn)
                    setup = Setup(1, 1, args.runs, 5, rt, "cpu", True, bn=bn)
                    timed[rt, bn] = statistics.median(
                        measure(runner(model, (1, 3, res, res), setup), args.runs, 5)
                    )
                scale[bn] = last_activation(build(row["choices"], bn)[0], res)
            ort_x = timed["onnxruntime", "init"] / timed["onnxruntime", "calibrated"]
            torch_x = timed["torch", "init"] / timed["torch", "calibrated"]
            moved.append((ort_x, row))
            print(
                f"{row['arch']:15} {row['error']:+7.1%} {row['measured_ms']:7.2f} | "
                f"{timed['onnxruntime', 'init']:8.2f} {timed['onnxruntime', 'calibrated']:8.2f} {ort_x:5.2f} | "
                f"{timed['torch', 'init']:10.2f} {timed['torch', 'calibrated']:9.2f} {torch_x:5.2f} | "
                f"{scale['init']:13.1e} {scale['calibrated']:7.1e}",
                flush=True,
            )
        worst = max(moved, key=lambda m: m[0])[1]
        profiles = {bn: ort_profile(*build(worst["choices"], bn), args.runs) for bn in ("init", "calibrated")}
    print(f"\nonnxruntime's profile of {worst['arch']} (ms per operator type, median run):")
    kinds = sorted(profiles["init"], key=lambda k: -profiles["init"][k])
    print(f"{'operator':>16} {'init':>7} {'calibrated':>10}")
    for k in kinds[:6]:
        print(f"{k:>16} {profiles['init'][k]:7.2f} {profiles['calibrated'].get(k, 0.0):10.2f}")
    print(f"{'all':>16} {sum(profiles['init'].values()):7.2f} {sum(profiles['calibrated'].values()):10.2f}")
    print(f"\ncommand: PYTHONPATH=. {sys.executable} {' '.join(sys.argv)}")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
