"""Sampler comparison on CIFAR-10: best reward vs trials, equal trial budget, several seeds.

    .venv/bin/python benchmarks/bench_samplers.py [--root CIFAR10_DIR] [--seeds 3] [--trials 12]
        [--samplers random,tpe,nsga2,evolution,controller] [--images 4000] [--resolution 16]

Every sampler searches the same MnasNet space with the same proxy (the trainer every Ray trial
runs, `training.trials.run_trial`, called in this process: the comparison is about the samplers, not
the cluster) and the same reward (soft, T = 400M). Proxy runs are deterministic for a given
architecture and seed on CPU, so an architecture proposed twice (e.g. the shared random start of
random search and evolution under one seed) is trained once and its result reused. Learners get
start-up budgets that fit a small trial budget (tpe n_startup, evolution population) -- see
`SAMPLER_OPTIONS`. Prints one table: mean (and min..max over seeds) of the best reward found
after k trials, per sampler, plus the command line that produced it.

Measured (2026-11, 2 shared x86 cores, 1 torch thread, 82 proxy runs + 18 reused, 10 min):
`--seeds 2 --trials 10 --images 3000` (2000-image CIFAR-10 subset, 16 px) gave mean final best
reward random 0.177, tpe 0.183, nsga2 0.154, evolution 0.180, controller 0.179 with per-seed
spreads of about +-0.04: at this budget the proxy reaches only 14-23% accuracy and no sampler is
distinguishable from random search. A ranking needs a proxy that separates architectures
(more images, 32 px) and more seeds, i.e. a GPU or hours of CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10"
SAMPLERS = ("random", "tpe", "nsga2", "evolution", "controller")
# Start-up budgets scaled to a dozen trials (the conf/sampler defaults assume more).
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "random": {},
    "tpe": {"n_startup": 4},
    "nsga2": {"population": 4},
    "evolution": {"population": 4, "sample_size": 2},
    "controller": {"lr": 0.1, "baseline_decay": 0.9},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="CIFAR-10 directory")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12, help="trained trials per search")
    parser.add_argument("--images", type=int, default=4000, help="proxy budget in training images")
    parser.add_argument("--resolution", type=int, default=16, help="proxy input size")
    parser.add_argument("--max-train", type=int, default=2000, help="CIFAR-10 training subset")
    parser.add_argument("--val-fraction", type=float, default=0.02, help="validation hold-out (of 50k)")
    parser.add_argument("--target", default="400M")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every curve to this JSON file")
    parser.add_argument(
        "--digits",
        action="store_true",
        help="the embedded default instead: `effnas search`'s own data, proxy and budget (digits, "
        "1 epoch) and every sampler with its conf/sampler defaults (what a user gets)",
    )
    args = parser.parse_args()

    import torch

    from effnas.config import compose
    from foundation.units import parse_flops
    from nas.driver import Search
    from nas.reward import RewardFn
    from nas.samplers import make_sampler
    from search_spaces.mnasnet import MnasNetSpace
    from training.data import load_dataset
    from training.trials import TrialSetup, run_inline, run_trial

    torch.set_num_threads(args.threads)
    overrides = [
        "data=cifar10",
        f"data.root={args.root}",
        f"data.max_train={args.max_train}",
        f"data.val_fraction={args.val_fraction}",
        f"proxy.resolution={args.resolution}",
        f"proxy.images={args.images}",
        "proxy.batch_size=64",
        "proxy.augment=true",
        "proxy.compile=off",
    ]
    cfg = compose("search", ["proxy.compile=off"] if args.digits else overrides)
    options = SAMPLER_OPTIONS
    if args.digits:
        from omegaconf import OmegaConf

        options = {
            n: {
                k: v
                for k, v in OmegaConf.to_container(compose("search", [f"sampler={n}"]).sampler).items()
                if k != "name"
            }
            for n in SAMPLERS
        }
    data = load_dataset(cfg.data)
    setup = TrialSetup.of(cfg)
    space = MnasNetSpace.from_config(cfg.space)
    target = parse_flops(args.target)
    reward_fn = RewardFn(target, -0.07, -0.07)
    names = [s for s in args.samplers.split(",") if s]

    curves: dict[str, list[list[float]]] = {n: [] for n in names}
    finals: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    trained = cached = 0
    seconds: list[float] = []
    t0 = time.time()
    for seed in range(args.seeds):
        cache: dict[str, dict[str, Any]] = {}

        def evaluate(config: dict[str, Any], seed: int = seed, cache: dict = cache) -> dict[str, Any]:
            nonlocal trained, cached
            key = " ".join(config["arch"]["blocks"])
            if key in cache:
                cached += 1
                return cache[key]
            result = run_trial(config, TrialSetup(**{**setup.__dict__, "seed": seed}))
            trained += 1
            seconds.append(float(result.get("seconds") or 0.0))
            cache[key] = result
            return result

        for name in names:
            sampler = make_sampler(name, space, seed, **options[name])
            search = Search(
                space, sampler, reward_fn, trials=args.trials, reject_above=2.0, out=io.StringIO()
            )
            run_inline(search, evaluate)
            best, curve = 0.0, []
            for row in search.rows:
                if row["status"] in ("ok", "failed", "stopped"):
                    if row["status"] == "ok":
                        best = max(best, row["reward"])
                    curve.append(best)
            curves[name].append(curve)
            top = max(
                (r for r in search.rows if r["status"] == "ok"), key=lambda r: r["reward"], default=None
            )
            finals[name].append(
                {
                    "seed": seed,
                    "best_reward": best,
                    "best_accuracy": top["accuracy"] if top else None,
                    "best_macs": top["macs"] if top else None,
                    "rejected": sum(r["status"] == "rejected" for r in search.rows),
                    "failed": sum(r["status"] == "failed" for r in search.rows),
                }
            )
            sampler.close()
            print(
                f"seed {seed} {name:<10} best reward {best:.4f} "
                f"({time.time() - t0:.0f}s elapsed, {trained} trained, {cached} reused)",
                file=sys.stderr,
                flush=True,
            )

    report(args, names, curves, finals, trained, cached, seconds, time.time() - t0, data)
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": curves, "finals": finals}, indent=1))


def report(args, names, curves, finals, trained, cached, seconds, wall, data) -> None:
    checkpoints = sorted({max(1, args.trials // 4), max(1, args.trials // 2), args.trials})
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"# {data.name}: {len(data.train)} train / {len(data.val)} val images; proxy "
        + ("the search's default budget" if args.digits else f"{args.images} images at {args.resolution} px")
        + f"; reward soft w=-0.07, T={args.target}; "
        f"{args.seeds} seeds x {args.trials} trained trials per sampler"
    )
    print(
        f"# {trained} proxy runs ({cached} reused), median {statistics.median(seconds) if seconds else 0:.1f} s "
        f"each, {wall / 60:.1f} min wall; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared, {args.threads} torch thread(s)"
    )
    head = ["sampler"] + [f"best@{k}" for k in checkpoints] + ["min..max@end", "acc", "MACs", "rej"]
    rows = []
    for name in names:
        cells = [name]
        for k in checkpoints:
            vals = [c[min(k, len(c)) - 1] for c in curves[name] if c]
            cells.append(f"{statistics.mean(vals):.4f}" if vals else "-")
        ends = [f["best_reward"] for f in finals[name]]
        cells.append(f"{min(ends):.4f}..{max(ends):.4f}")
        accs = [f["best_accuracy"] for f in finals[name] if f["best_accuracy"] is not None]
        macs = [f["best_macs"] for f in finals[name] if f["best_macs"] is not None]
        cells.append(f"{statistics.mean(accs):.3f}" if accs else "-")
        cells.append(f"{statistics.mean(macs) / 1e6:.0f}M" if macs else "-")
        cells.append(f"{statistics.mean(f['rejected'] for f in finals[name]):.1f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    final = {n: statistics.mean(f["best_reward"] for f in finals[n]) for n in names}
    winner = max(final, key=final.get)
    if "random" in final and winner != "random":
        print(
            f"# best mean final reward: {winner} {final[winner]:.4f}, random {final['random']:.4f} "
            f"({final[winner] - final['random']:+.4f})"
        )
    else:
        print(f"# best mean final reward: {winner} {final[winner]:.4f}")


if __name__ == "__main__":
    main()
