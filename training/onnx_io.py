"""ONNX files of one-input modules and onnxruntime sessions: what `effnas export` writes and
checks, and what latency measurements run under `--runtime onnxruntime` (the latency stage and
the search's check of its winners both time through `training.timing`, so this sits below them).

ONNX goes through `torch.onnx.export(dynamo=True)`, the torch.export-based exporter (the default
since torch 2.9), with a dynamic batch axis, at opset 18: the lowest opset that exporter writes
natively (for 17 it converts afterwards, and that conversion fails on the pooling's ReduceMean),
read by onnxruntime >= 1.14. Importing this module loads no torch.
"""

from __future__ import annotations

import os
from typing import Any

from foundation.runfiles import atomic_write

DEFAULT_OPSET = 18  # see the module docstring


def export_onnx_module(
    module: Any,
    example: Any,
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    output: str = "output",
) -> None:
    """Write eval-mode `module`, called on one tensor shaped like `example`, to the ONNX file `path`
    (atomically, weights inside): input `input` with its first (batch) axis dynamic, output
    `output`. A whole network (`export_onnx`) or a part of one (the latency stage's table)."""
    import logging
    import warnings

    import torch

    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET} (torch.export-based exporter), got {opset}")
    if example.shape[0] < 2:  # torch.export would specialize a batch of 1 to the constant 1
        example = example.expand(2, *example.shape[1:]).contiguous()
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." x4
    try:
        with warnings.catch_warnings():
            # torch-internal pytree deprecations (DeprecationWarning, FutureWarning), none of ours
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=[output],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False,
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    # one protobuf, weights inside (< 2 GB: B7 is 0.27 GB), written the way every run file is
    atomic_write(path, program.model_proto.SerializeToString())


def onnx_session(path: str | os.PathLike[str], threads: int, profile_prefix: str | None = None) -> Any:
    """An onnxruntime InferenceSession on the CPU provider with `threads` intra-op threads (0:
    onnxruntime's default, one per physical core) and one inter-op thread, operators in sequence;
    with `profile_prefix`, onnxruntime's profiler on (its JSON from `end_profiling()`)."""
    import onnxruntime as ort

    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = onnxruntime's default), got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
