"""Arch (+ width/depth multipliers) -> torch.nn.Module.

The builder walks the torch-free layer plan (`search_spaces.plan.layer_plan`), the same one the
analytic cost model counts, so they cannot disagree on structure. `fvcore_count` counts the
built model with fvcore: the cross-check of `search_spaces.cost.count`.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.blocks import ConvNormAct, MBConv, RegularConv
from search_spaces.plan import Layer, layer_plan


def make_layer(layer: Layer) -> nn.Module:
    return RegularConv(layer) if layer.op == "conv" else MBConv(layer)


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


def fvcore_count(
    arch: Arch, *, resolution: int | None = None, num_classes: int = 1000, stem_stride: int = 2
) -> tuple[int, dict[str, int]]:
    """(params, fvcore flops by operator) of the *built* model: the cross-check of `count`."""
    from fvcore.nn import FlopCountAnalysis

    model = build_model(arch, num_classes=num_classes, stem_stride=stem_stride).eval()
    res = int(resolution or arch.resolution)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, res, res))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = {k: int(v) for k, v in sorted(analysis.by_operator().items()) if v}
    params = sum(p.numel() for p in model.parameters())
    return params, by_op


__all__ = ["EfficientNet", "build_model", "fvcore_count"]
