"""`effnas train train.workers=N`: one model trained data-parallel on N workers (DDP).

The training step stays `ProxyTrainer`'s; distribution wraps it from outside (STYLE.md):
- **Sharding.** Every worker draws the same permutation of the training set (the data generator
  seeded alike) and takes its own slice of each global batch: worker r of N trains on images
  [r*b, (r+1)*b) of the step's N*b. With `data.storage=disk` it gathers only those rows from the
  memory-mapped store. Augmentation draws come from a generator seeded per (seed, step, rank),
  dropout and stochastic depth from a per-rank seed, so no two workers draw alike.
- **Batch and learning rate.** `proxy.batch_size` is the per-worker batch; the trainer is built
  for the global batch N x it, so the step budget, warmup and the learning rate (`proxy.lr` is
  per 256 images) are exactly a single process's at batch N*b. DDP averages the workers'
  mean-loss gradients: the step is the global batch's. On CPU each worker's micro-batches are
  `min(proxy.micro_batch, b)` (the lanes of `training/lanes.py` are off: they bypass DDP's hooks).
- **BN.** Each worker normalises over its own shard (as the single process does over each
  micro-batch), or over the global batch with `train.sync_bn=true` (SyncBatchNorm: CUDA only, as
  torch supports it). Evaluation recalibrates BN first either way.
- **Checkpoints.** One per epoch end, in `checkpoint.pt`'s format (models/train.py), handed to
  Ray Train's checkpoint API by rank 0; every rank reports alike at the same steps (Ray Train
  waits for all of them). A restarted worker group (`ray.max_failures`) and `--resume` continue
  from the latest one. Rank 0 evaluates, writes `metrics.csv` as it goes, and reports the final
  weights and result in a last checkpoint, which the driver turns into the run's files.

Nothing here imports Ray: the launcher (`adapters.raytrain.launcher`) starts the workers and
hands each a context (rank, device, DDP wrapping, report, the latest checkpoint).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

from foundation.errors import UserError
from models.train import CHECKPOINT, CHECKPOINT_FORMAT, _checkpoint_arch, _Loop, score_test
from training.proxy import ProxyTrainer, TrialResult

RESULT = "result.json"  # the final checkpoint's result (TrialResult + metrics rows)
RESTARTS = "restarts.json"  # the steps the worker group continued from so far
PROGRESS = "progress.log"  # rank 0's console lines, which the driver echoes as they come
WEIGHTS = "model.pt"


class WorkerContext(Protocol):
    """What a worker gets from the launcher (adapters.raytrain): its place in the group and the
    group's collective operations."""

    rank: int
    world_size: int
    device: str
    cpus: int  # the CPUs Ray gave this worker: its torch threads

    def prepare(self, model: Any) -> Any:
        """The model wrapped for the group (DDP), on this worker's device."""

    def latest(self) -> dict[str, bytes] | None:
        """The files of the latest reported checkpoint (None before the first)."""

    def report(self, metrics: dict[str, Any], files: dict[str, bytes] | None) -> None:
        """Every rank at the same steps; rank 0 alone passes the checkpoint's files."""


Launch = Callable[..., dict[str, bytes]]  # (worker, config, workers=, use_gpu=) -> final files


