"""The data layer on tiny generated data: every source layout, the splits, the cache, the download
path against a local HTTP server, every bad-data error, and one slice of real CIFAR-10."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from foundation.errors import UserError
from training.data import DataError, Dataset, Split, has_test_split, load_dataset
from training.data import sources as data_sources
from training.data.config import DataConfig

REAL_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_cfg(tmp_path: Path, **values):
    """A real `DataConfig` node (typos and wrong types fail as they would from the CLI)."""
    cfg = OmegaConf.structured(DataConfig)
    cfg.cache_dir = str(tmp_path / "cache")
    for key, value in values.items():
        setattr(cfg, key, str(value) if isinstance(value, Path) else value)
    return cfg


def write_image(path: Path, uid: int, size: int = 8, mode: str = "RGB", fmt: str = "PNG") -> None:
    """An image whose top-left pixel encodes `uid` (lossless formats), so tests can tell images apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.full((size, size, 3), 100, np.uint8)
    rgb[..., 2] = np.arange(size, dtype=np.uint8)[None, :] * 10  # a gradient, so flips/resizes are visible
    rgb[0, 0] = (uid % 256, uid // 256, 7)
    image = Image.fromarray(rgb)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)


def write_folder(root: Path, counts: dict[str, int], first_uid: int = 0, **kw) -> int:
    """`root/<class>/<i>.png` with `counts[class]` images each; returns the next unused uid."""
    uid = first_uid
    for name, n in counts.items():
        for i in range(n):
            write_image(root / name / f"{i:03d}.png", uid, **kw)
            uid += 1
    return uid


def uids(split: Split) -> np.ndarray:
    return split.x[:, 0, 0, 0].astype(np.int64) + 256 * split.x[:, 1, 0, 0].astype(np.int64)


