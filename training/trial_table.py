"""A trial stage's trials as one table, the skeleton the grid, the scaling study and the search
study share: every planned trial is a row from the start (status `pending`), keyed; the queue is
what is not `ok` yet; the executor's trials in hand are `pending`; every end fills its row,
rewrites the table atomically (and syncs the Optuna trial log) and prints one progress line with
an ETA; `--resume` reads an earlier attempt's table back (`read_table`) and keeps its finished
rows (`restore`), so only what did not finish is trained again.

`run_trials` is a stage's whole trial phase: write the table, train what remains, write it again.

A stage specialises four things: `config` (a row as the trial config an executor runs),
`record` (a trial's end into its row), `line` (the progress line) and `entries` (the rows as the
trial log's entries). The executor sees an ordinary `training.trials.TrialSource`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError

if TYPE_CHECKING:
    from training.trials import Executor


class TrialTable:
    """The planned rows of one stage as a `TrialSource` (module docstring)."""

    name = "trials"  # the stage, in console lines and experiment names
    file = "trials.csv"  # the table in the run directory
    columns: tuple[str, ...] = ()  # its columns, in order (private `_` fields stay out)

    def __init__(self, rows: list[dict[str, Any]], rundir: Any, log: Any = None, out: Any = None) -> None:
        self.rows = rows
        self.by_key = {self.key(r): r for r in rows}
        self.queue = [r for r in rows if r["status"] != "ok"]
        self.total = len(self.queue)
        self.rundir = rundir
        self.log = log  # a training.trial_log.TrialLog: every finished row also goes to the study
        self.out = out  # None: sys.stdout at print time
        self.pending: dict[str, Hashable] = {}  # the executor's trial id -> the row's key
        self.finished = 0
        self.t0 = time.monotonic()

    # -- what a stage specialises -----------------------------------------------------------------
    def key(self, row: Mapping[str, Any]) -> Hashable:
        return row["id"]

    def config(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def record(self, row: dict[str, Any], result: dict[str, Any], error: str | bool) -> None:
        raise NotImplementedError

    def line(self, row: dict[str, Any]) -> str:
        return str(self.key(row))

    def entry_params(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's parameters in the trial log (what the trial log's space describes)."""
        raise NotImplementedError

    def entry_key(self, row: Mapping[str, Any]) -> str:
        return str(row["id"])

    def entry_attrs(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's attributes beyond `logged` (default: the arch's block strings)."""
        return {"arch": " ".join(row["_arch"]["blocks"])}

    logged: tuple[str, ...] = ()  # the columns the trial log keeps as each entry's attributes

    def entries(self) -> list[Any]:
        """The finished rows as the trial log's entries (value: the proxy accuracy)."""
        from training.trial_log import Entry

        return [
            Entry(
                key=self.entry_key(r),
                status=r["status"],
                params=self.entry_params(r),
                value=r["accuracy"],
                attrs={**{k: r.get(k) for k in self.logged}, **self.entry_attrs(r)},
            )
            for r in self.rows
            if r["status"] != "pending"
        ]

    def prepare(self) -> None:
        """Called before every save (derived columns, e.g. the search study's reward)."""

    # -- the TrialSource ----------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        return len(self.queue)

    def save(self) -> None:
        self.prepare()
        self.rundir.write_csv(self.file, [{k: r.get(k) for k in self.columns} for r in self.rows])
        if self.log is not None:
            self.log.sync(self.entries())

    def propose(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue:
            return None
        row = self.queue.pop(0)
        self.pending[trial_id] = self.key(row)
        return self.config(row)

    def complete(self, trial_id: str, result: Mapping[str, Any] | None, error: str | bool = False) -> None:
        key = self.pending.pop(trial_id, None)
        if key is None:
            return
        row = self.by_key[key]
        self.record(row, dict(result or {}), error)
        self.finished += 1
        self.save()
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.finished * (self.total - self.finished)
        print(
            f"[{self.finished}/{self.total}] {self.line(row)}  ETA {eta / 60:.1f} min",
            file=self.out or sys.stdout,
            flush=True,
        )

    # -- the stage's trial phase --------------------------------------------------------------------
    def run_trials(self, execute: Executor, cfg: Any) -> int:
        """Write the table (a resumed run's finished rows too, before anything trains), hand what is
        not `ok` yet to `execute` with the stage config's `TrialSetup`, write it again; returns how
        many rows are still `pending` (the executor returned early: Tune ends `fit()` quietly on
        Ctrl-C)."""
        from training.trials import Scheduling, TrialSetup

        self.save()
        if self.remaining:
            execute(self, TrialSetup.of(cfg), Scheduling())
        self.save()
        return sum(r["status"] == "pending" for r in self.rows)


def error_of(result: Mapping[str, Any], error: str | bool) -> str:
    """Why a trial did not finish: the executor's error, the trial's own, or a crash."""
    if isinstance(error, str) and error:
        return error
    return str(result.get("error") or ("trial crashed" if error else "stopped before it finished"))


def read_table(
    path: Path, key: Callable[[Mapping[str, Any]], Hashable], what: str = "trials table"
) -> dict[Hashable, dict[str, Any]]:
    """An earlier attempt's rows by `key` (for `--resume`); {} when there is none. A table that is
    truncated, not CSV or lacks `id`/`status` is refused in one line."""
    import pandas as pd

    from foundation.runfiles import check_table

    if not path.is_file():
        return {}
    check_table(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
    if "id" not in frame.columns or "status" not in frame.columns:
        raise UserError(f"{path} is not a {what} (no id/status columns)")
    frame = frame.astype(object).where(frame.notna(), None)
    return {key(r): dict(r) for r in frame.to_dict("records")}


def restore(
    rows: Sequence[dict[str, Any]],
    previous: Mapping[Hashable, Mapping[str, Any]],
    key: Callable[[Mapping[str, Any]], Hashable],
    kept: Sequence[str],
) -> int:
    """Copy each finished (`ok`) earlier row's `kept` fields into the planned row of the same key;
    returns how many were restored."""
    n = 0
    for row in rows:
        old = previous.get(key(row))
        if old is not None and old.get("status") == "ok":
            row.update({k: old.get(k) for k in kept})
            n += 1
    return n
