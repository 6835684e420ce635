"""The one Ray Tune adapter: runs any stage's `TrialSource` as Tune trials.

Ray stays at this edge (STYLE.md): stages plan trials as plain `training.trials.TrialSource`s and
read plain dicts back; this module turns a source into a Tune `Searcher` (suggest ->
`propose`, completion -> `complete`) behind a `ConcurrencyLimiter`, each trial
`training.trials.run_trial` with per-trial resources, optionally under ASHA on the stage's metric.
The source (and any Optuna study it keeps) stays in this driver process; workers only train.
A trial whose worker or node dies is restarted elsewhere up to `ray.max_failures` times, then
reaches the source as an error (docs/reliability.md).
Scale-out (DESIGN.md): `ray.address=auto` or `host:port` joins an existing cluster instead of
starting a local runtime; then the run directory (Tune's storage) must be on a shared path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from foundation.errors import UserError
from training.trials import Executor, Scheduling, TrialSetup, TrialSource, run_trial

# Tune's defaults that do not fit a CLI tool: chdir into each trial's directory (breaks the
# user's relative paths), TensorBoard/CSV/JSON loggers per trial, and the verbose new console.
_RAY_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "1",
    "RAY_DEDUP_LOGS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "100000",
}


@dataclass
class RayConfig:
    """How trial stages use Ray (`ray.*`); these defaults are the only ones (no conf/ group)."""

    enabled: bool = True  # false: trials run one after another in this process, no Ray
    address: Optional[str] = None  # None: local in-process; "auto" or host:port joins a cluster
    num_cpus: Optional[int] = None  # local runtime size; default: all cores
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    object_store_mb: int = 256
    # Restarts of a crashed trial (its worker or node died, or the trainable raised) from
    # scratch, wherever resources are free, before it is recorded as failed; -1: without end.
    # Training failures (NaN loss, out of memory, time limit) are results, never retried.
    max_failures: int = 2


def check(ray_cfg: Any) -> None:
    """Values within their rules, before anything starts; one UserError line."""
    if not float(ray_cfg.cpus_per_trial) > 0 or float(ray_cfg.gpus_per_trial) < 0:
        raise UserError(
            f"ray.cpus_per_trial must be > 0 and ray.gpus_per_trial >= 0, "
            f"got {ray_cfg.cpus_per_trial}, {ray_cfg.gpus_per_trial}"
        )
    if ray_cfg.num_cpus is not None and int(ray_cfg.num_cpus) < 1:
        raise UserError(f"ray.num_cpus must be >= 1 or null, got {ray_cfg.num_cpus}")
    if int(ray_cfg.max_concurrent) < 0 or int(ray_cfg.object_store_mb) < 75:
        raise UserError(
            f"ray.max_concurrent must be >= 0 and ray.object_store_mb >= 75, "
            f"got {ray_cfg.max_concurrent}, {ray_cfg.object_store_mb}"
        )
    if int(getattr(ray_cfg, "max_failures", 0)) < -1:
        raise UserError(f"ray.max_failures must be >= 0 or -1 (no limit), got {ray_cfg.max_failures}")


@contextmanager
def ray_session(ray_cfg: Any) -> Iterator[dict[str, float]]:
    """Start a local Ray runtime (or join `ray_cfg.address`); yield its total resources.

    A runtime this call started is shut down on exit; a joined cluster is only disconnected.
    """
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    already = ray.is_initialized()
    if not already:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": True,
            "logging_level": "ERROR",
        }
        address = getattr(ray_cfg, "address", None)
        if address:
            _check_reachable(str(address))
            kwargs["address"] = address
            # Ray >= 2.59 secures a `ray start` head with the user's token, but a driver sends
            # it only in token mode.
            if (Path.home() / ".ray" / "auth_token").is_file():
                os.environ.setdefault("RAY_AUTH_MODE", "token")
        else:
            # "local": never attach to a cluster found through RAY_ADDRESS or a running head.
            kwargs["address"] = "local"
            cpus = getattr(ray_cfg, "num_cpus", None) or os.cpu_count() or 1
            kwargs["num_cpus"] = int(cpus)
            kwargs["num_gpus"] = _local_gpus()
            kwargs["object_store_memory"] = int(getattr(ray_cfg, "object_store_mb", 256)) * 1024**2
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not start or join {where}: {first}") from None
    try:
        yield dict(ray.cluster_resources())
    finally:
        if not already:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes: Ray retries an unreachable GCS for a long time."""
    import socket

    if address == "auto" or address.startswith("ray://") or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.__class__.__name__}); "
            "start one with `ray start --head` or drop ray.address"
        ) from None


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # torch missing or CUDA broken: no GPUs for Ray
        return 0


def trial_resources(ray_cfg: Any) -> dict[str, float]:
    return {"cpu": float(ray_cfg.cpus_per_trial), "gpu": float(ray_cfg.gpus_per_trial)}


