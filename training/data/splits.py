"""Stratified, seeded index splits: the validation hold-out, a test hold-out, the `max_train` subset.

Each class is shuffled on its own and contributes its share of the held-out images; the shares are
rounded by largest remainder so the total is exactly `round(N * fraction)`. Indices come back sorted,
so the arrays keep the source's order and the same seed always picks the same images.
"""

from __future__ import annotations

import numpy as np

from training.data.dataset import DataError


def _allocate(counts: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-class counts summing to `total`, proportional to `counts`, each within [low, high]."""
    quota = counts * (total / max(int(counts.sum()), 1))
    alloc = np.clip(np.floor(quota).astype(np.int64), low, high)
    # hand out (or take back) one image at a time where the rounding was least fair; argmax/argmin
    # break ties by the lowest class index, so the allocation never depends on anything but counts
    while alloc.sum() < total:
        gap = np.where(alloc < high, quota - alloc, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > total:
        gap = np.where(alloc > low, quota - alloc, np.inf)
        alloc[int(np.argmin(gap))] -= 1
    return alloc


def _take(y: np.ndarray, alloc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of `alloc[c]` random members of each class c."""
    picked = [rng.permutation(np.flatnonzero(y == c))[: alloc[c]] for c in range(len(alloc))]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def hold_out(
    y: np.ndarray,
    num_classes: int,
    fraction: float,
    rng: np.random.Generator,
    what: str,
    classes: tuple[str, ...],
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) sorted positions into `y`: a stratified `fraction` held out, every class kept.

    `what` names the split ("validation", "test") and `where` the data, for the error messages.
    """
    if fraction == 0:
        return np.arange(len(y)), np.zeros(0, np.int64)
    counts = np.bincount(y, minlength=num_classes)
    for c in np.flatnonzero(counts == 1):
        raise DataError(
            f"the {what} split would leave class '{classes[c]}' with no training images in {where}: "
            "it has only 1 image (need at least 2 per class)"
        )
    total = int(np.floor(len(y) * fraction + 0.5))
    if total == 0:
        raise DataError(
            f"the {what} split is empty: {what} fraction {fraction} of {len(y)} images in {where} rounds to 0"
        )
    # every class keeps at least one training image; classes absent from y stay absent
    held = _take(y, _allocate(counts, total, np.zeros_like(counts), np.maximum(counts - 1, 0)), rng)
    kept = np.setdiff1d(np.arange(len(y)), held, assume_unique=True)
    return kept, held


def subset(
    y: np.ndarray, num_classes: int, size: int, rng: np.random.Generator, classes: tuple[str, ...], where: str
) -> np.ndarray:
    """Sorted positions of a stratified subset of `size` images with every present class in it."""
    counts = np.bincount(y, minlength=num_classes)
    present = int((counts > 0).sum())
    if size >= len(y):
        return np.arange(len(y))
    if size < present:
        raise DataError(
            f"max_train={size} is fewer than the {present} classes with training images in {where}"
        )
    return _take(y, _allocate(counts, size, np.minimum(counts, 1), counts), rng)
