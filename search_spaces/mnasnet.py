"""The MnasNet factorized hierarchical search space (MnasNet §4.1) on a fixed stage skeleton.

The skeleton is a baseline `Arch` (default EfficientNet-B0): its number of stages, their strides
and their baseline output filters and repeats stay fixed. Each stage independently picks

    op       regular conv | depthwise-separable (ds) | MBConv with expand e (`mbconv<e>`)
    kernel   {3, 5}
    se       squeeze-and-excitation ratio {0, 0.25}
    skip     identity residual on the repeated layers {yes, no}
    filters  x {0.75, 1.0, 1.25} of the baseline's output filters, rounded to a multiple of 8
    repeats  baseline + {-1, 0, +1}, at least 1

so one architecture is a vector of choice *indices*, `len(STAGE_FIELDS)` per stage, and every
vector decodes to a valid, buildable `Arch`. `ds` and `mbconv1` build the same layer (an MBConv
without expansion is MnasNet's SepConv); both names are accepted.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from search_spaces.arch import Arch, StageSpec
from search_spaces.rounding import round_channels

STAGE_FIELDS = ("op", "kernel", "se", "skip", "filters", "repeats")
_CONFIG_KEYS = {
    "op": "ops",
    "kernel": "kernels",
    "se": "se",
    "skip": "skip",
    "filters": "filters",
    "repeats": "repeats",
}

Choices = tuple[int, ...]


@dataclass
class SpaceConfig:
    """The MnasNet space's choice lists; their values: `conf/space/mnasnet.yaml`."""

    name: str = MISSING
    base: str = MISSING  # the skeleton: stage strides, baseline filters and repeats
    ops: list[str] = MISSING
    kernels: list[int] = MISSING
    se: list[float] = MISSING
    skip: list[bool] = MISSING
    filters: list[float] = MISSING
    repeats: list[int] = MISSING


class SpaceError(ValueError):
    """A search-space description that cannot define a space (empty or invalid choice list)."""


@dataclass(frozen=True)
class Dimension:
    """One categorical decision: `field` of stage `stage` (0-based) takes one of `values`."""

    stage: int
    field: str
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return f"s{self.stage + 1}_{self.field}"


def parse_op(name: str) -> tuple[str, int]:
    """'conv' -> ('conv', 1), 'ds' -> ('ds', 1), 'mbconv6' -> ('mbconv', 6)."""
    if name in ("conv", "ds"):
        return name, 1
    if isinstance(name, str) and name.startswith("mbconv") and name[6:].isdigit() and int(name[6:]) >= 1:
        return "mbconv", int(name[6:])
    raise SpaceError(f"unknown conv op {name!r}; expected conv, ds or mbconv<expand> (e.g. mbconv6)")


