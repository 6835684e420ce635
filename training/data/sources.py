"""Where images come from: readers for each dataset source, turning files into uint8 NCHW arrays.

A `Source` is a cheap description of the data on disk (its `key`, a digest of file names, sizes and
mtimes, or of the library version for `digits`) plus a `build` that decodes it. `cache` keys the
decoded arrays by `key`, so `build` runs once per source and image size. Sources:

- `digits`: scikit-learn's 8x8 handwritten digits, shipped inside the package.
- `imagefolder`: `root/<class>/**/*.png|jpg`, optionally a separate test tree with the same classes.
- `cifar10`: an ImageFolder tree (`root/train/<class>`, `root/test/<class>`) or the official python
  pickles (`root/cifar-10-batches-py/` or `root` itself), optionally downloaded first.

Resizing to `image_size` is Pillow's bilinear (antialiased when shrinking) in every source, so the
same images at the same size are the same pixels whichever layout they came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from training.data.dataset import DataError

# Bump when decoding changes (resampler, colour conversion, layout): it is part of every cache key.
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR10_PICKLES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
DECODE_CHUNK = 256  # images per thread-pool task: amortises the executor's per-task overhead
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True, eq=False)
class RawData:
    """Decoded arrays before splitting. `test_x is None` where the source has no test split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: Optional[np.ndarray]
    test_y: Optional[np.ndarray]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    name: str  # cache entry prefix
    where: str  # what the messages name: a directory, or the library the data ships in
    key: str  # hex digest of everything that decides the decoded arrays
    build: Callable[[], RawData]
    # image-file sources: their files per split ({"train": (paths, labels), "test": ...}) and
    # classes, so `training.data.store` can decode them chunk by chunk onto disk
    files: Optional[dict[str, tuple[list[str], np.ndarray]]] = None
    classes: tuple[str, ...] = ()

    def decoded_bytes(self, image_size: int) -> Optional[int]:
        """Bytes of the decoded uint8 arrays, from the file listing (None: not known before decoding)."""
        if self.files is None:
            return None
        return sum(len(paths) for paths, _ in self.files.values()) * 3 * image_size * image_size


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([FORMAT_VERSION, *parts], default=str).encode()).hexdigest()


# ---- pixels -------------------------------------------------------------------------------------