def dump_official_pickle(path: Path, obj: dict) -> None:
    """Pickle like the official CIFAR-10 files: protocol 2, numpy < 2 module names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2).replace(b"numpy._core", b"numpy.core"))


def write_cifar_pickles(folder: Path, per_batch: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = i  # red channel, top-left pixel: which batch an image came from
        labels = [j % 10 for j in range(per_batch)]
        dump_official_pickle(folder / name, {b"batch_label": name.encode(), b"data": data, b"labels": labels})
    dump_official_pickle(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR_CLASSES]})


# ---- sources ------------------------------------------------------------------------------------


def test_digits(tmp_path):
    data = load_dataset(
        make_cfg(tmp_path, name="digits", image_size=16, val_fraction=0.15, test_fraction=0.2)
    )
    assert isinstance(data, Dataset) and data.name == "digits"
    assert data.num_classes == 10 and data.classes == tuple(str(i) for i in range(10))
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == round(1797 * 0.2) and len(data.val) == round((1797 - len(data.test)) * 0.15)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (3, 16, 16) and split.y.dtype == np.int64
        assert np.array_equal(split.x[:, 0], split.x[:, 2])  # gray repeated to 3 channels
    assert data.train.x.max() == 255 and data.train.x.min() == 0  # 0..16 ink scaled to the full range
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0
    # test_fraction 0: no test split at all (not an empty one a score would divide by)
    cfg = make_cfg(tmp_path, name="digits", image_size=8, test_fraction=0.0)
    assert load_dataset(cfg).test is None and not has_test_split(cfg)
    assert has_test_split(make_cfg(tmp_path, name="digits", image_size=8, test_fraction=0.2))


def test_imagefolder_splits_disjoint_cover_and_stable(tmp_path):
    total = write_folder(tmp_path / "imgs", {"a": 30, "b": 20, "c": 10})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8, val_fraction=0.25)
    data = load_dataset(cfg)
    parts = [uids(s) for s in (data.train, data.val, data.test)]
    every = np.concatenate(parts)
    assert sorted(every) == list(range(total))  # disjoint and covering
    assert data.classes == ("a", "b", "c")
    assert len(data.test) == 12 and len(data.val) == 12  # round(60 * .2), round(48 * .25)

    again = load_dataset(cfg)
    assert again.fingerprint == data.fingerprint
    for a, b in zip((data.train, data.val, data.test), (again.train, again.val, again.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)

    cfg.split_seed = 1
    other = load_dataset(cfg)
    assert other.fingerprint != data.fingerprint
    assert not np.array_equal(uids(other.val), uids(data.val))


def test_splits_are_stratified(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 40, "b": 20, "c": 20})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8, val_fraction=0.25)
    data = load_dataset(cfg)
    assert np.bincount(data.test.y).tolist() == [8, 4, 4]  # 20% of each class
    assert np.bincount(data.val.y).tolist() == [8, 4, 4]  # 25% of what is left of each
    assert np.bincount(data.train.y).tolist() == [24, 12, 12]


def test_max_train_is_a_stratified_subset_and_keeps_val(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 40, "b": 20, "c": 20})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8)
    full = load_dataset(cfg)
    cfg.max_train = 12
    small = load_dataset(cfg)
    assert len(small.train) == 12 and np.bincount(small.train.y).tolist() == [6, 3, 3]
    assert set(uids(small.train)) <= set(uids(full.train))
    assert np.array_equal(uids(small.val), uids(full.val))  # the validation set does not move
    assert small.fingerprint != full.fingerprint
    cfg.max_train = 3  # fewer than the proportional share of some class: each class keeps one
    assert np.bincount(load_dataset(cfg).train.y).tolist() == [1, 1, 1]


def test_class_subset_keeps_its_classes_relabelled_in_every_split(tmp_path):
    """`data.classes` on an ImageFolder without a test tree: only the chosen classes' images, in
    every split, labelled 0..k-1 in the order given (names or indices alike); max_train picks a
    stratified, seeded subset of them, the same on every load."""
    n = write_folder(tmp_path / "imgs", {"a": 20, "b": 30, "c": 20, "d": 10})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8, val_fraction=0.2)
    cfg.classes = [2, 1]  # c -> 0, b -> 1
    data = load_dataset(cfg)
    assert data.classes == ("c", "b") and data.num_classes == 2
    every = np.concatenate([uids(s) for s in (data.train, data.val, data.test)])
    assert sorted(every) == list(range(20, 70))  # b's uids 20..49, c's 50..69: all, once
    for split in (data.train, data.val, data.test):
        assert np.array_equal(split.y, np.where(uids(split) >= 50, 0, 1))
    assert len(data.test) == 10 and np.bincount(data.test.y).tolist() == [4, 6]  # 20% of each
    cfg.classes = ["c", "b"]
    assert load_dataset(cfg).fingerprint == data.fingerprint  # the same subset named
    cfg.classes = [1, 2]  # the other order: other labels, another fingerprint
    assert load_dataset(cfg).fingerprint != data.fingerprint
    cfg.classes = None
    assert load_dataset(cfg).num_classes == 4 and n == 80

    cfg.classes, cfg.max_train = [2, 1], 10
    small, again = load_dataset(cfg), load_dataset(cfg)
    assert np.bincount(small.train.y).tolist() == [4, 6]  # stratified: c is 2/5 of the pool
    assert set(uids(small.train)) <= set(uids(data.train))
    assert np.array_equal(uids(small.val), uids(data.val))  # the validation set does not move
    assert np.array_equal(small.train.x, again.train.x) and small.fingerprint == again.fingerprint


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason=f"no CIFAR-10 at {REAL_CIFAR10}")
def test_class_subset_of_real_cifar10(tmp_path):
    """CIFAR-10's classes 5-9 (the transfer target of docs/transfer.md) on a slice of the real
    ImageFolder tree: the official test split keeps those classes' photographs, labelled 0..4."""
    for split, n in (("train", 4), ("test", 2)):
        for c in CIFAR_CLASSES:
            (tmp_path / "c10" / split / c).mkdir(parents=True)
            for f in sorted((REAL_CIFAR10 / split / c).iterdir())[:n]:
                shutil.copy(f, tmp_path / "c10" / split / c / f.name)
    cfg = make_cfg(
        tmp_path, name="cifar10", root=tmp_path / "c10", val_fraction=0.25, classes=[5, 6, 7, 8, 9]
    )
    data = load_dataset(cfg)
    assert data.classes == CIFAR_CLASSES[5:] and data.num_classes == 5
    assert len(data.train) == 15 and len(data.val) == 5 and len(data.test) == 10
    assert np.bincount(data.test.y).tolist() == [2] * 5 and np.bincount(data.train.y).tolist() == [3] * 5
    for i, c in enumerate(CIFAR_CLASSES[5:]):  # each test image is its class's photograph
        files = sorted((tmp_path / "c10" / "test" / c).iterdir())
        want = [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files]
        assert all(np.array_equal(a, b) for a, b in zip(data.test.x[data.test.y == i], want))
    source = load_dataset(make_cfg(tmp_path, name="cifar10", root=tmp_path / "c10", classes=[0, 1, 2, 3, 4]))
    assert source.classes == CIFAR_CLASSES[:5]
    assert not set(map(bytes, source.test.x)) & set(map(bytes, data.test.x))  # no image in both


