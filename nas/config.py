"""Config schema of the search stage (`conf/search.yaml`); defaults live in conf/, not here.

`run` and `ray` are added by the application (the stage registry), like every trial stage's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from search_spaces.mnasnet import SpaceConfig
from training.data.config import DataConfig
from training.proxy_config import ProxyConfig


@dataclass
class RewardConfig:
    kind: str = "soft"  # soft: a = b = w; hard: a = 0, b = -1 (MnasNet §3)
    w: float = -0.07  # EfficientNet §4


@dataclass
class SamplerConfig:
    name: str = "random"  # random | tpe | nsga2 | evolution | controller | local | bananas
    population: int = 16  # evolution (aging population) / nsga2 (generation size)
    sample_size: int = 4  # evolution tournament size
    n_startup: int = 4  # tpe: random trials before the model (conf/sampler/tpe.yaml)
    lr: float = 0.1  # controller: policy-gradient step on the logits
    baseline_decay: float = 0.9  # controller: moving-average reward baseline
    entropy: float = 0.0  # controller: entropy bonus
    n_init: int = 10  # local, bananas: uniform samples before climbing / the predictor
    batch: int = 5  # bananas: proposals per refit of the predictor
    candidates: int = 200  # bananas: mutated candidates scored per refit
    parents: int = 10  # bananas: the best architectures the candidates are mutated from
    trees: int = 100  # bananas: the random forest's trees (the ensemble)


@dataclass
class EvaluatorConfig:
    """How a trial is scored: `proxy` trains it; `surrogate` predicts (nas/surrogate.py)."""

    name: str = MISSING  # proxy | surrogate
    path: Optional[str] = None  # surrogate: a surrogate run directory or its surrogate.pkl
    noise: float = 0.0  # surrogate: std of the Gaussian noise added to each prediction


@dataclass
class SearchConfig:
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    target_flops: Optional[str] = "400M"  # T: MACs at 224x224 with 1000 classes
    target_latency: Optional[str] = None  # or T as latency (15ms, 15ms@onnxruntime): predictor or table
    latency_table: Optional[str] = None  # `effnas latency --build-table`'s latency_table.json
    latency_predictor: Optional[str] = MISSING  # `effnas latency --fit-predictor`'s predictor
    latency_drift: str = MISSING  # scale | warn | off: the predictor's references measured again first
    latency_machine: str = MISSING  # same | any: a predictor or table of another CPU model refused or not
    measure_top: int = MISSING  # latency target: measure the top k by reward, pick on measured
    measure_runs: int = MISSING
    measure_warmup: int = MISSING
    measure_repeat: int = MISSING
    trials: int = 20  # trained trials (rejected samples do not count)
    time_budget: Optional[str] = None  # no new trial starts after this (90s, 30m, 2h)
    reject_above: Optional[float] = 2.0  # skip training samples above this multiple of T
    asha: bool = False  # early-stop trials on the reward of intermediate reports
    asha_grace_period: int = 1  # reports before ASHA may stop a trial
    asha_reduction_factor: float = 3.0
    prerank: Optional[str] = MISSING  # naswot | synflow: zero-cost pre-ranking (random sampler)
    prerank_candidates: int = MISSING  # K: proposals scored per trained trial
    storage: Optional[str] = None  # Optuna storage URL; default the journal file study.log in the run dir
    study_name: Optional[str] = None  # default: effnas-search-<run dir name>
    resume: Optional[str] = None
