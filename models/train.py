"""`effnas train`: one architecture trained with the proxy trainer, into a run directory.

    effnas train arch=efficientnet_b0 data=cifar10 data.root=../shared/datasets/cifar10 proxy.epochs=10
    effnas train path/to/b1.yaml data.use_test=true

Writes `metrics.csv` (one row per report, every `proxy.report_every` epochs), `model.pt` (a plain
state_dict, unless save_weights=false) and returns the summary the CLI stores as `summary.json`.
Every summary value except the `*seconds*` and `images_per_second` keys is deterministic on CPU
under the seed, so `effnas rerun` of a train run reports MATCH.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from foundation import per_image
from foundation.errors import UserError
from search_spaces.arch_config import ArchConfig
from training.data.config import DataConfig
from training.proxy_config import ProxyConfig

# what `effnas report` reads of a train run: table -> (required columns, of which numeric)
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "metrics.csv": (("epoch", "val_accuracy"), ("epoch", "val_accuracy")),
}


@dataclass
class TrainConfig:
    """Schema of `conf/train.yaml` (`run` is added by the stage registry)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    save_weights: bool = True


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists: the arch builds (the proxy and run settings
    are checked by the application for every stage)."""
    from search_spaces.arch_config import arch_from_cfg

    arch_from_cfg(cfg.arch)


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    from search_spaces.arch_config import arch_from_cfg
    from training.data import load_dataset
    from training.proxy import evaluate, resolve_device

    arch = arch_from_cfg(cfg.arch)
    t0 = time.perf_counter()
    data = load_dataset(cfg.data)
    load_seconds = time.perf_counter() - t0
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test) if data.test else 0}
    rundir.record_dataset(data)
    try:
        device = resolve_device(str(cfg.run.device))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    rundir.record(device=device)
    print(
        f"effnas train: {arch.name} on {data.name} ({sizes['train']} train / {sizes['val']} val images, "
        f"loaded in {load_seconds:.1f}s), device {device}",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []

    def progress(m: dict[str, Any]) -> None:
        rows.append({k: m[k] for k in ("epoch", "step", "train_loss", "val_accuracy", "val_loss", "lr")})
        rows[-1]["images_per_second"] = round(m["images_per_second"], 1)
        rundir.write_csv("metrics.csv", rows)  # rewritten each report: a crash keeps what was done
        eta = m["train_seconds"] / m["step"] * (m["total_steps"] - m["step"])
        total_epochs = m["epoch"] * m["total_steps"] / m["step"]
        print(
            f"epoch {m['epoch']:.4g}/{total_epochs:.4g}  loss {m['train_loss']:.4f}  "
            f"val_acc {m['val_accuracy']:.4f}  val_loss {m['val_loss']:.4f}  "
            f"{m['images_per_second']:,.0f} img/s  ETA {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )

    result = evaluate(
        arch,
        cfg.proxy,
        data,
        seed=int(cfg.run.seed),
        threads=int(cfg.run.threads),
        device=device,
        test=bool(cfg.data.use_test),
        progress=progress,
        keep_model=bool(cfg.save_weights),
    )
    if result.status != "ok":
        raise UserError(f"training failed: {result.error} (metrics so far: {rundir.file('metrics.csv')})")
    if cfg.save_weights:
        _save_state_dict(result.model, rundir.file("model.pt"))
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
        "epochs": result.epochs,
        "steps": result.steps,
        "compiled": result.compiled,
        "device": result.device,
        "cpu_kernels": result.cpu_kernels,  # layers on effnas's C kernels
        "lanes": result.lanes,  # micro-batches trained side by side (training/lanes.py)
        "seconds": round(result.seconds, 3),
        "compile_seconds": round(result.compile_seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
    }
    test = f"  test_acc {result.test_accuracy:.4f}" if result.test_accuracy is not None else ""
    print(
        f"done: val_acc {result.accuracy:.4f}{test}  {result.seconds:.1f}s  "
        f"{result.images_per_second:,.0f} img/s  -> {rundir.path}",
        file=sys.stderr,
    )
    return summary


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