def test_imagefolder_any_mode_size_and_format(tmp_path):
    root = tmp_path / "imgs"
    write_image(root / "a" / "gray.png", 1, size=20, mode="L")
    write_image(root / "a" / "rgba.png", 2, size=8, mode="RGBA")
    write_image(root / "a" / "nested" / "deep.png", 3, size=8)
    write_image(root / "b" / "palette.png", 4, size=5, mode="P")
    write_image(root / "b" / "photo.JPG", 5, size=30, fmt="JPEG")
    write_image(root / "b" / "photo2.jpeg", 6, size=8, mode="L", fmt="JPEG")
    (root / "b" / "notes.txt").write_text("not an image")  # ignored
    (root / "b" / ".hidden.png").write_bytes(b"junk")  # ignored
    (root / "README").write_text("files beside the class folders are ignored")
    cfg = make_cfg(tmp_path, name="imagefolder", root=root, test_root=None, image_size=8, val_fraction=0.0)
    cfg.test_fraction = 0.34
    data = load_dataset(cfg)
    assert len(data.train) + len(data.test) == 6 and len(data.val) == 0
    assert data.train.x.shape[1:] == (3, 8, 8)
    everything = np.concatenate([data.train.x, data.test.x])
    rgba = everything[uids(Split(everything, np.zeros(6, np.int64))) == 2]
    assert rgba.shape[0] == 1 and rgba[0, 2, 0, 0] == 7  # alpha dropped, colour kept


def test_imagefolder_with_test_root(tmp_path):
    n = write_folder(tmp_path / "train", {"a": 10, "b": 10})
    write_folder(tmp_path / "test", {"a": 3, "b": 2}, first_uid=n)
    cfg = make_cfg(
        tmp_path, name="imagefolder", root=tmp_path / "train", test_root=tmp_path / "test", image_size=8
    )
    data = load_dataset(cfg)
    assert sorted(uids(data.test)) == list(range(n, n + 5))
    assert data.test.y.tolist() == [0, 0, 0, 1, 1]
    assert len(data.train) + len(data.val) == 20 and len(data.val) == 2


def test_cifar10_folder_layout(tmp_path):
    n = write_folder(tmp_path / "c10" / "train", {c: 3 for c in CIFAR_CLASSES}, size=32)
    write_folder(tmp_path / "c10" / "test", {c: 1 for c in CIFAR_CLASSES}, first_uid=n, size=32)
    data = load_dataset(make_cfg(tmp_path, name="cifar10", root=tmp_path / "c10", val_fraction=0.34))
    assert data.name == "cifar10" and data.classes == CIFAR_CLASSES
    assert len(data.train) == 20 and len(data.val) == 10 and len(data.test) == 10
    assert data.train.x.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("inside", [True, False], ids=["root", "batches-dir"])
def test_cifar10_pickle_layout(tmp_path, inside):
    write_cifar_pickles(tmp_path / "c10" / "cifar-10-batches-py")
    root = tmp_path / "c10" if inside else tmp_path / "c10" / "cifar-10-batches-py"
    data = load_dataset(make_cfg(tmp_path, name="cifar10", root=root, val_fraction=0.2))
    assert data.classes == CIFAR_CLASSES
    assert len(data.train) == 40 and len(data.val) == 10 and len(data.test) == 10
    assert set(data.test.x[:, 0, 0, 0].tolist()) == {5}  # test_batch
    assert set(np.concatenate([data.train.x, data.val.x])[:, 0, 0, 0].tolist()) == {0, 1, 2, 3, 4}
    assert np.bincount(data.val.y).tolist() == [1] * 10


def test_cifar10_pickles_resized(tmp_path):
    write_cifar_pickles(tmp_path / "c10")
    data = load_dataset(make_cfg(tmp_path, name="cifar10", root=tmp_path / "c10", image_size=16))
    assert data.train.x.shape[1:] == (3, 16, 16) and data.test.x.shape[1:] == (3, 16, 16)


