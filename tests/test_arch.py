"""The block-string grammar, Arch round trips and the official rounding rules."""

from __future__ import annotations

import random

import pytest

from search_spaces.arch import Arch, ArchError, StageSpec, decode_stage, encode_stage
from search_spaces.official import B0_BLOCKS, OFFICIAL_TABLE, efficientnet_b0, official
from search_spaces.random_arch import random_arch
from search_spaces.rounding import resolve_stages, round_channels, round_repeats


def test_official_strings_round_trip_exactly() -> None:
    for text in B0_BLOCKS:
        assert encode_stage(decode_stage(text)) == text


def test_decode_reads_every_token() -> None:
    s = decode_stage("r2_k5_s22_e6_i24_o40_se0.25")
    assert s == StageSpec(repeats=2, kernel=5, stride=2, expand=6, in_ch=24, out_ch=40, se=0.25)
    ds = decode_stage("ds_r1_k3_s11_i32_o16_noskip")
    assert (ds.op, ds.expand, ds.se, ds.skip) == ("ds", 1, 0.0, False)
    assert decode_stage("conv_r3_k5_s2_i8_o8_se0.25").stride == 2


def test_decode_reads_the_baselines_tokens() -> None:
    b = decode_stage("bneck_r4_k3_s22_e4_i256_o512_relu")
    assert (b.op, b.expand, b.act, b.skip, b.se) == ("bneck", 4, "relu", True, 0.0)
    d = decode_stage("dsa_r2_k3_s22_i64_o128_noskip_relu6")
    assert (d.op, d.expand, d.act, d.skip) == ("dsa", 1, "relu6", False)
    # silu is the default: accepted when written, never written back
    assert decode_stage("r1_k3_s11_e1_i32_o16_silu") == decode_stage("r1_k3_s11_e1_i32_o16")
    assert encode_stage(decode_stage("r1_k3_s11_e1_i32_o16_silu")) == "r1_k3_s11_e1_i32_o16"
    # any token order after the prefix; the canonical one comes back
    shuffled = decode_stage("bneck_relu_o512_i256_e4_s22_k3_r4")
    assert encode_stage(shuffled) == "bneck_r4_k3_s22_e4_i256_o512_relu"


@pytest.mark.parametrize("seed", range(50))
def test_random_stages_round_trip(seed: int) -> None:
    for stage in random_arch(random.Random(seed)).stages:
        assert decode_stage(encode_stage(stage)) == stage


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("r2_k5_s22_e6_i24_o40_se0.25_x9", "'x9'"),
        ("r2_k5_s22_e6_i24_se0.25", "o<..>"),
        ("r2_k4_s22_e6_i24_o40", "kernel"),
        ("r2_k5_s33_e6_i24_o40", "stride"),
        ("r2_k5_s12_e6_i24_o40", "'s12'"),
        ("ds_r1_k3_s11_e6_i32_o16", "'e6'"),
        ("r0_k3_s11_e1_i32_o16", "repeats"),
        ("r1_k3_s11_e1_i32_o16_seX", "'seX'"),
        ("r1_r2_k3_s11_e1_i32_o16", "duplicate"),
        ("", "empty"),
        ("bneck_r3_k3_s11_i64_o256", "e<..>"),
        ("bneck_r3_k3_s11_e3_i64_o256", "multiple of the expansion"),
        ("bneck_r3_k3_s11_e4_i64_o256_se0.25", "no squeeze-and-excitation"),
        ("dsa_r1_k3_s11_e6_i32_o64", "'e6'"),
        ("r1_k3_s11_e1_i32_o16_relu_relu6", "duplicate"),
        ("r1_k3_s11_e1_i32_o16_gelu", "bad token 'gelu'.*relu6"),
        ("r1_k3_s11_e1_i32_o16_relu5", "bad token 'relu5'"),
        ("r1_k3_s11_bneck_e1_i32_o16", "'bneck' must be the first token"),
    ],
)
def test_malformed_strings_name_the_bad_token(text: str, bad: str) -> None:
    with pytest.raises(ArchError, match=bad):
        decode_stage(text)


