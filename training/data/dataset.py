"""The data layer's value types: a `Split` of images and labels, a loaded `Dataset`, and `DataError`.

Everything downstream (the proxy trainer, the grid, the manifests) sees only these three names; how
the arrays were read, cached and split lives in `sources`, `cache` and `load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from foundation.errors import UserError


class DataError(UserError, ValueError):
    """Bad data or data config. The message is one line and names the file or directory at fault.

    A `UserError`, so the CLI prints it and exits 2 instead of showing a traceback.
    """

    def __init__(self, message: str) -> None:
        # one line, whatever an underlying library put in its own message
        super().__init__(" ".join(str(message).splitlines()))


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, compare fields yourself
class Split:
    """Images `x` (uint8, [N, 3, H, W], NCHW, RGB) and their class indices `y` (int64, [N])."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Split.x must be uint8 [N, 3, H, W], got {x.dtype} {list(x.shape)}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"Split.y must be int64 [{x.shape[0]}], got {y.dtype} {list(y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: `train` and `val` for search and proxy training, `test` for final reports only.

    `val` is held out of the training data (stratified, seeded); `test` is the source's official test
    split, or a stratified hold-out where the source has none. `fingerprint` is a hex digest of the
    decoded pixels and labels plus every parameter that shaped the splits, so two runs with the same
    fingerprint trained and validated on the same images.
    """

    name: str
    train: Split
    val: Split
    test: Optional[Split]
    num_classes: int
    classes: tuple[str, ...]
    fingerprint: str

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])
