"""The on-disk store (`data.storage=disk`, training/data/store.py): the same splits, pixels and
fingerprint as the resident path; never a partial store; a changed source named and replaced;
a full disk one clear line; `auto` picking disk when memory is short; training from it."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import expect_usage_error
from PIL import Image

from effnas.cli import main
from training.data import DataError, load_dataset, store


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(30):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


def config(root: Path, cache: Path, storage: str) -> SimpleNamespace:
    return SimpleNamespace(
        name="imagefolder", root=str(root), image_size=16, val_fraction=0.1, test_fraction=0.2,
        split_seed=0, max_train=None, cache_dir=str(cache), storage=storage,
    )  # fmt: skip


def test_disk_store_gives_the_resident_splits(folder: Path, tmp_path: Path) -> None:
    resident = load_dataset(config(folder, tmp_path / "a", "memory"))
    disk = load_dataset(config(folder, tmp_path / "b", "disk"))
    again = load_dataset(config(folder, tmp_path / "b", "disk"))  # read back, not decoded again
    assert isinstance(disk.train.x, store.ImageStore) and isinstance(disk.train.x, np.memmap)
    assert resident.fingerprint == disk.fingerprint == again.fingerprint
    for split in ("train", "val", "test"):
        a, b = getattr(resident, split), getattr(disk, split)
        assert np.array_equal(a.x, np.asarray(b.x)) and np.array_equal(a.y, b.y), split
    # the recorded channel statistics are what numpy computes on the resident array
    for stat in ("mean", "std"):
        want = getattr(resident.train.x, stat)(axis=(0, 2, 3), dtype="float64")
        assert np.allclose(getattr(disk.train.x, stat)(axis=(0, 2, 3), dtype="float64"), want, rtol=1e-12)
    # the resident path reads the store's entry as its cache: decoded once for both
    assert load_dataset(config(folder, tmp_path / "b", "memory")).fingerprint == disk.fingerprint


def test_a_failed_write_leaves_no_store(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHUNK", 16)
    calls = {"n": 0}
    real = store.build_store

    def decode_then_die(paths: list[str], size: int) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the disk fills mid-write
        return np.zeros((len(paths), 3, size, size), np.uint8)

    def build(root, entry, source, files, size, decode):  # type: ignore[no-untyped-def]
        return real(root, entry, source, files, size, decode_then_die)

    monkeypatch.setattr(store, "build_store", build)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as exc:
        load_dataset(config(folder, cache, "disk"))
    assert "No space left on device" in str(exc.value) and "nothing partial was kept" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert list(cache.iterdir()) == []  # neither an entry nor a temp directory
    monkeypatch.setattr(store, "build_store", real)
    assert len(load_dataset(config(folder, cache, "disk")).train) > 0  # the next run decodes it whole


def test_a_temp_directory_of_a_killed_writer_is_never_read(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_dataset(config(folder, cache, "disk"))
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    # what a writer killed half-way leaves: a temp directory next to the entry, never the entry
    (cache / f".{entry.name}.dead").mkdir()
    (cache / f".{entry.name}.dead" / "train_x.npy").write_bytes(b"partial")
    assert load_dataset(config(folder, cache, "disk")).fingerprint == first.fingerprint


def test_a_changed_source_is_named_and_decoded_again(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    root = Path(shutil.copytree(folder, tmp_path / "images"))
    cache = tmp_path / "cache"
    before = load_dataset(config(root, cache, "disk"))
    (old,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    capsys.readouterr()
    image = root / "c0" / "0.png"
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(image)  # edited since it was decoded
    other_size = config(root, cache, "disk")
    other_size.image_size = 8
    load_dataset(other_size)  # decoded at another size: another store, the first one kept
    assert old.exists() and "before its files changed" not in capsys.readouterr().err
    after = load_dataset(config(root, cache, "disk"))
    err = capsys.readouterr().err
    assert f"the store {old} was decoded from {root} before its files changed" in err
    assert not old.exists() and before.fingerprint != after.fingerprint
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # 16 px (new) and 8 px


def test_auto_picks_disk_when_memory_is_short(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not isinstance(load_dataset(config(folder, tmp_path, "auto")).train.x, store.ImageStore)
    monkeypatch.setattr(store, "available_memory", lambda: 1_000_000)  # 1 MB free
    assert isinstance(load_dataset(config(folder, tmp_path, "auto")).train.x, store.ImageStore)
    digits = SimpleNamespace(name="digits", image_size=16, cache_dir=str(tmp_path), storage="auto")
    assert not isinstance(load_dataset(digits).train.x, store.ImageStore)  # digits: unchanged


# the paper recipe's crop keeps images at resolution / 0.875: 16 px trained from an 18 px store
RECIPE = ["data.image_size=18", "proxy.crop=random_resized", "proxy.augment_policy=autoaugment"]


@pytest.mark.parametrize("recipe", [["data.image_size=16"], RECIPE], ids=["pad-crop", "random-resized"])
def test_training_from_the_store_matches_the_resident_run(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: list[str]
) -> None:
    common = ["data=imagefolder", f"data.root={folder}", "proxy.resolution=16", *recipe]
    common += ["proxy.epochs=1", "proxy.batch_size=16", "proxy.compile=off", "run.threads=1"]
    runs = {}
    for storage in ("memory", "disk"):
        runs[storage] = tmp_path / storage
        assert main(["train", *common, f"data.storage={storage}", f"run.dir={runs[storage]}"]) == 0
    a, b = (torch.load(runs[s] / "model.pt", weights_only=True) for s in ("memory", "disk"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.storage=tape"], "data.storage must be one of auto, memory, disk, got 'tape'"),
        (["data.storage=disk"], "data.storage=disk needs image files"),
        (
            ["data=imagefolder", "data.root={folder}", "data.storage=disk", "data.image_size=64"],
            "data.storage=disk stores images at data.image_size=64 but the trainer keeps them at "
            "proxy.resolution=32: it would resize every batch it reads; set data.image_size=32",
        ),
        (
            ["data=imagefolder", "data.root={folder}", "data.storage=disk", "proxy.crop=random_resized"],
            "data.image_size=32 but the trainer keeps them at proxy.resolution=32 / proxy.crop_fraction=0.875 "
            "(the random-resized crop) = 37",
        ),
    ],
)
def test_bad_storage_is_one_line(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    args = [a.format(folder=folder) for a in args]
    err = expect_usage_error(["train", *args, "proxy.epochs=1", f"run.root={tmp_path}"], capsys)
    assert message in err
    assert not (tmp_path / "train").exists()


def test_a_source_test_split_is_read_from_the_store_itself(folder: Path, tmp_path: Path) -> None:
    cfgs = [config(folder, tmp_path / s, s) for s in ("memory", "disk")]
    for c in cfgs:
        c.test_root = str(folder)  # a separate test tree: the source's own test split
    resident, disk = (load_dataset(c) for c in cfgs)
    assert resident.fingerprint == disk.fingerprint and resident.test is not None and disk.test is not None
    assert np.array_equal(resident.test.x, np.asarray(disk.test.x))
    assert np.array_equal(resident.test.y, disk.test.y)
    assert not list((tmp_path / "disk").glob("*/splits-*/test_x.npy"))  # not copied


@pytest.mark.parametrize("own_test", [True, False], ids=["test-root", "test-hold-out"])
def test_a_class_subset_from_the_store_is_the_resident_one(
    folder: Path, tmp_path: Path, own_test: bool
) -> None:
    """`data.classes` on the store: the same images and 0..k-1 labels as the resident path, the
    source's own test split copied for the chosen classes only."""
    cfgs = [config(folder, tmp_path / s, s) for s in ("memory", "disk")]
    for c in cfgs:
        c.classes = ["c2", 0]
        c.test_root = str(folder) if own_test else None
    resident, disk = (load_dataset(c) for c in cfgs)
    assert resident.fingerprint == disk.fingerprint
    assert resident.classes == disk.classes == ("c2", "c0") and disk.num_classes == 2
    for split in ("train", "val", "test"):
        a, b = getattr(resident, split), getattr(disk, split)
        assert isinstance(b.x, store.ImageStore), split
        assert np.array_equal(a.x, np.asarray(b.x)) and np.array_equal(a.y, b.y), split
        assert sorted(set(b.y.tolist())) == [0, 1], split
    assert len(disk.test) == (60 if own_test else 12)  # both classes' 30 images, or 20% of 60
