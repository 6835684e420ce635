"""What TF "SAME" padding costs at inference (issue 24, docs/weights.md): EfficientNet-B0 as
`effnas convert --model timm:tf_efficientnet_b0` writes it (`padding: same`, the paper's own
weights' layout) against the same network with symmetric padding (torchvision's), at 224 px,
batch 1, one thread (the paper's Table 4 protocol, conf/latency.yaml), in PyTorch and in
onnxruntime. "SAME" comes in two forms (search_spaces/blocks.py::SameConv2d): static, the padding
computed once for a fixed input size (what `effnas latency` and `effnas export` build), and
dynamic, computed from each input's shape (a model built without an input size).

The three models (and a second instance of the symmetric one, the noise floor) are measured
round-robin, the order reversed every other round, `--rounds` times each (every time: the median of
`--runs` forward passes after 5 warm-up ones), so slow drift of the machine hits all alike;
the table gives each one's median over the rounds, its spread (min-max of the round medians) and
its ratio to the symmetric model's. Latency does not depend on weight values: random init.

    nice -n 0 .venv/bin/python benchmarks/same_padding.py            # ~3 min; a quiet machine
    .venv/bin/python benchmarks/same_padding.py --rounds 3 --runs 10  # quicker, noisier

Writes `same_padding.csv` and prints the command and the load average with the table.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from foundation.runfiles import atomic_write  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runtimes", default="torch,onnxruntime")
    ap.add_argument("--out", default="results/latency/same_padding")
    args = ap.parse_args()

    import torch

    from effnas.config import compose
    from search_spaces.arch_config import arch_from_cfg
    from search_spaces.builder import build_model
    from training.timing import Setup, measure, runner

    torch.set_num_threads(args.threads)
    base = arch_from_cfg(compose("latency", ["arch=efficientnet_b0"]).arch)
    same = base.scaled(padding="same")
    res = args.resolution
    models = {
        "symmetric": lambda: build_model(base),
        "symmetric, 2nd instance": lambda: build_model(base),  # the noise between identical models
        "same, static": lambda: build_model(same, input_size=res),
        "same, dynamic": lambda: build_model(same),
    }
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"start: load {load()}", flush=True)
    rows = []
    for runtime in args.runtimes.split(","):
        setup = Setup(
            batch=1,
            threads=args.threads,
            runs=args.runs,
            warmup=5,
            runtime=runtime,
            device="cpu",
            channels_last=True,
        )
        torch.manual_seed(0)
        calls = {name: runner(make(), (1, 3, res, res), setup) for name, make in models.items()}
        medians: dict[str, list[float]] = {name: [] for name in calls}
        for r in range(args.rounds):
            # alternate the order: the first model of a round measured ~13% slower in a first run
            # where the order was fixed (2 symmetric instances, checked with the order alternated, tied)
            for name, call in list(calls.items())[:: 1 if r % 2 == 0 else -1]:
                medians[name].append(statistics.median(measure(call, args.runs, 5)))
            print(
                f"{runtime} round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {m[-1]:.2f} ms" for n, m in medians.items()),
                flush=True,
            )
        ref = statistics.median(medians["symmetric"])
        for name, ms in medians.items():
            mid = statistics.median(ms)
            rows.append(
                {
                    "runtime": runtime,
                    "padding": name,
                    "median_ms": round(mid, 3),
                    "min_ms": round(min(ms), 3),
                    "max_ms": round(max(ms), 3),
                    "vs_symmetric": round(mid / ref, 4),
                    "rounds": len(ms),
                }
            )
    end = load()
    print(
        f"\nEfficientNet-B0, {res} px, batch 1, {args.threads} thread(s), {args.rounds} rounds x "
        f"median of {args.runs} runs; load at the end {end}"
    )
    print("| runtime | padding | median ms | round medians (min-max) | vs symmetric |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['padding']} | {r['median_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | "
            f"{r['vs_symmetric']:.3f} |"
        )
    buf = io.StringIO()
    buf.write(",".join(rows[0]) + "\n")
    for r in rows:
        buf.write(",".join(str(v) for v in r.values()) + "\n")
    out = (REPO / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "same_padding.csv", buf.getvalue())
    print(f"wrote {out / 'same_padding.csv'}")


if __name__ == "__main__":
    main()