def test_split_checks_its_arrays():
    with pytest.raises(ValueError, match="uint8"):
        Split(np.zeros((2, 3, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="int64"):
        Split(np.zeros((2, 3, 4, 4), np.uint8), np.zeros(3, np.int64))


# ---- cache --------------------------------------------------------------------------------------


def _no_decode(*args, **kwargs):
    raise AssertionError("decoded again: the cache was missed")


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    write_folder(tmp_path / "imgs", {"a": 10, "b": 10})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8)
    first = load_dataset(cfg)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("imagefolder-")  # no temp dirs left
    assert {p.suffix for p in entries[0].iterdir()} == {".npy", ".json"}

    monkeypatch.setattr(data_sources, "_decode_image", _no_decode)
    cfg.val_fraction = 0.3  # splitting happens after the cache: new fractions cost no decode
    second = load_dataset(cfg)
    assert len(second.val) == 5 and second.fingerprint != first.fingerprint
    cfg.val_fraction = 0.1
    third = load_dataset(cfg)
    assert third.fingerprint == first.fingerprint and np.array_equal(third.train.x, first.train.x)


def test_cache_hit_for_pickles(tmp_path, monkeypatch):
    write_cifar_pickles(tmp_path / "c10")
    cfg = make_cfg(tmp_path, name="cifar10", root=tmp_path / "c10")
    first = load_dataset(cfg)
    monkeypatch.setattr(data_sources, "_read_pickle", _no_decode)
    assert load_dataset(cfg).fingerprint == first.fingerprint


def test_cache_follows_the_files(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 10, "b": 10})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8)
    before = load_dataset(cfg)
    write_image(tmp_path / "imgs" / "b" / "000.png", 999)  # same name, new content
    after = load_dataset(cfg)
    assert 999 in np.concatenate([uids(after.train), uids(after.val), uids(after.test)])
    assert after.fingerprint != before.fingerprint
    cfg.image_size = 4  # another size is another entry
    assert load_dataset(cfg).train.x.shape[-1] == 4
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_fingerprint_is_the_content_not_the_path(tmp_path):
    write_folder(tmp_path / "one", {"a": 10, "b": 10})
    time.sleep(0.01)
    shutil.copytree(tmp_path / "one", tmp_path / "two")  # new mtimes: another cache key, same pixels
    a = load_dataset(make_cfg(tmp_path, name="imagefolder", root=tmp_path / "one", image_size=8))
    b = load_dataset(make_cfg(tmp_path, name="imagefolder", root=tmp_path / "two", image_size=8))
    assert a.fingerprint == b.fingerprint


def test_concurrent_loads_share_one_entry(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 30, "b": 30})
    cfg = make_cfg(tmp_path, name="imagefolder", root=tmp_path / "imgs", image_size=8)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_dataset(cfg).fingerprint)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the losers' temp entries are gone


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "env-cache"))
    cfg = make_cfg(tmp_path, name="digits", image_size=8)
    cfg.cache_dir = None
    load_dataset(cfg)
    assert [p.name.split("-")[0] for p in (tmp_path / "env-cache").iterdir()] == ["digits"]


# ---- bad data -----------------------------------------------------------------------------------


def _two_classes(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 5, "b": 5})
    return tmp_path / "imgs"


def _bad_empty_class(tmp_path):
    root = _two_classes(tmp_path)
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    return {"name": "imagefolder", "root": root}, str(root / "empty")


def _bad_corrupt_image(tmp_path):
    root = _two_classes(tmp_path)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return {"name": "imagefolder", "root": root}, str(root / "b" / "broken.png")


def _bad_truncated_jpeg(tmp_path):
    root = _two_classes(tmp_path)
    write_image(root / "a" / "cut.jpg", 0, size=64, fmt="JPEG")
    data = (root / "a" / "cut.jpg").read_bytes()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return {"name": "imagefolder", "root": root}, str(root / "a" / "cut.jpg")


def _bad_one_class(tmp_path):
    write_folder(tmp_path / "imgs", {"only": 5})
    return {"name": "imagefolder", "root": tmp_path / "imgs"}, "need at least 2"


