"""Zero-cost proxies: score an untrained network from one batch, to rank candidates before training.

Two published scores (Abdelfattah, Mehrotra, Dudziak and Lane 2021, "Zero-Cost Proxies for
Lightweight NAS", where both rank NAS-Bench-201 with Spearman 0.72-0.82):

- `naswot` (Mellor, Turner, Storkey and Crowley 2021, "Neural Architecture Search without
  Training"): the binary code of which activation units are on (input > 0) for each image of a
  batch; K[i, j] counts the units on which images i and j agree; score = log |det K|. Networks
  that separate the images of a batch into distinct activation patterns at initialization score
  higher. Our blocks use SiLU, which has no hard "on": the sign of its input is the code, as for
  ReLU (the paper's own ablation codes the sign of the pre-activation).
- `synflow` (Tanaka et al. 2020; Abdelfattah et al.'s form): every weight replaced by its absolute
  value, an all-ones input, R = sum of the outputs, score = sum over parameters |theta * dR/dtheta|;
  needs no data. Computed in float64 with BN in eval mode (its initial statistics: identity), and
  reported as log10 (the raw value overflows float32 on deep networks).

Both use the network the proxy would train (its resolution, stem stride and class count) and
its initialization for `seed`. A score is a few forward/backward passes: about one training step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.builder import build_model

PROXIES = ("naswot", "synflow")
_ACTIVATIONS = (nn.SiLU, nn.ReLU, nn.ReLU6)


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """log |det K| of the batch's activation-pattern agreement matrix (Mellor et al. 2021)."""
    n = images.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        code = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        k.add_(code @ code.T + (1.0 - code) @ (1.0 - code).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


def synflow(model: nn.Module, shape: Sequence[int]) -> float:
    """log10 of sum |theta * dR/dtheta| with |theta| weights and an all-ones input (Tanaka et al. 2020)."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    out = model(torch.ones(1, *shape[1:], dtype=torch.float64))
    out.sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log10(total) if total > 0 else float("-inf")


def score(
    arch: Arch,
    proxy: str,
    images: torch.Tensor,
    *,
    num_classes: int,
    stem_stride: int | None = None,
    seed: int = 0,
) -> float:
    """`proxy`'s score of `arch` as the proxy task would build it; `images` is one batch (N, C, H, W)
    at the proxy resolution (float, normalised as for training)."""
    if proxy not in PROXIES:
        raise ValueError(f"unknown zero-cost proxy {proxy!r}; expected one of {', '.join(PROXIES)}")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_model(arch, num_classes=num_classes, stem_stride=stem_stride)
    finally:
        torch.random.set_rng_state(state)
    if proxy == "naswot":
        return naswot(model, images)
    return synflow(model, tuple(images.shape))


def batch_of(dataset: Any, size: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """A fixed batch of `size` training images at `resolution`, normalised per channel with the
    training split's statistics (as the proxy trainer does)."""
    import numpy as np
    import torch.nn.functional as F

    x = dataset.train.x
    idx = np.random.default_rng(seed).permutation(len(x))[:size]
    mean = x.mean(axis=(0, 2, 3), dtype="float64") / 255.0
    std = x.std(axis=(0, 2, 3), dtype="float64") / 255.0
    std[std < 1e-3] = 1.0
    batch = torch.as_tensor(x[np.sort(idx)]).float() / 255.0
    batch = (batch - torch.tensor(mean).view(1, -1, 1, 1).float()) / torch.tensor(std).view(
        1, -1, 1, 1
    ).float()
    if batch.shape[-1] != resolution:
        batch = F.interpolate(batch, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return batch