class MnasNetSpace:
    """The factorized space over `base`'s stages; choice lists shared by every stage."""

    def __init__(
        self,
        base: Arch,
        *,
        ops: Sequence[str],
        kernels: Sequence[int],
        se: Sequence[float],
        skip: Sequence[bool],
        filters: Sequence[float],
        repeats: Sequence[int],
    ) -> None:
        lists = {
            "ops": tuple(ops),
            "kernels": tuple(kernels),
            "se": tuple(se),
            "skip": tuple(skip),
            "filters": tuple(filters),
            "repeats": tuple(repeats),
        }
        for key, values in lists.items():
            if not values:
                raise SpaceError(f"space.{key} is empty: every choice list needs at least one value")
            if len(set(values)) != len(values):
                raise SpaceError(f"space.{key} has duplicate values: {list(values)}")
        for op in lists["ops"]:
            parse_op(op)
        for k in lists["kernels"]:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
                raise SpaceError(f"space.kernels must be odd integers >= 1, got {k!r}")
        for r in lists["se"]:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
                raise SpaceError(f"space.se ratios must be within [0, 1], got {r!r}")
        for s in lists["skip"]:
            if not isinstance(s, bool):
                raise SpaceError(f"space.skip values must be true or false, got {s!r}")
        for f in lists["filters"]:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0:
                raise SpaceError(f"space.filters multipliers must be > 0, got {f!r}")
        for r in lists["repeats"]:
            if not isinstance(r, int) or isinstance(r, bool):
                raise SpaceError(f"space.repeats offsets must be integers, got {r!r}")
        self.base = base
        self.lists = lists
        self.dims: tuple[Dimension, ...] = tuple(
            Dimension(si, field, lists[_CONFIG_KEYS[field]])
            for si in range(len(base.stages))
            for field in STAGE_FIELDS
        )
        self.sizes: tuple[int, ...] = tuple(len(d.values) for d in self.dims)

    @classmethod
    def from_config(cls, cfg: Any) -> MnasNetSpace:
        """From a `SpaceConfig` (or a mapping with the same keys); the choice lists' defaults
        are `conf/space/mnasnet.yaml`'s, never this module's."""
        from search_spaces.official import OFFICIAL_TABLE, official

        get = cfg.get if isinstance(cfg, Mapping) or hasattr(cfg, "get") else lambda k, d=None: d
        name = get("name", "mnasnet")
        if name != "mnasnet":
            raise SpaceError(f"unknown search space {name!r}; expected mnasnet")
        missing = [key for key in ("base", *_CONFIG_KEYS.values()) if get(key, None) is None]
        if missing:
            raise SpaceError(
                f"space config lacks {', '.join(missing)}; a space file that changes some lists "
                "starts with `defaults: [mnasnet, _self_]` to take the rest from conf/space/mnasnet.yaml"
            )
        base_name = get("base")
        if base_name not in OFFICIAL_TABLE:
            raise SpaceError(f"unknown space.base {base_name!r}; expected one of {', '.join(OFFICIAL_TABLE)}")
        base = official(base_name)
        # the skeleton is the *unscaled* block list; the deployment resolution is the base's own
        base = base.scaled(width=1.0, depth=1.0)
        return cls(base, **{key: list(get(key)) for key in _CONFIG_KEYS.values()})

    # -- size ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of choice vectors: the product of every dimension's choice count."""
        return math.prod(self.sizes)

    def distinct_size(self) -> int:
        """Number of distinct block lists (choice vectors that decode alike counted once, e.g.
        repeats 1 + {-1, 0} both give 1)."""
        return math.prod(len(self.stage_settings(si)) for si in range(len(self.base.stages)))

    def stage_settings(self, si: int) -> set[tuple]:
        """The distinct settings stage `si` can take: (op, expand, kernel, se, skip, out_ch,
        repeats), `ds` and `mbconv1` counted once."""
        stage = self.base.stages[si]
        return {
            _canonical(self._stage_setting(stage, combo))
            for combo in _product(*(range(len(self.lists[_CONFIG_KEYS[f]])) for f in STAGE_FIELDS))
        }

    def fingerprint(self) -> str:
        """A short digest of what defines the space (base skeleton and every choice list, in
        order): choice vectors mean the same architectures exactly when two spaces share it."""
        import hashlib
        import json

        spec = {"base": list(self.base.blocks), **{k: list(v) for k, v in self.lists.items()}}
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        per_stage = math.prod(len(self.lists[_CONFIG_KEYS[f]]) for f in STAGE_FIELDS)
        return (
            f"MnasNet space on {self.base.name}: {len(self.base.stages)} stages x {per_stage} choices "
            f"= {self.size:.3e} architectures ({self.distinct_size():.3e} distinct)"
        )

    # -- sampling ------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Choices:
        """A uniformly random choice vector."""
        return tuple(rng.randrange(n) for n in self.sizes)

    def mutate(self, choices: Sequence[int], rng: random.Random) -> Choices:
        """`choices` with exactly one decision changed to a different value (aging evolution,
        Real et al. 2019); unchanged only when every dimension has a single value."""
        self.check(choices)
        mutable = [i for i, n in enumerate(self.sizes) if n > 1]
        if not mutable:
            return tuple(choices)
        i = rng.choice(mutable)
        new = list(choices)
        new[i] = rng.choice([v for v in range(self.sizes[i]) if v != choices[i]])
        return tuple(new)

    def check(self, choices: Sequence[int]) -> None:
        if len(choices) != len(self.sizes):
            raise SpaceError(f"expected {len(self.sizes)} choices, got {len(choices)}")
        for d, c, n in zip(self.dims, choices, self.sizes):
            if not isinstance(c, int) or not 0 <= c < n:
                raise SpaceError(f"choice {d.name}={c!r} out of range 0..{n - 1}")

    # -- decoding ------------------------------------------------------------------------------
    def _stage_setting(self, base: StageSpec, combo: Sequence[int]) -> tuple:
        op_name, kernel, se, skip, mult, extra = (
            self.lists[_CONFIG_KEYS[f]][c] for f, c in zip(STAGE_FIELDS, combo)
        )
        op, expand = parse_op(op_name)
        out_ch = round_channels(base.out_ch, float(mult))
        repeats = max(1, base.repeats + int(extra))
        return op, expand, int(kernel), float(se), bool(skip), out_ch, repeats

    def decode(self, choices: Sequence[int]) -> Arch:
        """The architecture of a choice vector: stage strides from the skeleton, each stage's
        input channels chained from the previous stage's output (the first from the stem)."""
        self.check(choices)
        n = len(STAGE_FIELDS)
        stages, in_ch = [], self.base.stem
        for si, base in enumerate(self.base.stages):
            op, expand, kernel, se, skip, out_ch, repeats = self._stage_setting(
                base, choices[si * n : (si + 1) * n]
            )
            stages.append(
                StageSpec(
                    repeats=repeats,
                    kernel=kernel,
                    stride=base.stride,
                    expand=expand,
                    in_ch=in_ch,
                    out_ch=out_ch,
                    se=se,
                    skip=skip,
                    op=op,
                )
            )
            in_ch = out_ch
        blocks = " ".join(s for s in _encode(stages))
        digest = hashlib.sha1(blocks.encode()).hexdigest()[:8]
        return self.base.scaled(stages=tuple(stages), name=f"mnas_{digest}", meta={})

    def encode(self, arch: Arch) -> Choices | None:
        """The first choice vector that decodes to `arch`'s block list, or None if outside."""
        if len(arch.stages) != len(self.base.stages):
            return None
        n = len(STAGE_FIELDS)
        out: list[int] = []
        for si, (base, want) in enumerate(zip(self.base.stages, arch.stages)):
            target = (want.op, want.expand, want.kernel, want.se, want.skip, want.out_ch, want.repeats)
            for combo in _product(*(range(self.sizes[si * n + j]) for j in range(n))):
                if _canonical(self._stage_setting(base, combo)) == _canonical(target):
                    out.extend(combo)
                    break
            else:
                return None
        return tuple(out)


def _canonical(setting: tuple) -> tuple:
    """ds and mbconv1 build the same layer (search_spaces.builder.make_layer)."""
    return ("ds", *setting[1:]) if setting[:2] == ("mbconv", 1) else setting


def _encode(stages: Iterable[StageSpec]) -> list[str]:
    from search_spaces.arch import encode_stage

    return [encode_stage(s) for s in stages]


def _product(*ranges: Iterable[int]) -> Iterable[tuple[int, ...]]:
    import itertools

    return itertools.product(*ranges)
