"""The data layer: datasets read, cached, split into train / val / test, and batch augmentation.

`load_dataset(cfg)` turns a `DataConfig` into a `Dataset` of uint8 NCHW `Split`s; bad data raises
`DataError` with one line naming the file at fault. `augment_batch` and `resize_batch` are the
training-time transforms on torch batches; they import torch on first use, so loading data (and
anything that only reads configs) does not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.data.augment import augment_batch, resize_batch
    from training.data.dataset import DataError, Dataset, Split
    from training.data.load import check_data_config, has_test_split, load_dataset

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "augment_batch",
    "check_data_config",
    "has_test_split",
    "load_dataset",
    "resize_batch",
]

# Loaded on first use, so reading the data schema (`training.data.config`) costs no numpy.
_HOME = {
    "DataError": "dataset",
    "Dataset": "dataset",
    "Split": "dataset",
    "load_dataset": "load",
    "check_data_config": "load",
    "has_test_split": "load",
    "augment_batch": "augment",
    "resize_batch": "augment",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"training.data.{_HOME[name]}"), name)
    raise AttributeError(f"module 'training.data' has no attribute {name!r}")
