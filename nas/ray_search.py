"""Ray Tune at the edge of the search: a `nas.driver.Search` run as Tune trials.

A custom `Searcher` wraps the driver (suggest -> `Search.propose`, on_trial_complete ->
`Search.complete`) behind a `ConcurrencyLimiter`; the trials are `effnas.tune`'s proxy trainable
with per-trial resources, optionally under ASHA on the reward of their intermediate reports.
The sampler and its Optuna study stay in this (driver) process; workers only train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from effnas.tune import make_trainable, max_concurrent, ray_session, trial_resources
from nas.driver import RewardMetric, Search


class SamplerSearcher(Searcher):
    """Tune's view of the driver: one suggestion per trial, completions back to it.

    Tune pickles its searcher into the experiment state; the driver's state (sampler, storage
    connections, console) stays out of it: `--resume` rebuilds from trials.csv instead.
    """

    def __init__(self, search: Search) -> None:
        super().__init__()
        self.search: Search | None = search

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = self.search.propose(trial_id) if self.search is not None else None
        return Searcher.FINISHED if config is None else config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.search is not None:
            self.search.complete(trial_id, result, error)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "search": None}


def run_on_ray(
    search: Search,
    cfg: Any,
    storage_path: str,
    experiment: str,
    asha_max_t: int | None = None,
) -> None:
    """Run `search` to its end as Ray Tune trials (starting or joining Ray per `cfg.ray`)."""
    trainable = make_trainable(
        cfg.data, cfg.proxy, int(cfg.run.seed), str(cfg.run.device), extra=RewardMetric(search.reward_fn)
    )
    with ray_session(cfg.ray) as resources:
        concurrent = max(1, min(max_concurrent(cfg.ray, resources), search.remaining or 1))
        print(
            f"search: up to {search.remaining} trial(s), {concurrent} at a time, "
            f"{trial_resources(cfg.ray)} each (Ray: {_short(resources)})",
            file=search.out,
            flush=True,
        )
        scheduler = None
        if cfg.asha:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=max(1, int(asha_max_t or 100)),
                grace_period=int(cfg.asha_grace_period),
                reduction_factor=float(cfg.asha_reduction_factor),
            )
        tuner = tune.Tuner(
            tune.with_resources(trainable, trial_resources(cfg.ray)),
            tune_config=tune.TuneConfig(
                metric="reward",
                mode="max",
                search_alg=ConcurrencyLimiter(SamplerSearcher(search), max_concurrent=concurrent),
                scheduler=scheduler,
                num_samples=max(1, search.remaining),
                reuse_actors=True,  # one worker process per slot: torch and the data load once
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=experiment,
                storage_path=storage_path,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()


def _trial_name(trial: Any) -> str:
    return f"trial{trial.config.get('trial', trial.trial_id)}"


def _short(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in resources.items() if k in ("CPU", "GPU"))
