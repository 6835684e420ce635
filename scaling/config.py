"""Config schemas of the grid and scale stages (`conf/grid.yaml`, `conf/scale.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from effnas.config import ArchConfig, DataConfig, ProxyConfig, RayConfig, RunConfig


@dataclass
class GridConfig:
    run: RunConfig = field(default_factory=RunConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    phi: float = 1.0
    step: float = 0.05
    max_alpha: float = 1.4
    max_beta: float = 1.4
    max_gamma: float = 1.4
    target: float = 2.0  # alpha * beta^2 * gamma^2
    tol: float = 0.1
    include_baseline: bool = True
    upstream: Optional[str] = None  # a search run directory (--from)
    resume: Optional[str] = None


@dataclass
class ScaleConfig:
    run: RunConfig = field(default_factory=RunConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    phi: str = "1..7"
    mode: str = "formula"  # formula | official | flops-matched
    alpha: float = 1.2  # paper §3.3
    beta: float = 1.1
    gamma: float = 1.15
    base_resolution: int = 224
    upstream: Optional[str] = None  # a grid run directory (--from)
