"""`load_dataset(cfg)`: a data config in, a split `Dataset` out.

Reads the config (any object with `DataConfig`'s attributes: an OmegaConf node, a dataclass, a
namespace), picks the source, takes the decoded arrays from the cache, then splits them: the test
hold-out (sources without an official test split), the validation hold-out, the `max_train` subset.
Splitting is cheap and never cached, so changing a fraction or the seed costs no decode. Each split
draws from its own seeded stream, so the validation images do not change with `max_train`.

`data.classes` (a class subset: CIFAR-10's classes 0-4 to pre-train, 5-9 to transfer to) is applied
first: the data are then the chosen classes' images, labelled 0..k-1 in the order given, and every
split (the test hold-out, validation, `max_train`) is drawn from them as from a k-class dataset; an
official test split keeps the chosen classes' images.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from training.data import splits
from training.data.cache import load_or_build
from training.data.dataset import DataError, Dataset, Split
from training.data.sources import (
    RawData,
    Source,
    cifar10_source,
    class_names,
    digits_source,
    imagefolder_source,
)

SOURCES = ("cifar10", "digits", "imagefolder")
# SeedSequence spawn keys: one independent random stream per split, all from data.split_seed
TEST_STREAM, VAL_STREAM, SUBSET_STREAM = 1, 2, 3


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    """`cfg.<name>`; absent, None or OmegaConf's `???` all read as `default`."""
    try:
        value = getattr(cfg, name)
    except AttributeError:
        return default
    except Exception as e:  # omegaconf's MissingMandatoryValue, without importing omegaconf
        if type(e).__name__ == "MissingMandatoryValue":
            return default
        raise
    return default if value is None or value == "???" else value


def _fraction(cfg: Any, name: str, default: float) -> float:
    value = float(_get(cfg, name, default))
    if not 0.0 <= value < 1.0:
        raise DataError(f"data.{name} must be in [0, 1), got {value}")
    return value


def _directory(cfg: Any, name: str, dataset: str, required: bool) -> Optional[Path]:
    value = _get(cfg, name)
    if value is None:
        if required:
            raise DataError(
                f"data.{name} is not set: {dataset} needs a directory (data.{name}=/path/to/data)"
            )
        return None
    return Path(str(value)).expanduser()


def _source(cfg: Any, name: str, image_size: int) -> Source:
    if name == "digits":
        return digits_source(image_size)
    if name == "imagefolder":
        root = _directory(cfg, "root", name, required=True)
        return imagefolder_source(root, _directory(cfg, "test_root", name, required=False), image_size)
    if name == "cifar10":
        root = _directory(cfg, "root", name, required=True)
        download = bool(_get(cfg, "download", False))
        return cifar10_source(root, image_size, download, _get(cfg, "url"), _get(cfg, "md5"))
    raise DataError(f"unknown dataset {name!r} (data.name): expected one of {', '.join(SOURCES)}")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _split(x: np.ndarray, y: np.ndarray, index: np.ndarray) -> Split:
    # fancy indexing copies the rows out of the memory-mapped cache into ordinary arrays
    return Split(np.ascontiguousarray(x[index]), np.ascontiguousarray(y[index], dtype=np.int64))


