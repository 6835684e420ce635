"""Network blocks: MBConv (with SE and stochastic depth), the MnasNet space's other ops, and the
paper's baselines' (MobileNetV1's `dsa`, ResNet's bottleneck).

Blocks take their norm and activation layers as callables, so the builder decides BN settings
once. Layer order and SE sizing follow REFERENCE.md ("Block details that decide the parameter
count"): they decide the exact parameter counts of B0..B7.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.plan import Layer, se_channels

# tensorflow/tpu uses BN momentum 0.99 and eps 1e-3; PyTorch's momentum is 1 - TF's.
BatchNorm = partial(nn.BatchNorm2d, momentum=0.01, eps=1e-3)
Activation = nn.SiLU
# the block-string activation tokens (search_spaces.arch.ACTIVATIONS)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "relu6": nn.ReLU6}

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]
# (in_ch, out_ch, kernel, stride, groups) -> a bias-free conv: the arch's padding (search_spaces.arch.Arch)
ConvLayer = Callable[[int, int, int, int, int], nn.Module]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis of `size` pixels: (before, after), the odd pixel after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A strided conv with TF "SAME" padding (timm's `Conv2dSame`): computed from each input's
    size (`size` None: dynamic), or once for inputs of `size` pixels (static). Its parameters and
    state_dict keys are a plain conv's."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, size: int | None):
        super().__init__(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=False)
        # plain ints, not a list: TorchScript types them from their values
        self.static = size is not None
        self.before, self.after = same_padding(size, kernel, stride) if size is not None else (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static:  # F.pad's order: left, right, top, bottom
            pad = [self.before, self.after, self.before, self.after]
        else:
            k, s = self.kernel_size, self.stride
            top, bottom = same_padding(x.shape[-2], k[0], s[0])
            left, right = same_padding(x.shape[-1], k[1], s[1])
            pad = [left, right, top, bottom]
        return self._conv_forward(F.pad(x, pad), self.weight, self.bias)


def symmetric_conv(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int) -> nn.Module:
    """A kxk conv padding k // 2 on every side (PyTorch's EfficientNets, the default)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


def conv_layer(padding: str = "symmetric", size: int | None = None) -> ConvLayer:
    """The conv factory of an arch's `padding`; `size`: the input size the convs it makes will
    see, for static "SAME" padding (None: dynamic)."""
    if padding == "symmetric":
        return symmetric_conv
    if padding != "same":
        raise ValueError(f"unknown padding {padding!r}")

    def same_conv(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int) -> nn.Module:
        if stride == 1:  # k // 2 on each side whatever the size: a plain conv (timm's is_static_pad)
            return symmetric_conv(in_ch, out_ch, kernel, stride, groups)
        return SameConv2d(in_ch, out_ch, kernel, stride, groups, size)

    return same_conv


class ConvNormAct(nn.Sequential):
    """kxk conv (no bias, the arch's padding) -> BN -> optional activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm: NormLayer = BatchNorm,
        act: ActLayer | None = Activation,
        conv: ConvLayer = symmetric_conv,
    ) -> None:
        layers: list[nn.Module] = [conv(in_ch, out_ch, kernel, stride, groups), norm(out_ch)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate: pool -> 1x1 reduce (bias) -> act -> 1x1 expand (bias) -> sigmoid."""

    def __init__(self, channels: int, squeezed: int, act: ActLayer = Activation) -> None:
        super().__init__()
        # AdaptiveAvgPool2d rather than mean(): fvcore counts it, as in REFERENCE.md's totals.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(self.act(self.reduce(self.pool(x))))
        return x * torch.sigmoid(s)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); identity at eval or rate 0."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


class Residual(nn.Module):
    """`body`, plus the identity with stochastic depth when the layer has one (stride 1,
    in == out and not `noskip`): the wiring every block of the space shares."""

    def __init__(self, layers: list[nn.Module], layer: Layer) -> None:
        super().__init__()
        self.use_residual = layer.skip and layer.stride == 1 and layer.in_ch == layer.out_ch
        self.body = nn.Sequential(*layers)
        self.drop_path = DropPath(layer.drop_path) if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out


class MBConv(Residual):
    """Inverted bottleneck: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project (no act).

    With expand 1 it is the depthwise-separable conv of the MnasNet space (op `ds`); op `dsa`
    adds the activation after the pointwise conv (MobileNetV1).
    """

    def __init__(
        self,
        layer: Layer,
        norm: NormLayer = BatchNorm,
        act: ActLayer = Activation,
        conv: ConvLayer = symmetric_conv,
    ) -> None:
        mid = layer.mid
        layers: list[nn.Module] = []
        if layer.expand != 1:
            layers.append(ConvNormAct(layer.in_ch, mid, 1, norm=norm, act=act, conv=conv))
        layers.append(ConvNormAct(mid, mid, layer.kernel, layer.stride, mid, norm, act, conv))
        if layer.se > 0:
            layers.append(SqueezeExcite(mid, se_channels(layer.in_ch, layer.se), act))
        pw_act = act if layer.op == "dsa" else None
        layers.append(ConvNormAct(mid, layer.out_ch, 1, norm=norm, act=pw_act, conv=conv))
        super().__init__(layers, layer)


class RegularConv(Residual):
    """A regular kxk conv -> BN -> act, then optional SE (the MnasNet space's `conv` op)."""

    def __init__(
        self,
        layer: Layer,
        norm: NormLayer = BatchNorm,
        act: ActLayer = Activation,
        conv: ConvLayer = symmetric_conv,
    ) -> None:
        layers: list[nn.Module] = [
            ConvNormAct(layer.in_ch, layer.out_ch, layer.kernel, layer.stride, norm=norm, act=act, conv=conv)
        ]
        if layer.se > 0:
            layers.append(SqueezeExcite(layer.out_ch, se_channels(layer.in_ch, layer.se), act))
        super().__init__(layers, layer)


class Bottleneck(nn.Module):
    """ResNet v1.5's bottleneck (torchvision): 1x1 -> kxk with the stride -> 1x1 (no act), each
    with BN; plus the shortcut (the identity, or a strided 1x1 conv + BN where the stride or the
    channels change; none with `noskip`); then the activation. Stochastic depth drops the body."""

    def __init__(
        self,
        layer: Layer,
        norm: NormLayer = BatchNorm,
        act: ActLayer = Activation,
        conv: ConvLayer = symmetric_conv,
    ) -> None:
        super().__init__()
        mid = layer.mid
        self.body = nn.Sequential(
            ConvNormAct(layer.in_ch, mid, 1, norm=norm, act=act, conv=conv),
            ConvNormAct(mid, mid, layer.kernel, layer.stride, norm=norm, act=act, conv=conv),
            ConvNormAct(mid, layer.out_ch, 1, norm=norm, act=None, conv=conv),
        )
        self.shortcut: nn.Module | None = None
        if layer.skip:
            projects = layer.stride != 1 or layer.in_ch != layer.out_ch
            self.shortcut = (
                ConvNormAct(layer.in_ch, layer.out_ch, 1, layer.stride, norm=norm, act=None, conv=conv)
                if projects
                else nn.Identity()
            )
        self.drop_path = DropPath(layer.drop_path) if layer.skip else nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = self.drop_path(out) + self.shortcut(x)
        return self.act(out)
