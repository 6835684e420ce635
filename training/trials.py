"""Trials as plain function calls: the contract between a stage that plans proxy trials and
whatever executes them.

A stage (search, grid, ...) is a `TrialSource`: it hands out one trial config at a time
(`propose`) and records each end (`complete`). An `Executor` runs a source to its end: in this
process, one trial after another (`run_inline`, `inline_executor`: tests, debugging,
`ray.enabled=false`), or as Ray Tune trials (the one Ray adapter, `adapters.raytune`). Either way
a trial is `run_trial(config, setup)`: the shared proxy trainer on plain, picklable values.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from training.proxy_config import ProxyConfig, checked

PATH_KEYS = ("root", "test_root", "cache_dir")

Metrics = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]


class TrialSource(Protocol):
    """What an executor drives. `propose` returns the next trial's config (a dict with `arch`, an
    `Arch.to_dict()`, and optionally `name`, `resolution`, `seed`, `epochs`) or None when no trial should
    start any more; `complete` gets the trial's final result (`status` present), the last
    intermediate report of one a scheduler stopped (no `status`), or `error` for a crash."""

    name: str  # the stage ("search", "grid"): console lines and experiment names

    @property
    def remaining(self) -> int:
        """At most how many more trials `propose` may hand out."""
        ...

    def propose(self, trial_id: str) -> dict[str, Any] | None: ...

    def complete(
        self, trial_id: str, result: Mapping[str, Any] | None, error: str | bool = False
    ) -> None: ...


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a run shares, as plain values (workers may run on other machines)."""

    data: dict[str, Any]  # a DataConfig with absolute paths
    proxy: ProxyConfig
    seed: int
    device: str = "auto"
    threads: int = 0  # torch threads per trial; 0: the CPUs the executor gave the trial
    metrics: Metrics | None = None  # extra fields on every report (the search's reward)

    @classmethod
    def of(cls, cfg: Any, metrics: Metrics | None = None) -> TrialSetup:
        """From a composed stage config (`data`, `proxy`, `run`)."""
        return cls(
            data=absolute_paths(cfg.data),
            proxy=checked(cfg.proxy),
            seed=int(cfg.run.seed),
            device=str(cfg.run.device),
            threads=int(cfg.run.threads),
            metrics=metrics,
        )


@dataclass(frozen=True)
class EarlyStop:
    """Stop trials early on `Scheduling.metric` (ASHA; Li et al. 2020) after `grace` reports."""

    max_t: int  # reports a whole trial sends (training.proxy_config.Budget.reports)
    grace: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Scheduling:
    """How an executor may schedule a source's trials: the metric a scheduler ranks on (maximised,
    reported on every report through `TrialSetup.metrics`) and optional early stopping."""

    metric: str | None = None
    early_stop: EarlyStop | None = None


Executor = Callable[[TrialSource, TrialSetup, Scheduling], None]


def absolute_paths(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of the data config with its paths made absolute (workers run elsewhere)."""
    from omegaconf import OmegaConf

    plain = (
        OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else dict(data_cfg)
    )
    for key in PATH_KEYS:
        if plain.get(key):
            plain[key] = str(Path(os.path.expanduser(plain[key])).resolve())
    return plain


_DATA_CACHE: dict[str, Any] = {}


def run_trial(
    config: Mapping[str, Any],
    setup: TrialSetup,
    report: Callable[[dict[str, Any]], None] | None = None,
    cpus: int = 1,
) -> dict[str, Any]:
    """One proxy trial -> the TrialResult as a dict. Never raises on a training failure (NaN
    loss, bad arch, out of memory: status "failed" with the error); the caller's `report` may
    raise to stop the trial early. `cpus`: the CPUs the executor gave this trial."""
    from omegaconf import OmegaConf

    from search_spaces.arch import Arch
    from training.data import load_dataset
    from training.proxy import evaluate

    t0 = time.time()
    try:
        arch = Arch.from_dict(config["arch"])
        key = repr(sorted(setup.data.items()))
        if key not in _DATA_CACHE:  # one decode per worker process, then the array cache
            _DATA_CACHE[key] = load_dataset(OmegaConf.create(dict(setup.data)))
        proxy = setup.proxy
        if config.get("epochs") is not None:  # a per-trial budget (the study's --budgets)
            proxy = dataclasses.replace(proxy, epochs=float(config["epochs"]), images=None)
        result = evaluate(
            arch,
            proxy,
            _DATA_CACHE[key],
            resolution=config.get("resolution"),
            seed=int(config.get("seed", setup.seed)),
            threads=setup.threads or max(1, int(cpus)),
            device=setup.device,
            report=report,
            test=bool(config.get("test")),  # also score the test split (a study's final report)
        )
        return result.to_dict()
    except MemoryError as exc:
        return _failed(f"out of memory: {exc}", t0)
    except (ValueError, RuntimeError) as exc:
        # RuntimeError covers torch's own failures (CUDA OOM, shape errors); a stop request
        # from an executor's scheduler is not one of them and propagates.
        if type(exc).__module__.startswith("ray"):
            raise
        return _failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", t0)


def _failed(error: str, t0: float) -> dict[str, Any]:
    print(f"trial failed: {error}", file=sys.stderr)
    return {"status": "failed", "error": error, "accuracy": None, "seconds": time.time() - t0}


def run_inline(source: TrialSource, evaluate: Callable[[dict[str, Any]], Mapping[str, Any]]) -> None:
    """Drive `source` to its end in this process, one trial at a time: `evaluate(config)` gives
    each trial's final result (`run_trial` bound to a setup, or a stand-in in tests). A trial
    that raises is recorded as failed with the exception's first line (as a crashed Ray trial
    is) and the run goes on; Ctrl-C still ends it."""
    n = 0
    while True:
        trial_id = f"inline-{n}"
        config = source.propose(trial_id)
        if config is None:
            return
        try:
            result = evaluate(config)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
            print(f"trial failed: {error}", file=sys.stderr)
            source.complete(trial_id, None, error=error)
        else:
            source.complete(trial_id, result)
        n += 1


def inline_executor(source: TrialSource, setup: TrialSetup, scheduling: Scheduling) -> None:
    """The Ray-free `Executor`: every trial in this process with all its threads; no early
    stopping (a note says so when the stage asked for it)."""
    if scheduling.early_stop is not None:
        print(f"{source.name}: trials run in this process: no early stopping", file=sys.stderr)
    cpus = os.cpu_count() or 1

    def evaluate(config: dict[str, Any]) -> Mapping[str, Any]:
        result = run_trial(config, setup, cpus=cpus)
        if setup.metrics is not None:
            result.update(setup.metrics(config, result))
        return result

    run_inline(source, evaluate)
