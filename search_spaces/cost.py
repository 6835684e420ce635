"""Analytic cost model: parameters and multiply-adds from an Arch, without building a model.

Convention (REFERENCE.md, "FLOPs convention"): `macs` counts conv and linear multiply-adds, the
papers' "FLOPS". `fvcore_total` adds what fvcore counts by default on top: batch norm in eval
mode (2 per element: scale and shift) and adaptive average pooling (1 per input element);
element-wise ops (SiLU, ReLU, sigmoid, SE multiply, residual add) and ResNet's stem max pool
count nothing in either (fvcore 0.1.5 has no handle for `aten::max_pool2d`). `by_op` keys are
fvcore's operator names, so `search_spaces.builder.fvcore_count` can be compared kind by kind.
`activations` is the number of elements of every conv's output at batch 1 (Dollar et al. 2021,
"Fast and Accurate Model Scaling"; pycls also adds the classifier's and max pool's outputs,
which we leave out). This module imports no torch: `describe` and `scale` pay only for arithmetic.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from search_spaces.arch import Arch
from search_spaces.plan import Layer, layer_plan, se_channels


@dataclass(frozen=True)
class StageCost:
    name: str  # "stem", "stage1".., "head"
    out_ch: int
    out_res: int
    macs: int
    params: int
    activations: int


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int  # conv + linear multiply-adds (paper "FLOPS")
    activations: int  # elements of every conv output, batch 1 (Dollar et al. 2021)
    fvcore_total: int  # + batch norm and pooling, fvcore's default count
    by_op: dict[str, int]
    resolution: int
    num_classes: int
    stages: list[StageCost] = field(default_factory=list)


def _out(res: int, stride: int) -> int:
    return math.ceil(res / stride)  # 'same' padding for odd kernels


class _Tally:
    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.params = 0
        self.activations = 0

    def conv(self, cin: int, cout: int, k: int, res_out: int, groups: int = 1, bias: bool = False) -> None:
        self.ops["conv"] += res_out * res_out * cout * (cin // groups) * k * k
        self.params += cout * (cin // groups) * k * k + (cout if bias else 0)
        self.activations += cout * res_out * res_out

    def bn(self, c: int, res: int) -> None:
        self.ops["batch_norm"] += 2 * c * res * res
        self.params += 2 * c

    def pool(self, c: int, res: int) -> None:
        self.ops["adaptive_avg_pool2d"] += c * res * res

    def linear(self, cin: int, cout: int) -> None:
        self.ops["linear"] += cin * cout
        self.params += cin * cout + cout

    def macs(self) -> int:
        return self.ops["conv"] + self.ops["linear"]


def _layer(t: _Tally, layer: Layer, res: int) -> int:
    """Tally one layer at input resolution `res`; returns its output resolution."""
    out = _out(res, layer.stride)
    if layer.op == "conv":
        t.conv(layer.in_ch, layer.out_ch, layer.kernel, out)
        t.bn(layer.out_ch, out)
        if layer.se > 0:
            _se(t, layer.out_ch, se_channels(layer.in_ch, layer.se), out)
        return out
    mid = layer.mid
    if layer.op == "bneck":
        t.conv(layer.in_ch, mid, 1, res)
        t.bn(mid, res)
        t.conv(mid, mid, layer.kernel, out)
        t.bn(mid, out)
        t.conv(mid, layer.out_ch, 1, out)
        t.bn(layer.out_ch, out)
        if layer.skip and (layer.stride != 1 or layer.in_ch != layer.out_ch):  # projection shortcut
            t.conv(layer.in_ch, layer.out_ch, 1, out)
            t.bn(layer.out_ch, out)
        return out
    if layer.expand != 1:
        t.conv(layer.in_ch, mid, 1, res)
        t.bn(mid, res)
    t.conv(mid, mid, layer.kernel, out, groups=mid)
    t.bn(mid, out)
    if layer.se > 0:
        _se(t, mid, se_channels(layer.in_ch, layer.se), out)
    t.conv(mid, layer.out_ch, 1, out)
    t.bn(layer.out_ch, out)
    return out


def _se(t: _Tally, c: int, squeezed: int, res: int) -> None:
    t.pool(c, res)
    t.conv(c, squeezed, 1, 1, bias=True)
    t.conv(squeezed, c, 1, 1, bias=True)


def count(
    arch: Arch,
    *,
    resolution: int | None = None,
    num_classes: int = 1000,
    width: float | None = None,
    depth: float | None = None,
    stem_stride: int | None = None,
) -> Cost:
    """Params, multiply-adds and activations of `arch` at `resolution` (default: the arch's own);
    `stem_stride` overrides the arch's (the proxy's 32 px setting)."""
    changes = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    if changes:
        arch = arch.scaled(**changes)
    res0 = int(resolution or arch.resolution)
    stem, layers, head = layer_plan(arch)
    t = _Tally()
    stages: list[StageCost] = []

    def mark(name: str, ch: int, res: int, before: tuple[int, int, int]) -> None:
        macs0, params0, acts0 = before
        stages.append(StageCost(name, ch, res, t.macs() - macs0, t.params - params0, t.activations - acts0))

    def now() -> tuple[int, int, int]:
        return t.macs(), t.params, t.activations

    res = _out(res0, arch.stem_stride if stem_stride is None else stem_stride)
    t.conv(3, stem, arch.stem_kernel, res)
    t.bn(stem, res)
    if arch.stem_pool:
        res = _out(res, 2)  # 3x3/2 max pool, padding 1: no MACs, nothing fvcore counts
    mark("stem", stem, res, (0, 0, 0))
    i = 0
    while i < len(layers):
        si, before = layers[i].stage, now()
        while i < len(layers) and layers[i].stage == si:
            res = _layer(t, layers[i], res)
            i += 1
        mark(f"stage{si + 1}", layers[i - 1].out_ch, res, before)
    before = now()
    features = layers[-1].out_ch
    if head:
        t.conv(features, head, 1, res)
        t.bn(head, res)
        features = head
    t.pool(features, res)
    t.linear(features, num_classes)
    mark("head", num_classes, 1, before)
    by_op = {k: v for k, v in sorted(t.ops.items()) if v}
    return Cost(
        params=t.params,
        macs=t.macs(),
        activations=t.activations,
        fvcore_total=sum(by_op.values()),
        by_op=by_op,
        resolution=res0,
        num_classes=num_classes,
        stages=stages,
    )
