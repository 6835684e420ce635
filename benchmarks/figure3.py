"""Figure 3 on CIFAR-10 at 8 epochs: width, depth and resolution scaled alone, from the runs of
benchmarks/paper_question.sh: the 1x and ~2x points are the study's arms (results/cifar/study8),
the ~4x points the sweeps (results/cifar/sweep8_<dim>), same data, split, seeds and budget.
Prints each dimension's margins (4x vs 2x, 4x and 2x vs the unscaled B0; paired over the 10,000
test images and the seeds, foundation/verdict.py) and draws docs/figures/figure3_cifar_8ep.png.

    PYTHONPATH=. python benchmarks/figure3.py [--out results/cifar]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from foundation import per_image, verdict

DIMS = ("width", "depth", "resolution")
IMAGES = 10000  # CIFAR-10's test split, what the study and the sweeps judge on


def arm(run: Path, method: str) -> tuple[verdict.Scores | None, dict]:
    """The arm's scores (paired when per-image records exist) and its summary.json entry."""
    if not (run / "study.csv").exists():
        return None, {}
    with open(run / "study.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method and r["status"] == "ok"]
    if not rows:
        return None, {}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    stats = {}
    for levels in summary.get("budgets", {}).values():
        for level in levels.values():
            stats = level["methods"].get(method, stats)
    stats.setdefault("macs_ratio", float(rows[0]["macs_ratio"]))
    scores = per_image.scores(run, [(r["id"], float(r["accuracy"])) for r in rows], IMAGES)
    stats.setdefault("mean", scores.mean)  # a run still training has no summary: a point, no interval
    return scores, stats


def fmt(c: dict) -> str:
    if c["low"] is None:
        return f"{c['margin']:+.4f} ({c['call']})"
    return f"{c['margin']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] {c['call']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/cifar")
    ap.add_argument("--figure", default="docs/figures/figure3_cifar_8ep.png")
    args = ap.parse_args()
    out = Path(args.out)
    base, base_stats = arm(out / "study8", "baseline")
    if base is None:
        raise SystemExit(f"figure3: no finished baseline in {out / 'study8'}")
    print("| dimension | MACs x (2x / 4x) | 2x mean | 4x mean (seeds) | 2x vs B0 | 4x vs B0 | 4x vs 2x |")
    print("|---|---|---|---|---|---|---|")
    curves = {}
    for dim in DIMS:
        two, s2 = arm(out / "study8", dim)
        four, s4 = arm(out / f"sweep8_{dim}", dim)
        curves[dim] = [
            (1.0, base_stats),
            *([(s2["macs_ratio"], s2)] if two else []),
            *([(s4["macs_ratio"], s4)] if four else []),
        ]
        if two is None or four is None:
            print(f"| {dim} | not measured yet | | | | | |")
            continue
        print(
            f"| {dim} | {s2['macs_ratio']:.2f} / {s4['macs_ratio']:.2f} | {two.mean:.4f} | {four.mean:.4f} ({four.seeds}) "
            f"| {fmt(verdict.compare(two, base))} | {fmt(verdict.compare(four, base))} | {fmt(verdict.compare(four, two))} |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (dim, points) in enumerate(curves.items()):
        x = [p[0] * (1 + 0.01 * (i - 1)) for p in points]  # a small offset so the bars do not overlap
        y = [p[1]["mean"] for p in points]
        err = [
            [p[1]["mean"] - p[1].get("low", p[1]["mean"]) for p in points],
            [p[1].get("high", p[1]["mean"]) - p[1]["mean"] for p in points],
        ]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=dim)
    ax.set_xlabel("MACs / B0's")
    ax.set_ylabel("test accuracy (CIFAR-10, 8 epochs)")
    ax.set_title("one dimension scaled alone; 95% interval (seeds + test images)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"figure: {args.figure}  (PYTHONPATH=. python benchmarks/figure3.py --out {args.out})")


if __name__ == "__main__":
    main()
