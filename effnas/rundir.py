"""Run directories: where every stage writes, atomically, with its manifest and summary (the
run lifecycle; the file helpers underneath are `foundation.runfiles`).

A run directory holds `.hydra/` (Hydra's config.yaml, hydra.yaml, overrides.yaml),
`manifest.json` (versions, git state, seed, threads, device, dataset fingerprint, upstream runs),
`summary.json` (the stage's headline result) and the stage's own tables and files.

One process at a time: a run directory is locked while a stage writes it (`RunLock`, an OS lock
on `.effnas.lock` that the kernel drops when the holder dies, so a kill -9 never leaves it
stuck); a second `effnas ... --resume RUN` is refused with the holder's pid and host.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundation.errors import UserError
from foundation.runfiles import atomic_write, read_json, require_run, write_json

LOCK_NAME = ".effnas.lock"
LIBRARIES = ("torch", "ray", "optuna", "fvcore", "pandas", "hydra-core", "numpy", "scikit-learn")
REPO_DIR = Path(__file__).resolve().parent.parent


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the effnas checkout (None outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("effnas", *LIBRARIES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunLock:
    """An exclusive `flock` on `<run>/.effnas.lock`, held from `acquire` until `release` or the
    holder's death: the kernel drops a dead process's flock, so a crash or kill -9 never leaves
    a run locked. The file names the holder (pid, host, command) for the refusal message; a clean
    release deletes it. flock works across hosts on a local disk and NFSv4 (Linux), not on every
    network file system."""

    def __init__(self, run: Path, fd: int) -> None:
        self.path = run / LOCK_NAME
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run: str | os.PathLike[str], argv: list[str] | None = None) -> RunLock:
        """Lock run directory `run` or raise a UserError naming the process that holds it."""
        path = Path(run) / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise UserError(
                    f"run directory {Path(run)} is in use by another effnas process ({holder}); "
                    "wait for it to end or stop it, then retry"
                ) from None
            # A releaser unlinks the file while still holding it: a lock won on an unlinked
            # file locks nothing, so start again on the path's current file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "since": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": argv if argv is not None else sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return cls(Path(run), fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Delete the lock file, then drop the lock (in that order: see `acquire`)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # a RunDir dropped without `release` (a test, a notebook)
        self.release()


def _holder(fd: int) -> str:
    """Who holds a lock, from its file (best effort: the holder may be writing it right now)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    command = " ".join(str(a) for a in info.get("command") or [])
    return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}" + (
        f": {command}" if command else ""
    )


class RunDir:
    """One stage run's directory. Stages write through it; nothing is written non-atomically.
    `create` and `open` lock it for this process (`RunLock`) until `release`."""

    def __init__(self, path: str | os.PathLike[str], stage: str, lock: RunLock | None = None) -> None:
        self.path = Path(path)
        self.stage = stage
        self.manifest: dict[str, Any] = {}
        self.lock = lock
        self._t0 = time.time()

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str], stage: str, explicit: str | None = None) -> RunDir:
        """A new, empty `root/<stage>/<timestamp>/` (suffixed if that name exists)."""
        if explicit:
            path = Path(explicit)
            if path.exists() and any(path.iterdir()):
                raise UserError(f"run directory {path} exists and is not empty; pick another run.dir")
        else:
            stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            base = Path(root) / stage / stamp
            path, n = base, 1
            while path.exists():
                path, n = base.with_name(f"{stamp}_{n}"), n + 1
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, stage, RunLock.acquire(path))

    @classmethod
    def open(cls, path: str | os.PathLike[str], stage: str) -> RunDir:
        """An existing run directory of `stage` (for --resume), locked for this process; refuses
        other stages' runs and a run another process holds (before anything is written)."""
        path = require_run(path, stage, "--resume")
        run = cls(path, stage, RunLock.acquire(path))
        run.manifest = read_json(path / "manifest.json")
        return run

    def release(self) -> None:
        """Unlock the run directory (the end of a stage run; a dead process's lock goes by itself)."""
        if self.lock is not None:
            self.lock.release()

    # -- files -------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        atomic_write(self.path / name, text)
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.path / name, obj)
        return self.path / name

    def write_yaml(self, name: str, obj: Any) -> Path:
        import yaml

        return self.write_text(name, yaml.safe_dump(obj, sort_keys=False))

    def write_csv(self, name: str, frame: Any) -> Path:
        """`frame` is a pandas DataFrame or a list of dicts."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(list(frame))
        return self.write_text(name, frame.to_csv(index=False))

    def save_figure(self, name: str, fig: Any) -> Path:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        atomic_write(self.path / name, buf.getvalue())
        return self.path / name

    # -- manifest ------------------------------------------------------------------------------
    def start_manifest(self, cfg: Any, argv: list[str]) -> None:
        run_cfg = getattr(cfg, "run", None)
        self.manifest = {
            "stage": self.stage,
            "status": "running",
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": argv,
            "versions": library_versions(),
            "git": git_state(),
            "seed": getattr(run_cfg, "seed", None),
            "threads": getattr(run_cfg, "threads", None),
            "device": getattr(run_cfg, "device", None),
            "host": {"hostname": platform.node(), "cpus": os.cpu_count(), "platform": sys.platform},
            "dataset": None,
            "upstream": [],
        }
        self.write_json("manifest.json", self.manifest)

    def record(self, **fields: Any) -> None:
        """Add facts to the manifest (e.g. dataset fingerprint, resolved device) and save it."""
        self.manifest.update(fields)
        self.write_json("manifest.json", self.manifest)

    def record_dataset(self, data: Any) -> None:
        """The dataset a stage trained on (an `training.data.Dataset`): name, fingerprint, splits."""
        self.record(
            dataset={
                "name": data.name,
                "fingerprint": data.fingerprint,
                "num_classes": data.num_classes,
                "classes": list(data.classes),
                "image_size": data.image_size,
                "train": len(data.train),
                "val": len(data.val),
                "test": len(data.test) if data.test is not None else 0,
            }
        )

    def record_upstream(self, path: str | os.PathLike[str] | None, stage: str, what: str) -> None:
        """Note an upstream input: a run directory, or (path None) a published default."""
        entry = {"stage": stage, "path": str(Path(path).resolve()) if path else None, "what": what}
        self.manifest.setdefault("upstream", []).append(entry)
        self.write_json("manifest.json", self.manifest)

    def finish(self, summary: Mapping[str, Any], status: str = "done") -> None:
        summary = {"stage": self.stage, "status": status, **summary}
        summary.setdefault("wall_seconds", round(time.time() - self._t0, 3))
        self.write_json("summary.json", summary)
        self.record(status=status, finished=_dt.datetime.now().isoformat(timespec="seconds"))
