"""The decoded-array cache: one directory of uncompressed `.npy` files per source `key`.

An entry is `<cache>/<source>-<key>/` holding `train_x.npy`, `train_y.npy` (and `test_x.npy`,
`test_y.npy` where the source has a test split) and `meta.json` (classes, the content digest).
Entries are written into a temp directory and renamed into place, so a reader sees a whole entry or
none, and two processes decoding the same source at once both end up reading the one that won.
Arrays open memory-mapped; splitting copies out only the rows it keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from training.data.sources import RawData, Source

ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def cache_root(cache_dir: Optional[str]) -> Path:
    """`data.cache_dir`, else `$EFFNAS_CACHE`, else `~/.cache/effnas`: the most specific setting wins."""
    return Path(cache_dir or os.environ.get("EFFNAS_CACHE") or "~/.cache/effnas").expanduser()


def content_digest(raw: RawData) -> str:
    """sha256 of the decoded pixels, labels and class names: the same data gives the same digest on
    any machine, whatever the files' paths and mtimes (which only decide the cache key)."""
    h = hashlib.sha256(json.dumps(list(raw.classes)).encode())
    for name in ARRAYS:
        a = getattr(raw, name)
        h.update(name.encode() + (b"" if a is None else str(a.shape).encode()))
        if a is not None:
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _read(entry: Path) -> Optional[tuple[RawData, str]]:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {
            name: np.load(entry / f"{name}.npy", mmap_mode="r") if name in meta["arrays"] else None
            for name in ARRAYS
        }
        return RawData(classes=tuple(meta["classes"]), **arrays), meta["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or damaged by hand: rebuilt by the caller


def _write(root: Path, entry: Path, raw: RawData, meta: dict) -> None:
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{entry.name}."))
    try:
        for name in meta["arrays"]:
            np.save(tmp / f"{name}.npy", getattr(raw, name))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        try:
            os.rename(tmp, entry)  # atomic; fails if another process got there first
        except OSError:
            if _read(entry) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(source: Source, cache_dir: Optional[str]) -> tuple[RawData, str]:
    """The source's decoded arrays and their content digest, decoding only on a cache miss."""
    root = cache_root(cache_dir)
    entry = root / f"{source.name}-{source.key[:24]}"
    cached = _read(entry)
    if cached is not None:
        return cached
    raw = source.build()
    digest = content_digest(raw)
    meta = {
        "source": source.name,
        "where": source.where,
        "key": source.key,
        "digest": digest,
        "classes": list(raw.classes),
        "arrays": [name for name in ARRAYS if getattr(raw, name) is not None],
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        if entry.exists():
            cached = _read(entry)
            if cached is not None:  # another process finished decoding meanwhile: use its entry
                return cached
            shutil.rmtree(entry, ignore_errors=True)  # damaged by hand: make way for the fresh one
        _write(root, entry, raw, meta)
    except OSError as e:
        # a read-only or full disk costs the next run a decode, not this run its data
        print(f"effnas.data: warning: cannot write the data cache {entry}: {e}", file=sys.stderr)
    return raw, digest
