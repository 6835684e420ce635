"""Config schemas shared by every stage, and composition of a stage's primary config.

Each stage's primary config (`conf/<stage>.yaml`) starts from a dataclass schema registered
here, so a mistyped key or a wrong-typed value fails at composition. Stage-specific schemas live
beside their stage (`nas/config.py`, `scaling/config.py`); defaults live in `conf/`, not here.
This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class RunConfig:
    root: str = "results"  # runs land in <root>/<stage>/<timestamp>/
    dir: Optional[str] = None  # an explicit run directory instead
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class ArchConfig:
    """An `Arch` in its YAML form (search_spaces.arch.Arch.to_dict)."""

    name: str = MISSING
    blocks: list[str] = MISSING
    stem: int = 32
    head: int = 1280
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_path: float = 0.2
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = MISSING  # digits | cifar10 | imagefolder
    root: Optional[str] = None  # dataset directory (cifar10, imagefolder)
    test_root: Optional[str] = None  # imagefolder: separate test tree
    download: bool = False  # cifar10: fetch the official archive into root
    url: Optional[str] = None
    md5: Optional[str] = None
    image_size: int = 32  # images are stored at this size
    val_fraction: float = 0.1  # held out of the training data, stratified
    test_fraction: float = 0.2  # for sources without a test split (digits, imagefolder)
    split_seed: int = 0
    max_train: Optional[int] = None  # keep a stratified subset of the training split
    cache_dir: Optional[str] = None  # decoded-array cache; default ~/.cache/effnas
    use_test: bool = False  # report test accuracy (final reports only)


@dataclass
class ProxyConfig:
    """The proxy task (effnas/proxy.py): one short training run per trial. See docs/proxy.md."""

    epochs: float = 5.0
    images: Optional[int] = None  # budget in training images instead of epochs (wins when set)
    batch_size: int = 128
    micro_batch: int = 64  # CPU only: forward/backward in chunks of this size (0 = whole batch)
    optimizer: str = "sgd"  # sgd (nesterov) | rmsprop (paper §5.2: decay 0.9, momentum 0.9)
    lr: float = 0.1  # per 256 images (scaled linearly with batch_size)
    momentum: float = 0.9
    rmsprop_eps: float = 1e-3  # TensorFlow semantics (inside the sqrt); see docs/proxy.md
    weight_decay: float = 5e-5  # on conv / linear weights, not BN or biases
    label_smoothing: float = 0.1
    schedule: str = "cosine"  # cosine | exponential (paper: x0.97 every 2.4 of 350 epochs) | constant
    warmup_epochs: float = 0.3
    decay_rate: float = 0.97  # exponential schedule: factor per decay step
    decay_epochs: float = 2.4  # ... every decay_epochs of reference_epochs, scaled to the budget
    reference_epochs: float = 350.0
    bn_momentum: Optional[float] = 0.1  # PyTorch convention; None keeps TF's 0.01 from the arch
    init: str = "zero_residual"  # zero_residual | zero_head | default (effnas.proxy.proxy_init)
    resolution: int = 32  # the proxy's base resolution; grid gamma multiplies it
    stem_stride: int = 1  # low-resolution adaptation; MACs are still reported at deployment
    num_classes: Optional[int] = None  # default: the dataset's
    channels_last: bool = True
    compile: str = "auto"  # auto | on | off
    cpu_kernels: bool = True  # CPU: effnas/kernels (C depthwise weight gradient, allocator setting)
    parallel_micro_batches: bool = True  # CPU, >= 2 threads: micro-batches side by side (effnas/lanes.py)
    augment: bool = True  # random crop (zero padding) + horizontal flip
    crop_pad: int = 4  # pixels at 32 px, scaled with the resolution
    flip: bool = True
    eval_batch_size: int = 256
    bn_calibration: int = (
        1024  # training images that re-estimate BN statistics before each evaluation (0 = off)
    )
    report_every: float = 1.0  # epochs between intermediate accuracy reports


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: local in-process; "auto" or host:port joins a cluster
    num_cpus: Optional[int] = None  # local runtime size; default: all cores
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    object_store_mb: int = 256


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    save_weights: bool = True


@dataclass
class DescribeConfig:
    run: RunConfig = field(default_factory=RunConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    resolution: Optional[int] = None  # default: the arch's own
    num_classes: int = 1000
    format: str = "table"  # table | csv | json


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    from nas.config import SearchConfig
    from scaling.config import GridConfig, ScaleConfig

    cs = ConfigStore.instance()
    for name, node in (
        ("train", TrainConfig),
        ("describe", DescribeConfig),
        ("search", SearchConfig),
        ("grid", GridConfig),
        ("scale", ScaleConfig),
    ):
        cs.store(name=f"{name}_schema", node=node)


def compose(stage: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The composed, validated config of `stage` (a DictConfig), Hydra's own composition."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=stage):
        return hydra_compose(config_name=stage, overrides=list(overrides), return_hydra_config=True)
