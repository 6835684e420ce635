"""Search strategies over the MnasNet space, one interface (`Sampler`: ask / tell / restore).

random      uniform sampling, the baseline
tpe         Optuna's TPE on the reward
nsga2       Optuna's NSGA-II on (accuracy, MACs)
evolution   regularized (aging) evolution, one-choice mutations
controller  MnasNet's method: a policy over the choices trained by REINFORCE
local       local search: hill climbing over one-decision neighbours, random restarts
bananas     a predictor ensemble (random forest) + Thompson sampling over mutations of the best
"""

from __future__ import annotations

from typing import Any

from nas.samplers.base import Ask, History, Outcome, Sampler
from search_spaces.mnasnet import MnasNetSpace

__all__ = ["SAMPLERS", "Ask", "History", "Outcome", "Sampler", "make_sampler"]

SAMPLERS = ("random", "tpe", "nsga2", "evolution", "controller", "local", "bananas")


def sampler_class(name: str) -> type[Sampler]:
    if name == "random":
        from nas.samplers.random_search import RandomSampler

        return RandomSampler
    if name == "evolution":
        from nas.samplers.evolution import EvolutionSampler

        return EvolutionSampler
    if name == "controller":
        from nas.samplers.controller import ControllerSampler

        return ControllerSampler
    if name == "local":
        from nas.samplers.local_search import LocalSearchSampler

        return LocalSearchSampler
    if name == "bananas":
        from nas.samplers.bananas import BananasSampler

        return BananasSampler
    if name in ("tpe", "nsga2"):
        from nas.samplers.optuna_samplers import NSGA2Sampler, TPESampler

        return TPESampler if name == "tpe" else NSGA2Sampler
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")


def make_sampler(
    name: str,
    space: MnasNetSpace,
    seed: int = 0,
    *,
    storage: Any = None,
    study_name: str = "effnas-search",
    history: History = (),
    **options: Any,
) -> Sampler:
    """A sampler by name; `options` are its config keys (population, lr, ...); `storage` (a URL or
    an opened Optuna storage) and `study_name` reach the Optuna ones; `history` restores an interrupted run's state."""
    cls = sampler_class(name)
    if name in ("tpe", "nsga2"):
        options = {**options, "storage": storage, "study_name": study_name}
    sampler = cls(space, seed, **options)
    if history:
        sampler.restore(history)
    return sampler
