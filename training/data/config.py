"""Schema of the `data` config group (`conf/data/*.yaml`): where images come from and how they
are split. Read by `training.data.load_dataset`; no torch, no numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


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
    # a subset of the classes (indices or names, in the order their new labels 0..k-1 take);
    # every split (train, val, test) keeps only their images. null: every class
    classes: Optional[list[Any]] = None
    cache_dir: Optional[str] = None  # decoded-array cache; default ~/.cache/effnas
    # auto | memory | disk: decoded images resident, or in an on-disk store read batch by batch
    # (training/data/store.py); auto picks disk for a set that would not fit comfortably in memory
    storage: str = "auto"
    use_test: bool = False  # report test accuracy (final reports only)