def validate(cfg: Any) -> None:
    """Cheap checks of settings with train.workers > 1 (adapters.raytrain.check calls it)."""
    workers = int(cfg.train.workers)
    unsupported = [
        f"{key}={value}"
        for key, value, plain in (
            ("train.init", cfg.train.init, None),
            ("train.body_lr_scale", cfg.train.body_lr_scale, 1.0),
            ("train.freeze_epochs", cfg.train.freeze_epochs, 0),
        )
        if value != plain and not (plain is not None and float(value) == plain)
    ]
    if unsupported:
        raise UserError(
            f"train.workers={workers}: fine-tuning ({', '.join(unsupported)}) is not supported on "
            "data-parallel workers yet; train with train.workers=1"
        )
    device = str(cfg.run.device)
    on_cuda = device.startswith("cuda") or (device == "auto" and _cuda())
    if bool(cfg.train.sync_bn) and not on_cuda:
        raise UserError(
            f"train.sync_bn=true needs CUDA workers (torch's SyncBatchNorm runs on GPUs only), "
            f"run.device={device}: set train.sync_bn=false"
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train(arch: Any, cfg: Any, data: Any, device: str, rundir: Any, launch: Launch) -> tuple[Any, Any]:
    """The driver's side: launch the workers, then turn the final checkpoint into the TrialResult
    (with `data_parallel`: the run's own summary entries) and the evaluated weights, which
    `models.train.run` writes and summarises as a single process's."""
    import torch
    from omegaconf import OmegaConf

    from training.trials import absolute_paths

    workers, per_worker = int(cfg.train.workers), int(cfg.proxy.batch_size)
    if workers * per_worker > len(data.train):
        raise UserError(
            f"train.workers={workers} x proxy.batch_size={per_worker} = {workers * per_worker} images a "
            f"step, but {data.name} has {len(data.train)} training images: lower either"
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["data"] = absolute_paths(cfg.data)
    plain["run"]["device"] = device
    config = {"cfg": plain, "run_path": str(Path(rundir.path).resolve())}
    t0 = time.perf_counter()
    print(
        f"effnas train: {workers} Ray Train workers x {per_worker} images (global batch "
        f"{workers * per_worker}), {'NCCL' if device.startswith('cuda') else 'gloo'}",
        file=sys.stderr,
        flush=True,
    )
    with _Echo(rundir.file(PROGRESS)):
        files = launch(worker, config, workers=workers, use_gpu=device.startswith("cuda"))
    saved = json.loads(files[RESULT])
    known = {f.name for f in fields(TrialResult)}
    result = TrialResult(**{k: v for k, v in saved["result"].items() if k in known})
    result.data_parallel = {  # type: ignore[attr-defined]
        "workers": workers,
        "batch_per_worker": per_worker,
        "global_batch": workers * per_worker,
        "sync_bn": bool(cfg.train.sync_bn),
        "restarts": saved["restarts"],  # the steps the worker group continued from
    }
    result.seconds = time.perf_counter() - t0
    rundir.write_csv("metrics.csv", saved["rows"])
    weights = torch.load(io.BytesIO(files[WEIGHTS]), map_location="cpu", weights_only=True)
    return result, _Weights(weights)


class _Echo:
    """While the workers run: rank 0's progress lines (`PROGRESS` in the run directory) echoed on
    this console as they are appended (Ray keeps the workers' own output to itself)."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path, self.stop = path, threading.Event()
        self.seen = path.stat().st_size if path.is_file() else 0
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> _Echo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _follow(self) -> None:
        while True:
            stopping = self.stop.wait(1.0)
            if self.path.is_file():
                with self.path.open("rb") as f:
                    f.seek(self.seen)
                    text = f.read()
                end = text.rfind(b"\n") + 1  # whole lines only
                if end:
                    sys.stderr.write(text[:end].decode(errors="replace"))
                    sys.stderr.flush()
                    self.seen += end
            if stopping:
                return


class _Weights:
    """The final state_dict, standing in for the model `models.train.run` saves."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


# -- the workers' side ------------------------------------------------------------------------------
class ShardTrainer(ProxyTrainer):
    """`ProxyTrainer` built for the global batch, training this rank's shard of each one."""

    def __init__(
        self,
        arch: Any,
        proxy: Any,
        data: Any,
        *,
        rank: int,
        workers: int,
        seed: int,
        device: str,
        precision: str = "auto",
    ) -> None:
        import torch

        super().__init__(arch, proxy, data, seed=seed, device=device, precision=precision)
        self.rank, self.workers, self.seed = rank, workers, seed
        self.shard = self.batch // workers
        micro = int(self.proxy.micro_batch)
        self.micro_batch = self.shard if (micro <= 0 or self.cuda) else min(micro, self.shard)
        self.augment_generator = torch.Generator(device=self.dev)

    def batch_at(self, order: Any, i: int) -> tuple[Any, Any]:
        start = i * self.batch + self.rank * self.shard
        idx = order[start : start + self.shard]
        x, y = self.train_x[idx], self.train_y[idx]
        if self.augment is None:
            x = self.eval_view(x)
        else:  # a pure function of (seed, step, rank): a restarted worker draws the same crops
            self.augment_generator.manual_seed(_mix(self.seed, self._steps_done, self.rank))
            x = self.augment(x, self.augment_generator)
        return self.normalize(x), y


def _mix(*values: int) -> int:
    out = 0x9E3779B97F4A7C15
    for v in values:
        out = (out * 6364136223846793005 + int(v) + 1442695040888963407) % 2**63
    return out


class _Files:
    """The run directory as a worker sees it (a path, written atomically): metrics.csv goes there;
    `checkpoint.pt` goes to `checkpoint_dir` when one is set (the Ray Train checkpoint being made)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.checkpoint_dir: Path | None = None

    def file(self, name: str) -> Path:
        if name == CHECKPOINT and self.checkpoint_dir is not None:
            return self.checkpoint_dir / name
        return self.path / name

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> Path:
        import pandas as pd

        from foundation.runfiles import atomic_write

        atomic_write(self.path / name, pd.DataFrame(list(rows)).to_csv(index=False))
        return self.path / name


class _RankLoop(_Loop):
    """`models.train._Loop` on one rank: rank 0 evaluates and writes metrics.csv; every epoch end
    is a checkpoint reported by every rank alike (never by the clock: ranks would disagree)."""

    def __init__(self, trainer: Any, arch: Any, fingerprint: str, files: _Files, ctx: WorkerContext) -> None:
        super().__init__(trainer, arch, fingerprint, files, None)
        self.ctx, self.files = ctx, files
        self.restarts: list[int] = []

    def _report(self, done: int, lr: float) -> None:
        if self.ctx.rank == 0:
            super()._report(done, lr)

    def save(self, done: int, lr: float) -> None:
        self.ctx.report(self.progress(done), self.checkpoint_files(done, lr))

    def progress(self, done: int) -> dict[str, Any]:
        t = self.t
        return {"step": done, "epoch": round(done / t.steps_per_epoch, 4), "val_accuracy": t.result.accuracy}

    def checkpoint_files(self, done: int, lr: float) -> dict[str, bytes] | None:
        """Rank 0: `checkpoint.pt` of step `done` (models.train's format), as bytes."""
        import tempfile

        if self.ctx.rank != 0:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            self.files.checkpoint_dir = Path(tmp)
            try:
                super().save(done, lr)
                return {
                    CHECKPOINT: (Path(tmp) / CHECKPOINT).read_bytes(),
                    RESTARTS: json.dumps(self.restarts).encode(),
                }
            finally:
                self.files.checkpoint_dir = None


def worker(config: dict[str, Any], ctx: WorkerContext) -> None:
    """One rank's run: load the data, build the shard trainer, wrap it in DDP, continue from the
    latest checkpoint, train, and report the final weights and result (rank 0's files)."""
    import torch
    from omegaconf import OmegaConf

    from search_spaces.arch_config import arch_from_cfg
    from training.data import load_dataset

    cfg = OmegaConf.create(config["cfg"])
    rank, workers = ctx.rank, ctx.world_size
    # DDP's bucket views are laid out as the channels-last parameters; the gradients of 1x1
    # convolutions come contiguous, which differs only in size-1 dimensions: one copy, no error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    threads = int(cfg.run.threads) or ctx.cpus
    torch.set_num_threads(max(1, threads))
    torch.set_flush_denormal(True)  # as evaluate
    arch = arch_from_cfg(cfg.arch)
    data = load_dataset(cfg.data)
    proxy = OmegaConf.to_container(cfg.proxy, resolve=True)
    proxy["batch_size"] = workers * int(cfg.proxy.batch_size)  # the trainer's budget and lr: global
    proxy["parallel_micro_batches"] = False  # lanes would bypass DDP's gradient hooks
    seed, device = int(cfg.run.seed), ctx.device
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)  # the weights: alike on every rank (DDP broadcasts rank 0's anyway)
    precision = str(cfg.train.get("precision", "auto"))
    trainer = ShardTrainer(
        arch, proxy, data, rank=rank, workers=workers, seed=seed, device=device, precision=precision
    )
    if rank > 0:
        torch.manual_seed(_mix(seed, 0, rank))  # dropout and stochastic depth: this rank's own
    if bool(cfg.train.sync_bn):
        trainer.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
    ddp = ctx.prepare(trainer.model)
    trainer.step_fn = torch.compile(ddp, dynamic=False) if trainer.result.compiled else ddp
    files = _Files(config["run_path"])
    loop = _RankLoop(trainer, arch, data.fingerprint, files, ctx)
    progress = (files.path / PROGRESS).open("a", buffering=1) if rank == 0 else None
    try:
        with contextlib.redirect_stderr(progress or sys.stderr):
            _train(cfg, ctx, trainer, loop, arch, data)
    finally:
        if progress is not None:
            progress.close()


def _train(
    cfg: Any, ctx: WorkerContext, trainer: ShardTrainer, loop: _RankLoop, arch: Any, data: Any
) -> None:
    """Continue from the latest checkpoint, train, report the final files (rank 0's)."""
    import torch

    rank, seed = ctx.rank, int(cfg.run.seed)
    latest = ctx.latest()
    if latest is not None:
        state = _read_state(latest[CHECKPOINT])
        _check_state(state, arch, data.fingerprint, loop.files.path)
        loop.restore(state)
        loop.restarts = [*json.loads(latest.get(RESTARTS, b"[]")), int(state["step"])]
        if rank > 0:
            torch.manual_seed(_mix(seed, state["step"], rank))
        if rank == 0:
            print(
                f"effnas train: workers continue at step {state['step']} of {trainer.total_steps}",
                file=sys.stderr,
            )
    try:
        loop.run()
        r = trainer.result
        if rank == 0 and cfg.data.use_test:
            score_test(trainer, data)
        final = None
        if rank == 0:
            final = loop.checkpoint_files(trainer.total_steps, trainer.lr_at(trainer.total_steps - 1)) or {}
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in trainer.eval_model.state_dict().items()}, buf)
            final[WEIGHTS] = buf.getvalue()
            out = {"result": r.to_dict(), "rows": loop.rows, "restarts": loop.restarts}
            final[RESULT] = json.dumps(out).encode()
        ctx.report({**loop.progress(trainer.total_steps), "done": True}, final)
    finally:
        trainer.close()


def _read_state(raw: bytes) -> dict[str, Any]:
    import torch

    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"the latest Ray Train checkpoint is not an effnas train checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return state


def _check_state(state: dict[str, Any], arch: Any, fingerprint: str, run: Path) -> None:
    if state["fingerprint"] != fingerprint:
        raise UserError(
            f"--resume {run}: the data changed since the checkpoint (dataset fingerprint "
            f"{state['fingerprint'][:12]} then, {fingerprint[:12]} now): start a new run"
        )
    saved = _checkpoint_arch(state)
    if saved != arch:
        raise UserError(
            f"--resume {run}: the checkpoint is of arch {saved.name!r}, the config names {arch.name!r}"
        )
