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

OPS = ("mbconv", "ds", "conv")
_OP_PREFIX = {"ds": "ds", "conv": "conv"}  # mbconv is the official, unprefixed form


class ArchError(ValueError):
    """An architecture description that cannot be decoded or is inconsistent."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` copies of one layer; only the first has `stride` and `in_ch`.

    op: "mbconv" (inverted bottleneck, paper §3), "ds" (depthwise-separable conv) or
    "conv" (a regular kxk conv), the ConvOp choices of the MnasNet space (MnasNet §4.1).
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

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ArchError(f"unknown conv op {self.op!r}; expected one of {', '.join(OPS)}")
        if self.repeats < 1:
            raise ArchError(f"repeats must be >= 1, got {self.repeats}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ArchError(f"kernel must be odd and >= 1, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ArchError(f"illegal stride value {self.stride}; expected 1 or 2")
        if self.expand < 1:
            raise ArchError(f"expand ratio must be >= 1, got {self.expand}")
        if self.op != "mbconv" and self.expand != 1:
            raise ArchError(f"op {self.op!r} has no expansion; got expand={self.expand}")
        if self.in_ch < 1 or self.out_ch < 1:
            raise ArchError(f"channels must be >= 1, got in={self.in_ch} out={self.out_ch}")
        if not 0.0 <= self.se <= 1.0:
            raise ArchError(f"se ratio must be within [0, 1], got {self.se}")

    @property
    def has_residual(self) -> bool:
        """Identity residual on the repeated layers (stride 1, in == out) unless `noskip`."""
        return self.skip


def decode_stage(text: str) -> StageSpec:
    """Decode one stage string.

    Grammar (tokens joined by `_`, any order after the optional op prefix):

        [op_] r<repeats> k<kernel> s<stride><stride> e<expand> i<in> o<out> [se<ratio>] [noskip]

    - op prefix: absent for MBConv (the official encoding), `ds` for a depthwise-separable
      conv, `conv` for a regular conv. `ds` and `conv` carry no `e` token (expand is 1).
    - `s22` is the official two-digit stride (both spatial axes); `s2` is accepted too.
    - `se0.25` is the squeeze-and-excitation ratio relative to the block's input channels;
      absent or `se0` means no SE.
    - `noskip` removes the identity residual.

    Example: `r2_k5_s22_e6_i24_o40_se0.25` (EfficientNet-B0 stage 3).
    """
    if not isinstance(text, str) or not text.strip():
        raise ArchError(f"empty stage string {text!r}")
    tokens = text.strip().split("_")
    op = "mbconv"
    if tokens[0] in _OP_PREFIX:
        op = tokens.pop(0)
    fields: dict[str, Any] = {"op": op, "se": 0.0, "skip": True}
    if op != "mbconv":
        fields["expand"] = 1
    seen: set[str] = set()
    for tok in tokens:
        key, value = _split_token(tok, text)
        if key in seen:
            raise ArchError(f"duplicate token {tok!r} in stage string {text!r}")
        seen.add(key)
        if key == "noskip":
            fields["skip"] = False
        elif key == "se":
            fields["se"] = _number(value, float, tok, text)
        elif key == "s":
            if len(value) == 2 and value[0] != value[1]:
                raise ArchError(f"non-square stride {tok!r} in {text!r}")
            fields["stride"] = _number(value[0] if len(value) == 2 else value, int, tok, text)
        elif key == "e" and op != "mbconv":
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


def _split_token(tok: str, text: str) -> tuple[str, str]:
    m = _TOKEN.match(tok)
    if not m or (m.group(1) == "noskip" and m.group(2)) or (m.group(1) != "noskip" and not m.group(2)):
        raise ArchError(f"bad token {tok!r} in stage string {text!r}")
    return m.group(1), m.group(2)


def _number(value: str, kind: type, tok: str, text: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ArchError(f"bad value in token {tok!r} of stage string {text!r}") from None


def encode_stage(stage: StageSpec) -> str:
    """Inverse of `decode_stage`; MBConv stages come out in the official encoding."""
    parts = [] if stage.op == "mbconv" else [_OP_PREFIX[stage.op]]
    parts += [f"r{stage.repeats}", f"k{stage.kernel}", f"s{stage.stride}{stage.stride}"]
    if stage.op == "mbconv":
        parts.append(f"e{stage.expand}")
    parts += [f"i{stage.in_ch}", f"o{stage.out_ch}"]
    if stage.se > 0:
        parts.append(f"se{stage.se:g}")
    if not stage.skip:
        parts.append("noskip")
    return "_".join(parts)


@dataclass(frozen=True)
class Arch:
    """A whole network: stem conv, stages, 1x1 head conv, pool, dropout, classifier.

    Channels and repeats in `stages` are the *unscaled* baseline's; `width` and `depth` are the
    compound multipliers applied by the builder and the cost model (`search_spaces.rounding`), and
    `resolution` the input size the model is meant for. `scaled()` returns a new Arch, so the
    baseline is never lost.
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
