"""`effnas export`: one architecture as an ONNX or TorchScript file, checked against PyTorch.

    effnas export --arch efficientnet_b0                        # random init, ONNX
    effnas export results/scale/<run>/b3.yaml --format torchscript
    effnas export --weights results/train/<run>                 # that run's arch, classes, resolution

Writes `model.onnx` or `model.ts` (atomically) and returns the summary the CLI stores as
`summary.json`: the file and its size, what went into it (weights, classes, resolution, stem
stride) and the check: the exported model run by its runtime (onnxruntime's CPU provider, or
`torch.jit.load`) against the PyTorch model on `checks` random inputs at batch 1 and at batch 2,
the largest absolute difference held against `tolerance`. A failed check is a result: the file
stays, the summary says `check: failed`, and the command ends with one error line.

ONNX goes through `torch.onnx.export(dynamo=True)`, the torch.export-based exporter (the default
since torch 2.9; the TorchScript-based one warns that it will be removed), with a dynamic batch
axis, at opset 18: the lowest opset that exporter writes natively (for 17 it converts afterwards,
and that conversion fails on the pooling's ReduceMean), read by onnxruntime >= 1.14. TorchScript
is `torch.jit.script` of the eval-mode model.

`export_onnx`, `export_torchscript` and `load_torchscript` are plain functions for the other
deployment stages; `export_onnx_module` (any one-input module) and `onnx_session` live in
`training.onnx_io`, below the stages, because the search's latency check runs them too.
Importing this module loads no torch: the CLI composes every stage's schema.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundation.errors import UserError
from foundation.runfiles import atomic_write
from search_spaces.arch_config import ArchConfig
from training.onnx_io import DEFAULT_OPSET, export_onnx_module, onnx_session
from training.weights import load_into, load_state_dict, weight_source

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}
BATCH_SIZES = (1, 2)  # the check's batches: 1 as deployed, 2 proves the batch axis is dynamic
CALIBRATION_IMAGES = (2, 4)  # random init: batches x images that set BN's running statistics


@dataclass
class ExportConfig:
    """Schema of `conf/export.yaml` (values and their meaning there; `run` is added by the stage
    registry)."""

    arch: ArchConfig = field(default_factory=ArchConfig)  # unset: the --weights train run's arch
    format: str = MISSING
    weights: Optional[str] = MISSING
    resolution: Optional[int] = MISSING
    num_classes: Optional[int] = MISSING
    stem_stride: Optional[int] = MISSING
    opset: int = MISSING
    checks: int = MISSING
    tolerance: float = MISSING


@dataclass(frozen=True)
class Source:
    """What goes into the exported model, every default resolved."""

    arch: Any  # search_spaces.arch.Arch
    num_classes: int
    resolution: int
    stem_stride: int
    weights: Path | None  # the state_dict file; None: random init
    run: Path | None  # the train run the weights (and their defaults) come from


# -- the reusable helpers -------------------------------------------------------------------------
def export_onnx(
    model: Any, resolution: int, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET
) -> None:
    """Write eval-mode `model` to the ONNX file `path` (atomically, weights inside the file): input
    `input` of shape [batch, 3, resolution, resolution] with a dynamic batch axis, output `logits`."""
    import torch

    example = torch.zeros(2, 3, resolution, resolution)
    export_onnx_module(model, example, path, opset, output="logits")


def export_torchscript(model: Any, path: str | os.PathLike[str]) -> None:
    """Write eval-mode `model` to the TorchScript file `path` (atomically). Scripted, not traced:
    every input shape stays free, and a trace's debug records hold the caller's Python stack, so
    the same model exported from two call sites would give two different files."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13; asked for
        scripted = torch.jit.script(model)
        buf = io.BytesIO()  # not a file name: the zip holds it, and a temp name is random
        torch.jit.save(scripted, buf)
    atomic_write(path, buf.getvalue())


