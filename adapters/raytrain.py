"""The Ray Train side of the one Ray adapter: `effnas train train.workers=N` on a TorchTrainer.

The stage (models/data_parallel.py) hands over a plain per-worker function and its config; this
module runs it on N Ray Train workers (`TorchTrainer`, DDP over gloo on CPU and NCCL on CUDA,
`ray.cpus_per_trial` CPUs each, one GPU each on CUDA) and gives each a `WorkerContext`: its rank,
device and CPUs, `prepare` (`ray.train.torch.prepare_model`: DDP), `latest` (the files of
`ray.train.get_checkpoint()`) and `report` (`ray.train.report` with a `Checkpoint` made from
rank 0's files). Checkpoints live under the run directory (`<run>/ray/train/`, the storage path;
shared storage for several nodes). A failed worker group restarts from the latest checkpoint up to
`ray.max_failures` times; `--resume` reopens the same storage, and Ray Train continues from the
latest checkpoint it recorded there. The Ray runtime is started or joined as for trials
(`adapters.raytune.ray_session`, `ray.address=auto|host:port`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.raytune import ray_session
from foundation.errors import UserError

NAME = "train"  # the Ray Train run's name under the storage path: the same on --resume


def check(cfg: Any) -> None:
    """`train.workers` against what Ray has, before anything starts: a local runtime's CPUs are
    known now (`ray.num_cpus` or every core); a joined cluster's are checked once joined."""
    workers = int(cfg.train.workers)
    if workers <= 1:  # (< 1: refused by models.train.validate)
        return
    from models import data_parallel

    data_parallel.validate(cfg)
    ray_cfg = cfg.ray
    if not bool(ray_cfg.enabled):
        raise UserError(
            f"train.workers={workers} trains on Ray Train workers, but ray.enabled=false: "
            "drop ray.enabled=false or train with train.workers=1"
        )
    if not ray_cfg.address:
        cpus = int(ray_cfg.num_cpus or os.cpu_count() or 1)
        _check_fits(workers, float(ray_cfg.cpus_per_trial), cpus, "the local Ray runtime")


def _check_fits(workers: int, per_worker: float, cpus: float, where: str) -> None:
    if workers * per_worker > cpus:
        raise UserError(
            f"train.workers={workers} x ray.cpus_per_trial={per_worker:g} needs {workers * per_worker:g} "
            f"CPUs, but {where} has {cpus:g}: lower train.workers (or ray.cpus_per_trial)"
        )


def launcher(ray_cfg: Any, storage: Path) -> Callable[..., tuple[Any, Any]]:
    """What `models.train.run` gets from the application for train.workers > 1:
    `models.data_parallel.train` with its workers on Ray Train with `ray_cfg`."""
    from models import data_parallel

    def launch(
        worker: Callable[[dict[str, Any], Any], None], config: dict[str, Any], *, workers: int, use_gpu: bool
    ) -> dict[str, bytes]:
        return run(worker, config, workers=workers, use_gpu=use_gpu, ray_cfg=ray_cfg, storage=storage)

    def train(arch: Any, cfg: Any, data: Any, device: str, rundir: Any) -> tuple[Any, Any]:
        return data_parallel.train(arch, cfg, data, device, rundir, launch)

    return train


def run(
    worker: Callable[[dict[str, Any], Any], None],
    config: dict[str, Any],
    *,
    workers: int,
    use_gpu: bool,
    ray_cfg: Any,
    storage: Path,
) -> dict[str, bytes]:
    """`worker(config, context)` on `workers` Ray Train workers -> the files of the last
    checkpoint rank 0 reported (the final weights and result)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage.mkdir(parents=True, exist_ok=True)
    per_worker = float(ray_cfg.cpus_per_trial)
    with ray_session(ray_cfg) as resources:
        where = f"the Ray cluster at {ray_cfg.address}" if ray_cfg.address else "the local Ray runtime"
        _check_fits(workers, per_worker, resources.get("CPU", 0.0), where)
        if use_gpu and resources.get("GPU", 0.0) < workers:
            raise UserError(
                f"train.workers={workers} on CUDA needs a GPU per worker, but {where} has "
                f"{resources.get('GPU', 0.0):g}: lower train.workers"
            )
        trainer = TorchTrainer(
            _PerWorker(worker),
            train_loop_config=config,
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker={"CPU": per_worker, **({"GPU": 1.0} if use_gpu else {})},
            ),
            run_config=RunConfig(
                name=NAME,
                storage_path=str(storage.resolve()),
                failure_config=FailureConfig(max_failures=int(ray_cfg.max_failures)),
                checkpoint_config=CheckpointConfig(num_to_keep=2),  # the latest and the one before
                logging_config=LoggingConfig(log_level="ERROR"),  # not every report and checkpoint
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # ray.train.TrainingFailedError: retries spent
            raise UserError(f"training failed on the Ray Train workers: {_last_line(exc)}") from None
        if result.checkpoint is None:
            raise UserError("the Ray Train workers ended without a final checkpoint")
        with result.checkpoint.as_directory() as folder:
            return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    return (errors or lines or [type(exc).__name__])[-1][:300]


class _PerWorker:
    """Ray Train's `train_loop_per_worker`: the stage's worker with a context. Picklable."""

    def __init__(self, worker: Callable[[dict[str, Any], Any], None]) -> None:
        self.worker = worker

    def __call__(self, config: dict[str, Any]) -> None:
        self.worker(config, _Context())


class _Context:
    """A worker's `models.data_parallel.WorkerContext` on Ray Train."""

    def __init__(self) -> None:
        import ray
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = str(ray.train.torch.get_device())
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.cpus = max(1, int(cpus))

    def prepare(self, model: Any) -> Any:
        # no buffer sync in each forward: rank 0's BN running statistics are the ones
        # checkpointed, and evaluation recalibrates them anyway; a broadcast would only cost time
        import inspect

        import ray.train.torch
        from torch.nn.parallel import DistributedDataParallel

        new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        kwargs = {"forward_sync_buffers" if new else "broadcast_buffers": False}
        return ray.train.torch.prepare_model(model, move_to_device=False, parallel_strategy_kwargs=kwargs)

    def latest(self) -> dict[str, bytes] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}

    def report(self, metrics: dict[str, Any], files: dict[str, bytes] | None) -> None:
        import tempfile

        import ray.train

        if files is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
