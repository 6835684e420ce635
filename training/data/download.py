"""Fetching the official CIFAR-10 archive: download, md5 check, safe extraction, all atomic.

The archive goes to a temp file beside its destination and is extracted into a temp directory;
only a verified, fully extracted `cifar-10-batches-py/` is renamed into place, so an interrupted or
concurrent download never leaves a half-written dataset where the loader would find it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from training.data.dataset import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the same page
FOLDER = "cifar-10-batches-py"


def _fetch(url: str, dest: Path) -> str:
    """Stream `url` into `dest`; return the md5 of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    start = last = time.monotonic()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(1 << 20):
                f.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    of = f"/{total >> 20}" if total else ""
                    print(
                        f"effnas.data: downloaded {done >> 20}{of} MiB from {url}",
                        file=sys.stderr,
                        flush=True,
                    )
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    if last > start:
        print(
            f"effnas.data: downloaded {done >> 20} MiB in {time.monotonic() - start:.0f} s", file=sys.stderr
        )
    return md5.hexdigest()


def _safe_extract(archive: Path, dest: Path, url: str) -> None:
    """Extract only plain files and folders that stay inside `dest` (no '..', absolute paths, links)."""
    inside = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (inside / m.name).resolve()
                if os.path.isabs(m.name) or ".." in Path(m.name).parts or not target.is_relative_to(inside):
                    raise DataError(f"archive from {url} has a member outside its folder: {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"archive from {url} has a link or special file: {m.name!r}")
            # the stdlib's own 'data' filter where it exists (3.11.4+), on top of the checks above
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **safe)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot extract archive from {url}: {e}") from None


def download_cifar10(root: Path, url: Optional[str] = None, md5: Optional[str] = None) -> Path:
    """`root/cifar-10-batches-py`, downloaded and extracted first if absent.

    The md5 is checked against `md5`, else the official digest when `url` is the official one; a
    custom `url` without an `md5` is used unchecked (a warning says so).
    """
    target = root / FOLDER
    if (target / "test_batch").is_file():
        return target
    url = url or CIFAR10_URL
    expected = md5 or (CIFAR10_MD5 if url == CIFAR10_URL else None)
    if expected is None:
        print(f"effnas.data: warning: no data.md5 given, {url} is not verified", file=sys.stderr)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data.root {root}: {e.strerror}") from None
    fd, name = tempfile.mkstemp(dir=root, prefix=".cifar-10-python.", suffix=".tar.gz.part")
    os.close(fd)
    archive = Path(name)
    extract_dir = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-10-extract."))
    try:
        got = _fetch(url, archive)
        if expected is not None and got != expected.lower():
            raise DataError(f"md5 mismatch for {url}: expected {expected}, got {got} (data.md5)")
        _safe_extract(archive, extract_dir, url)
        extracted = extract_dir / FOLDER
        if not extracted.is_dir():
            raise DataError(f"archive from {url} has no {FOLDER}/ folder")
        try:
            os.rename(extracted, target)
        except OSError:
            if not (target / "test_batch").is_file():  # not a concurrent download that finished first
                raise DataError(f"cannot move the extracted CIFAR-10 into {target}") from None
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(extract_dir, ignore_errors=True)
    return target
