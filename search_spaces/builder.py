"""Arch (+ width/depth multipliers) -> torch.nn.Module.

The builder walks the torch-free layer plan (`search_spaces.plan.layer_plan`), the same one the
analytic cost model counts, so they cannot disagree on structure. `fvcore_count` counts the
built model with fvcore: the cross-check of `search_spaces.cost.count`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.blocks import (
    ACTIVATIONS,
    BatchNorm,
    Bottleneck,
    ConvLayer,
    ConvNormAct,
    MBConv,
    NormLayer,
    RegularConv,
    conv_layer,
    symmetric_conv,
)
from search_spaces.latency import Part
from search_spaces.plan import Layer, layer_plan


def make_layer(layer: Layer, norm: NormLayer = BatchNorm, conv: ConvLayer = symmetric_conv) -> nn.Module:
    act = ACTIVATIONS[layer.act]
    if layer.op == "conv":
        return RegularConv(layer, norm, act, conv)
    if layer.op == "bneck":
        return Bottleneck(layer, norm, act, conv)
    return MBConv(layer, norm, act, conv)


def make_stem(
    out_ch: int,
    kernel: int,
    stride: int,
    pool: bool,
    act: str,
    norm: NormLayer = BatchNorm,
    conv: ConvLayer = symmetric_conv,
) -> tuple[nn.Module, nn.Module]:
    """(the stem conv, its 3x3/2 max pool or an identity)."""
    stem = ConvNormAct(3, out_ch, kernel, stride, norm=norm, act=ACTIVATIONS[act], conv=conv)
    return stem, nn.MaxPool2d(3, 2, padding=1) if pool else nn.Identity()


def make_head_conv(in_ch: int, out_ch: int, act: str, norm: NormLayer = BatchNorm) -> nn.Module:
    """The 1x1 head conv (EfficientNet, MobileNetV2), or an identity where there is none (0)."""
    return ConvNormAct(in_ch, out_ch, 1, norm=norm, act=ACTIVATIONS[act]) if out_ch else nn.Identity()


def _shrink(size: int | None, stride: int) -> int | None:
    """The output size of a stride-`stride` conv ("SAME" and k // 2 padding alike: ceil)."""
    return None if size is None else -(-size // stride)


class EfficientNet(nn.Module):
    """stem (kxk conv [+ 3x3/2 max pool]) -> layers -> [1x1 head conv] -> global pool -> dropout
    -> linear: EfficientNet, and every other network an `Arch` describes (MobileNets, ResNets)."""

    def __init__(
        self,
        arch: Arch,
        num_classes: int = 1000,
        stem_stride: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        stem_stride = arch.stem_stride if stem_stride is None else stem_stride
        if stem_stride not in (1, 2):
            raise ValueError(f"illegal stem stride {stem_stride}; expected 1 or 2")
        self.arch = arch
        stem, layers, head = layer_plan(arch)
        # the arch's BN epsilon and padding (Arch's docstring); momentum is tensorflow/tpu's
        norm = partial(nn.BatchNorm2d, momentum=0.01, eps=arch.bn_eps)
        self.stem, self.stem_pool = make_stem(
            stem,
            arch.stem_kernel,
            stem_stride,
            arch.stem_pool,
            arch.act,
            norm,
            conv_layer(arch.padding, input_size),
        )
        size = _shrink(_shrink(input_size, stem_stride), 2 if arch.stem_pool else 1)
        blocks = []
        for layer in layers:  # each layer's strided conv sees the layer's input size
            blocks.append(make_layer(layer, norm, conv_layer(arch.padding, size)))
            size = _shrink(size, layer.stride)
        self.blocks = nn.Sequential(*blocks)
        features = head or layers[-1].out_ch
        self.head = make_head_conv(layers[-1].out_ch, head, arch.act, norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(features, num_classes)
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
        return self.head(self.blocks(self.stem_pool(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(
    arch: Arch,
    *,
    width: float | None = None,
    depth: float | None = None,
    num_classes: int = 1000,
    stem_stride: int | None = None,
    input_size: int | None = None,
) -> EfficientNet:
    """Build `arch`, optionally overriding its width/depth multipliers (rounded officially) and
    its stem stride (the proxy's 32 px setting). `input_size`: the one input size the model will
    see, which makes `padding: same` static (no effect on symmetric padding)."""
    changes = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return EfficientNet(arch.scaled(**changes) if changes else arch, num_classes, stem_stride, input_size)


def fvcore_count(
    arch: Arch, *, resolution: int | None = None, num_classes: int = 1000, stem_stride: int | None = None
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


def build_part(part: Part, batch: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """The module of one part of a latency table (`search_spaces.latency.Part`) and the input
    shape it meets: built by the same functions as the whole network."""
    f = dict(part.fields)
    r = part.resolution
    if part.kind == "stem":
        return nn.Sequential(*make_stem(f["out_ch"], f["kernel"], f["stride"], f["pool"], f["act"])), (
            batch,
            3,
            r,
            r,
        )
    if part.kind == "head":
        features = f["out_ch"] or f["in_ch"]
        module = nn.Sequential(
            make_head_conv(f["in_ch"], f["out_ch"], f["act"]),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(features, f["classes"]),
        )
        return module, (batch, f["in_ch"], r, r)
    residual = f.pop("residual")
    layer = Layer(stage=0, skip=residual, drop_path=0.0, **f)
    return make_layer(layer), (batch, layer.in_ch, r, r)


__all__ = ["EfficientNet", "build_model", "build_part", "fvcore_count"]