def check_data_config(cfg: Any) -> tuple[str, int, float, float, int, Optional[int]]:
    """The config's values checked without reading any image (the CLI runs this before a run
    directory exists): (name, image_size, val_fraction, test_fraction, split_seed, max_train).
    A source's directory must exist unless it is to be downloaded."""
    name = _get(cfg, "name")
    if name is None:
        raise DataError(f"data.name is not set: expected one of {', '.join(SOURCES)}")
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r} (data.name): expected one of {', '.join(SOURCES)}")
    image_size = int(_get(cfg, "image_size", 32))
    if image_size < 1:
        raise DataError(f"data.image_size must be a positive number of pixels, got {image_size}")
    val_fraction = _fraction(cfg, "val_fraction", 0.1)
    test_fraction = _fraction(cfg, "test_fraction", 0.2)
    seed = int(_get(cfg, "split_seed", 0))
    if seed < 0:
        raise DataError(f"data.split_seed must be >= 0, got {seed}")
    storage = str(_get(cfg, "storage", "auto"))
    if storage not in ("auto", "memory", "disk"):
        raise DataError(f"data.storage must be one of auto, memory, disk, got {storage!r}")
    max_train = _get(cfg, "max_train")
    if max_train is not None and int(max_train) < 1:
        raise DataError(f"data.max_train must be a positive number of images or null, got {max_train}")
    if name != "digits" and not (name == "cifar10" and _get(cfg, "download", False)):
        root = _directory(cfg, "root", str(name), required=True)
        if root is not None and not root.is_dir():
            raise DataError(f"data.root {root} {'is not a directory' if root.exists() else 'does not exist'}")
    wanted = class_spec(cfg)
    if wanted is not None:
        names = class_names(str(name), _directory(cfg, "root", str(name), False))
        if names is not None:  # else loading tells (a download, a layout the source refuses)
            resolve_classes(wanted, names, str(_get(cfg, "root", name)))
    if storage == "disk":
        folders = name == "imagefolder" or (
            name == "cifar10"
            and _directory(cfg, "root", "cifar10", False) is not None
            and (_directory(cfg, "root", "cifar10", False) / "train").is_dir()  # type: ignore[operator]
        )
        if not folders:
            raise DataError(
                "data.storage=disk needs image files (an ImageFolder, or CIFAR-10 as train/ and test/ "
                f"folders); {name} is decoded whole in memory: use data.storage=memory"
            )
    return (
        str(name),
        image_size,
        val_fraction,
        test_fraction,
        seed,
        None if max_train is None else int(max_train),
    )


def class_spec(cfg: Any) -> Optional[tuple[Any, ...]]:
    """`data.classes` checked for form (no data read): None, or at least 2 distinct class indices
    (ints >= 0) or names (strings)."""
    value = _get(cfg, "classes")
    if value is None:
        return None
    if isinstance(value, (str, int)) or not hasattr(value, "__iter__"):
        raise DataError(f"data.classes must be a list of class indices or names, e.g. [0,1,2], got {value!r}")
    items = tuple(value)
    for c in items:
        if isinstance(c, bool) or not isinstance(c, (int, str)) or (isinstance(c, int) and c < 0) or c == "":
            raise DataError(
                f"data.classes holds {c!r}: each entry must be a class index (an int >= 0) or a class name"
            )
    if len(items) < 2:
        what = "is empty" if not items else f"has only {items[0]!r}"
        raise DataError(f"data.classes {what}: a class subset needs at least 2 classes (null: every class)")
    if len(set(items)) != len(items):
        twice = next(c for c in items if items.count(c) > 1)
        raise DataError(f"data.classes names {twice!r} twice: {list(items)}")
    return items


def resolve_classes(wanted: tuple[Any, ...], names: tuple[str, ...], where: str) -> tuple[int, ...]:
    """The source's class indices of `wanted` (indices or names), in the order given."""
    out: list[int] = []
    for c in wanted:
        if isinstance(c, int):
            if c >= len(names):
                raise DataError(
                    f"data.classes: class index {c} is out of range: {where} has {len(names)} classes "
                    f"(0..{len(names) - 1})"
                )
            out.append(c)
        elif c in names:
            out.append(names.index(c))
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise DataError(f"data.classes: no class {c!r} in {where} (classes: {shown})")
    if len(set(out)) != len(out):
        raise DataError(f"data.classes names one class twice (by index and by name): {list(wanted)}")
    return tuple(out)


def has_test_split(cfg: Any) -> bool:
    """Whether the data `cfg` describes will have a test split, from the config alone: CIFAR-10's
    official one, an ImageFolder's `test_root`, else a `test_fraction` hold-out above 0."""
    name, _, _, test_fraction, _, _ = check_data_config(cfg)
    return name == "cifar10" or _get(cfg, "test_root") is not None or test_fraction > 0