def _resize_pil(image: Image.Image, size: int) -> Image.Image:
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _resize_nchw(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 [N, 3, h, w] arrays with Pillow, as the image-file sources do."""
    if x.shape[-2:] == (size, size):
        return x
    out = np.empty((len(x), 3, size, size), np.uint8)
    for i, img in enumerate(x):
        out[i] = np.asarray(_resize_pil(Image.fromarray(img.transpose(1, 2, 0)), size)).transpose(2, 0, 1)
    return out


def _decode_image(path: str, size: int) -> np.ndarray:
    """One image file as uint8 [3, size, size] RGB; any mode Pillow reads (L, P, RGBA, ...) is converted."""
    try:
        with Image.open(path) as image:
            # convert() forces the full decode, so a truncated file fails here, not later
            rgb = _resize_pil(image.convert("RGB"), size)
            return np.asarray(rgb).transpose(2, 0, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def _decode_workers() -> int:
    # the decode is I/O plus Pillow's C code, which releases the GIL: threads suffice. Few of them,
    # because the machines this runs on are often shared.
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _decode_images(paths: list[str], size: int, where: str) -> np.ndarray:
    out = np.empty((len(paths), 3, size, size), np.uint8)

    def decode_chunk(start: int) -> int:
        stop = min(start + DECODE_CHUNK, len(paths))
        for i in range(start, stop):
            out[i] = _decode_image(paths[i], size)
        return stop - start

    start = last = time.monotonic()
    done = 0
    with ThreadPoolExecutor(_decode_workers()) as pool:
        try:
            for n in pool.map(decode_chunk, range(0, len(paths), DECODE_CHUNK)):
                done += n
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    print(
                        f"effnas.data: decoded {done}/{len(paths)} images from {where} ({last - start:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # stop at the first bad file
            raise
    if last > start:  # progress was shown: close it with the total
        print(
            f"effnas.data: decoded {len(paths)} images from {where} in {time.monotonic() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


# ---- digits -------------------------------------------------------------------------------------


def digits_source(image_size: int) -> Source:
    import sklearn

    def build() -> RawData:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 ink levels -> 0..255, then the same Pillow bilinear upsampling as every other source
        gray = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        x = _resize_nchw(np.repeat(gray[:, None], 3, axis=1), image_size)
        classes = tuple(str(c) for c in digits.target_names)
        return RawData(x, digits.target.astype(np.int64), None, None, classes)

    where = f"scikit-learn {sklearn.__version__} load_digits"
    return Source("digits", where, _digest("digits", sklearn.__version__, image_size), build)


# ---- image folders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing:
    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    stats: list[tuple[str, int, int]]  # (path relative to root, size, mtime_ns): the cache key's input


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{what} {path} is not a directory")


def _scan(folder: str, root: str, found: list[tuple[str, int, int]]) -> None:
    """Image files under `folder`, recursively, in sorted order, with their size and mtime."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            _scan(e.path, root, found)
        elif e.name.lower().endswith(IMAGE_SUFFIXES):
            st = e.stat()
            found.append((os.path.relpath(e.path, root), st.st_size, st.st_mtime_ns))


def _class_folders(root: Path) -> list[str]:
    """The class folders of an ImageFolder tree, sorted: their order is the class indices'."""
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _list_images(root: Path, what: str, classes: Optional[tuple[str, ...]] = None) -> _Listing:
    """The class folders of `root` and their images. With `classes`, folders must be among them."""
    _check_dir(root, what)
    folders = _class_folders(root)
    if classes is None:
        if len(folders) < 2:
            found = f": {', '.join(folders)}" if folders else ""
            raise DataError(f"{what} {root} has {len(folders)} class folder(s), need at least 2{found}")
        classes = tuple(folders)
    else:
        if not folders:
            raise DataError(f"{what} {root} has no class folders")
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DataError(
                f"{what} {root} has class folder(s) not in the training data: {', '.join(unknown)}"
            )
    paths: list[str] = []
    labels: list[int] = []
    stats: list[tuple[str, int, int]] = []
    for name in folders:
        found: list[tuple[str, int, int]] = []
        _scan(str(root / name), str(root), found)
        if not found:
            raise DataError(f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += [str(root / rel) for rel, _, _ in found]
        labels += [classes.index(name)] * len(found)
        stats += found
    return _Listing(paths, np.asarray(labels, np.int64), classes, stats)


def imagefolder_source(
    root: Path, test_root: Optional[Path], image_size: int, name: str = "imagefolder"
) -> Source:
    train = _list_images(root, "data.root" if name == "imagefolder" else f"{name} train folder")
    test = None
    if test_root is not None:
        what = "data.test_root" if name == "imagefolder" else f"{name} test folder"
        test = _list_images(test_root, what, train.classes)

    def build() -> RawData:
        train_x = _decode_images(train.paths, image_size, str(root))
        if test is None:
            return RawData(train_x, train.labels, None, None, train.classes)
        test_x = _decode_images(test.paths, image_size, str(test_root))
        return RawData(train_x, train.labels, test_x, test.labels, train.classes)

    key = _digest(name, image_size, train.classes, train.stats, test.stats if test else None)
    files = {"train": (train.paths, train.labels)}
    if test is not None:
        files["test"] = (test.paths, test.labels)
    return Source(name, str(root), key, build, files, train.classes)


def decode_files(paths: list[str], size: int, where: str = "") -> np.ndarray:
    """Image files as uint8 [N, 3, size, size], decoded on a few threads (the store's chunks)."""
    return _decode_images(paths, size, where)


def class_names(name: str, root: Optional[Path]) -> Optional[tuple[str, ...]]:
    """The classes a source will have, in index order, from its folders or CIFAR-10's small
    `batches.meta` alone (no image read: the CLI checks `data.classes` with it before a run
    starts); None where only loading can tell (nothing there yet, a layout the source refuses)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return tuple(str(c) for c in load_digits().target_names)
    if root is None or not root.is_dir():
        return None
    if name == "cifar10":
        if (root / "train").is_dir():
            root = root / "train"
        else:
            for folder in (root / "cifar-10-batches-py", root):
                if (folder / "batches.meta").is_file():
                    meta = _read_pickle(folder / "batches.meta")
                    try:
                        return tuple(
                            c.decode() if isinstance(c, bytes) else str(c) for c in meta["label_names"]
                        )
                    except (KeyError, TypeError):
                        return None
            return None
    return tuple(_class_folders(root)) or None


# ---- CIFAR-10 -----------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the CIFAR pickles (dicts of bytes, lists and numpy arrays) and refuses any other class,
    so a tampered or foreign archive cannot run code on load."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # written by numpy < 2 (the official files)
            ("numpy._core.multiarray", "_reconstruct"),  # written by numpy >= 2
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"cannot read CIFAR-10 pickle {path}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"cannot read CIFAR-10 pickle {path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 pickle {path} lacks 'data'/'labels' arrays: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(
            f"CIFAR-10 pickle {path} has data {list(data.shape)} and labels {list(labels.shape)}, "
            "expected [N, 3072] and [N]"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"CIFAR-10 pickle {path} has labels outside 0..{num_classes - 1}")
    # rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane: NCHW as is
    return data.reshape(-1, 3, 32, 32), labels


def _pickle_source(folder: Path, image_size: int) -> Source:
    files = [folder / name for name in CIFAR10_PICKLES]
    for f in files:
        if not f.is_file():
            raise DataError(f"CIFAR-10 pickle {f} is missing")

    def build() -> RawData:
        meta = _read_pickle(folder / "batches.meta")
        try:
            classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta["label_names"])
        except (KeyError, TypeError) as e:
            raise DataError(f"CIFAR-10 pickle {folder / 'batches.meta'} lacks 'label_names': {e}") from None
        train = [_read_batch(f, len(classes)) for f in files[:5]]
        test_x, test_y = _read_batch(files[5], len(classes))
        train_x = _resize_nchw(np.concatenate([x for x, _ in train]), image_size)
        train_y = np.concatenate([y for _, y in train])
        return RawData(train_x, train_y, _resize_nchw(test_x, image_size), test_y, classes)

    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return Source("cifar10", str(folder), _digest("cifar10-pickles", image_size, stats), build)


def cifar10_source(
    root: Path, image_size: int, download: bool, url: Optional[str], md5: Optional[str]
) -> Source:
    """CIFAR-10 from whichever layout `root` holds; with `download`, fetch the pickles if it holds none."""
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise DataError(f"CIFAR-10 folder {root} has train/ but no test/ class folders")
        return imagefolder_source(root / "train", root / "test", image_size, name="cifar10")
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / "data_batch_1").exists() or (folder / "batches.meta").exists():
            return _pickle_source(folder, image_size)
    if download:
        from training.data.download import download_cifar10

        return _pickle_source(download_cifar10(root, url, md5), image_size)
    if not root.is_dir():
        _check_dir(root, "data.root")
    raise DataError(
        f"no CIFAR-10 in {root}: expected train/<class>/ and test/<class>/ folders or "
        "cifar-10-batches-py/ (data.download=true fetches it)"
    )
