"""The on-disk store: a decoded set that need not fit in memory (`data.storage=disk`).

The store *is* a cache entry (`training.data.cache`: the same `<cache>/<source>-<key>/` directory,
the same `.npy` files and `meta.json`, the same content digest, hence the same dataset
fingerprint), written differently: the images are decoded in chunks straight into a
memory-mapped `.npy` (threads of Pillow, progress every few seconds), so no more than a chunk is
ever in memory. The splits are then written once per split setting into `splits-<hash>/` beside
it (rows gathered in chunks from the store), each split one contiguous memory-mapped array, so
training reads each batch's rows from the disk (`row_reader`: pread, not the map; then the
batched augmentation) and the page cache keeps what fits.

Never a partial store: everything is written into a temp directory renamed into place when
complete; a write that fails (a full disk) removes its temp directory and says so in one line.
A store whose source files changed since it was decoded (another cache key for the same
directory) is named, with the reason, and replaced.

`ImageStore` is a memory-mapped array whose per-channel `mean`/`std` are the ones recorded when
the split was written: numpy's own would read the whole store (and `std` allocates a float64
copy of it, 8x its size).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from training.data.dataset import DataError, Split

CHUNK = 1024  # images decoded (or copied) per write: ~30 MB at 100 px, ~275 MB at 300 px
PROGRESS_EVERY_S = 5.0
STORAGE_MODES = ("auto", "memory", "disk")
# The resident path's peak is about 10x the decoded bytes (the splits copied out of the cache,
# then `ProxyTrainer`'s float64 statistics pass over the training split); `auto` keeps that
# within half the available memory.
RESIDENT_PEAK_FACTOR = 10
RESIDENT_SHARE = 0.5


class ImageStore(np.memmap):
    """uint8 [N, 3, H, W] memory-mapped from a store's split file, with its recorded channel
    statistics (`stats`: mean and std per channel, float64, in pixel units)."""

    stats: Optional[tuple[np.ndarray, np.ndarray]] = None
    # (path, byte offset of row 0) of the split file this array maps whole; set by `split_store`
    # only, so a slice or an indexed copy (no longer the file's rows 0..N-1) has None
    file: Optional[tuple[str, int]] = None

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, **kwargs: Any) -> Any:
        if self.stats is not None and axis == (0, 2, 3) and out is None and not kwargs:
            return self.stats[0].astype(dtype or np.float64)
        return np.asarray(self).mean(axis=axis, dtype=dtype, out=out, **kwargs)

    def std(self, axis: Any = None, dtype: Any = None, out: Any = None, **kwargs: Any) -> Any:
        if self.stats is not None and axis == (0, 2, 3) and out is None and not kwargs:
            return self.stats[1].astype(dtype or np.float64)
        return np.asarray(self).std(axis=axis, dtype=dtype, out=out, **kwargs)


def available_memory() -> int:
    """Bytes this machine can still give a process (MemAvailable; total memory elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def choose(mode: str, decoded_bytes: Optional[int], streamable: bool) -> str:
    """`memory` or `disk` for `data.storage=mode`. `auto`: disk when the resident path's peak
    (RESIDENT_PEAK_FACTOR x the decoded bytes) would pass RESIDENT_SHARE of the available
    memory and the source can be decoded image by image; memory otherwise."""
    if mode not in STORAGE_MODES:
        raise DataError(f"data.storage must be one of {', '.join(STORAGE_MODES)}, got {mode!r}")
    if mode == "auto":
        if not streamable or decoded_bytes is None:
            return "memory"
        big = decoded_bytes * RESIDENT_PEAK_FACTOR > RESIDENT_SHARE * available_memory()
        return "disk" if big else "memory"
    return mode


# -- writing ---------------------------------------------------------------------------------------
# Store files are written and read with plain file I/O, not through a memory map: pages a process
# maps count in its resident set (ru_maxrss) until unmapped, so a store written or copied through
# one would show the whole store as the writer's memory.
class _NpyWriter:
    """A uint8 `.npy` of `shape`, filled in order by `write(block)` (the header first)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        self.offset = header.offset
        del header  # the header is written and the file sized; unmapped before any pixel
        self.file = open(path, "r+b")  # noqa: SIM115 (closed by __exit__)
        self.file.seek(self.offset)

    def write(self, block: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(block, dtype=np.uint8).data)

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class _NpyReader:
    """Rows of a uint8 `.npy` [N, ...] read with `pread` (in file order) rather than mapped."""

    def __init__(self, path: Path, shape: Optional[tuple[int, ...]] = None, offset: int = 0) -> None:
        if shape is None:
            mapped = np.load(path, mmap_mode="r")
            shape, offset = mapped.shape, mapped.offset
            del mapped
        self.shape, self.offset = tuple(shape), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), np.uint8)
        flat = out.reshape(len(index), self.row_bytes)
        for i in np.argsort(index, kind="stable"):  # file order: the disk reads forwards
            data = os.pread(self.fd, self.row_bytes, self.offset + int(index[i]) * self.row_bytes)
            flat[i] = np.frombuffer(data, np.uint8)
        return out

    def close(self) -> None:
        os.close(self.fd)


# Training reads its batches from a store with `pread` into fresh memory, never through the map:
# a mapped page counts in the process's resident set once touched, and this machine's kernel
# (6.18: large page-cache folios, 8 MB read-ahead) mapped about 1 MB per random 77 KB row, so 500
# training images and one BN calibration of a 160 px store showed 600 MB of it in the trainer's
# RSS (`benchmarks/bench_store.py --memory --image-size 160`). Read rows sit in the page cache,
# which the kernel reclaims, and not in the trainer's memory.
def row_reader(x: Any) -> Optional[_NpyReader]:
    """A pread reader of `x`'s rows when `x` is a whole split of a disk store, else None."""
    if not isinstance(x, ImageStore) or x.file is None:
        return None
    path, offset = x.file
    return _NpyReader(Path(path), x.shape, offset)


def _temp_dir(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))


