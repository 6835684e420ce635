"""`make demo`: the whole method on the embedded default (scikit-learn's digits), from files alone.

search (MnasNet space, reward ACC*(MACs/400M)^-0.07) -> grid --from <search run> (alpha, beta,
gamma at phi=1) -> scale --from <grid run> (B1..B7) -> train <scale run>/b1.yaml. Budgets are
small so it finishes in minutes on a laptop CPU; each stage's run directory lands in
`results/` (or `--root DIR`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from effnas.cli import main as effnas
from effnas.runfiles import read_json


def _latest(root: Path, stage: str) -> Path:
    runs = sorted((root / stage).iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


def _step(title: str, args: list[str]) -> None:
    print(f"\n=== {title}\n$ effnas {' '.join(args)}", file=sys.stderr, flush=True)
    code = effnas(args)
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default="results", help="where the run directories go")
    ap.add_argument("--trials", type=int, default=8, help="search trials")
    ap.add_argument("--candidates", type=int, default=6, help="grid candidates (plus the baseline)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    t0 = time.time()
    common = [f"run.root={root}", "data=digits"]
    # digits are 8x8: 16 px loses nothing; no crop/flip (a flipped digit is another digit).
    digits_proxy = ["proxy.resolution=16", "proxy.batch_size=32", "proxy.augment=false"]
    search_args = ["--target-flops", "400M", "--trials", str(args.trials), "--sampler", "evolution"]
    _step("1/4 search: the baseline", ["search", *search_args, *common])
    search = _latest(root, "search")
    grid_args = ["--phi", "1", "--from", str(search), f"max_candidates={args.candidates}"]
    _step("2/4 grid: alpha, beta, gamma at phi = 1", ["grid", *grid_args, *common])
    grid = _latest(root, "grid")
    _step("3/4 scale: B1..B7", ["scale", "--phi", "1..7", "--from", str(grid), f"run.root={root}"])
    scale = _latest(root, "scale")
    train_args = [str(scale / "b1.yaml"), "proxy.epochs=6", *digits_proxy]
    _step("4/4 train B1 from its YAML", ["train", *train_args, *common])
    train = _latest(root, "train")
    print(f"\n=== done in {time.time() - t0:.0f} s", file=sys.stderr)
    headline = {
        "search": ("best_arch", "best_reward", "best_accuracy", "best_macs"),
        "grid": ("winner", "baseline_accuracy"),
        "scale": ("mode", "alpha", "beta", "gamma"),
        "train": ("arch", "val_accuracy", "params", "macs"),
    }
    for stage, path in (("search", search), ("grid", grid), ("scale", scale), ("train", train)):
        summary = read_json(path / "summary.json")
        print(f"{stage:<7} {path}")
        print("        " + "  ".join(f"{k}={summary.get(k)}" for k in headline[stage]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