def load_dataset(cfg: Any) -> Dataset:
    """Load, cache and split the dataset `cfg` (a `DataConfig`) describes. Raises `DataError` on bad data.

    `val` is held out of the training data (stratified, `val_fraction`, seeded by `split_seed`);
    `test` is for final reports only: the official test split, or a stratified `test_fraction`
    hold-out made before anything else where the source has none.
    """
    name, image_size, val_fraction, test_fraction, seed, max_train = check_data_config(cfg)
    classes = class_spec(cfg)
    source = _source(cfg, str(name), image_size)
    storage = storage_of(cfg, source, image_size)
    if storage == "disk":
        return _disk_dataset(cfg, source, image_size, val_fraction, test_fraction, seed, max_train, classes)
    raw, digest = load_or_build(source, _get(cfg, "cache_dir"))
    return split_dataset(raw, digest, source, val_fraction, test_fraction, seed, max_train, classes)


def storage_of(cfg: Any, source: Source, image_size: int) -> str:
    """`memory` or `disk` for `data.storage` (training.data.store.choose); digits, and CIFAR-10's
    pickles (decoded whole by their reader), stay in memory."""
    from training.data import store

    mode = str(_get(cfg, "storage", "auto"))
    chosen = store.choose(mode, source.decoded_bytes(image_size), source.files is not None)
    if chosen == "disk" and source.files is None:
        raise DataError(
            f"data.storage=disk needs image files (an ImageFolder, or CIFAR-10 as train/ and test/ "
            f"folders); {source.where} is decoded whole in memory: use data.storage=memory"
        )
    return chosen


def _disk_dataset(
    cfg: Any,
    source: Source,
    image_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_train: Optional[int],
    classes: Optional[tuple[Any, ...]] = None,
) -> Dataset:
    """The dataset from the on-disk store (training/data/store.py), decoded there on first use."""
    from training.data import store
    from training.data.cache import _read, cache_root
    from training.data.sources import decode_files

    assert source.files is not None
    root = cache_root(_get(cfg, "cache_dir"))
    entry = root / f"{source.name}-{source.key[:24]}"
    cached = _read(entry)
    if cached is None:
        shutil.rmtree(entry, ignore_errors=True)  # damaged by hand (a published store is whole)
        store.build_store(
            root, entry, source, source.files, image_size, lambda p, n: decode_files(p, n, source.where)
        )
        cached = _read(entry)
        if cached is None:
            raise DataError(f"the data store {entry} was written but cannot be read back")
    raw, digest = cached
    index = split_index(raw, source, val_fraction, test_fraction, seed, max_train, classes)
    params = _split_params(digest, val_fraction, index["test_fraction"], seed, max_train, index["keep"])
    rows = {"train": index["train"], "val": index["val"]}
    if index["test"] is not None or raw.test_x is not None:
        rows["test"] = index["test"]  # None: the source's own test arrays (index["own_test"]: some rows)
    splits = store.split_store(entry, params, rows, index["own_test"])
    labels = _relabel(index["keep"], len(raw.classes))
    if labels is not None:  # the class subset's labels 0..k-1; the memory-mapped images stay
        splits = {k: Split(v.x, labels[v.y]) for k, v in splits.items()}
    return Dataset(
        name=source.name,
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        num_classes=len(index["classes"]),
        classes=index["classes"],
        fingerprint=_fingerprint(params),
    )


