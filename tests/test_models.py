"""Every registered architecture builds (tiny), runs, and trains one step with finite gradients."""

from __future__ import annotations

import random

import pytest
import torch

from search_spaces.builder import build_model
from search_spaces.cost import count
from search_spaces.official import OFFICIAL_TABLE, official
from search_spaces.random_arch import random_arch


def _one_step(model: torch.nn.Module, res: int, classes: int) -> None:
    torch.manual_seed(0)
    model.train()
    x = torch.randn(2, 3, res, res)
    y = torch.randint(0, classes, (2,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("name", list(OFFICIAL_TABLE))
def test_official_arch_builds_tiny_and_trains_one_step(name: str) -> None:
    # "Tiny": the real stage structure at 32 px and width 0.25, so B7's 55 layers run in a blink.
    arch = official(name).scaled(width=0.25)
    model = build_model(arch, num_classes=10, stem_stride=1)
    assert sum(p.numel() for p in model.parameters()) == count(arch, num_classes=10).params
    _one_step(model, 32, 10)


def test_full_size_b0_output_shape_and_eval_determinism() -> None:
    model = build_model(official("efficientnet_b0")).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and torch.equal(out, model(x))


@pytest.mark.parametrize("seed", range(6))
def test_random_arch_trains_one_step(seed: int) -> None:
    arch = random_arch(random.Random(seed), max_channels=32)
    _one_step(build_model(arch, num_classes=5), 32, 5)


def test_width_depth_arguments_override_the_arch() -> None:
    b0 = official("efficientnet_b0")
    m = build_model(b0, width=1.2, depth=1.4)
    assert sum(p.numel() for p in m.parameters()) == 12_233_232
