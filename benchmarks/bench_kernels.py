"""effnas's CPU kernels layer by layer: every depthwise convolution of a model at the proxy's
shapes, oneDNN's forward and weight gradient against effnas's C weight gradient, and which of the
two the trainer uses (`training.kernels.c_weight_grad_wins`, a fixed rule).

    python benchmarks/bench_kernels.py [--arch efficientnet_b0] [--batch 64] [--resolution 32]
        [--stem-stride 1] [--threads 2] [--reps 9]

--batch is the micro-batch one forward/backward sees (the trainer's default 64).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.builder import build_model
from search_spaces.official import official
from training import kernels


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def depthwise_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Conv2d, torch.Size]]:
    seen: list[tuple[nn.Conv2d, torch.Size]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def time_layer(conv: nn.Conv2d, shape: torch.Size, reps: int) -> tuple[float, float, float]:
    """(forward, oneDNN weight gradient, C weight gradient) in ms for one layer at one shape."""
    cl = torch.channels_last
    k, s, p, groups = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.groups
    x = torch.randn(shape).contiguous(memory_format=cl)
    w = conv.weight.detach().clone()
    gy = torch.randn(F.conv2d(x, w, None, s, p, 1, groups).shape).contiguous(memory_format=cl)
    fwd = median_ms(lambda: F.conv2d(x, w, None, s, p, 1, groups), reps)
    onednn = median_ms(
        lambda: torch.ops.aten.convolution_backward(
            gy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], groups, [False, True, False]
        ),
        reps,
    )
    c = median_ms(lambda: kernels.depthwise_weight_grad(x, gy, k, s, p), reps)
    return fwd, onednn, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="efficientnet_b0")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if kernels.library() is None:
        sys.exit(f"effnas kernels unavailable: {kernels.unavailable_reason}")
    print(f"$ python {' '.join(sys.argv)}")
    print(f"threads {args.threads}, load average at start {os.getloadavg()[0]:.2f} (shared machine: noisy)")

    cl = torch.channels_last
    model = build_model(official(args.arch), num_classes=10, stem_stride=args.stem_stride).to(
        memory_format=cl
    )
    x0 = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(memory_format=cl)
    print(
        f"\n{'layer (N, C, H, W) k s':34s} {'fwd ms':>7s} {'oneDNN dW':>10s} {'C dW':>7s} "
        f"{'dW/fwd':>13s} {'used':>7s}"
    )
    totals = {"fwd": 0.0, "onednn": 0.0, "c": 0.0, "used": 0.0}
    for conv, shape in depthwise_shapes(model, x0):
        k, s = conv.kernel_size[0], conv.stride[0]
        fwd, onednn, c = time_layer(conv, shape, args.reps)
        use_c = kernels.c_weight_grad_wins(k, shape[2], shape[3])
        totals["fwd"] += fwd
        totals["onednn"] += onednn
        totals["c"] += c
        totals["used"] += c if use_c else onednn
        name = f"{tuple(shape)} k{k} s{s}"
        ratio = f"{onednn / fwd:5.1f} / {c / fwd:4.1f}"
        print(f"{name:34s} {fwd:7.2f} {onednn:10.2f} {c:7.2f} {ratio:>13s} {'C' if use_c else 'oneDNN':>7s}")
    print(
        f"\nall depthwise layers: forward {totals['fwd']:.1f} ms; weight gradient oneDNN "
        f"{totals['onednn']:.1f} ms, C {totals['c']:.1f} ms, as used {totals['used']:.1f} ms "
        f"({totals['onednn'] / totals['used']:.1f}x less)"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
