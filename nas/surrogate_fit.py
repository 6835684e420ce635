"""`effnas surrogate fit`: a surrogate of proxy accuracy from really trained architectures.

    effnas surrogate fit results/search/<run> [more runs or tables...] [model=auto] [folds=5]
    effnas surrogate fit benchmarks/data/cifar10_mnasnet_proxy.csv

Sources are search run directories (their `trials.csv`, trained rows only) or tables with at
least the columns `choices` (the space's choice indices, space separated) and `accuracy`; a
table's optional `space` column (`MnasNetSpace.fingerprint`) and a run's recorded space must be
this run's space (`space=` group, default `mnasnet`). Cross-validates every candidate regressor
(`model=auto`) or the one asked for, k-fold with held-out Kendall tau and Spearman rho, refits the
best on every row and writes `surrogate.pkl` (what `effnas search evaluator=surrogate
evaluator.path=...` reads), `cv.csv` (one row per regressor), `predictions.csv` (out of fold),
`predicted_vs_measured.png` and the summary.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from foundation.errors import UserError
from search_spaces.mnasnet import MnasNetSpace, SpaceConfig, SpaceError

KINDS = ("fit",)


@dataclass
class SurrogateFitConfig:
    """Schema of `conf/surrogate.yaml` (`run` is added by the stage registry)."""

    kind: str = MISSING  # fit (the `effnas surrogate <kind>` subcommand)
    sources: list[str] = MISSING  # search run directories and/or CSV tables
    space: SpaceConfig = field(default_factory=SpaceConfig)
    model: str = MISSING  # auto | gbr | rf | ridge | knn
    folds: int = MISSING
    min_rows: int = MISSING  # refuse to fit on fewer trained architectures


def validate(cfg: Any) -> None:
    from nas.surrogate import MODELS

    if cfg.kind not in KINDS:
        raise UserError(f"unknown surrogate command {cfg.kind!r}; expected one of {', '.join(KINDS)}")
    if not cfg.sources:
        raise UserError("give the trained architectures: effnas surrogate fit RUN_DIR_OR_CSV [...]")
    if cfg.model != "auto" and cfg.model not in MODELS:
        raise UserError(f"unknown surrogate model {cfg.model!r}; expected auto or one of {', '.join(MODELS)}")
    if int(cfg.folds) < 2:
        raise UserError(f"folds must be >= 2, got {cfg.folds}")
    for source in cfg.sources:
        if not Path(source).exists():
            raise UserError(f"surrogate source {source}: no such file or directory")
    space = _space(cfg.space)
    for source in cfg.sources:  # small tables: read twice rather than fail after the run dir exists
        read_source(Path(source), space)


def _space(space_cfg: Any) -> MnasNetSpace:
    try:
        return MnasNetSpace.from_config(space_cfg)
    except SpaceError as exc:
        raise UserError(str(exc)) from None


def read_source(path: Path, space: MnasNetSpace) -> Any:
    """The trained rows of one source as a frame with `choices`, `accuracy`, `macs`, `source`."""
    import pandas as pd

    from foundation.runfiles import check_table, stage_of

    if path.is_dir():
        if stage_of(path) != "search":
            raise UserError(f"surrogate source {path}: not a search run directory (nor a CSV table)")
        _check_run_space(path, space)
        table = path / "trials.csv"
    else:
        table = path
    if path.is_dir() and table.is_file():
        check_table(table)  # a run's own table: cut short or edited, not half-read
    try:
        frame = pd.read_csv(table)
    except FileNotFoundError:
        raise UserError(f"surrogate source {path}: missing {table.name}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"surrogate source {table}: unreadable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("choices", "accuracy") if c not in frame.columns]
    if missing:
        raise UserError(f"surrogate source {table}: no column {', '.join(missing)}")
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    frame = frame[frame["accuracy"].notna()]
    if "space" in frame.columns and (frame["space"] != space.fingerprint()).any():
        other = frame.loc[frame["space"] != space.fingerprint(), "space"].iloc[0]
        raise UserError(
            f"surrogate source {table}: rows of another search space (fingerprint {other}, this "
            f"space {space.fingerprint()}); pass the space it was collected on (space=...)"
        )
    choices = []
    for i, text in enumerate(frame["choices"].astype(str)):
        try:
            vector = tuple(int(c) for c in text.split())
            space.check(vector)
        except (ValueError, SpaceError) as exc:
            raise UserError(
                f"surrogate source {table}, trained row {i + 1}: bad choices {text!r} ({exc})"
            ) from None
        choices.append(vector)
    out = pd.DataFrame({"choices": [" ".join(map(str, c)) for c in choices]})
    out["accuracy"] = frame["accuracy"].astype(float).to_numpy()
    out["macs"] = frame["macs"].to_numpy() if "macs" in frame.columns else None
    out["source"] = str(path)
    return out


def _check_run_space(run: Path, space: MnasNetSpace) -> None:
    from omegaconf import OmegaConf

    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        raise UserError(f"surrogate source {run}: no .hydra/config.yaml (which space did it search?)")
    recorded = _space(OmegaConf.load(config).space)
    if recorded.fingerprint() != space.fingerprint():
        raise UserError(
            f"surrogate source {run} searched another space ({recorded.describe()}); pass the same "
            "space= to the fit"
        )


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    import pandas as pd

    from nas.surrogate import SurrogateError, fit

    space = _space(cfg.space)
    frames = [read_source(Path(s), space) for s in cfg.sources]
    table = pd.concat(frames, ignore_index=True)
    if len(table) < int(cfg.min_rows):
        raise UserError(
            f"only {len(table)} trained architectures in {', '.join(cfg.sources)}; a surrogate needs "
            f"at least min_rows={cfg.min_rows}"
        )
    choices = [tuple(int(c) for c in text.split()) for text in table["choices"]]
    print(
        f"surrogate: {len(table)} trained architectures from {len(frames)} source(s); "
        f"{cfg.folds}-fold validation of {cfg.model}",
        file=sys.stderr,
    )
    try:
        surrogate, results = fit(
            space,
            choices,
            table["accuracy"].tolist(),
            model=str(cfg.model),
            folds=int(cfg.folds),
            seed=int(cfg.run.seed),
            sources=[str(Path(s).resolve()) for s in cfg.sources],
        )
    except SurrogateError as exc:
        raise UserError(str(exc)) from None
    surrogate.save(rundir.file("surrogate.pkl"))
    rundir.write_csv("cv.csv", pd.DataFrame([r.to_dict() for r in results]))
    best = next(r for r in results if r.model == surrogate.kind)
    table["predicted"] = best.predictions
    rundir.write_csv("predictions.csv", table)
    rundir.save_figure("predicted_vs_measured.png", _plot(table, best))
    _print_table(results, surrogate.kind)
    print(f"surrogate: {surrogate.kind} -> {rundir.file('surrogate.pkl')}", file=sys.stderr)
    return {
        "model": surrogate.kind,
        "rows": len(table),
        "space": space.fingerprint(),
        "accuracy_range": list(surrogate.accuracy_range),
        **{f"cv_{k}": v for k, v in best.to_dict().items() if k != "model"},
        "candidates": {r.model: round(r.kendall, 4) for r in results},
    }


def _print_table(results: list[Any], chosen: str) -> None:
    print(f"{'model':<7} {'kendall':>14} {'spearman':>14} {'pooled tau':>10} {'rmse':>7}")
    for r in sorted(results, key=lambda r: -r.kendall):
        mark = "  <- chosen" if r.model == chosen else ""
        print(
            f"{r.model:<7} {r.kendall:7.3f}+-{r.kendall_std:.3f} {r.spearman:7.3f}+-{r.spearman_std:.3f} "
            f"{r.pooled_kendall:10.3f} {r.rmse:7.4f}{mark}"
        )


def _plot(table: Any, best: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(table["accuracy"], table["predicted"], s=12, alpha=0.7)
    low = float(min(table["accuracy"].min(), table["predicted"].min()))
    high = float(max(table["accuracy"].max(), table["predicted"].max()))
    ax.plot([low, high], [low, high], color="grey", lw=1)
    ax.set_xlabel("measured proxy accuracy")
    ax.set_ylabel(f"predicted, held out ({best.folds}-fold)")
    ax.set_title(f"{best.model}: Kendall {best.kendall:.3f}, Spearman {best.spearman:.3f}, n={len(table)}")
    fig.tight_layout()
    return fig
