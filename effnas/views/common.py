"""What every section of `effnas report` shares: a run directory read whole through its files
(manifest.json, summary.json, .hydra/config.yaml and the tables and YAML files the stage names in
its own `TABLES`/`DOCUMENTS`), Markdown tables, the provenance line under each table, and the
figures saved into the report's run directory. Every input is read and checked before the report's
run directory exists, so a bad input writes nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError
from foundation.figures import close
from foundation.runfiles import Run, check_table, read_json, stage_of
from foundation.tables import count, fixed, flops

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["count", "fixed", "flops"]  # the cell formats, shared with the stages' console tables


def stage_files() -> dict[str, tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], tuple[str, ...]]]:
    """stage -> (its tables: name -> (required columns, of which numeric); its YAML files), as each
    stage declares them beside the code that writes them."""
    from deploy import latency
    from models import train
    from nas import records, search_study
    from scaling import grid, scaler, study

    return {
        "search": (records.TABLES, ()),
        "grid": (grid.TABLES, grid.DOCUMENTS),
        "scale": (scaler.TABLES, ()),
        "study": (study.TABLES, ()),
        "search study": (search_study.TABLES, ()),  # `effnas study search`: a study run of kind search
        "train": (train.TABLES, ()),
        "latency": (latency.TABLES, ()),  # a table's or a learned predictor's check (predictor.csv)
    }


# -- reading run directories --------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UserError(f"{path.parent}: no {path.name} (unfinished run?)")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: corrupt YAML: {_first_line(exc)}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping, got {type(doc).__name__}")
    return doc


def read_table(path: Path, required: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    """A run's CSV table, with its required columns present and numeric where they must be."""
    import pandas as pd

    if not path.is_file():
        raise UserError(f"{path.parent}: no {path.name} (unfinished run?)")
    check_table(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise UserError(f"{path}: unreadable CSV: {_first_line(exc)}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (corrupt, or another stage's table?)"
        )
    for column in numeric:
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError):
            raise UserError(f"{path}: column {column!r} holds non-numbers (corrupt?)") from None
    return frame


def load_run(text: str) -> Run:
    """Run directory `text` with every file the report needs from it, or a UserError naming it."""
    path = Path(text)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist")
    stage = stage_of(path)
    if stage is None:
        raise UserError(f"{path}: not an effnas run directory (no readable manifest.json with a stage)")
    files = stage_files()
    if stage not in files:
        stages = ", ".join(s for s in files if s != "search study")  # that one is a kind of study run
        raise UserError(f"{path}: a {stage} run; effnas report reads {stages} runs")
    config = _read_yaml(path / ".hydra" / "config.yaml")
    if stage == "study" and config.get("kind") == "search":
        stage = "search study"
    manifest = read_json(path / "manifest.json")
    if not (path / "summary.json").is_file():
        status = manifest.get("status", "?")
        raise UserError(f"{path}: no summary.json (the {stage} run's status is {status}; unfinished?)")
    summary = read_json(path / "summary.json")
    if not isinstance(summary, dict):
        raise UserError(f"{path / 'summary.json'}: expected a JSON object, got {type(summary).__name__}")
    tables_of, documents = files[stage]
    if stage == "latency" and not (path / "predictor.csv").is_file():
        raise UserError(
            f"{path}: a latency run without a predictor check; effnas report reads --build-table "
            "(evaluate > 0) and --fit-predictor runs"
        )
    tables = {
        name: read_table(path / name, required, numeric) for name, (required, numeric) in tables_of.items()
    }
    docs = {name: _read_yaml(path / name) for name in documents}
    return Run(path, stage, manifest, summary, config, tables, docs)


def load_runs(paths: Sequence[str]) -> list[Run]:
    """Every run (each directory once, in the order given), labelled by stage and ordinal."""
    if not paths:
        raise UserError("no run directories given: effnas report --runs RUN_DIR [RUN_DIR ...]")
    seen: set[Path] = set()
    runs: list[Run] = []
    for text in paths:
        run = load_run(str(text))
        if run.path.resolve() not in seen:
            seen.add(run.path.resolve())
            runs.append(run)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.stage] = counts.get(run.stage, 0) + 1
        run.label = f"{run.stage.replace(' ', '_')}{counts[run.stage]}"
    return runs


# -- cells and provenance -----------------------------------------------------------------------
def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def plain(v: Any) -> str:
    if _missing(v):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def mean_std(mean: Any, std: Any, n: Any = None) -> str:
    if _missing(mean):
        return "-"
    text = f"{mean:.4f}" + ("" if _missing(std) else f" ± {std:.4f}")
    return text + ("" if n is None else f" (n={int(n)})")


def table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
    """`frame` as a Markdown table, each column through its formatter (numbers as the paper prints
    them: counts with separators, MACs with a unit); tabulate does the layout."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    formats = formats or {}
    shown = frame.copy()
    for column in shown.columns:
        shown[column] = [formats.get(column, plain)(v) for v in shown[column]]
    numeric = [is_numeric_dtype(frame[c]) and not is_bool_dtype(frame[c]) for c in frame.columns]
    align = ["right" if n else "left" for n in numeric]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def dataset_of(run: Run) -> str:
    data = run.manifest.get("dataset")
    if not data:
        return "none (this stage trains nothing)"
    sizes = "/".join(str(data.get(k, "?")) for k in ("train", "val", "test"))
    return f"{data.get('name')} ({str(data.get('fingerprint') or '?')[:8]}, train/val/test {sizes})"


def budget_of(run: Run) -> str:
    """The proxy budget from the run's config: images or epochs, at its resolution and batch."""
    proxy = run.config.get("proxy")
    if not isinstance(proxy, dict):
        return "none (this stage trains nothing)"
    amount = f"{int(proxy['images'])} images" if proxy.get("images") else f"{proxy.get('epochs', 0):g} epochs"
    return amount + recipe(proxy)


def recipe(proxy: Mapping[str, Any]) -> str:
    """` at 16 px, batch 32`: the parts of the proxy recipe the config gives."""
    parts = [f"{proxy['resolution']} px" if proxy.get("resolution") else ""]
    parts.append(f"batch {proxy['batch_size']}" if proxy.get("batch_size") else "")
    given = ", ".join(p for p in parts if p)
    return f" at {given}" if given else ""


def source_line(run: Run, budget: str | None = None) -> str:
    """The line under every table: which run, which data, which budget."""
    status = run.manifest.get("status", "?")
    return (
        f"*Source: `{run.path}` ({run.stage} run, {status}) · data: {dataset_of(run)} · "
        f"proxy budget: {budget or budget_of(run)}*"
    )


class Figures:
    """Saves figures into the report's run directory; returns the Markdown that shows each."""

    def __init__(self, rundir: Any) -> None:
        self.rundir = rundir
        self.names: list[str] = []

    def save(self, name: str, fig: Any, caption: str) -> str:
        self.rundir.save_figure(name, fig)
        close(fig)
        self.names.append(name)
        return f"![{caption}]({name})"