@pytest.mark.parametrize("seed", range(20))
def test_arch_yaml_round_trip(seed: int) -> None:
    arch = random_arch(random.Random(seed))
    assert Arch.from_yaml(arch.to_yaml()) == arch
    assert Arch.from_dict(arch.to_dict()) == arch


def test_arch_rejects_inconsistent_channels_and_unknown_keys() -> None:
    with pytest.raises(ArchError, match="takes 24 channels"):
        Arch.from_dict({"blocks": ["r1_k3_s11_e1_i32_o16", "r1_k3_s22_e6_i24_o24"]})
    with pytest.raises(ArchError, match="unknown arch key"):
        Arch.from_dict({"blocks": list(B0_BLOCKS), "widht": 1.1})
    with pytest.raises(ArchError, match="not valid YAML"):
        Arch.from_yaml("blocks: [unclosed")


@pytest.mark.parametrize(
    ("changes", "bad"),
    [
        ({"act": "gelu"}, "unknown activation act='gelu'"),
        ({"stem_stride": 3}, "illegal stem_stride"),
        ({"stem_kernel": 4}, "stem_kernel must be odd"),
        ({"head": 0, "head_min": 1280}, "needs a head conv"),
        ({"head": -1}, "head, head_min >= 0"),
    ],
)
def test_arch_rejects_bad_stem_and_head_fields(changes: dict, bad: str) -> None:
    with pytest.raises(ArchError, match=bad):
        Arch.from_dict({"blocks": list(B0_BLOCKS), **changes})


def test_efficientnet_files_keep_their_keys() -> None:
    # the stem/head/act fields are written only where they differ from EfficientNet's
    assert list(efficientnet_b0().to_dict()) == [
        "name", "blocks", "stem", "head", "width", "depth", "resolution", "dropout", "drop_path"
    ]  # fmt: skip


def test_scaled_is_a_new_object_and_keeps_the_baseline() -> None:
    b0 = efficientnet_b0()
    b3 = b0.scaled(width=1.2, depth=1.4)
    assert (b0.width, b0.depth) == (1.0, 1.0) and (b3.width, b3.depth) == (1.2, 1.4)
    with pytest.raises(AttributeError):
        b0.width = 2.0  # type: ignore[misc]


def test_round_channels_rules() -> None:
    assert round_channels(32, 1.0) == 32
    assert round_channels(32, 2.0) == 64
    assert round_channels(16, 1.1) == 16  # 17.6 -> 16 (lost < 10%)
    assert round_channels(40, 1.1) == 48  # 44 -> 48 (round half up)
    assert round_channels(4, 0.5) == 8  # never below the divisor
    assert round_channels(1280, 1.8) == 2304
    assert round_repeats(3, 1.1) == 4 and round_repeats(1, 3.1) == 4 and round_repeats(2, 1.0) == 2


def test_b7_matches_reference_derived_table() -> None:
    # REFERENCE.md: B7 stem 64, outs 32,48,80,160,224,384,640, repeats 4,7,7,10,10,13,4, head 2560.
    stem, stages, head = resolve_stages(official("efficientnet_b7"))
    assert stem == 64 and head == 2560
    assert [s.out_ch for s in stages] == [32, 48, 80, 160, 224, 384, 640]
    assert [s.repeats for s in stages] == [4, 7, 7, 10, 10, 13, 4]
    assert sum(s.repeats for s in stages) == 55


def test_official_family_is_b0_plus_the_table() -> None:
    for name, (w, d, r, p) in OFFICIAL_TABLE.items():
        arch = official(name)
        assert arch.stages == efficientnet_b0().stages
        assert (arch.width, arch.depth, arch.resolution, arch.dropout) == (w, d, r, p)
    with pytest.raises(KeyError):
        official("efficientnet_b8")
