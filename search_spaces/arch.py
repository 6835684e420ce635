"""The architecture vocabulary: a frozen, typed `Arch` and its block-string codec.

An architecture is data. The search emits it, the builder reads it, YAML stores it. One
`StageSpec` is one "block" of the MnasNet/EfficientNet skeleton: a layer repeated `repeats`
times, the first repetition strided. The grammar of a stage string is written once, in
`decode_stage`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OPS = ("mbconv", "ds", "dsa", "conv", "bneck")
_OP_PREFIX = ("ds", "dsa", "conv", "bneck")  # mbconv is the official, unprefixed form
_EXPANDING = ("mbconv", "bneck")  # the ops that carry an `e` token
ACTIVATIONS = ("silu", "relu", "relu6")  # silu (swish) is the default and is never written
PADDINGS = ("symmetric", "same")  # see `Arch`: symmetric k // 2 (the default) or TF "SAME"


class ArchError(ValueError):
    """An architecture description that cannot be decoded or is inconsistent."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` copies of one layer; only the first has `stride` and `in_ch`.

    op: "mbconv" (inverted bottleneck, paper §3), "ds" (depthwise-separable conv) or
    "conv" (a regular kxk conv), the ConvOp choices of the MnasNet space (MnasNet §4.1);
    "dsa" (depthwise-separable with an activation after the pointwise conv, MobileNetV1) and
    "bneck" (ResNet's bottleneck, `expand` = output / inner channels), the paper's baselines.
    `act` is the activation of every layer of the stage.
    """

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int
    se: float = 0.25
    skip: bool = True
    op: str = "mbconv"
    act: str = "silu"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ArchError(f"unknown conv op {self.op!r}; expected one of {', '.join(OPS)}")
        if self.act not in ACTIVATIONS:
            raise ArchError(f"unknown activation {self.act!r}; expected one of {', '.join(ACTIVATIONS)}")
        if self.repeats < 1:
            raise ArchError(f"repeats must be >= 1, got {self.repeats}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ArchError(f"kernel must be odd and >= 1, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ArchError(f"illegal stride value {self.stride}; expected 1 or 2")
        if self.expand < 1:
            raise ArchError(f"expand ratio must be >= 1, got {self.expand}")
        if self.op not in _EXPANDING and self.expand != 1:
            raise ArchError(f"op {self.op!r} has no expansion; got expand={self.expand}")
        if self.in_ch < 1 or self.out_ch < 1:
            raise ArchError(f"channels must be >= 1, got in={self.in_ch} out={self.out_ch}")
        if not 0.0 <= self.se <= 1.0:
            raise ArchError(f"se ratio must be within [0, 1], got {self.se}")
        if self.op == "bneck" and self.out_ch % self.expand:
            raise ArchError(
                f"bneck output channels must be a multiple of the expansion (inner = out / e), "
                f"got out={self.out_ch} e={self.expand}"
            )
        if self.op == "bneck" and self.se > 0:
            raise ArchError(f"op 'bneck' takes no squeeze-and-excitation; got se={self.se:g}")

    @property
    def has_residual(self) -> bool:
        """Identity residual on the repeated layers (stride 1, in == out) unless `noskip`."""
        return self.skip


def decode_stage(text: str) -> StageSpec:
    """Decode one stage string.

    Grammar (tokens joined by `_`, any order after the optional op prefix):

        [op_] r<repeats> k<kernel> s<stride><stride> [e<expand>] i<in> o<out> [se<ratio>] [noskip] [act]

    - op prefix, always the first token:
        (none)  MBConv, the official encoding: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1
                project, no activation after the projection; `e` is required.
        `ds`    depthwise-separable conv (MBConv with expand 1, MnasNet's SepConv).
        `dsa`   `ds` with an activation after the pointwise conv too (MobileNetV1, timm's `dsa`).
        `conv`  a regular kxk conv -> BN -> act [-> SE].
        `bneck` ResNet's bottleneck, v1.5 (torchvision): 1x1 -> kxk (strided) -> 1x1, each with
                BN, act after the first two and after the sum; the shortcut is the identity, or a
                strided 1x1 conv + BN when the stride or the channels change. `e` is required
                and is the expansion of the *output*: `e4_o256` has 64 inner channels; `o` must
                be a multiple of `e`; no SE.
      `ds`, `dsa` and `conv` carry no `e` token (expand is 1).
    - `s22` is the official two-digit stride (both spatial axes); `s2` is accepted too.
    - `se0.25` is the squeeze-and-excitation ratio relative to the block's input channels;
      absent or `se0` means no SE.
    - `noskip` removes the residual: the identity of MBConv/ds/dsa/conv (used on repeated
      layers with stride 1 and in == out), and for `bneck` the whole shortcut.
    - act: `silu` (default, never written), `relu` or `relu6`: the activation of every layer of
      the stage (its SE included).

    Examples: `r2_k5_s22_e6_i24_o40_se0.25` (EfficientNet-B0 stage 3),
    `r3_k3_s22_e6_i24_o32_relu6` (MobileNetV2), `dsa_r2_k3_s22_i64_o128_noskip_relu`
    (MobileNetV1), `bneck_r4_k3_s22_e4_i256_o512_relu` (ResNet-50 stage 2).
    The stem, head and their activation are `Arch` fields, not tokens.
    """
    if not isinstance(text, str) or not text.strip():
        raise ArchError(f"empty stage string {text!r}")
    tokens = text.strip().split("_")
    op = "mbconv"
    if tokens[0] in _OP_PREFIX:
        op = tokens.pop(0)
    fields: dict[str, Any] = {"op": op, "se": 0.0, "skip": True}
    if op not in _EXPANDING:
        fields["expand"] = 1
    seen: set[str] = set()
    for tok in tokens:
        key, value = _split_token(tok, text)
        if key in seen:
            raise ArchError(f"duplicate token {tok!r} in stage string {text!r}")
        seen.add(key)
        if key == "noskip":
            fields["skip"] = False
        elif key == "act":
            fields["act"] = value
        elif key == "se":
            fields["se"] = _number(value, float, tok, text)
        elif key == "s":
            if len(value) == 2 and value[0] != value[1]:
                raise ArchError(f"non-square stride {tok!r} in {text!r}")
            fields["stride"] = _number(value[0] if len(value) == 2 else value, int, tok, text)
        elif key == "e" and op not in _EXPANDING:
            raise ArchError(f"token {tok!r}: op {op!r} takes no expand ratio ({text!r})")
        else:
            name = {"r": "repeats", "k": "kernel", "e": "expand", "i": "in_ch", "o": "out_ch"}[key]
            fields[name] = _number(value, int, tok, text)
    required = {"repeats": "r", "kernel": "k", "stride": "s", "expand": "e", "in_ch": "i", "out_ch": "o"}
    missing = [f"{t}<..>" for name, t in required.items() if name not in fields]
    if missing:
        raise ArchError(f"stage string {text!r} lacks {', '.join(missing)}")
    try:
        return StageSpec(**fields)
    except ArchError as exc:
        raise ArchError(f"{exc} (in {text!r})") from None


_TOKEN = re.compile(r"^(noskip|se|r|k|s|e|i|o)(.*)$")
_KNOWN = (
    f"op prefix ({', '.join(_OP_PREFIX)}) first, then r k s e i o se<ratio> noskip "
    f"and an activation ({', '.join(ACTIVATIONS)})"
)


def _split_token(tok: str, text: str) -> tuple[str, str]:
    if tok in ACTIVATIONS:
        return "act", tok
    if tok in _OP_PREFIX:
        raise ArchError(f"op prefix {tok!r} must be the first token of stage string {text!r}")
    m = _TOKEN.match(tok)
    if (
        not m
        or (m.group(1) == "noskip" and m.group(2))
        or (m.group(1) != "noskip" and not m.group(2))
        or (m.group(1) != "noskip" and m.group(2)[0].isalpha())  # `relu5`, `sex`: no number
    ):
        raise ArchError(f"bad token {tok!r} in stage string {text!r}; expected {_KNOWN}")
    return m.group(1), m.group(2)


def _number(value: str, kind: type, tok: str, text: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ArchError(f"bad value in token {tok!r} of stage string {text!r}") from None


def encode_stage(stage: StageSpec) -> str:
    """Inverse of `decode_stage`, in its canonical order (op, r, k, s, e, i, o, se, noskip, act);
    MBConv stages come out in the official encoding, the default `silu` is not written."""
    parts = [] if stage.op == "mbconv" else [stage.op]
    parts += [f"r{stage.repeats}", f"k{stage.kernel}", f"s{stage.stride}{stage.stride}"]
    if stage.op in _EXPANDING:
        parts.append(f"e{stage.expand}")
    parts += [f"i{stage.in_ch}", f"o{stage.out_ch}"]
    if stage.se > 0:
        parts.append(f"se{stage.se:g}")
    if not stage.skip:
        parts.append("noskip")
    if stage.act != "silu":
        parts.append(stage.act)
    return "_".join(parts)


_STEM_HEAD_FIELDS = ("stem_kernel", "stem_stride", "stem_pool", "act", "head_min", "padding", "bn_eps")


@dataclass(frozen=True)
class Arch:
    """A whole network: stem conv [+ max pool], stages, [1x1 head conv], pool, dropout, classifier.

    Channels and repeats in `stages` are the *unscaled* baseline's; `width` and `depth` are the
    compound multipliers applied by the builder and the cost model (`search_spaces.rounding`), and
    `resolution` the input size the model is meant for. `scaled()` returns a new Arch, so the
    baseline is never lost.

    The stem is a `stem_kernel` x `stem_kernel` conv with stride `stem_stride` -> BN -> `act`,
    then a 3x3/2 max pool when `stem_pool` (ResNet). `head` is the 1x1 conv before the pool
    (0: none, the last stage feeds the classifier: ResNet, MobileNetV1); `head_min` is a floor
    on its scaled width (MobileNetV2's last conv 1280 only grows, torchvision). `act` is the
    stem's and head's activation; each stage carries its own.

    `padding` and `bn_eps` say how the weights were trained, not what the network is (they change
    neither a shape nor the cost model's count):
    - `padding: symmetric` (default): every kxk conv pads k // 2 on each side (torchvision, timm's
      `efficientnet_b*`). `padding: same`: TensorFlow's "SAME", which pads
      `max((ceil(i / s) - 1) * s + k - i, 0)` in total per axis, the odd pixel at the bottom /
      right: timm's `tf_efficientnet_b*`, the paper's own weights, need it. It differs from
      symmetric only on strided convs (stride 1 is k // 2 either way, built as a plain conv); those
      compute their padding from each input's size (dynamic), or once at build time when the
      builder is given a fixed input size (`build_model(..., input_size=224)`: static).
    - `bn_eps`: every BatchNorm's epsilon; 1e-3 (default) is tensorflow/tpu's and timm's `tf_`
      models'; torchvision's and timm's own weights were trained with PyTorch's 1e-5.
    Both are written to YAML only where they differ from the default, so existing files stay.
    """

    stages: tuple[StageSpec, ...]
    name: str = "custom"
    stem: int = 32
    head: int = 1280
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_path: float = 0.2
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_pool: bool = False
    act: str = "silu"
    head_min: int = 0
    padding: str = "symmetric"
    bn_eps: float = 1e-3
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ArchError("an architecture needs at least one stage")
        object.__setattr__(self, "stages", tuple(self.stages))
        for prev, nxt in zip(self.stages, self.stages[1:]):
            if prev.out_ch != nxt.in_ch:
                raise ArchError(
                    f"stage {encode_stage(nxt)!r} takes {nxt.in_ch} channels but the stage "
                    f"before it gives {prev.out_ch}"
                )
        if self.stages[0].in_ch != self.stem:
            raise ArchError(f"first stage takes {self.stages[0].in_ch} channels, stem gives {self.stem}")
        if self.width <= 0 or self.depth <= 0:
            raise ArchError(f"width and depth must be > 0, got width={self.width} depth={self.depth}")
        if self.resolution < 8:
            raise ArchError(f"resolution must be >= 8, got {self.resolution}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path < 1.0:
            raise ArchError(f"dropout and drop_path must be in [0, 1), got {self.dropout}, {self.drop_path}")
        if self.stem < 1 or self.head < 0 or self.head_min < 0:
            raise ArchError(
                f"stem must be >= 1 and head, head_min >= 0 (head 0: no head conv), got "
                f"stem={self.stem} head={self.head} head_min={self.head_min}"
            )
        if self.head == 0 and self.head_min:
            raise ArchError(f"head_min={self.head_min} needs a head conv, but head is 0")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ArchError(f"stem_kernel must be odd and >= 1, got {self.stem_kernel}")
        if self.stem_stride not in (1, 2):
            raise ArchError(f"illegal stem_stride value {self.stem_stride}; expected 1 or 2")
        if self.act not in ACTIVATIONS:
            raise ArchError(f"unknown activation act={self.act!r}; expected one of {', '.join(ACTIVATIONS)}")
        if self.padding not in PADDINGS:
            raise ArchError(f"unknown padding {self.padding!r}; expected one of {', '.join(PADDINGS)}")
        if not 0.0 < self.bn_eps < 1.0:
            raise ArchError(f"bn_eps must be within (0, 1), got {self.bn_eps}")

    @property
    def blocks(self) -> list[str]:
        return [encode_stage(s) for s in self.stages]

    def scaled(self, **changes: Any) -> Arch:
        """A copy with some fields replaced (width, depth, resolution, dropout, name, ...)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready form; `Arch.from_dict(a.to_dict()) == a`."""
        out: dict[str, Any] = {
            "name": self.name,
            "blocks": self.blocks,
            "stem": self.stem,
            "head": self.head,
            "width": float(self.width),
            "depth": float(self.depth),
            "resolution": int(self.resolution),
            "dropout": float(self.dropout),
            "drop_path": float(self.drop_path),
        }
        # the stem/head/act fields only where they differ from EfficientNet's, so B0..B7 and
        # search outputs keep the files they always had
        for f in dataclasses.fields(self):
            if f.name in _STEM_HEAD_FIELDS and getattr(self, f.name) != f.default:
                out[f.name] = getattr(self, f.name)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise ArchError(f"an arch must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"stages"} | {"blocks"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArchError(f"unknown arch key(s): {', '.join(unknown)}")
        blocks = data.get("blocks")
        if not blocks or isinstance(blocks, str) or not isinstance(blocks, Iterable):
            raise ArchError("arch.blocks must be a non-empty list of stage strings")
        kwargs = {k: v for k, v in data.items() if k != "blocks"}
        kwargs["meta"] = dict(kwargs.get("meta") or {})
        try:
            return cls(stages=tuple(decode_stage(b) for b in blocks), **kwargs)
        except TypeError as exc:
            raise ArchError(f"bad arch field: {exc}") from None

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Arch:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ArchError(f"arch file is not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(data, Mapping) and "arch" in data and "blocks" not in data:
            data = data["arch"]  # a stage output that wraps the arch with extra records
        return cls.from_dict(data)
