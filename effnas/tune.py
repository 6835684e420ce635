"""Ray plumbing shared by the search and grid stages: the Ray session and the trial trainable.

Ray stays at this edge: stages hand plain configs in and read plain dicts out, and the trainable
only wraps `effnas.proxy.evaluate`, so everything it runs is testable without a cluster.
Scale-out (DESIGN.md): `ray.address=auto` or `host:port` joins an existing cluster instead of
starting a local runtime; then the run directory (Tune's storage) must be on a shared path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
for _key, _value in _RAY_ENV.items():
    os.environ.setdefault(_key, _value)

PATH_KEYS = ("root", "test_root", "cache_dir")


@contextmanager
def ray_session(ray_cfg: Any) -> Iterator[dict[str, float]]:
    """Start a local Ray runtime (or join `ray_cfg.address`); yield its total resources.

    A runtime this call started is shut down on exit; a joined cluster is only disconnected.
    """
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
            from effnas.errors import UserError

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

    from effnas.errors import UserError

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


def make_trainable(
    data_cfg: Any,
    proxy_cfg: Any,
    seed: int,
    device: str = "auto",
    extra: Callable[[Mapping[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A Ray Tune function trainable that proxy-trains `config["arch"]` (an `Arch.to_dict()`).

    Optional `config["resolution"]` overrides the proxy's input size (the grid's gamma) and
    `config["seed"]` the seed. Every intermediate report and the final one go to `tune.report`;
    `extra(config, metrics)` may add fields to each (e.g. the search's reward, for ASHA). A
    trial that fails (NaN loss, bad arch, out of memory) reports status "failed" and its error
    rather than raising, so one bad trial never stops a search.
    """
    from omegaconf import OmegaConf

    data_plain = absolute_paths(data_cfg)
    proxy_plain = (
        OmegaConf.to_container(proxy_cfg, resolve=True) if OmegaConf.is_config(proxy_cfg) else dict(proxy_cfg)
    )
    return _Trainable(data_plain, proxy_plain, int(seed), device, extra)


class _Trainable:
    """Picklable closure over plain configs (Ray ships it to every worker)."""

    def __init__(self, data: dict, proxy: dict, seed: int, device: str, extra: Callable | None) -> None:
        self.data, self.proxy, self.seed, self.device, self.extra = data, proxy, seed, device, extra
        self.__name__ = "proxy_trial"  # Tune names the experiment after the trainable

    def __call__(self, config: dict[str, Any]) -> None:
        from ray import tune

        result = run_trial(
            config, self.data, self.proxy, self.seed, self.device, self._reporter(config, tune)
        )
        final = {**result, "done": True}
        if self.extra is not None:
            final.update(self.extra(config, final))
        tune.report(final)

    def _reporter(self, config: dict[str, Any], tune: Any) -> Callable[[dict[str, Any]], None]:
        def report(metrics: dict[str, Any]) -> None:
            metrics = dict(metrics)
            if self.extra is not None:
                metrics.update(self.extra(config, metrics))
            tune.report(metrics)

        return report


_DATA_CACHE: dict[str, Any] = {}


def run_trial(
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    proxy: Mapping[str, Any],
    seed: int,
    device: str = "auto",
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One proxy trial from plain configs -> the TrialResult as a dict (never raises on a
    training failure; the caller's `report` may raise to stop the trial early)."""
    import time

    from omegaconf import OmegaConf

    from effnas.data import load_dataset
    from effnas.proxy import evaluate
    from search_spaces.arch import Arch

    t0 = time.time()
    try:
        arch = Arch.from_dict(config["arch"])
        key = repr(sorted(data.items()))
        if key not in _DATA_CACHE:  # one decode per worker process, then the array cache
            _DATA_CACHE[key] = load_dataset(OmegaConf.create(dict(data)))
        dataset = _DATA_CACHE[key]
        threads = int(config.get("threads", 0)) or _cpus_of_this_trial()
        result = evaluate(
            arch,
            OmegaConf.create(dict(proxy)),
            dataset,
            resolution=config.get("resolution"),
            seed=int(config.get("seed", seed)),
            threads=threads,
            device=device,
            report=report,
        )
        return result.to_dict()
    except MemoryError as exc:
        return _failed(f"out of memory: {exc}", t0)
    except (ValueError, RuntimeError) as exc:
        # RuntimeError covers torch's own failures (CUDA OOM, shape errors); a stop request
        # from Tune is not one of them and propagates.
        if type(exc).__module__.startswith("ray"):
            raise
        return _failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", t0)


def _failed(error: str, t0: float) -> dict[str, Any]:
    import time

    print(f"trial failed: {error}", file=sys.stderr)
    return {"status": "failed", "error": error, "accuracy": None, "seconds": time.time() - t0}


def _cpus_of_this_trial() -> int:
    """The CPUs Ray gave this trial (1 outside Ray): torch threads = allotted cores."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            return max(1, int(cpus))
    except Exception:  # not in a Ray worker
        pass
    return 1