def _bad_val_empties_a_class(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 5, "b": 1})
    write_folder(tmp_path / "test", {"a": 1, "b": 1})
    cfg = {"name": "imagefolder", "root": tmp_path / "imgs", "test_root": tmp_path / "test"}
    return cfg, "would leave class 'b' with no training images"


def _bad_empty_val(tmp_path):
    return {"name": "imagefolder", "root": _two_classes(tmp_path), "val_fraction": 0.01}, "split is empty"


def _bad_test_class(tmp_path):
    root = _two_classes(tmp_path)
    write_folder(tmp_path / "test", {"a": 1, "zebra": 1})
    return {"name": "imagefolder", "root": root, "test_root": tmp_path / "test"}, "zebra"


def _bad_class_name(tmp_path):
    return {
        "name": "imagefolder",
        "root": _two_classes(tmp_path),
        "classes": ["a", "zebra"],
    }, "no class 'zebra'"


def _bad_corrupt_pickle(tmp_path):
    write_cifar_pickles(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    return {"name": "cifar10", "root": tmp_path / "c10"}, str(tmp_path / "c10" / "data_batch_3")


def _bad_code_in_pickle(tmp_path):
    write_cifar_pickles(tmp_path / "c10")
    (tmp_path / "c10" / "test_batch").write_bytes(pickle.dumps({"data": print}))
    return {"name": "cifar10", "root": tmp_path / "c10"}, "refusing to load builtins.print"


def _bad_missing_pickle(tmp_path):
    write_cifar_pickles(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_5").unlink()
    return {"name": "cifar10", "root": tmp_path / "c10"}, str(tmp_path / "c10" / "data_batch_5")


def _bad_cifar_no_test(tmp_path):
    write_folder(tmp_path / "c10" / "train", {"a": 2, "b": 2})
    return {"name": "cifar10", "root": tmp_path / "c10"}, "no test/"


def _bad_cifar_nothing(tmp_path):
    (tmp_path / "c10").mkdir()
    return {"name": "cifar10", "root": tmp_path / "c10"}, f"no CIFAR-10 in {tmp_path / 'c10'}"


def _bad_root_missing(tmp_path):
    return {"name": "imagefolder", "root": tmp_path / "nowhere"}, f"{tmp_path / 'nowhere'} does not exist"


def _bad_root_is_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return {"name": "imagefolder", "root": tmp_path / "file"}, "is not a directory"


BAD = {
    "unknown name": lambda p: ({"name": "mnist"}, "unknown dataset 'mnist'"),
    "cifar10 root unset": lambda p: ({"name": "cifar10"}, "data.root is not set"),
    "imagefolder root unset": lambda p: ({"name": "imagefolder"}, "data.root is not set"),
    "root missing": _bad_root_missing,
    "root is a file": _bad_root_is_file,
    "empty class folder": _bad_empty_class,
    "corrupt image": _bad_corrupt_image,
    "truncated jpeg": _bad_truncated_jpeg,
    "one class": _bad_one_class,
    "val empties a class": _bad_val_empties_a_class,
    "empty val split": _bad_empty_val,
    "test class unknown": _bad_test_class,
    "max_train below classes": lambda p: (
        {"name": "digits", "max_train": 5},
        "max_train=5 is fewer than the 10",
    ),
    "max_train zero": lambda p: ({"name": "digits", "max_train": 0}, "data.max_train must be"),
    "val_fraction one": lambda p: (
        {"name": "digits", "val_fraction": 1.0},
        "data.val_fraction must be in [0, 1)",
    ),
    "image_size zero": lambda p: ({"name": "digits", "image_size": 0}, "data.image_size must be"),
    "negative seed": lambda p: ({"name": "digits", "split_seed": -1}, "data.split_seed must be"),
    "class index out of range": lambda p: (
        {"name": "digits", "classes": [3, 10]},
        "class index 10 is out of range: digits has 10 classes",
    ),
    "class subset empty": lambda p: ({"name": "digits", "classes": []}, "data.classes is empty"),
    "class subset of one": lambda p: ({"name": "digits", "classes": [4]}, "at least 2 classes"),
    "class named twice": lambda p: ({"name": "digits", "classes": [4, 4]}, "names 4 twice"),
    "class unknown by name": _bad_class_name,
    "class index negative": lambda p: ({"name": "digits", "classes": [1, -1]}, "class index (an int >= 0)"),
    "corrupt pickle": _bad_corrupt_pickle,
    "code in pickle": _bad_code_in_pickle,
    "missing pickle": _bad_missing_pickle,
    "cifar10 train without test": _bad_cifar_no_test,
    "cifar10 nothing there": _bad_cifar_nothing,
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_data_is_one_clear_line(tmp_path, case):
    values, expected = BAD[case](tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(make_cfg(tmp_path, **values))
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_missing_mandatory_values_and_error_types(tmp_path):
    cfg = OmegaConf.create({"name": "cifar10", "root": "???"})  # as conf/data/cifar10.yaml leaves it
    with pytest.raises(DataError, match=r"data\.root is not set"):
        load_dataset(cfg)
    with pytest.raises(DataError, match=r"data\.name is not set"):
        load_dataset(OmegaConf.structured(DataConfig))
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


# ---- download -----------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """(folder, base url): files written into folder are served on 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def make_archive(path: Path, source: Path, extra: dict[str, bytes] | None = None) -> str:
    """A .tar.gz of `source` as `cifar-10-batches-py/`, plus raw `extra` members; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download(tmp_path, http_dir):
    served, base = http_dir
    write_cifar_pickles(tmp_path / "staging", per_batch=10)
    md5 = make_archive(served / "c10.tar.gz", tmp_path / "staging")
    root = tmp_path / "new" / "c10"  # does not exist yet
    cfg = make_cfg(tmp_path, name="cifar10", root=root, download=True, url=f"{base}/c10.tar.gz", md5=md5)
    data = load_dataset(cfg)
    assert len(data.train) + len(data.val) == 50 and len(data.test) == 10
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # no temp files left
    (served / "c10.tar.gz").unlink()
    assert load_dataset(cfg).fingerprint == data.fingerprint  # present now: no second download


def test_download_wrong_md5(tmp_path, http_dir):
    served, base = http_dir
    write_cifar_pickles(tmp_path / "staging")
    make_archive(served / "c10.tar.gz", tmp_path / "staging")
    root = tmp_path / "c10"
    cfg = make_cfg(tmp_path, name="cifar10", root=root, download=True, url=f"{base}/c10.tar.gz", md5="0" * 32)
    with pytest.raises(DataError, match="md5 mismatch") as err:
        load_dataset(cfg)
    assert base in str(err.value)
    assert list(root.iterdir()) == []  # nothing half-done where the loader would look


def test_download_rejects_path_traversal(tmp_path, http_dir):
    served, base = http_dir
    write_cifar_pickles(tmp_path / "staging")
    md5 = make_archive(served / "evil.tar.gz", tmp_path / "staging", {"../../escaped.txt": b"gotcha"})
    cfg = make_cfg(
        tmp_path, name="cifar10", root=tmp_path / "c10", download=True, url=f"{base}/evil.tar.gz", md5=md5
    )
    with pytest.raises(DataError, match="outside its folder"):
        load_dataset(cfg)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert list((tmp_path / "c10").iterdir()) == []


def test_download_unreachable(tmp_path, http_dir):
    _, base = http_dir
    cfg = make_cfg(
        tmp_path, name="cifar10", root=tmp_path / "c10", download=True, url=f"{base}/absent.tar.gz"
    )
    with pytest.raises(DataError, match="cannot download"):
        load_dataset(cfg)


# ---- real CIFAR-10 ------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason=f"no CIFAR-10 at {REAL_CIFAR10}")
def test_real_cifar10_slice(tmp_path):
    """A few real images per class in the ImageFolder layout: decoded as Pillow decodes them."""
    for split, n in (("train", 3), ("test", 1)):
        for c in CIFAR_CLASSES:
            files = sorted((REAL_CIFAR10 / split / c).iterdir())[:n]
            (tmp_path / "c10" / split / c).mkdir(parents=True)
            for f in files:
                shutil.copy(f, tmp_path / "c10" / split / c / f.name)
    data = load_dataset(make_cfg(tmp_path, name="cifar10", root=tmp_path / "c10", val_fraction=0.34))
    assert data.classes == CIFAR_CLASSES and data.num_classes == 10
    assert len(data.train) == 20 and len(data.val) == 10 and len(data.test) == 10
    first = sorted((tmp_path / "c10" / "test" / "airplane").iterdir())[0]
    expected = np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(data.test.x[0], expected) and data.test.y[0] == 0
    assert 20 < data.train.x.mean() < 235  # real photographs, not blank
