"""`effnas train`: one architecture trained with the proxy trainer, into a run directory.

    effnas train arch=efficientnet_b0 data=cifar10 data.root=../shared/datasets/cifar10 proxy.epochs=10
    effnas train path/to/b1.yaml data.use_test=true
    effnas train --resume results/train/2026-12-03_07-00-00      # after a crash or kill -9

Writes `metrics.csv` (one row per report, every `proxy.report_every` epochs), `model.pt` (a plain
state_dict, unless save_weights=false: the EMA's weights when `proxy.ema_decay` is set, the ones
evaluated; `summary.json` says which under `weights`) and returns the summary the CLI stores as `summary.json`.
Every summary value except the `*seconds*` and `images_per_second` keys is deterministic on CPU
under the seed, so `effnas rerun` of a train run reports MATCH.

Checkpoints: `checkpoint.pt`, replaced atomically at the end of every epoch and every
`train.checkpoint_minutes` of training, holds everything the next step needs (weights with BN
statistics, the EMA of the weights when on, optimizer state, the schedule's position, the torch / numpy / python RNG states, the
data stream's generator and this epoch's order, the metrics so far). `--resume RUN_DIR` rebuilds
the trainer from the run's recorded config and continues at the checkpoint's step; on CPU in one
process (same thread count) the resumed run ends with the same bits as an uninterrupted one
(tests/test_train_resume.py kills a run with SIGKILL to check it). The learning rate is a pure
function of the step (`ProxyTrainer.lr_at`), so the step is the scheduler's whole state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundation import per_image
from foundation.errors import UserError
from search_spaces.arch_config import ArchConfig
from training.data.config import DataConfig
from training.proxy_config import ProxyConfig, storage_size

# what `effnas report` reads of a train run: table -> (required columns, of which numeric)
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "metrics.csv": (("epoch", "val_accuracy"), ("epoch", "val_accuracy")),
}
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainSettings:
    """The `train` node of `conf/train.yaml` (values and their comments live there)."""

    checkpoint_minutes: Optional[float] = MISSING
    # fine-tuning (models/finetune.py)
    init: Optional[str] = MISSING
    body_lr_scale: float = MISSING
    freeze: str = MISSING
    freeze_epochs: float = MISSING
    new_classifier: bool = MISSING
    # data-parallel on Ray Train (models/data_parallel.py, adapters/raytrain.py)
    workers: int = MISSING
    sync_bn: bool = MISSING
    precision: str = MISSING  # training.proxy.precision_of


@dataclass
class TrainConfig:
    """Schema of `conf/train.yaml` (`run` is added by the stage registry)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    save_weights: bool = True
    resume: Optional[str] = None  # set by `--resume RUN_DIR`


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists or is touched: the arch builds, the checkpoint
    interval is valid and, on --resume, the run is unfinished and its checkpoint (if any) is of
    this arch. (`--resume` of a run another process holds is refused by its lock before this.)"""
    from search_spaces.arch_config import arch_from_cfg

    arch = arch_from_cfg(cfg.arch)
    minutes = cfg.train.checkpoint_minutes
    if minutes is not None and not float(minutes) > 0:
        raise UserError(f"train.checkpoint_minutes must be > 0 or null (every epoch only), got {minutes}")
    if str(cfg.data.get("storage", "auto")) == "disk":
        _check_store_resolution(int(cfg.data.image_size), cfg.proxy)
    if cfg.get("resume"):
        _check_resumable(Path(str(cfg.resume)), arch)
    from models import finetune
    from training.proxy import precision_of, resolve_device

    try:
        precision_of(str(cfg.train.precision), resolve_device(str(cfg.run.device)))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if int(cfg.train.workers) < 1:  # more: adapters.raytrain.check (Ray's CPUs, models/data_parallel.py)
        raise UserError(f"train.workers must be >= 1 (1: this process, no Ray), got {cfg.train.workers}")

    # --init is read and checked unless a checkpoint holds the weights (--resume continues them)
    resumed = bool(cfg.get("resume")) and (Path(str(cfg.resume)) / CHECKPOINT).is_file()
    finetune.validate(cfg.train, arch, source=not resumed)


def _check_store_resolution(stored: int, proxy: Any) -> None:
    wanted = storage_size(proxy)
    if stored != wanted:
        why = (
            f"proxy.resolution={proxy.resolution} / proxy.crop_fraction={proxy.crop_fraction} "
            f"(the random-resized crop) = {wanted}"
            if str(proxy.crop) == "random_resized"
            else f"proxy.resolution={wanted}"
        )
        raise UserError(
            f"data.storage=disk stores images at data.image_size={stored} but the trainer keeps them at "
            f"{why}: it would resize every batch it reads; set data.image_size={wanted}"
        )


def _check_resumable(path: Path, arch: Any) -> None:
    from foundation.runfiles import read_json

    manifest = read_json(path / "manifest.json")
    if manifest.get("status") == "done":
        raise UserError(
            f"--resume {path}: the run finished (status done, summary.json written); nothing to "
            "resume: start a new run"
        )
    if (path / CHECKPOINT).is_file():
        saved = _checkpoint_arch(read_checkpoint(path / CHECKPOINT))
        if saved != arch:
            raise UserError(
                f"--resume {path}: its checkpoint is of arch {saved.name!r} "
                f"({' '.join(saved.blocks)}), the run's config now names {arch.name!r} "
                f"({' '.join(arch.blocks)}): resume it with the arch it was started with"
            )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A train run's `checkpoint.pt` (plain tensors and values: loaded with weights_only)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable checkpoint: {first}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an effnas train checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _checkpoint_arch(state: dict[str, Any]) -> Any:
    from search_spaces.arch import Arch

    return Arch.from_dict(state["arch"])


def run(cfg: Any, rundir: Any, launch: Any = None) -> dict[str, Any]:
    """`launch`: the application's data-parallel trainer (adapters.raytrain), for train.workers > 1."""
    from search_spaces.arch_config import arch_from_cfg
    from training.data import load_dataset
    from training.data.store import ImageStore
    from training.proxy import precision_of, resolve_device

    arch = arch_from_cfg(cfg.arch)
    t0 = time.perf_counter()
    data = load_dataset(cfg.data)
    load_seconds = time.perf_counter() - t0
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test) if data.test else 0}
    on_disk = isinstance(data.train.x, ImageStore)
    if on_disk:  # data.storage=auto chose the store
        _check_store_resolution(data.image_size, cfg.proxy)
    checkpoint = None
    if cfg.get("resume") and rundir.file(CHECKPOINT).is_file():
        checkpoint = read_checkpoint(rundir.file(CHECKPOINT))
        if checkpoint["fingerprint"] != data.fingerprint:
            raise UserError(
                f"--resume {rundir.path}: the data changed since the checkpoint (dataset fingerprint "
                f"{checkpoint['fingerprint'][:12]} then, {data.fingerprint[:12]} now): the run cannot "
                "continue on other images; start a new run"
            )
    rundir.record_dataset(data)
    try:
        device = resolve_device(str(cfg.run.device))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    rundir.record(device=device)
    print(
        f"effnas train: {arch.name} on {data.name} ({sizes['train']} train / {sizes['val']} val images, "
        f"loaded in {load_seconds:.1f}s{', on disk' if on_disk else ''}), device {device}",
        file=sys.stderr,
    )
    if checkpoint is not None:
        print(
            f"effnas train: resuming at step {checkpoint['step']} of {checkpoint['total_steps']} "
            f"(epoch {checkpoint['step'] / checkpoint['steps_per_epoch']:.4g}) from {rundir.file(CHECKPOINT)}",
            file=sys.stderr,
        )
    elif cfg.get("resume") and int(cfg.train.workers) == 1:
        print("effnas train: no checkpoint was written before the run ended; starting again", file=sys.stderr)

    if int(cfg.train.workers) > 1:  # data-parallel on Ray Train workers (models/data_parallel.py)
        if launch is None:
            raise UserError("train.workers > 1 trains on Ray Train workers: run it through effnas")
        result, model = launch(arch, cfg, data, device, rundir)
    else:
        result, model = train(arch, cfg, data, device, rundir, checkpoint)  # model: the evaluated weights
    if cfg.save_weights:
        _save_state_dict(model, rundir.file("model.pt"))
    # which validation (and test) images it got right: lets a pipeline pair two trained models
    per_image.save(rundir.path, "val", result.correct)
    per_image.save(rundir.path, "test", result.test_correct)
    summary = {
        "arch": arch.name,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint,
        "val_accuracy": result.accuracy,
        "val_images": len(data.val),
        "val_loss": result.loss,
        "test_accuracy": result.test_accuracy,
        "params": result.params,
        "macs": result.macs,
        "proxy_macs": result.proxy_macs,
        "resolution": result.resolution,
        # what was evaluated and is in model.pt: the EMA of the weights (proxy.ema_decay) or the weights
        "weights": "raw" if cfg.proxy.ema_decay is None else "ema",
        "ema_decay": cfg.proxy.ema_decay,
        "raw_val_accuracy": result.raw_accuracy,  # the trained weights' own, when the EMA is on
        "raw_test_accuracy": result.raw_test_accuracy,
        "epochs": result.epochs,
        "steps": result.steps,
        "compiled": result.compiled,
        "device": result.device,
        "precision": precision_of(str(cfg.train.precision), str(result.device)),  # as trained
        "cpu_kernels": result.cpu_kernels,  # layers on effnas's C kernels
        "lanes": result.lanes,  # micro-batches trained side by side (training/lanes.py)
        "seconds": round(result.seconds, 3),
        "compile_seconds": round(result.compile_seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
    }
    if cfg.train.init:
        summary["init"] = str(cfg.train.init)
    summary.update(getattr(result, "data_parallel", {}))  # workers, global batch, restarts
    test = f"  test_acc {result.test_accuracy:.4f}" if result.test_accuracy is not None else ""
    print(
        f"done: val_acc {result.accuracy:.4f}{test}  {result.seconds:.1f}s  "
        f"{result.images_per_second:,.0f} img/s  -> {rundir.path}",
        file=sys.stderr,
    )
    return summary


def train(
    arch: Any, cfg: Any, data: Any, device: str, rundir: Any, checkpoint: dict[str, Any] | None
) -> tuple[Any, Any]:
    """`training.proxy.evaluate`'s run (same trainer, same seeding, so the same bits) with
    checkpoints, from `checkpoint` when given -> (TrialResult, the evaluated model: the EMA's
    when on). A diverging
    or timed-out run is a UserError naming the metrics written so far."""
    import torch

    from models import finetune
    from training.proxy import Diverged, ProxyTrainer, TimeLimit
    from training.proxy_config import time_limit

    t0 = time.perf_counter()
    threads = int(cfg.run.threads)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as evaluate: denormals slow CPU kernels 10-100x
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    seed = int(cfg.run.seed)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # weights, dropout, stochastic depth (evaluate's seeding)
        trainer = ProxyTrainer(
            arch, cfg.proxy, data, seed=seed, device=device, precision=str(cfg.train.precision)
        )
        limit = time_limit(trainer.proxy)
        trainer.deadline = None if limit is None else t0 + limit
        loop = _Loop(trainer, arch, data.fingerprint, rundir, cfg.train.checkpoint_minutes)
        finetune.install(trainer, cfg.train)  # its optimizer groups before a checkpoint's state
        try:
            if checkpoint is not None:
                loop.restore(checkpoint)
            elif cfg.train.init:  # a resumed run's weights are the checkpoint's, never --init's again
                _init(trainer, arch, cfg, rundir)
            loop.run()
            if cfg.data.use_test:
                score_test(trainer, data)
        except (Diverged, TimeLimit) as exc:
            raise UserError(
                f"training failed: {exc} (metrics so far: {rundir.file('metrics.csv')})"
            ) from None
        except torch.OutOfMemoryError as exc:
            raise UserError(f"training failed: out of memory: {str(exc).splitlines()[0]}") from None
        finally:
            trainer.close()
    trainer.result.seconds = time.perf_counter() - t0
    return trainer.result, trainer.eval_model


def score_test(trainer: Any, data: Any) -> None:
    """The test split's accuracy and per-image records into the trainer's result (and the raw
    weights' accuracy beside the EMA's, when it is on)."""
    if data.test is None:
        raise UserError(f"dataset {data.name} has no test split (data.use_test=true)")
    r = trainer.result
    r.test_accuracy, _, hits = trainer.score(trainer.test_x, trainer.test_y)
    r.test_correct = per_image.encode(hits)
    if trainer.ema is not None:
        r.raw_test_accuracy = trainer.score(trainer.test_x, trainer.test_y, raw=True)[0]


def _init(trainer: Any, arch: Any, cfg: Any, rundir: Any) -> None:
    """`--init`'s weights into the new model; the source in the manifest (an upstream when a run)."""
    from models import finetune

    init = finetune.init_source(str(cfg.train.init))
    new = bool(cfg.train.get("new_classifier", False))  # absent from runs recorded before it
    facts = finetune.apply_init(trainer.model, init, arch, str(trainer.proxy.init), new)
    rundir.record(init=facts)
    what = f"--init weights {init.weights.name}"
    known = {(u.get("path"), u.get("what")) for u in rundir.manifest.get("upstream", [])}
    if init.run is not None and (str(init.run.resolve()), what) not in known:  # a restart: once
        rundir.record_upstream(init.run, str(init.stage), what)


class _Loop:
    """`ProxyTrainer.train`'s loop, resumable: it starts at any step, and writes a checkpoint at
    every epoch end and every `minutes` of training."""

    def __init__(self, trainer: Any, arch: Any, fingerprint: str, rundir: Any, minutes: float | None) -> None:
        import torch

        self.t, self.arch, self.fingerprint, self.rundir = trainer, arch, fingerprint, rundir
        self.every = None if minutes is None else 60.0 * float(minutes)
        self.start = 0
        self.losses = torch.zeros(trainer.total_steps, device=trainer.dev)
        self.rows: list[dict[str, Any]] = []
        self.train_seconds, self.images = 0.0, 0

    def restore(self, state: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        t = self.t
        if state["total_steps"] != t.total_steps or state["steps_per_epoch"] != t.steps_per_epoch:
            raise UserError(
                f"--resume {self.rundir.path}: the checkpoint is of a run of {state['total_steps']} steps "
                f"({state['steps_per_epoch']} per epoch), the config now gives {t.total_steps} "
                f"({t.steps_per_epoch}): resume with the budget it was started with"
            )
        if state.get("precision", t.precision) != t.precision:
            raise UserError(
                f"--resume {self.rundir.path}: the checkpoint was trained in {state['precision']}, the "
                f"config now gives {t.precision}: resume with the train.precision it was started with"
            )
        if (t.ema is None) != (state.get("ema") is None):
            raise UserError(
                f"--resume {self.rundir.path}: the checkpoint {'has no' if t.ema else 'has an'} EMA of the "
                f"weights, the config {'sets' if t.ema else 'has no'} proxy.ema_decay: resume with the "
                "config it was started with"
            )
        try:
            t.model.load_state_dict(state["model"])
            t.optimizer.load_state_dict(state["optimizer"])
            if t.ema is not None:
                t.ema.load_state_dict(state["ema"])
            if t.scaler is not None and state.get("scaler") is not None:
                t.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(
                f"--resume {self.rundir.path}: the checkpoint does not fit the model: {first}"
            ) from None
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if t.cuda and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], t.dev)
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(rng["python"])
        t.generator.set_state(rng["data"])
        t._order = None if state["order"] is None else state["order"].to(t.dev)
        t._steps_done, t._calibrated_at = state["step"], state["calibrated_at"]
        self.start = state["step"]
        self.losses[: self.start] = state["losses"].to(t.dev)
        self.rows = list(state["rows"])
        self.train_seconds, self.images = state["train_seconds"], state["images"]
        r = t.result
        for key, value in state["result"].items():
            setattr(r, key, value)

    def save(self, done: int, lr: float) -> None:
        import io
        import random

        import numpy as np
        import torch

        from foundation.runfiles import atomic_write

        t, r = self.t, self.t.result
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "format": CHECKPOINT_FORMAT,
            "arch": {k: v for k, v in self.arch.to_dict().items() if k != "meta"},
            "fingerprint": self.fingerprint,
            "step": done,
            "total_steps": t.total_steps,
            "steps_per_epoch": t.steps_per_epoch,
            "lr": lr,  # the schedule's value at the last step (lr_at(step) recomputes it)
            "model": t.model.state_dict(),
            "ema": None if t.ema is None else t.ema.state_dict(),  # AveragedModel: weights, BN, count
            "optimizer": t.optimizer.state_dict(),
            "scaler": None if t.scaler is None else t.scaler.state_dict(),  # fp16's loss scale
            "precision": t.precision,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(t.dev) if t.cuda else None,
                "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
                "python": random.getstate(),
                "data": t.generator.get_state(),
            },
            # the data position: the step (-> epoch and batch) and this epoch's permutation
            "order": None if t._order is None else t._order.cpu(),
            "calibrated_at": t._calibrated_at,
            "losses": self.losses[:done].cpu(),
            "rows": self.rows,
            "train_seconds": self.train_seconds,
            "images": self.images,
            "result": {
                "accuracy": r.accuracy,
                "raw_accuracy": r.raw_accuracy,
                "loss": r.loss,
                "correct": r.correct,
                "history": r.history,
                "steps": r.steps,
                "epochs": r.epochs,
                "images_per_second": r.images_per_second,
                "compile_seconds": r.compile_seconds,
            },
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.rundir.file(CHECKPOINT), buf.getvalue())

    def run(self) -> None:
        import torch

        t, r = self.t, self.t.result
        check_every = 50 if t.cuda else 1  # host syncs: free on CPU, only now and then on CUDA
        checked = self.start  # losses[:checked] are known finite
        t.model.train()
        tic = last_save = time.perf_counter()
        for step in range(self.start, t.total_steps):
            lr, loss = t.step(step)
            self.losses[step] = loss.detach()
            if step == self.start and r.compiled:
                r.compile_seconds = time.perf_counter() - tic  # the first step compiles
                tic = time.perf_counter()
            else:
                self.images += t.batch
            done = step + 1
            t.check_deadline(done, "time limit")
            report = done % t.report_steps == 0 or done == t.total_steps
            epoch_end = done % t.steps_per_epoch == 0
            due = self.every is not None and time.perf_counter() - last_save >= self.every
            if done - checked >= check_every or report or epoch_end or due:
                checked = t._check_finite(self.losses, checked, done)
            if report:
                if t.cuda:
                    torch.cuda.synchronize()
                self.train_seconds += time.perf_counter() - tic
                self._report(done, lr)
                tic = time.perf_counter()
            if (epoch_end or due) and done < t.total_steps:
                self.train_seconds += time.perf_counter() - tic
                self.save(done, lr)
                tic = last_save = time.perf_counter()

    def _report(self, done: int, lr: float) -> None:
        from training.proxy import Diverged

        t, r = self.t, self.t.result
        r.accuracy, r.loss, hits = t.score(t.val_x, t.val_y)
        r.correct = per_image.encode(hits)
        if r.loss != r.loss or r.loss in (float("inf"), float("-inf")):
            raise Diverged(f"validation loss became {r.loss} at step {done}")
        first = ((done - 1) // t.report_steps) * t.report_steps
        ips = self.images / self.train_seconds if self.train_seconds > 0 else 0.0
        metrics = {
            "epoch": round(done / t.steps_per_epoch, 4),
            "step": done,
            "train_loss": float(self.losses[first:done].mean()),
            "val_accuracy": r.accuracy,
            "val_loss": r.loss,
            "lr": lr,
            "images_per_second": ips,
        }
        raw = ""
        if t.ema is not None:  # val_accuracy is the EMA's; the trained weights' own beside it
            r.raw_accuracy = metrics["raw_val_accuracy"] = t.score(t.val_x, t.val_y, raw=True)[0]
            raw = f" (raw {r.raw_accuracy:.4f})"
        r.history.append(metrics)
        r.steps, r.epochs = done, done / t.steps_per_epoch
        r.images_per_second = ips
        self.rows.append(
            {
                **{k: metrics[k] for k in metrics if k != "images_per_second"},
                "images_per_second": round(ips, 1),
            }
        )
        self.rundir.write_csv("metrics.csv", self.rows)  # rewritten each report: a crash keeps what was done
        eta = self.train_seconds / max(1, done - self.start) * (t.total_steps - done)
        print(
            f"epoch {metrics['epoch']:.4g}/{t.total_epochs:.4g}  loss {metrics['train_loss']:.4f}  "
            f"val_acc {r.accuracy:.4f}{raw}  val_loss {r.loss:.4f}  {ips:,.0f} img/s  ETA {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )


def _save_state_dict(model: Any, path: Any) -> None:
    import io

    import torch

    from foundation.runfiles import atomic_write

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write(path, buf.getvalue())


def _clock(seconds: float) -> str:
    total = max(0, round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def plot_curves(runs: list[tuple[str, str, Any]]) -> Any:
    """Train runs' metrics.csv tables, (label, legend, DataFrame) each, as validation accuracy and,
    where every run logged it, training loss against epochs (`effnas report`'s figure)."""
    from foundation import figures

    has_loss = all("train_loss" in metrics.columns for _, _, metrics in runs)
    fig, axes = figures.axes(2 if has_loss else 1, width=5.0, height=3.6)
    for label, legend, metrics in runs:
        metrics.plot(x="epoch", y="val_accuracy", marker="o", ms=3, ax=axes[0], label=legend)
        if has_loss:
            metrics.plot(x="epoch", y="train_loss", marker="o", ms=3, ax=axes[1], label=label)
    axes[0].set(ylabel="validation accuracy", title="validation accuracy")
    if has_loss:
        axes[1].set(ylabel="training loss", title="training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig
