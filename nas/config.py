"""Config schema of the search stage (`conf/search.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from effnas.config import DataConfig, ProxyConfig, RayConfig, RunConfig


@dataclass
class RewardConfig:
    kind: str = "soft"  # soft: a = b = w; hard: a = 0, b = -1 (MnasNet §3)
    w: float = -0.07  # EfficientNet §4


@dataclass
class SamplerConfig:
    name: str = "random"  # random | tpe | nsga2 | evolution | controller
    population: int = 16  # evolution / nsga2
    sample_size: int = 4  # evolution tournament
    n_startup: int = 8  # tpe random start-up trials
    lr: float = 0.05  # controller
    baseline_decay: float = 0.9  # controller moving-average baseline
    entropy: float = 0.0  # controller entropy bonus


@dataclass
class SpaceConfig:
    name: str = "mnasnet"
    ops: list[str] = field(default_factory=lambda: ["conv", "ds", "mbconv3", "mbconv6"])
    kernels: list[int] = field(default_factory=lambda: [3, 5])
    se: list[float] = field(default_factory=lambda: [0.0, 0.25])
    skip: list[bool] = field(default_factory=lambda: [True, False])
    filters: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    repeats: list[int] = field(default_factory=lambda: [-1, 0, 1])
    base: str = "efficientnet_b0"  # the skeleton: strides, baseline filters and repeats


@dataclass
class SearchConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    target_flops: str = "400M"  # MACs at 224x224 with 1000 classes
    trials: int = 20
    time_budget: Optional[str] = None  # e.g. 30m, 2h, 90s
    reject_above: Optional[float] = 2.0  # skip training samples above this multiple of T
    asha: bool = False
    storage: Optional[str] = None  # Optuna storage URL; default SQLite in the run dir
    resume: Optional[str] = None
