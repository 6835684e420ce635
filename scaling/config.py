"""Config schemas of the grid and scale stages (`conf/grid.yaml`, `conf/scale.yaml`); `run` (and
the grid's `ray`) are added by the application's stage registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from search_spaces.arch_config import ArchConfig
from training.data.config import DataConfig
from training.proxy_config import ProxyConfig


@dataclass
class GridConfig:
    arch: ArchConfig = field(default_factory=ArchConfig)  # unset: --from's or the official B0
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    phi: float = 1.0
    step: float = 0.05
    max_alpha: float = 2.0
    max_beta: float = 1.5
    max_gamma: float = 1.5
    target: float = 2.0  # alpha * beta^2 * gamma^2 (paper eq. 3)
    tol: float = 0.1
    resolution_divisor: int = 8  # deployment resolution rounding, as in `effnas scale`
    max_candidates: int = 0  # train a spread-out subset of this many (0: every candidate)
    include_baseline: bool = True  # also train the unscaled baseline, as a reference row
    seeds: int = 1  # trainings per point, seeds run.seed .. run.seed+seeds-1; the winner is on the mean
    upstream: Optional[str] = None  # a search run directory (--from)
    resume: Optional[str] = None
    storage: Optional[str] = (
        None  # Optuna storage URL of the run's study; default the journal study.log in the run dir
    )
    study_name: Optional[str] = None  # default: effnas-grid-<run dir name>-<8 hex>


@dataclass
class ScaleConfig:
    arch: ArchConfig = field(default_factory=ArchConfig)  # unset: --from's or the official B0
    phi: str = "1..7"  # 3 | 1..7 | 1,3,5
    mode: str = "formula"  # formula | official | flops-matched
    alpha: Optional[float] = None  # unset: --from's coefficients or the paper's 1.2, 1.1, 1.15
    beta: Optional[float] = None
    gamma: Optional[float] = None
    resolution_divisor: int = 8  # formula resolutions round to a multiple of this
    upstream: Optional[str] = None  # a grid run directory (--from)
