"""Does a fresh process measure slow? A predictor's reference architectures measured first thing
in a new process ("cold"), then the same references interleaved with as many random architectures
the predictor was not fitted on, twice over: each measurement's ratio to the predictor's
prediction. If the references measured cold run slower than the same references (and the others)
measured later, a drift factor taken at a process's start overstates the drift. Measures
5 + 20 networks (about 1.5 minutes on one pinned core); run it on an otherwise idle machine.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_cold_start.py results/latency/<fit run>

Prints every measurement, the median ratio per kind, the command and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time


def main() -> int:
    from omegaconf import OmegaConf

    from search_spaces.latency_predictor import LatencyPredictor, PredictorError
    from search_spaces.mnasnet import MnasNetSpace, SpaceConfig
    from training.timing import model_latency, pin_threads, setup_from

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictor", help="a --fit-predictor run (of the default mnasnet space)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7, help="draws the other architectures")
    args = parser.parse_args()
    try:
        predictor = LatencyPredictor.load(args.predictor)
    except PredictorError as exc:
        print(f"latency_cold_start: {exc}", file=sys.stderr)
        return 2
    schema = OmegaConf.structured(SpaceConfig)
    space = MnasNetSpace.from_config(OmegaConf.merge(schema, OmegaConf.load("conf/space/mnasnet.yaml")))
    if space.fingerprint() != predictor.space_fingerprint or not predictor.references:
        print("latency_cold_start: needs a predictor of the default space with references", file=sys.stderr)
        return 2
    print(f"$ {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})", flush=True)
    pin_threads(predictor.threads, True)
    setup = setup_from({**predictor.setup, "runtime": predictor.runtime})
    refs = [space.decode(tuple(int(c) for c in r["choices"].split())) for r in predictor.references]
    rng, seen, others = random.Random(args.seed), set(predictor.trained_on), []
    while len(others) < len(refs) * args.rounds:
        arch = space.decode(space.sample(rng))
        if arch.name not in seen:
            seen.add(arch.name)
            others.append(arch)
    kw = {
        "num_classes": int(predictor.kw.get("num_classes", 1000)),
        "stem_stride": predictor.kw.get("stem_stride"),
    }
    ratios: dict[str, list[float]] = {"references, cold": [], "references, later": [], "others": []}
    t0 = time.perf_counter()

    def measured(kind: str, arch: object) -> None:
        ms = model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"]).median_ms
        predicted = predictor.predict(arch)
        ratios[kind].append(ms / predicted)
        print(
            f"{time.perf_counter() - t0:5.0f}s  {kind:18s} {arch.name}: {ms:6.2f} ms, predicted "
            f"{predicted:6.2f} ({ms / predicted:.3f}x)",
            flush=True,
        )

    for arch in refs:
        measured("references, cold", arch)
    for k in range(args.rounds):
        for i, arch in enumerate(refs):
            measured("references, later", arch)
            measured("others", others[k * len(refs) + i])
    print("\n| measured | n | median ratio to the prediction | each |\n|---|---|---|---|")
    for kind, values in ratios.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {kind} | {len(values)} | {statistics.median(values):.3f} | {each} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
