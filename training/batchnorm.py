"""Re-estimating a network's BatchNorm statistics from the inputs passed through it: the one
rule behind the proxy trainer's "precise BN" before an evaluation (`training.proxy`) and the
statistics of the random-weight networks latency is measured on (`training.timing`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def reestimating(model: Any) -> Iterator[list[Any]]:
    """Inside: every BN layer of `model` reset, in training mode, averaging cumulatively
    (momentum None) over the forward passes the caller runs; on leaving, each layer's momentum
    put back and the layer in eval mode with the estimated statistics. The rest of `model` is
    left in whatever mode the caller set. Yields the BN layers."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        yield norms
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()
