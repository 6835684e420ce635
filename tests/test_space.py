"""The MnasNet factorized space: size, validity of every sample, mutation, configuration."""

from __future__ import annotations

import math
import random

import pytest
from conftest import space_config

from search_spaces.builder import build_model
from search_spaces.cost import count
from search_spaces.mnasnet import STAGE_FIELDS, MnasNetSpace, SpaceError
from search_spaces.official import efficientnet_b0


@pytest.fixture(scope="module")
def space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


def test_size_is_the_product_of_the_choice_lists(space: MnasNetSpace) -> None:
    assert len(space.dims) == 7 * len(STAGE_FIELDS)
    assert space.size == (4 * 2 * 2 * 2 * 3 * 3) ** 7
    assert 1 < space.distinct_size() < space.size  # repeats 1 + {-1, 0} collide, so do roundings
    assert "7 stages x 288 choices" in space.describe()


def test_hundred_samples_are_valid_buildable_and_priced(space: MnasNetSpace) -> None:
    import torch

    rng = random.Random(0)
    base = space.base
    for i in range(100):
        arch = space.decode(space.sample(rng))
        assert [s.stride for s in arch.stages] == [s.stride for s in base.stages]
        assert arch.stages[0].in_ch == base.stem
        for prev, nxt in zip(arch.stages, arch.stages[1:]):
            assert nxt.in_ch == prev.out_ch
        for s, b in zip(arch.stages, base.stages):
            assert s.out_ch % 8 == 0
            assert max(1, b.repeats - 1) <= s.repeats <= b.repeats + 1
        cost = count(arch)  # at the deployment resolution (224) with 1000 classes
        assert cost.resolution == 224 and cost.num_classes == 1000 and cost.macs > 0
        model = build_model(arch, num_classes=10, stem_stride=1)
        assert sum(p.numel() for p in model.parameters()) == count(arch, num_classes=10).params
        if i < 5:
            with torch.no_grad():
                assert model.eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


def test_b0_is_a_point_of_its_own_space(space: MnasNetSpace) -> None:
    b0 = efficientnet_b0()
    choices = space.encode(b0)
    assert choices is not None
    arch = space.decode(choices)
    assert count(arch).macs == count(b0).macs and count(arch).params == count(b0).params
    assert arch.blocks[1:] == b0.blocks[1:]  # stage 1 is MBConv1, spelled ds in the space
    assert arch.blocks[0] == "ds_r1_k3_s11_i32_o16_se0.25"


def test_decode_is_deterministic_and_names_by_content(space: MnasNetSpace) -> None:
    choices = space.sample(random.Random(1))
    a, b = space.decode(choices), space.decode(list(choices))
    assert a == b and a.name == b.name and a.name.startswith("mnas_")
    other = space.decode(space.mutate(choices, random.Random(2)))
    assert other.blocks != a.blocks or other.name == a.name


def test_mutate_changes_exactly_one_decision(space: MnasNetSpace) -> None:
    rng = random.Random(3)
    choices = space.sample(rng)
    for _ in range(200):
        child = space.mutate(choices, rng)
        space.check(child)
        assert sum(x != y for x, y in zip(child, choices)) == 1
        choices = child


def test_filters_and_repeats_follow_the_choice(space: MnasNetSpace) -> None:
    n = len(STAGE_FIELDS)
    choices = [0] * len(space.dims)
    for si in range(7):
        choices[si * n + STAGE_FIELDS.index("filters")] = 2  # x1.25
        choices[si * n + STAGE_FIELDS.index("repeats")] = 0  # -1
        choices[si * n + STAGE_FIELDS.index("op")] = 3  # mbconv6
    arch = space.decode(choices)
    assert [s.out_ch for s in arch.stages] == [24, 32, 48, 104, 144, 240, 400]  # round_channels
    assert [s.repeats for s in arch.stages] == [1, 1, 1, 2, 2, 3, 1]
    assert all(s.op == "mbconv" and s.expand == 6 for s in arch.stages)


def test_choice_lists_come_from_config_and_shape_the_space() -> None:
    small = MnasNetSpace.from_config(
        space_config(**{"ops": ["mbconv6"], "kernels": [3], "filters": [1.0], "repeats": [0]})
    )
    assert small.size == (2 * 2) ** 7
    arch = small.decode(small.sample(random.Random(0)))
    assert all(s.kernel == 3 and s.op == "mbconv" for s in arch.stages)
    assert [s.out_ch for s in arch.stages] == [s.out_ch for s in efficientnet_b0().stages]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kernels": []}, "space.kernels is empty"),
        ({"ops": []}, "space.ops is empty"),
        ({"ops": ["conv", "sepconv"]}, "unknown conv op 'sepconv'"),
        ({"kernels": [3, 4]}, "odd integers"),
        ({"se": [0.0, 1.5]}, "within \\[0, 1\\]"),
        ({"filters": [0.0]}, "must be > 0"),
        ({"repeats": [0, 0]}, "duplicate values"),
        ({"skip": ["yes"]}, "true or false"),
        ({"base": "resnet50"}, "unknown space.base"),
        ({"name": "darts"}, "unknown search space"),
    ],
)
def test_bad_space_config_is_one_clear_error(change: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        MnasNetSpace.from_config(space_config(**change))


def test_check_rejects_out_of_range_choices(space: MnasNetSpace) -> None:
    with pytest.raises(SpaceError, match="expected 42 choices"):
        space.check([0] * 5)
    with pytest.raises(SpaceError, match="s1_op=9 out of range"):
        space.decode([9] + [0] * 41)


def test_composed_config_builds_the_default_space() -> None:
    from effnas.config import compose

    cfg = compose("search", [])
    space = MnasNetSpace.from_config(cfg.space)
    assert space.size == math.prod(space.sizes) == 288**7