def load_torchscript(path: str | os.PathLike[str]) -> Any:
    """A TorchScript file from `export_torchscript`, on the CPU, in eval mode."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def calibrate_batch_norm(model: Any, resolution: int, seed: int) -> None:
    """Random init leaves BN's running statistics at mean 0, variance 1, so activations shrink
    block by block (B0's logits come out near 1e-14) and a 1e-4 check on them proves nothing:
    re-estimate the statistics on a few random images, weights untouched."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    generator = torch.Generator().manual_seed(seed + 1)
    momenta = [bn.momentum for bn in norms]
    model.eval()  # dropout and stochastic depth off: only BN learns its statistics
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batches
        bn.train()
    batches, images = CALIBRATION_IMAGES
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(images, 3, resolution, resolution, generator=generator))
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


# -- the stage ------------------------------------------------------------------------------------
def validate(cfg: Any) -> None:
    """Every input check before a run directory exists: format and numbers, the weights (a train
    run or a state_dict file) and whether they fit the architecture."""
    prepare(cfg)


def prepare(cfg: Any) -> tuple[Source, Any]:
    """(the resolved inputs, the eval-mode PyTorch model with its weights); bad input is a UserError."""
    import torch

    from search_spaces.arch_config import arch_from_cfg, arch_given
    from search_spaces.builder import build_model

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and int(cfg.opset) < DEFAULT_OPSET:
        raise UserError(
            f"opset must be >= {DEFAULT_OPSET} (torch's torch.export-based exporter), got {cfg.opset}"
        )
    if int(cfg.checks) < 1:
        raise UserError(f"checks must be >= 1 (random inputs per batch size), got {cfg.checks}")
    if not float(cfg.tolerance) >= 0:
        raise UserError(f"tolerance must be >= 0, got {cfg.tolerance}")
    for key, low in (("resolution", 8), ("num_classes", 1)):
        if cfg[key] is not None and int(cfg[key]) < low:
            raise UserError(f"{key} must be >= {low}, got {cfg[key]}")
    if cfg.stem_stride not in (None, 1, 2):
        raise UserError(
            f"stem_stride must be 1 or 2 (or null: the train run's, else the arch's), got {cfg.stem_stride}"
        )

    weights, run, trained = weight_source(cfg.weights)
    state = load_state_dict(weights) if weights else None
    if arch_given(cfg):
        arch = arch_from_cfg(cfg.arch)
    elif run is not None:
        arch = arch_from_cfg(trained["arch"])
    else:
        raise UserError(
            "no architecture: give --arch NAME, arch=NAME or an arch YAML file "
            "(or --weights a train run to export its architecture)"
        )
    rows = state.get("classifier.weight") if state else None
    source = Source(
        arch=arch,
        num_classes=int(
            cfg.num_classes or trained.get("num_classes") or (rows.shape[0] if rows is not None else 1000)
        ),
        resolution=int(cfg.resolution or trained.get("resolution") or arch.resolution),
        stem_stride=int(cfg.stem_stride or trained.get("stem_stride") or getattr(arch, "stem_stride", 2)),
        weights=weights,
        run=run,
    )
    with torch.random.fork_rng():
        torch.manual_seed(int(cfg.run.seed))  # random init: the same weights in validate and run
        # the export's spatial size is fixed (only the batch axis is dynamic): TF "SAME" padding
        # is computed once for it (static), not traced as per-input shape arithmetic
        model = build_model(
            arch, num_classes=source.num_classes, stem_stride=source.stem_stride, input_size=source.resolution
        )
    if state is not None:
        load_into(
            model,
            state,
            f"--weights {source.weights} do not fit {source.arch.name} ({source.num_classes} classes)",
        )
    return source, model.eval()


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    import torch

    source, model = prepare(cfg)
    threads = int(cfg.run.threads)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(cfg.run.seed)
    if source.weights is None:
        calibrate_batch_norm(model, source.resolution, seed)
        weights = (
            f"random init (seed {seed}; BN statistics from {math.prod(CALIBRATION_IMAGES)} random images)"
        )
    else:
        weights = str(source.weights.resolve())
        if source.run is not None:
            from foundation.runfiles import stage_of

            stage = stage_of(source.run) or "train"  # a train or a convert run
            rundir.record_upstream(source.run, stage, f"weights {source.weights.name}")
    fmt = str(cfg.format)
    path = rundir.file(FORMATS[fmt])
    print(
        f"effnas export: {source.arch.name} with {weights}, {source.num_classes} classes, "
        f"{source.resolution} px, stem stride {source.stem_stride} -> {path.name}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    if fmt == "onnx":
        export_onnx(model, source.resolution, path, int(cfg.opset))
    else:
        export_torchscript(model, path)
    export_seconds = time.perf_counter() - t0

    runner, runtime = exported_runner(fmt, path, threads)
    tolerance = float(cfg.tolerance)
    diffs, outputs = [], []
    total = len(BATCH_SIZES) * int(cfg.checks)
    for batch, diff, output in compare_outputs(model, runner, source.resolution, int(cfg.checks), seed):
        diffs.append(diff)
        outputs.append(output)
        print(
            f"check {len(diffs)}/{total}: batch {batch}  max |{runtime} - torch| {diff:.3e}  "
            f"(outputs up to {output:.3g})"
        )
    max_diff = max(diffs)
    ok = max_diff <= tolerance  # a NaN difference fails too
    summary = {
        "arch": source.arch.name,
        "format": fmt,
        "file": path.name,
        "bytes": path.stat().st_size,
        "exporter": "torch.onnx.export(dynamo=True)" if fmt == "onnx" else "torch.jit.script",
        "opset": int(cfg.opset) if fmt == "onnx" else None,
        "num_classes": source.num_classes,
        "resolution": source.resolution,
        "stem_stride": source.stem_stride,
        "params": sum(p.numel() for p in model.parameters()),
        "weights": weights,
        "weights_run": str(source.run.resolve()) if source.run else None,
        "check": "ok" if ok else "failed",
        "max_abs_diff": max_diff,
        "max_abs_output": max(outputs),
        "tolerance": tolerance,
        "checked_inputs": total,
        "batch_sizes": list(BATCH_SIZES),
        "runtime": runtime,
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "export_seconds": round(export_seconds, 3),
    }
    if not ok:
        rundir.finish(summary, status="failed")
        raise UserError(
            f"export check failed: {runtime} differs from PyTorch by up to {max_diff:.3e} > tolerance "
            f"{tolerance:g} ({path} kept, summary.json says check: failed)"
        )
    print(
        f"done: {path.name} {summary['bytes'] / 1e6:.1f} MB in {export_seconds:.1f}s, check ok: "
        f"max abs diff {max_diff:.3e} <= {tolerance:g} over {total} inputs -> {rundir.path}",
        file=sys.stderr,
    )
    return summary


def compare_outputs(
    model: Any, runner: Callable[[Any], Any], resolution: int, checks: int = 3, seed: int = 0
) -> Iterator[tuple[int, float, float]]:
    """(batch, max |exported - PyTorch|, max |PyTorch output|) for `checks` random N(0, 1) inputs
    at each of BATCH_SIZES; `runner` maps a float32 NCHW numpy batch to the exported logits. A
    wrong output shape is an infinite difference."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    for batch in BATCH_SIZES:
        for _ in range(checks):
            x = torch.randn(batch, 3, resolution, resolution, generator=generator)
            with torch.no_grad():
                expected = model(x).numpy()
            got = np.asarray(runner(x.numpy()))
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf
            yield batch, diff, float(np.abs(expected).max())


def exported_runner(fmt: str, path: Path, threads: int) -> tuple[Callable[[Any], Any], str]:
    """(a function from a float32 NCHW numpy batch to the exported model's logits, the runtime's name)."""
    if fmt == "onnx":
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})[0]), "onnxruntime"
    import torch

    module = load_torchscript(path)

    def run_script(x: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run_script, "torchscript"


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
