"""Compound-scaling rounding rules, as pure functions (the architecture vocabulary: no torch).

The rules are the ones shared by tensorflow/tpu `efficientnet_model.round_filters/round_repeats`,
torchvision and timm (REFERENCE.md, "Scaling rules"); `resolve_stages` applies them to a whole
architecture, returning the concrete per-stage channels and repeats the builder and the cost
model both read.
"""

from __future__ import annotations

import dataclasses
import math

from search_spaces.arch import Arch, StageSpec

DIVISOR = 8


def round_channels(channels: int, width: float, divisor: int = DIVISOR) -> int:
    """c * width to the nearest multiple of `divisor` (never below it), bumped by one
    `divisor` when rounding lost more than 10% (tensorflow/tpu `round_filters`)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """ceil(repeats * depth) (tensorflow/tpu `round_repeats`)."""
    return math.ceil(repeats * depth)


def resolve_stages(arch: Arch) -> tuple[int, tuple[StageSpec, ...], int]:
    """(stem, stages, head) with `arch.width` and `arch.depth` applied.

    Channels of the stem, every stage's in/out and the head are rounded with `round_channels`;
    repeats with `round_repeats`. Width 1 and depth 1 return the stages unchanged. A head of 0
    (no head conv) stays 0; the head never narrows below `arch.head_min` (MobileNetV2:
    torchvision's `_make_divisible(1280 * max(1.0, width_mult), 8)`).
    """
    w, d = arch.width, arch.depth
    stages = tuple(
        dataclasses.replace(
            s,
            in_ch=round_channels(s.in_ch, w),
            out_ch=round_channels(s.out_ch, w),
            repeats=round_repeats(s.repeats, d),
        )
        for s in arch.stages
    )
    head = max(arch.head_min, round_channels(arch.head, w)) if arch.head else 0
    return round_channels(arch.stem, w), stages, head
