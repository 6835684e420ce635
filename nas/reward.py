"""The search objective: MnasNet's multi-objective reward ACC(m) x (MACs(m) / T)^w.

MnasNet §3 (eq. 2) uses a two-sided exponent, w = a if MACs(m) <= T else b:
- soft constraint: a = b = -0.07 (what EfficientNet §4 searched with, T = 400M);
- hard constraint: a = 0, b = -1 (accuracy alone below the target, steep penalty above).
MACs are the paper's unit: conv + linear multiply-adds at 224x224 with a 1000-class head.
"""

from __future__ import annotations

import math
from typing import Any

SOFT_W = -0.07  # EfficientNet §4, MnasNet §3
KINDS = ("soft", "hard")


def exponents(kind: str = "soft", w: float = SOFT_W) -> tuple[float, float]:
    """(a, b): the exponent below / above the target for a named reward kind."""
    if kind == "soft":
        return float(w), float(w)
    if kind == "hard":
        return 0.0, -1.0
    raise ValueError(f"unknown reward kind {kind!r}; expected soft or hard")


def reward(accuracy: float, macs: float, target: float, w: float | tuple[float, float] = SOFT_W) -> float:
    """ACC x (MACs / T)^w, with w = a when MACs <= T and b above it; `w` is one exponent
    (a = b) or the pair (a, b)."""
    a, b = (float(w), float(w)) if isinstance(w, (int, float)) else (float(w[0]), float(w[1]))
    if not target > 0 or not macs > 0:
        raise ValueError(f"reward needs macs > 0 and target > 0, got macs={macs} target={target}")
    exponent = a if macs <= target else b
    return float(accuracy) * math.pow(float(macs) / float(target), exponent)


class RewardFn:
    """`reward` bound to a target and exponents; picklable (Ray ships it to trial workers)."""

    def __init__(self, target: float, a: float, b: float, unit: str = "MACs") -> None:
        self.target, self.a, self.b, self.unit = float(target), float(a), float(b), unit

    @classmethod
    def from_config(cls, cfg: Any, target: float, unit: str = "MACs") -> RewardFn:
        return cls(target, *exponents(str(cfg.kind), float(cfg.w)), unit)

    def __call__(self, accuracy: float, cost: float) -> float:
        """`cost`: MACs, or with `unit` "ms" the predicted latency (MnasNet's ACC x (LAT/T)^w)."""
        return reward(accuracy, cost, self.target, (self.a, self.b))

    def __repr__(self) -> str:
        name = "LAT" if self.unit == "ms" else self.unit
        return f"ACC x ({name} / {self.target:.4g}{' ms' if self.unit == 'ms' else ''})^(a={self.a:g} below, b={self.b:g} above)"
