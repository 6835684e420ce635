"""Predicted latency from a lookup table measured on the user's machine (MnasNet's latency
objective; per-block tables as in nn-Meter and once-for-all).

An architecture's latency is predicted from the sum of the measured latency of each of its parts
at the shape it meets (the stem, every layer of the layer plan, the head): `overhead_ms + scale x
sum`, the two constants fitted on whole networks measured end to end (`effnas latency
--build-table`): the overhead is what no part accounts for (dispatch, the input copy), the scale
what timing a part alone misses (its weights and input stay in cache between runs, which they do
not inside a network). `parts` names those
parts as table keys; `LatencyTable` holds the measurements and predicts. The table is built by
`effnas latency --build-table` (deploy/latency.py), which times exactly these parts; this module
only reads it, without torch, so the search can price thousands of samples in milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.arch import Arch
from search_spaces.plan import Layer, layer_plan

FORMAT = "effnas-latency-table/1"
_IGNORED = ("stage", "drop_path", "skip")  # no effect on an inference's cost (skip: see `residual`)


class TableError(ValueError):
    """A latency table that is missing, unreadable, or lacks parts an architecture needs."""


def bn_as_built(setup: Mapping[str, Any], where: str, again: str) -> str | None:
    """Why whole networks measured under `setup` (a table's or predictor's record) cannot be
    trusted, or None: recorded before their BN statistics were re-estimated
    (`training.timing.calibrated_bn`), their activations shrank into denormal numbers that
    slowed some architectures 1.2-3x. `again`: the command that measures it anew."""
    if setup.get("bn", "init") == "calibrated":
        return None
    return (
        f"{where} timed its networks with BN statistics as built, where a random network's "
        "activations shrink into denormal numbers that slowed some 1.2-3x (docs/latency.md); "
        f"effnas now re-estimates them before timing: measure it again ({again})"
    )


@dataclass(frozen=True)
class Part:
    """One timed piece of a network: `kind` stem | layer | head, its input resolution, and the
    fields that decide its cost. `key` is its name in a table."""

    kind: str
    resolution: int
    fields: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        body = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields)
        return f"{self.kind}@{self.resolution}:{body}"

    def get(self, name: str) -> Any:
        return dict(self.fields)[name]


def layer_part(layer: Layer, resolution: int) -> Part:
    """The part of one layer of the plan: its fields (not its stage or drop-path rate, which cost
    nothing at inference) and whether it adds its input (the only effect of `skip`)."""
    fields = [(f.name, getattr(layer, f.name)) for f in dataclasses.fields(layer) if f.name not in _IGNORED]
    residual = layer.skip and layer.stride == 1 and layer.in_ch == layer.out_ch
    return Part("layer", resolution, (*fields, ("residual", residual)))


def _out(resolution: int, stride: int) -> int:
    return math.ceil(resolution / stride)  # 'same' padding, as the cost model counts


def parts(
    arch: Arch, *, resolution: int | None = None, num_classes: int = 1000, stem_stride: int = 2
) -> list[Part]:
    """The parts of `arch` at `resolution` (default: its own), in network order."""
    res = int(resolution or arch.resolution)
    stride = arch.stem_stride if stem_stride is None else stem_stride
    stem, layers, head = layer_plan(arch)
    fields = (("out_ch", stem), ("kernel", arch.stem_kernel), ("stride", stride), ("pool", arch.stem_pool))
    out: list[Part] = [Part("stem", res, (*fields, ("act", arch.act)))]
    res = _out(res, stride)
    if arch.stem_pool:
        res = _out(res, 2)  # 3x3/2 max pool
    for layer in layers:
        out.append(layer_part(layer, res))
        res = _out(res, layer.stride)
    fields = (("in_ch", layers[-1].out_ch), ("out_ch", head), ("classes", num_classes), ("act", arch.act))
    out.append(Part("head", res, fields))
    return out


@dataclass
class LatencyTable:
    """Milliseconds per part key, measured under `setup` (runtime, threads, batch, machine)."""

    ms: dict[str, float]
    overhead_ms: float = 0.0
    setup: dict[str, Any] = dataclasses.field(default_factory=dict)
    scale: float = 1.0

    def check(self, where: str) -> None:
        """Refuse it where its predictions would be trusted when its whole networks (the ones
        `overhead_ms` and `scale` are fitted on) were timed with BN statistics as built."""
        stale = bn_as_built(self.setup, where, "effnas latency --build-table")
        if stale is not None:
            raise TableError(stale)

    def missing(self, arch_parts: Iterable[Part]) -> list[str]:
        return sorted({p.key for p in arch_parts if p.key not in self.ms})

    def predict_parts(self, arch_parts: list[Part]) -> float:
        lacking = self.missing(arch_parts)
        if lacking:
            raise TableError(
                f"the latency table lacks {len(lacking)} of this architecture's {len(arch_parts)} parts "
                f"(first: {lacking[0]}); build one that covers it (effnas latency --build-table)"
            )
        return self.overhead_ms + self.scale * self.parts_sum(arch_parts)

    def parts_sum(self, arch_parts: list[Part]) -> float:
        return sum(self.ms[p.key] for p in arch_parts)

    def predict(self, arch: Arch, **kwargs: Any) -> float:
        """Predicted latency of `arch` in milliseconds (`parts` keywords: resolution, ...)."""
        return self.predict_parts(parts(arch, **kwargs))

    # -- file ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "setup": self.setup,
            "overhead_ms": self.overhead_ms,
            "scale": self.scale,
            "ms": self.ms,
        }
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "latency table") -> LatencyTable:
        if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
            raise TableError(f"{where} is not an effnas latency table (format {FORMAT})")
        ms = doc.get("ms")
        if not isinstance(ms, Mapping) or not all(isinstance(v, (int, float)) for v in ms.values()):
            raise TableError(f"{where}: 'ms' must map part keys to milliseconds")
        return cls(
            {str(k): float(v) for k, v in ms.items()},
            float(doc.get("overhead_ms", 0.0)),
            dict(doc.get("setup") or {}),
            float(doc.get("scale", 1.0)),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise TableError(f"latency table {path} does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TableError(f"latency table {path} is unreadable: {str(exc).splitlines()[0]}") from None
        return cls.from_mapping(doc, str(path))


def space_parts(space: Any, *, num_classes: int = 1000, stem_stride: int | None = None) -> list[Part]:
    """Every part an architecture of a `MnasNetSpace` can contain, at the shapes it meets there
    (the skeleton fixes every stage's strides and input resolution): for each stage and each of
    its settings, the first layer from every input width the stage before can give, and the
    repeated layer; the stem; the head from every width the last stage can give."""
    base_parts = parts(space.base, num_classes=num_classes, stem_stride=stem_stride)
    found: dict[str, Part] = {base_parts[0].key: base_parts[0]}
    widths = {space.base.stem}
    res_after = base_parts[1].resolution  # after the stem (and its pool)
    for si, base in enumerate(space.base.stages):
        res, res_after = res_after, _out(res_after, base.stride)
        outs = set()
        for op, expand, kernel, se, skip, out_ch, repeats in space.stage_settings(si):
            outs.add(out_ch)
            common = {"op": op, "kernel": kernel, "expand": expand, "se": se, "skip": skip, "drop_path": 0.0}
            common["act"] = space.base.stages[si].act
            for in_ch in widths:
                first = Layer(stage=si, stride=base.stride, in_ch=in_ch, out_ch=out_ch, **common)
                found.setdefault(layer_part(first, res).key, layer_part(first, res))
            if repeats > 1:
                again = Layer(stage=si, stride=1, in_ch=out_ch, out_ch=out_ch, **common)
                found.setdefault(layer_part(again, res_after).key, layer_part(again, res_after))
        widths = outs
    head = base_parts[-1]
    for in_ch in widths:
        fields = (("in_ch", in_ch), *(f for f in head.fields if f[0] != "in_ch"))
        found.setdefault(Part("head", res_after, fields).key, Part("head", res_after, fields))
    return list(found.values())
