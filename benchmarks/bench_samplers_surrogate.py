"""Which sampler should I use? Every sampler on the surrogate benchmark, many seeds, anytime curves.

Runs the search driver (`nas.driver.Search`, the one `effnas search` uses, rejections and the
reward included) with each sampler against a fitted surrogate (`effnas surrogate fit`), so a
trial costs milliseconds instead of a training run, and prints per sampler the best reward so
far after 10/25/50/100/300 trained trials (median over seeds and the interquartile range),
and how many trials it needs to reach random search's 100-trial median best (median over the
seeds that reach it by the last trial, and how many do). Writes the curves as CSV and the
anytime plot (median line, IQR band).

    python benchmarks/bench_samplers_surrogate.py --surrogate results/surrogate/<run> \
        [--seeds 20] [--trials 300] [--samplers random,tpe,...] [--set evolution.population=32] \
        [--csv out.csv] [--plot out.png]

`--set NAME.KEY=VALUE` changes a sampler option (repeatable); `--variant LABEL:NAME:KEY=V,...`
adds a configured copy of a sampler (e.g. `--variant evo-p32-s8:evolution:population=32,sample_size=8`)
for tuning. Options not given are conf/sampler/<name>.yaml's.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from effnas.config import CONF_DIR
from nas.driver import Search
from nas.records import TRAINED
from nas.reward import RewardFn
from nas.samplers import SAMPLERS, make_sampler
from nas.surrogate import Surrogate
from search_spaces.mnasnet import MnasNetSpace
from training.trials import run_inline

CHECKPOINTS = (10, 25, 50, 100, 300)


def sampler_options(name: str) -> dict:
    """conf/sampler/<name>.yaml without its name: the defaults a user gets."""
    options = yaml.safe_load((CONF_DIR / "sampler" / f"{name}.yaml").read_text())
    options.pop("name", None)
    return options


def run_one(
    name: str, options: dict, seed: int, trials: int, surrogate: Surrogate, space, reward_fn
) -> list[float]:
    """Best reward after each trained trial (index 0 = after the first)."""
    sampler = make_sampler(name, space, seed, storage=None, study_name=f"bench-{name}-{seed}", **options)
    curve: list[float] = []  # best reward so far after each trained trial (rejected ones do not count)

    def save(rows: list[dict]) -> None:  # the search's record hook: called after every new row
        if rows[-1]["status"] in TRAINED:
            curve.append(max((r["reward"] for r in rows if r["status"] == "ok"), default=0.0))

    search = Search(space, sampler, reward_fn, trials=trials, reject_above=2.0, save=save, out=io.StringIO())

    def evaluate(config: dict) -> dict:
        accuracy = float(surrogate.predict(space, [tuple(config["choices"])])[0])
        return {"status": "ok", "accuracy": accuracy, "seconds": 0.0}

    run_inline(search, evaluate)
    sampler.close()
    return curve


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--surrogate", required=True, help="a surrogate run directory or its surrogate.pkl")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (held-out seeds)")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME:KEY=V,...")
    ap.add_argument("--target-flops", type=float, default=400e6)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--curves", default=None, help="CSV,CSV of earlier --csv runs: table and plot only")
    args = ap.parse_args()

    surrogate = Surrogate.load(args.surrogate)
    space = MnasNetSpace.from_config(yaml.safe_load((CONF_DIR / "space" / "mnasnet.yaml").read_text()))
    surrogate.check_space(space, args.surrogate)
    from omegaconf import OmegaConf

    reward_cfg = OmegaConf.load(CONF_DIR / "search.yaml").reward  # the search's own reward (soft, w)
    reward_fn = RewardFn.from_config(reward_cfg, args.target_flops, "MACs")
    entries = [(name, name, sampler_options(name)) for name in args.samplers.split(",") if name]
    for item in args.set:
        key, _, value = item.partition("=")
        name, _, option = key.partition(".")
        for _label, n, options in entries:
            if n == name:
                options[option] = yaml.safe_load(value)
    for item in args.variant:
        label, name, settings = item.split(":", 2)
        options = sampler_options(name)
        for pair in settings.split(","):
            key, _, value = pair.partition("=")
            options[key] = yaml.safe_load(value)
        entries.append((label, name, options))

    load = os.getloadavg()
    print(
        f"surrogate {args.surrogate}: {surrogate.kind} on {surrogate.rows} archs, k-fold Kendall "
        f"{surrogate.cv['kendall']:.3f}; {args.seeds} seeds x {args.trials} trials; T = "
        f"{args.target_flops / 1e6:g}M; load average {load[0]:.2f}",
        flush=True,
    )
    curves: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    if args.curves:  # tables and plot from earlier runs' --csv (runs split over processes)
        import pandas as pd

        entries = []
        for path in args.curves.split(","):
            frame = pd.read_csv(path)
            for label, part in frame.groupby("sampler", sort=False):
                if label not in curves:
                    table = part.pivot(index="seed", columns="trial", values="best_reward")
                    curves[str(label)], seconds[str(label)] = table.to_numpy(), float("nan")
    for label, name, options in entries:
        t0 = time.perf_counter()
        runs = [
            run_one(name, options, seed, args.trials, surrogate, space, reward_fn)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        seconds[label] = time.perf_counter() - t0
        curves[label] = np.array(runs)
        print(f"  {label:<16} {seconds[label]:7.1f} s  ({options})", flush=True)

    reference = (
        float(np.median(curves["random"][:, min(100, args.trials) - 1])) if "random" in curves else None
    )
    marks = [c for c in CHECKPOINTS if c <= args.trials]
    head = f"{'sampler':<16}" + "".join(f"{'@' + str(c):>17}" for c in marks)
    if reference is not None:
        head += f"  {'trials to random@100 median':>28}"
    print()
    print(head)
    rows = []
    for label, curve in curves.items():
        line = f"{label:<16}"
        row = {"sampler": label, "seconds": round(seconds[label], 1)}
        for c in marks:
            col = curve[:, c - 1]
            q1, med, q3 = np.percentile(col, [25, 50, 75])
            line += f"{med:9.4f} ±{(q3 - q1) / 2:6.4f}"  # median, half the interquartile range
            row[f"median@{c}"], row[f"iqr@{c}"] = float(med), float(q3 - q1)
        if reference is not None:
            hits = [int(np.argmax(run >= reference)) + 1 for run in curve if run[-1] >= reference]
            reach = (
                f"{statistics.median(hits):.0f} ({len(hits)}/{len(curve)} seeds)"
                if hits
                else f"never (0/{len(curve)})"
            )
            line += f"  {reach:>28}"
            row["trials_to_reference"] = statistics.median(hits) if hits else None
            row["seeds_reaching"] = len(hits)
        rows.append(row)
        print(line)
    if reference is not None:
        print(f"\nrandom search's median best after 100 trials: {reference:.4f}")
    print("command: python " + " ".join(sys.argv))

    if args.csv:
        import pandas as pd

        long = [
            {"sampler": label, "seed": s, "trial": t + 1, "best_reward": float(curve[s, t])}
            for label, curve in curves.items()
            for s in range(curve.shape[0])
            for t in range(curve.shape[1])
        ]
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(long).to_csv(args.csv, index=False)
        pd.DataFrame(rows).to_csv(Path(args.csv).with_suffix(".summary.csv"), index=False)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = np.arange(1, args.trials + 1)
        for label, curve in curves.items():
            q1, med, q3 = np.percentile(curve, [25, 50, 75], axis=0)
            ax.plot(
                x,
                med,
                label=label,
                lw=1.6 if label == "random" else 1.2,
                color="black" if label == "random" else None,
            )
            ax.fill_between(x, q1, q3, alpha=0.15)
        if reference is not None:
            ax.axhline(reference, color="grey", ls=":", lw=1, label="random @100 median")
        ax.set_xscale("log")
        ax.set_xlabel("trained trials")
        ax.set_ylabel("best reward so far (surrogate)")
        ax.set_title(f"samplers on the CIFAR-10 surrogate, {args.seeds} seeds (median, IQR)")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
