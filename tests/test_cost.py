"""The analytic cost model against REFERENCE.md's exact figures and against fvcore."""

from __future__ import annotations

import random

import pytest

from foundation.errors import UserError
from foundation.units import format_flops, parse_flops
from search_spaces.builder import fvcore_count
from search_spaces.cost import count
from search_spaces.official import OFFICIAL_FVCORE_GFLOPS, OFFICIAL_PARAMS, OFFICIAL_TABLE, official
from search_spaces.random_arch import random_arch


@pytest.mark.parametrize("name", list(OFFICIAL_TABLE))
def test_exact_params_at_1000_classes(name: str) -> None:
    assert count(official(name)).params == OFFICIAL_PARAMS[name]


def test_b0_macs_and_fvcore_total_match_reference() -> None:
    cost = count(official("efficientnet_b0"))
    assert cost.macs == pytest.approx(0.3858e9, rel=0.005)
    assert cost.fvcore_total == pytest.approx(0.4017e9, rel=0.005)
    assert cost.macs == cost.by_op["conv"] + cost.by_op["linear"]


@pytest.mark.parametrize("name", list(OFFICIAL_TABLE))
def test_official_fvcore_totals_within_half_a_percent(name: str) -> None:
    assert count(official(name)).fvcore_total == pytest.approx(OFFICIAL_FVCORE_GFLOPS[name] * 1e9, rel=0.005)


def test_stage_breakdown_sums_to_totals() -> None:
    cost = count(official("efficientnet_b2"))
    assert sum(s.macs for s in cost.stages) == cost.macs
    assert sum(s.params for s in cost.stages) == cost.params
    assert [s.name for s in cost.stages][:2] == ["stem", "stage1"] and cost.stages[-1].name == "head"


def test_resolution_and_classes_change_what_they_should() -> None:
    b0 = official("efficientnet_b0")
    small = count(b0, resolution=32, num_classes=10)
    assert small.params == OFFICIAL_PARAMS["efficientnet_b0"] - 1280 * 990 - 990
    assert small.macs < count(b0).macs / 40


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3"])
def test_counter_equals_fvcore_per_operator_on_official_models(name: str) -> None:
    arch = official(name)
    params, by_op = fvcore_count(arch, resolution=64)
    cost = count(arch, resolution=64)
    assert params == cost.params
    assert by_op == cost.by_op


def test_b0_activations_are_every_conv_output_of_the_built_model() -> None:
    # Dollar et al. 2021: activations = elements of every conv's output (batch 1), SE convs too
    import torch

    from search_spaces.builder import build_model

    arch = official("efficientnet_b0")
    model = build_model(arch).eval()
    seen: list[int] = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.numel()))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    cost = count(arch)
    assert sum(seen) == cost.activations == 6_747_036
    assert sum(s.activations for s in cost.stages) == cost.activations


@pytest.mark.parametrize("seed", range(8))
def test_counter_equals_fvcore_per_operator_on_random_archs(seed: int) -> None:
    arch = random_arch(random.Random(1000 + seed))
    params, by_op = fvcore_count(arch, resolution=arch.resolution // 2, num_classes=7)
    cost = count(arch, resolution=arch.resolution // 2, num_classes=7)
    assert params == cost.params
    assert set(by_op) == set(cost.by_op)
    for op, value in by_op.items():
        assert cost.by_op[op] == pytest.approx(value, rel=0.001), op


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("400M", 400_000_000),
        ("0.4G", 400_000_000),
        ("4e8", 400_000_000),
        ("400000000", 400_000_000),
        ("1.5B", 1_500_000_000),
        ("600k", 600_000),
    ],
)
def test_parse_flops(text: str, value: int) -> None:
    assert parse_flops(text) == value


@pytest.mark.parametrize("text", ["400X", "-5M", "0", "", "M", "1e", "nan"])
def test_parse_flops_rejects_nonsense(text: str) -> None:
    with pytest.raises(UserError, match="bad FLOP count"):
        parse_flops(text)


def test_format_flops() -> None:
    assert format_flops(385_814_752) == "385.8M"
    assert format_flops(1.827e9) == "1.827G"
