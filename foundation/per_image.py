"""Per-image evaluation records: which evaluation images a trial's final weights got right.

A trial returns them as one short string (`encode`: the bits packed, base64; 10,000 images are
1,668 characters), small enough to travel in a Ray result. The stage that owns the trial keeps
them beside its table, one file per trial under `per_image/` in the run directory (`save`,
`load`), written atomically; verdicts pair arms over the same images with them
(`foundation/verdict.py`). A run from before these records has none; its verdicts fall back to the
binomial error and say so.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from foundation.verdict import Scores

DIR = "per_image"


def encode(correct: np.ndarray) -> str:
    """`<images>:<base64 of the packed bits>`."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def decode(text: str) -> np.ndarray:
    """The bool vector `encode` packed; ValueError on anything else."""
    size, sep, payload = str(text).partition(":")
    if not sep or not size.isdigit():
        raise ValueError(f"not a per-image record: {str(text)[:40]!r}")
    packed = np.frombuffer(base64.b64decode(payload, validate=True), dtype=np.uint8)
    n = int(size)
    if packed.size != (n + 7) // 8:
        raise ValueError(f"per-image record holds {packed.size * 8} bits for {n} images")
    return np.unpackbits(packed, count=n).astype(bool)


def file_of(run: str | os.PathLike[str], key: str) -> Path:
    """Where trial `key` (a stage's row id, e.g. `compound@2x/2ep/seed0`) keeps its record."""
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "_", key)
    return Path(run) / DIR / f"{safe}.txt"


def save(run: str | os.PathLike[str], key: str, text: str | None) -> None:
    """Keep (or, for None, drop) trial `key`'s record; checked before it is written."""
    from foundation.runfiles import atomic_write

    path = file_of(run, key)
    if text is None:
        path.unlink(missing_ok=True)
        return
    decode(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def load(run: str | os.PathLike[str], key: str) -> np.ndarray | None:
    """Trial `key`'s record, or None when it has none (an older run) or it is unreadable."""
    path = file_of(run, key)
    try:
        return decode(path.read_text())
    except (OSError, ValueError):
        return None


def scores(
    run: str | os.PathLike[str],
    trials: list[tuple[str, float]],
    images: int,
) -> Scores:
    """One arm's `foundation.verdict.Scores` from its finished trials, (key, accuracy) each: paired
    when every trial has a record of `images` images, else the accuracies alone."""
    from foundation.verdict import Scores

    records = [load(run, key) for key, _ in trials]
    if records and all(r is not None and r.size == images for r in records):
        return Scores.of(records)  # type: ignore[arg-type]
    return Scores(tuple(float(acc) for _, acc in trials), int(images))
