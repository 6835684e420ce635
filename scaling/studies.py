"""`effnas study <kind>`: the study stage's entry point; each kind is one module.

    scaling  scaling.study          compound vs one dimension at equal MACs (Tables 3/7, Figs 3/8)
    search   scaling.search_study   the searched architecture vs random ones of its MACs and the base

Both kinds share one config schema (`scaling.study.StudyConfig`, values in `conf/study.yaml`)
and one registry row; `validate` and `run` hand the config to the kind's module.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError

if TYPE_CHECKING:
    from training.trials import Executor


def _module(kind: str) -> ModuleType:
    if kind == "scaling":
        from scaling import study

        return study
    if kind == "search":
        from scaling import search_study

        return search_study
    raise UserError(f"unknown study {kind!r}; expected scaling or search")


def validate(cfg: Any) -> None:
    _module(str(cfg.kind)).validate(cfg)


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    return _module(str(cfg.kind)).run(cfg, rundir, execute)