def split_index(
    raw: RawData,
    source: Source,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_train: Optional[int],
    subset: Optional[tuple[Any, ...]] = None,
) -> dict[str, Any]:
    """Rows of the source's training arrays in each split: train, val, test (None where the source
    has its own test split, or test_fraction is 0) and the test_fraction that applied (None with
    the source's own test split). With a class `subset` (`data.classes`), only its classes' rows,
    and `own_test` the rows of the source's own test split that are theirs (else None); `keep`
    the source's indices of the classes kept (None: all), `classes` their names. Labels only: no
    pixel is read."""
    where = source.where
    y = np.asarray(raw.train_y, dtype=np.int64)
    keep, own_test, classes = None, None, raw.classes
    rows = None  # with a subset: the positions of its classes' images in the source's arrays
    if subset is not None:
        keep = resolve_classes(subset, raw.classes, where)
        classes = tuple(raw.classes[c] for c in keep)
        labels = _relabel(keep, len(raw.classes))
        rows = np.flatnonzero(np.isin(y, keep))
        y = labels[y[rows]]  # type: ignore[index]
        if raw.test_y is not None:
            own_test = np.flatnonzero(np.isin(np.asarray(raw.test_y), keep))
    pool = np.arange(len(y))  # positions of the images still available for training
    test_rows, test_params = None, None
    if raw.test_x is None:
        pool, held = splits.hold_out(
            y, len(classes), test_fraction, _rng(seed, TEST_STREAM), "test", classes, where
        )
        test_rows = held if len(held) else None  # test_fraction 0: no test split
        test_params = test_fraction
    kept, held = splits.hold_out(
        y[pool], len(classes), val_fraction, _rng(seed, VAL_STREAM), "validation", classes, where
    )
    val_index, pool = pool[held], pool[kept]
    if max_train is not None:
        pool = pool[
            splits.subset(y[pool], len(classes), int(max_train), _rng(seed, SUBSET_STREAM), classes, where)
        ]
    if rows is not None:  # positions among the subset's images -> rows of the source's arrays
        pool, val_index = rows[pool], rows[val_index]
        test_rows = None if test_rows is None else rows[test_rows]
    return {
        "train": pool,
        "val": val_index,
        "test": test_rows,
        "test_fraction": test_params,
        "keep": keep,
        "own_test": own_test,
        "classes": classes,
    }


def _relabel(keep: Optional[tuple[int, ...]], num_classes: int) -> Optional[np.ndarray]:
    """The source's label -> the subset's (its position in `keep`; -1 for a class not kept)."""
    if keep is None:
        return None
    labels = np.full(num_classes, -1, np.int64)
    labels[list(keep)] = np.arange(len(keep))
    return labels


def _split_params(
    digest: str,
    val_fraction: float,
    test_fraction: Optional[float],
    seed: int,
    max_train: Optional[int],
    keep: Optional[tuple[int, ...]] = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "data": digest,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": seed,
        "max_train": None if max_train is None else int(max_train),
    }
    if keep is not None:  # absent without a subset: every existing fingerprint stays as it was
        params["classes"] = [int(c) for c in keep]
    return params


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def split_dataset(
    raw: RawData,
    digest: str,
    source: Source,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_train: Optional[int],
    subset: Optional[tuple[Any, ...]] = None,
) -> Dataset:
    """The train / val / test splits of decoded arrays, and the fingerprint that identifies them."""
    x, y = raw.train_x, np.asarray(raw.train_y, dtype=np.int64)
    index = split_index(raw, source, val_fraction, test_fraction, seed, max_train, subset)
    pool, val_index = index["train"], index["val"]
    labels = _relabel(index["keep"], len(raw.classes))
    if labels is not None:  # the class subset's labels 0..k-1 (rows of other classes are never taken)
        y = labels[y]
    if raw.test_x is not None and index["own_test"] is not None:
        test = _split(raw.test_x, labels[np.asarray(raw.test_y, dtype=np.int64)], index["own_test"])  # type: ignore[index]
    elif raw.test_x is not None:
        test = Split(np.array(raw.test_x), np.array(raw.test_y, dtype=np.int64))
    else:
        test = _split(x, y, index["test"]) if index["test"] is not None else None
    classes = index["classes"]
    params = _split_params(digest, val_fraction, index["test_fraction"], seed, max_train, index["keep"])
    fingerprint = _fingerprint(params)
    return Dataset(
        name=source.name,
        train=_split(x, y, pool),
        val=_split(x, y, val_index),
        test=test,
        num_classes=len(classes),
        classes=classes,
        fingerprint=fingerprint,
    )
