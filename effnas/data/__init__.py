"""The data layer: datasets read, cached, split into train / val / test, and batch augmentation.

`load_dataset(cfg)` turns a `DataConfig` into a `Dataset` of uint8 NCHW `Split`s; bad data raises
`DataError` with one line naming the file at fault. `augment_batch` and `resize_batch` are the
training-time transforms on torch batches; they import torch on first use, so loading data (and
anything that only reads configs) does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effnas.data.dataset import DataError, Dataset, Split
from effnas.data.load import load_dataset

if TYPE_CHECKING:
    from effnas.data.augment import augment_batch, resize_batch

__all__ = ["DataError", "Dataset", "Split", "augment_batch", "load_dataset", "resize_batch"]


def __getattr__(name: str) -> Any:
    if name in ("augment_batch", "resize_batch"):
        from effnas.data import augment

        return getattr(augment, name)
    raise AttributeError(f"module 'effnas.data' has no attribute {name!r}")
