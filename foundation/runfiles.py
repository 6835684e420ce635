"""Run-directory files: atomic writes, JSON, and reading another stage's run directory.

The file contract every stage shares (DESIGN.md, "Contracts"): anything written is written
atomically, and an upstream run is read only after checking that it is one. The run lifecycle
(creating a run directory, its manifest and summary) is the application's: `effnas.rundir`.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write via a temp file in the same directory and rename: readers never see half a file.

    The temp file is `.<name>.<pid>.<random>.tmp`, fsynced before the rename (`os.replace` is
    atomic on POSIX): a writer killed at any moment leaves `path` whole, old or new, and at
    most its own temp file, which the next write of `path` deletes once its pid is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of `path` left by writers that died (pid no longer running here)."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupt JSON in {path}: {exc}") from None


def check_table(path: str | os.PathLike[str]) -> None:
    """A CSV table a stage wrote, checked whole before it is read: every row has the header's
    number of fields and the file ends with a line end. Tables are written atomically, so a
    table failing this was cut short or edited; pandas would read it quietly, a short row
    padded with empty cells."""
    import csv
    import io

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"missing file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable: {exc}") from None
    if not text:
        return
    if not text.endswith("\n"):
        raise UserError(f"{path}: truncated, its last line is cut off (restore it or start a new run)")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise UserError(f"{path}: corrupt: {exc}") from None
    width = len(rows[0])
    for n, row in enumerate(rows[1:], 1):
        if len(row) != width:
            raise UserError(
                f"{path}: row {n} has {len(row)} fields, its header {width}: truncated or edited "
                "(restore it or start a new run)"
            )


def stage_of(path: str | os.PathLike[str]) -> str | None:
    """The stage that wrote run directory `path`, or None if it is not a run directory."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("stage")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def require_run(path: str | os.PathLike[str], stage: str, flag: str) -> Path:
    """`path` as a run directory of `stage`, or a UserError naming the flag that gave it."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{flag} {p}: no such directory")
    found = stage_of(p)
    if found != stage:
        what = f"a {found} run" if found else "not an effnas run directory"
        raise UserError(f"{flag} {p}: {what}, expected a {stage} run")
    return p


def upstream_run(path: str | os.PathLike[str], stage: str, needs: str) -> Path:
    """Validate `--from PATH`: a finished `stage` run directory holding file `needs`."""
    p = require_run(path, stage, "--from")
    if not (p / needs).is_file():
        raise UserError(f"--from {p}: the {stage} run has no {needs} (unfinished?)")
    return p


@dataclass
class Run:
    """A run directory read as data: its stage, manifest, summary, recorded config and tables.

    `effnas.load_run` fills it with every table it finds; the report's reader (effnas.views)
    with the tables and YAML documents the stage declares, checked."""

    path: Path
    stage: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    config: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # "trials.csv" -> its DataFrame
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # YAML files (coefficients.yaml)
    label: str = ""  # search1, grid2, ...: names its figures in a report
