"""`effnas study <kind>`: the study stage's entry point and schema; each kind is one stage module.

    scaling  scaling.study       compound vs one dimension at equal MACs (Tables 3/7, Figs 3/8)
    search   nas.search_study    the searched architecture vs random ones of its MACs and the base

Both kinds share one config schema (`StudyConfig`, values in `conf/study.yaml`) and one registry
row; `validate` and `run` hand the config to the kind's module. It sits above the stages because
it dispatches to two of them (stage packages do not import each other); what both kinds share
below them (the evaluation split, the trial table) is `training.study_trials`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import MISSING

from foundation.errors import UserError
from search_spaces.arch_config import ArchConfig
from training.data.config import DataConfig
from training.proxy_config import ProxyConfig

if TYPE_CHECKING:
    from training.trials import Executor

KINDS = ("scaling", "search")


@dataclass
class StudyConfig:
    """Schema of `conf/study.yaml` (`run` and `ray` are added by the stage registry)."""

    kind: str = MISSING  # scaling | search (the `effnas study <kind>` subcommand)
    arch: ArchConfig = field(default_factory=ArchConfig)  # unset: --from's, or the official B0
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    flops: str = MISSING  # MACs levels as multiples of the baseline's: 2x or 2x,4x
    methods: list[str] = MISSING
    seeds: int = MISSING
    budgets: list[float] = MISSING  # proxy epochs; several: does the ranking hold?
    default_budgets: dict[str, list[float]] = MISSING  # per kind, when --budgets is not given
    sweep: Optional[str] = MISSING  # width | depth | resolution: Figure 3's curve instead
    multipliers: list[float] = MISSING
    alpha: Optional[float] = MISSING  # compound coefficients; unset: --from's or the paper's
    beta: Optional[float] = MISSING
    gamma: Optional[float] = MISSING
    tolerance: float = MISSING  # a method is on its level within this relative MACs error
    random: int = MISSING  # study search: random archs of the searched one's MACs
    max_draws: int = MISSING  # study search: rejection-sampling draws before giving up
    max_multiplier: float = MISSING  # the largest multiplier a dimension may take
    resolution_divisor: int = MISSING
    upstream: Optional[str] = MISSING  # a search run (best_arch.yaml) or a grid run (coefficients)
    resume: Optional[str] = MISSING
    storage: Optional[str] = MISSING  # Optuna storage URL of the run's study (training.trial_log)
    study_name: Optional[str] = MISSING
    eval_split: str = MISSING  # auto | test | val: the images every arm is judged on


def _module(kind: str) -> ModuleType:
    if kind == "scaling":
        from scaling import study

        return study
    if kind == "search":
        from nas import search_study

        return search_study
    raise UserError(f"unknown study {kind!r}; expected one of {', '.join(KINDS)}")


def validate(cfg: Any) -> None:
    _module(str(cfg.kind)).validate(cfg)


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    return _module(str(cfg.kind)).run(cfg, rundir, execute)
