"""What both studies (`effnas study scaling`, `effnas study search`) share below them: the split
every arm is judged on, and their trial table, one row per (architecture, budget, seed) trained
for `budget` epochs, keyed by its id.

`StudyTrials` specialises `training.trial_table.TrialTable`: each end fills its row (the accuracy on
the split the study judges on, the validation accuracy beside it), keeps the trial's per-image
record of that split (`foundation.per_image`, from which the verdicts are computed) and rewrites
the study's table. A study adds its columns and its trial-log entries.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from foundation import per_image
from foundation.errors import UserError
from training.trial_table import TrialTable, error_of, read_table, restore

EVAL_SPLITS = ("auto", "test", "val")
KEPT = ("accuracy", "val_accuracy", "images_per_s", "seconds", "status", "error")  # restored on --resume


def check_eval_split(cfg: Any) -> None:
    """`eval_split` is one of EVAL_SPLITS, and `test` only where the data will have a test split
    (checked from the config, before a run directory exists)."""
    from training.data import has_test_split

    if cfg.eval_split not in EVAL_SPLITS:
        raise UserError(f"eval_split must be one of {', '.join(EVAL_SPLITS)}, got {cfg.eval_split!r}")
    if cfg.eval_split == "test" and not has_test_split(cfg.data):
        raise UserError(
            f"eval_split=test but dataset {cfg.data.name} has no test split "
            "(set data.test_fraction above 0, or data.test_root)"
        )


def evaluation_split(cfg: Any, data: Any) -> tuple[str, int]:
    """(split, images) every arm is judged on: `test` (the data's test split: CIFAR-10's 10,000
    images resolve about a 1.4-point difference between two models at 50%, paired less) when
    `eval_split` is test, or auto and the data have one; else the validation hold-out."""
    want = str(cfg.get("eval_split") or "auto")
    if want == "test" and data.test is None:
        raise UserError(f"eval_split=test but dataset {data.name} has no test split")
    split = "test" if want == "test" or (want == "auto" and data.test is not None) else "val"
    return split, len((data.test if split == "test" else data.val).y)


def read_previous(path: Any) -> dict[Any, dict[str, Any]]:
    """An earlier attempt's study.csv rows by id (for --resume)."""
    return read_table(path, lambda r: str(r["id"]), "study table")


def resume_rows(rundir: Any, rows: Sequence[dict[str, Any]], resuming: bool) -> bool:
    """On --resume, the finished rows of the earlier attempt's study.csv back into the planned
    `rows` (only the rest trains); whether there was an earlier table (the console then says how
    much is done)."""
    previous = read_previous(rundir.file("study.csv")) if resuming else {}
    restore(rows, previous, lambda r: r["id"], KEPT)
    return bool(previous)


def stop_interrupted(rundir: Any, kind: str, pending: int, summary: Mapping[str, Any]) -> NoReturn:
    """A study the executor left with `pending` trials (Ctrl-C): `summary` (what finished, summarised
    all the same, `complete: false`) becomes summary.json, the console says how to continue, and
    the interrupt goes on up."""
    rundir.write_json("summary.json", dict(summary))
    print(
        f"study: interrupted with {pending} trial(s) pending; continue with "
        f"`effnas study {kind} --resume {rundir.path}`",
        file=sys.stderr,
    )
    raise KeyboardInterrupt


class StudyTrials(TrialTable):
    """A study's rows as a `TrialTable`; every end rewrites study.csv and keeps the trial's
    per-image record of the split the study judges on. A study sets `columns`, `logged` and `entry_params`."""

    name = "study"
    file = "study.csv"

    def __init__(self, rows: list[dict[str, Any]], rundir: Any, log: Any = None, test: bool = False) -> None:
        super().__init__(rows, rundir, log=log)
        self.test = test  # judge on the test split (its accuracy and per-image record) instead of val

    def config(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": row["id"].replace("/", "_").replace("@", "_"),
            "arch": row["_arch"],
            "resolution": row["proxy_resolution"],
            "seed": row["seed"],
            "epochs": row["budget"],
            "test": self.test,
        }

    def record(self, row: dict[str, Any], result: dict[str, Any], error: str | bool) -> None:
        measure, record = ("test_accuracy", "test_correct") if self.test else ("accuracy", "correct")
        ok = not error and result.get("status") == "ok" and result.get(measure) is not None
        per_image.save(self.rundir.path, row["id"], result.get(record) if ok else None)
        row.update(
            status="ok" if ok else "failed",
            accuracy=result.get(measure) if ok else None,
            val_accuracy=result.get("accuracy") if ok else None,
            images_per_s=round(float(result.get("images_per_second") or 0), 1) if ok else None,
            seconds=round(float(result["seconds"]), 1) if result.get("seconds") is not None else None,
            error=None if ok else error_of(result, error),
        )

    def line(self, row: dict[str, Any]) -> str:
        acc = f"acc {row['accuracy']:.4f}" if row["status"] == "ok" else f"FAILED {row['error']}"
        return (
            f"{row['id']:<34} MACs x{row['macs_ratio']:<6g} "
            f"res {row['proxy_resolution']:<4} {acc}  {row['seconds']}s"
        )