def _publish(tmp: Path, entry: Path, readable: Callable[[Path], bool]) -> None:
    try:
        os.rename(tmp, entry)  # atomic; fails if another process got there first
    except OSError:
        if not readable(entry):
            raise


def _disk_error(what: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write the data store {what}: {exc.strerror or exc} (nothing partial was kept; free "
        "space, set data.cache_dir elsewhere, or use data.storage=memory)"
    )


def _progress(label: str) -> Callable[[int, int], None]:
    start = last = time.monotonic()

    def tick(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or (done == total and last > start):
            last = now
            print(
                f"effnas.data: {label} {done}/{total} images ({now - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    return tick


def build_store(
    root: Path,
    entry: Path,
    source: Any,
    files: dict[str, tuple[list[str], np.ndarray]],
    size: int,
    decode_chunk: Callable[[list[str], int], np.ndarray],
) -> None:
    """Decode `files` ({"train": (paths, labels), "test": ...}) chunk by chunk into the cache entry
    `entry` (format of `training.data.cache`), with the content digest `cache.content_digest`
    would give the same arrays in memory."""
    from training.data.cache import ARRAYS, _read

    _replace_stale(root, entry, source, size)
    tmp = _temp_dir(root, entry.name)
    try:
        digest = hashlib.sha256(json.dumps(list(source.classes)).encode())
        present = []
        for name in ARRAYS:  # the digest's order: train_x, train_y, test_x, test_y
            split, kind = name.split("_")
            if split not in files:
                digest.update(name.encode())
                continue
            paths, labels = files[split]
            present.append(name)
            if kind == "y":
                y = np.ascontiguousarray(labels, dtype=np.int64)
                digest.update(name.encode() + str(y.shape).encode())
                digest.update(y.data)
                np.save(tmp / f"{name}.npy", y)
                continue
            shape = (len(paths), 3, size, size)
            digest.update(name.encode() + str(shape).encode())
            tick = _progress(f"decoding {source.where} ({split}) into the store {entry}:")
            with _NpyWriter(tmp / f"{name}.npy", shape) as out:
                for start in range(0, len(paths), CHUNK):
                    block = np.ascontiguousarray(decode_chunk(paths[start : start + CHUNK], size))
                    out.write(block)
                    digest.update(block.data)
                    tick(start + len(block), len(paths))
        meta = {
            "source": source.name,
            "where": source.where,
            "key": source.key,
            "digest": digest.hexdigest(),
            "classes": list(source.classes),
            "arrays": present,
            "storage": "disk",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        _publish(tmp, entry, lambda e: _read(e) is not None)
    except OSError as exc:
        raise _disk_error(entry, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_stale(root: Path, entry: Path, source: Any, image_size: int) -> None:
    """Other entries decoded from this very source (same name, place and image size) under another
    key: its files changed since; say which and why, and remove them (they would never be read
    again). An entry at another image size is another store, kept."""
    for other in root.glob(f"{source.name}-*"):
        if other == entry or not (other / "meta.json").is_file():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
            size = np.load(other / "train_x.npy", mmap_mode="r").shape[-1]
        except (OSError, ValueError):
            continue
        if meta.get("where") == source.where and meta.get("key") != source.key and size == image_size:
            print(
                f"effnas.data: the store {other} was decoded from {source.where} before its files "
                "changed (names, sizes or modification times differ): removing it, decoding again",
                file=sys.stderr,
            )
            shutil.rmtree(other, ignore_errors=True)


# -- splits ----------------------------------------------------------------------------------------
def split_store(
    entry: Path,
    params: dict[str, Any],
    index: dict[str, Optional[np.ndarray]],
    own_test: Optional[np.ndarray] = None,
) -> dict[str, Split]:
    """The splits of a disk store as memory-mapped `ImageStore`s: `index` maps each split (train,
    val, test) to rows of the store's train arrays, or None for the store's own test arrays: all
    of them, or with `own_test` (a class subset) those rows, copied like the others.
    Written once per `params` (the split settings) into `entry/splits-<hash>/`."""
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = entry / f"splits-{tag}"
    copied = {split: ("train", rows) for split, rows in index.items() if rows is not None}
    if own_test is not None and "test" in index and index["test"] is None:
        copied["test"] = ("test", own_test)
    if not _splits_readable(folder, copied):
        _write_splits(entry, folder, params, copied)
    meta = json.loads((folder / "meta.json").read_text())
    out = {}
    for split in index:
        if split not in copied:  # the source's own test split: the store's arrays as they are
            x = np.load(entry / "test_x.npy", mmap_mode="c").view(ImageStore)
            x.file = (str(entry / "test_x.npy"), int(x.offset))
            out[split] = Split(x, np.load(entry / "test_y.npy"))
            continue
        x = np.load(folder / f"{split}_x.npy", mmap_mode="c").view(ImageStore)  # "c": torch wants writable
        x.file = (str(folder / f"{split}_x.npy"), int(x.offset))
        x.stats = (np.asarray(meta["stats"][split]["mean"]), np.asarray(meta["stats"][split]["std"]))
        out[split] = Split(x, np.load(folder / f"{split}_y.npy"))
    return out


def _splits_readable(folder: Path, index: dict[str, Any]) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return all(s in meta["stats"] and (folder / f"{s}_x.npy").is_file() for s in index)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _chunks(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(rows), CHUNK):
        yield start, rows[start : start + CHUNK]


def _write_splits(
    entry: Path, folder: Path, params: dict[str, Any], index: dict[str, tuple[str, np.ndarray]]
) -> None:
    """Each split's rows of the store's `train` (or `test`) arrays copied into `folder`."""
    tmp = _temp_dir(entry, folder.name)
    try:
        stats = {}
        for split, (arrays, rows) in index.items():
            source = _NpyReader(entry / f"{arrays}_x.npy")
            y_all = np.load(entry / f"{arrays}_y.npy")
            rows = np.asarray(rows)
            image = source.shape[1:]
            total = np.zeros(3)
            squares = np.zeros(3)
            tick = _progress(f"writing the {split} split of {entry}:")
            with _NpyWriter(tmp / f"{split}_x.npy", (len(rows), *image)) as out:
                for start, part in _chunks(rows):
                    block = source.rows(part)
                    out.write(block)
                    for part_of in range(0, len(block), 64):  # float64 copies of 64 images, not 1,024
                        as_float = block[part_of : part_of + 64].astype(np.float64)
                        total += as_float.sum(axis=(0, 2, 3))  # integers: exact in any order
                        squares += np.square(as_float).sum(axis=(0, 2, 3))
                    tick(start + len(part), len(rows))
            source.close()
            pixels = max(1, len(rows) * image[1] * image[2])
            mean = total / pixels
            std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
            stats[split] = {"mean": mean.tolist(), "std": std.tolist()}
            np.save(tmp / f"{split}_y.npy", np.ascontiguousarray(y_all[rows], dtype=np.int64))
        (tmp / "meta.json").write_text(json.dumps({"params": params, "stats": stats}, indent=1) + "\n")
        _publish(tmp, folder, lambda f: _splits_readable(f, index))
    except OSError as exc:
        raise _disk_error(folder, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
