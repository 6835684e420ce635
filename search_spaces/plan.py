"""The layer plan: an `Arch` unrolled into one concrete entry per layer, without torch.

`layer_plan` applies the rounding rules (`search_spaces.rounding`) and the per-layer drop-path
schedule; the builder (`search_spaces.builder`) and the analytic cost model
(`search_spaces.cost`) both walk it, so they cannot disagree on structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.arch import Arch
from search_spaces.rounding import resolve_stages, round_channels


@dataclass(frozen=True)
class Layer:
    """One concrete layer of the unrolled network (channels already scaled and rounded)."""

    stage: int  # 0-based stage index
    op: str
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int
    se: float
    skip: bool
    drop_path: float
    act: str = "silu"

    @property
    def mid(self) -> int:
        """Width of the layer's inner convs: MBConv/ds/dsa expand the input (`in * e`, unrounded,
        tensorflow/tpu); `bneck` narrows the output (`out / e`, rounded like any channel count,
        so a scaled ResNet keeps multiples of 8); `conv` has none but its output."""
        if self.op == "bneck":
            return round_channels(self.out_ch, 1 / self.expand)
        if self.op == "conv":
            return self.out_ch
        return self.in_ch * self.expand


def se_channels(in_ch: int, se_ratio: float) -> int:
    """SE width: relative to the block's *input* channels (tensorflow/tpu, torchvision)."""
    return max(1, int(in_ch * se_ratio))


def layer_plan(arch: Arch) -> tuple[int, list[Layer], int]:
    """(stem channels, layers, head channels) after rounding, with per-layer drop-path rates.

    The drop-path rate grows linearly with the layer index, from 0 to `arch.drop_path`
    (exclusive), as in torchvision's and timm's EfficientNet.
    """
    stem, stages, head = resolve_stages(arch)
    total = sum(s.repeats for s in stages)
    layers: list[Layer] = []
    for si, s in enumerate(stages):
        for r in range(s.repeats):
            layers.append(
                Layer(
                    stage=si,
                    op=s.op,
                    kernel=s.kernel,
                    stride=s.stride if r == 0 else 1,
                    expand=s.expand,
                    in_ch=s.in_ch if r == 0 else s.out_ch,
                    out_ch=s.out_ch,
                    se=s.se,
                    skip=s.skip,
                    drop_path=arch.drop_path * len(layers) / total,
                    act=s.act,
                )
            )
    return stem, layers, head
