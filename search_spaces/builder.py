"""Arch (+ width/depth multipliers) -> torch.nn.Module.

`layer_plan` unrolls the resolved stages into one entry per layer; the builder and the analytic
cost model (`search_spaces.cost`) both walk it, so they cannot disagree on structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scaling.rounding import resolve_stages
from search_spaces.arch import Arch
from search_spaces.blocks import ConvNormAct, MBConv, RegularConv


@dataclass(frozen=True)
class Layer:
    """One concrete layer of the unrolled network."""

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
                )
            )
    return stem, layers, head


def make_layer(layer: Layer) -> nn.Module:
    if layer.op == "conv":
        return RegularConv(
            layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.se, layer.skip, layer.drop_path
        )
    return MBConv(
        layer.in_ch,
        layer.out_ch,
        layer.kernel,
        layer.stride,
        layer.expand,
        layer.se,
        layer.skip,
        layer.drop_path,
    )


class EfficientNet(nn.Module):
    """stem (3x3/2 conv) -> layers -> 1x1 head conv -> global pool -> dropout -> linear."""

    def __init__(self, arch: Arch, num_classes: int = 1000, stem_stride: int = 2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if stem_stride not in (1, 2):
            raise ValueError(f"illegal stem stride {stem_stride}; expected 1 or 2")
        self.arch = arch
        stem, layers, head = layer_plan(arch)
        self.stem = ConvNormAct(3, stem, 3, stem_stride)
        self.blocks = nn.Sequential(*(make_layer(layer) for layer in layers))
        self.head = ConvNormAct(layers[-1].out_ch, head, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(head, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # tensorflow/tpu: conv ~ N(0, sqrt(2 / fan_out)); dense ~ U(+-1/sqrt(fan_out)).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(
    arch: Arch,
    *,
    width: float | None = None,
    depth: float | None = None,
    num_classes: int = 1000,
    stem_stride: int = 2,
) -> EfficientNet:
    """Build `arch`, optionally overriding its width/depth multipliers (rounded officially)."""
    changes = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return EfficientNet(arch.scaled(**changes) if changes else arch, num_classes, stem_stride)


__all__ = ["EfficientNet", "Layer", "build_model", "layer_plan"]
