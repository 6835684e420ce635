"""ONNX export of whole networks: agreement with PyTorch, export time, file size, and onnxruntime
against PyTorch latency, through `deploy.export`'s helpers (what `effnas export` runs).

Per model, at its own resolution, 1000 classes, random weights with BN statistics calibrated on
random images (as `effnas export` does without --weights): export seconds, file size, the largest
|onnxruntime - PyTorch| over 3 random inputs at batch 1 and 3 at batch 2, and latency at batch 1
on one thread (torch.set_num_threads(1); onnxruntime 1 intra-op, 1 inter-op thread): median of
`--runs` timed runs after `--warmup` untimed ones, each runtime measured back to back. Models are
arch option names (conf/arch/) or arch YAML files (a search's best_arch.yaml, a scale run's
b3.yaml); by default B0..B3, MobileNetV2 and the newest search run's best_arch.yaml under
results/search/ when there is one. Usage:
python benchmarks/bench_export.py [--archs efficientnet_b0,mobilenet_v2,path/to/best_arch.yaml] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deploy.export import (
    DEFAULT_OPSET,
    calibrate_batch_norm,
    compare_outputs,
    export_onnx,
    onnx_session,
)
from search_spaces.arch import Arch
from search_spaces.builder import build_model

REPO = Path(__file__).resolve().parents[1]


def newest_searched() -> Path | None:
    """The best_arch.yaml of the newest search run under results/search/, if any."""
    found = sorted((REPO / "results" / "search").glob("*/best_arch.yaml"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


DEFAULT_ARCHS = ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"]


def load_arch(spec: str) -> Arch:
    """An arch option name (composed by Hydra, so `defaults:` inheritance applies) or a YAML file."""
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return Arch.from_yaml(Path(spec).read_text())
    from effnas.config import compose
    from search_spaces.arch_config import arch_from_cfg

    return arch_from_cfg(compose("describe", [f"arch={spec}"]).arch)


def median_ms(call, runs: int, warmup: int) -> float:
    """Median milliseconds, timed the way `effnas latency` times (deploy.latency.measure)."""
    from deploy.latency import measure

    return statistics.median(measure(call, runs, warmup))


def bench(arch: Arch, folder: Path, runs: int, warmup: int, opset: int) -> dict:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    res = arch.resolution
    calibrate_batch_norm(model, res, seed=0)
    path = folder / f"{arch.name}.onnx"
    t0 = time.perf_counter()
    export_onnx(model, res, path, opset)
    export_s = time.perf_counter() - t0
    session = onnx_session(path, threads=1)
    checks = list(compare_outputs(model, lambda x: session.run(None, {"input": x})[0], res, checks=3))
    x = torch.randn(1, 3, res, res)
    feed = {"input": x.numpy()}

    def torch_call() -> None:
        with torch.inference_mode():
            model(x)

    torch_ms = median_ms(torch_call, runs, warmup)
    ort_ms = median_ms(lambda: session.run(None, feed), runs, warmup)
    return {
        "name": arch.name,
        "res": res,
        "params": sum(p.numel() for p in model.parameters()),
        "export_s": export_s,
        "mb": path.stat().st_size / 1e6,
        "diff": max(d for _, d, _ in checks),
        "out": max(o for _, _, o in checks),
        "torch_ms": torch_ms,
        "ort_ms": ort_ms,
    }


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    searched = newest_searched()
    default = ",".join([*DEFAULT_ARCHS, "mobilenet_v2", *([str(searched)] if searched else [])])
    ap.add_argument("--archs", default=default, help="comma-separated arch names or YAML files")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per runtime (median)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs before them")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import onnxruntime

    print(f"$ python {' '.join(sys.argv)}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 thread per runtime, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opset {args.opset}"
    )
    print(f"# before: {load_average()}")
    header = (
        f"{'model':<26}{'res':>5}{'params':>12}{'export s':>10}{'MB':>8}{'max abs diff':>14}"
        f"{'max |out|':>11}{'torch ms':>10}{'ort ms':>9}{'ort/torch':>10}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="effnas-bench-export-") as tmp:
        for spec in [s for s in args.archs.split(",") if s]:
            r = bench(load_arch(spec), Path(tmp), args.runs, args.warmup, args.opset)
            print(
                f"{r['name']:<26}{r['res']:>5}{r['params']:>12,}{r['export_s']:>10.1f}{r['mb']:>8.1f}"
                f"{r['diff']:>14.2e}{r['out']:>11.3g}{r['torch_ms']:>10.1f}{r['ort_ms']:>9.1f}"
                f"{r['ort_ms'] / r['torch_ms']:>10.2f}",
                flush=True,
            )
    print(f"# after: {load_average()}")


if __name__ == "__main__":
    main()