def max_concurrent(ray_cfg: Any, resources: Mapping[str, float]) -> int:
    """`ray.max_concurrent`, or (0) as many trials as the cluster's CPUs/GPUs hold."""
    if int(ray_cfg.max_concurrent) > 0:
        return int(ray_cfg.max_concurrent)
    fits = [resources.get("CPU", 1.0) / max(float(ray_cfg.cpus_per_trial), 1e-9)]
    if float(ray_cfg.gpus_per_trial) > 0:
        fits.append(resources.get("GPU", 0.0) / float(ray_cfg.gpus_per_trial))
    return max(1, int(min(fits)))


class Trainable:
    """Tune's function trainable: `run_trial` with every report (and the final result) sent to
    `tune.report`, the setup's metrics added to each. Picklable (Ray ships it to workers)."""

    def __init__(self, setup: TrialSetup) -> None:
        self.setup = setup
        self.__name__ = "proxy_trial"  # Tune names the experiment after the trainable

    def _with_metrics(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(metrics)
        if self.setup.metrics is not None:
            out.update(self.setup.metrics(config, out))
        return out

    def __call__(self, config: dict[str, Any]) -> None:
        from ray import tune

        result = run_trial(
            config,
            self.setup,
            lambda metrics: tune.report(self._with_metrics(config, metrics)),
            cpus=_cpus_of_this_trial(),
        )
        tune.report(self._with_metrics(config, {**result, "done": True}))


def _cpus_of_this_trial() -> int:
    """The CPUs Ray gave this trial: torch threads = allotted cores."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


def _searcher(source: TrialSource) -> Any:
    from ray.tune.search import Searcher

    class SourceSearcher(Searcher):
        """Tune's view of a source: one suggestion per trial, completions back to it. Tune
        pickles its searcher into the experiment state; the source stays out of it (a stage
        resumes from its own files)."""

        def __init__(self, source: TrialSource) -> None:
            super().__init__()
            self.source: TrialSource | None = source

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            config = self.source.propose(trial_id) if self.source is not None else None
            return Searcher.FINISHED if config is None else config

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if self.source is not None and not error:  # errors: `_ErrorCallback`, with the reason
                self.source.complete(trial_id, result)

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "source": None}

    return SourceSearcher(source)  # not a closure over `source`: cloudpickle would take it along


def _error_callback(source: TrialSource) -> Any:
    from ray import tune

    class ErrorCallback(tune.Callback):
        """A crashed trial (worker died, trainable raised) reaches the source with the last
        line of its traceback. Tune pickles its callbacks; the source stays out."""

        def __init__(self, source: TrialSource) -> None:
            self.source: TrialSource | None = source

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.source is not None:
                self.source.complete(trial.trial_id, dict(trial.last_result or {}), error=_error_of(trial))

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "source": None}

    return ErrorCallback(source)


def _error_of(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:300] if lines else "trial crashed (see the ray/ folder)"


def run(source: TrialSource, setup: TrialSetup, scheduling: Scheduling, ray_cfg: Any, storage: Path) -> None:
    """Run `source` to its end as Ray Tune trials (starting or joining Ray per `ray_cfg`); Tune's
    own files go under `storage`, one experiment per attempt (`<stage><n>`)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    storage.mkdir(parents=True, exist_ok=True)
    attempt = len(list(storage.glob(f"{source.name}*")))
    with ray_session(ray_cfg) as resources:
        concurrent = max(1, min(max_concurrent(ray_cfg, resources), source.remaining or 1))
        print(
            f"{source.name}: up to {source.remaining} trial(s), {concurrent} at a time, "
            f"{trial_resources(ray_cfg)} each (Ray: {_short(resources)})",
            file=sys.stderr,
            flush=True,
        )
        scheduler = None
        if scheduling.early_stop is not None:
            from ray.tune.schedulers import ASHAScheduler

            stop = scheduling.early_stop
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=max(1, int(stop.max_t)),
                grace_period=int(stop.grace),
                reduction_factor=float(stop.reduction_factor),
            )
        ranked = {"metric": scheduling.metric, "mode": "max"} if scheduling.metric else {}
        tuner = tune.Tuner(
            tune.with_resources(Trainable(setup), trial_resources(ray_cfg)),
            tune_config=tune.TuneConfig(
                **ranked,
                search_alg=ConcurrencyLimiter(_searcher(source), max_concurrent=concurrent),
                scheduler=scheduler,
                num_samples=max(1, source.remaining),
                reuse_actors=True,  # one worker process per slot: torch and the data load once
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{source.name}{attempt}",
                storage_path=str(storage.resolve()),
                verbose=0,
                callbacks=[_error_callback(source)],
                failure_config=tune.FailureConfig(max_failures=int(getattr(ray_cfg, "max_failures", 0))),
            ),
        )
        tuner.fit()


def executor(ray_cfg: Any, storage: Path) -> Executor:
    """The `Executor` a trial stage gets from the application: Ray Tune with `ray_cfg`."""

    def execute(source: TrialSource, setup: TrialSetup, scheduling: Scheduling) -> None:
        run(source, setup, scheduling, ray_cfg, storage)

    return execute


def _trial_name(trial: Any) -> str:
    return str(trial.config.get("name", trial.trial_id))


def _short(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in resources.items() if k in ("CPU", "GPU"))
