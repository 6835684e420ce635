"""`effnas report`: search, grid, scale, study and train runs laid out as the paper does, in one
Markdown file with its PNGs.

    effnas report results/search/<run> results/grid/<run> results/scale/<run> ...

This module owns the report: reading other stages' run directories through their files only
(manifest.json, summary.json, .hydra/config.yaml and each stage's tables; never their code), the
tables (pandas `DataFrame.to_markdown`), the figures (matplotlib on Agg, saved through
`RunDir.save_figure`) and `report.md`, whose image links are relative to the report's own run
directory. Every input is read and checked in `validate`, before the run directory exists, so a
bad input writes nothing. Each table is followed by a line naming the run directory, the data
(name and fingerprint) and the proxy budget it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from foundation.errors import UserError
from foundation.figures import axes as _axes
from foundation.figures import close, searched_among_random
from foundation.runfiles import check_table, read_json, stage_of
from foundation.units import format_flops
from foundation.verdict import describe
from search_spaces.official import PAPER_COEFFICIENTS

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class ReportConfig:
    """Schema of `conf/report.yaml` (`run` is added by the stage registry)."""

    runs: list[str] = MISSING  # run directories of search, grid, scale, study and train, any mix
    title: str = MISSING


METHOD_ORDER = (
    "baseline",
    "depth",
    "width",
    "resolution",
    "compound",
    "compound_paper",
    "dwr",
)  # the study's methods
SINGLE = ("depth", "width", "resolution")

# stage -> {table: (required columns, of which numeric)}; extra columns are tolerated
TABLES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "search": {
        "trials.csv": (
            ("id", "name", "macs", "params", "accuracy", "reward", "status"),
            ("macs", "params", "accuracy", "reward"),
        ),
        "pareto.csv": (("id", "macs", "accuracy"), ("macs", "accuracy")),
    },
    "grid": {
        "trials.csv": (
            (
                "id",
                "kind",
                "alpha",
                "beta",
                "gamma",
                "product",
                "macs",
                "macs_ratio",
                "params",
                "accuracy",
                "status",
            ),
            ("alpha", "beta", "gamma", "product", "macs", "macs_ratio", "params", "accuracy"),
        ),
    },
    "scale": {
        "models.csv": (
            ("phi", "name", "width", "depth", "resolution", "params", "macs", "macs_ratio"),
            ("phi", "width", "depth", "resolution", "params", "macs", "macs_ratio"),
        ),
        "official_comparison.csv": (
            (
                "model",
                "width",
                "depth",
                "resolution",
                "params",
                "macs",
                "phi_width",
                "phi_depth",
                "phi_resolution",
            ),
            ("width", "depth", "resolution", "params", "macs", "phi_width", "phi_depth", "phi_resolution"),
        ),
    },
    "study": {
        "study.csv": (
            (
                "method",
                "level",
                "budget",
                "seed",
                "width",
                "depth",
                "resolution",
                "macs",
                "params",
                "activations",
                "macs_ratio",
                "on_level",
                "accuracy",
                "images_per_s",
                "status",
            ),
            (
                "level",
                "budget",
                "seed",
                "width",
                "depth",
                "resolution",
                "macs",
                "params",
                "activations",
                "macs_ratio",
                "accuracy",
                "images_per_s",
            ),
        ),
    },
    "search study": {  # `effnas study search`: a study run whose kind is search
        "study.csv": (
            ("arch", "role", "name", "budget", "seed", "macs", "accuracy", "reward", "status"),
            ("budget", "seed", "macs", "accuracy", "reward"),
        ),
    },
    "train": {"metrics.csv": (("epoch", "val_accuracy"), ("epoch", "val_accuracy"))},
}
YAML_FILES = {"grid": ("coefficients.yaml",)}
SECTIONS = {  # stage -> (heading, what the paper does there)
    "search": (
        "Search",
        "The baseline from a MnasNet-style search (paper §4): each sampled architecture trains briefly on "
        "the proxy and is scored by ACC x (MACs/T)^w.",
    ),
    "grid": (
        "Grid",
        "Step 1 of compound scaling (paper §3.3): a small grid over alpha, beta, gamma with "
        "alpha·beta²·gamma² ≈ 2 at phi = 1, each candidate trained on the proxy; the paper found "
        "(1.2, 1.1, 1.15).",
    ),
    "scale": (
        "Scale",
        "Step 2 (paper §3.3): the baseline grown by depth alpha^phi, width beta^phi, resolution gamma^phi, "
        "against the released EfficientNet-B1..B7.",
    ),
    "study": (
        "Study",
        "Single-dimension against compound scaling at matched MACs (paper Figure 8 and Table 3; "
        "Figure 3 for one dimension swept alone).",
    ),
    "search study": (
        "Search against random search",
        "Whether the searched baseline beats random architectures of its MACs from the same space, and "
        "the space's base, once all are trained on one longer budget with the same seeds "
        "(`effnas study search`).",
    ),
    "train": ("Train", "Architectures trained with the shared proxy trainer."),
}


# -- reading run directories --------------------------------------------------------------------
@dataclass
class Run:
    """One input run directory, read whole: its files as plain data."""

    path: Path
    stage: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    config: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # YAML files (coefficients.yaml)
    label: str = ""  # search1, grid2, ...: names its figures


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
    if stage not in TABLES:
        stages = ", ".join(s for s in TABLES if s != "search study")  # that one is a kind of study run
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
    tables = {
        name: read_table(path / name, required, numeric)
        for name, (required, numeric) in TABLES[stage].items()
    }
    docs = {name: _read_yaml(path / name) for name in YAML_FILES.get(stage, ())}
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


def validate(cfg: Any) -> None:
    """Read and check every input before a run directory exists: a bad one writes nothing."""
    load_runs(list(cfg.runs))


# -- cells and provenance -----------------------------------------------------------------------
def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _count(v: Any) -> str:
    return "-" if _missing(v) else f"{int(v):,}"


def _flops(v: Any) -> str:
    return "-" if _missing(v) else format_flops(int(v))


def _fixed(digits: int) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        return "-" if _missing(v) else f"{float(v):.{digits}f}"

    return fmt


def _plain(v: Any) -> str:
    if _missing(v):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _mean_std(mean: Any, std: Any, n: Any = None) -> str:
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
        shown[column] = [formats.get(column, _plain)(v) for v in shown[column]]
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
    return amount + _recipe(proxy)


def _recipe(proxy: Mapping[str, Any]) -> str:
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


# -- search -------------------------------------------------------------------------------------
def front_figure(run: Run, cost: str) -> Any:
    """Accuracy against `cost` (macs or latency_ms): every trained trial, the Pareto front the
    search recorded when `cost` is its reward's own, the target T and the best trial."""
    trials, summary = run.tables["trials.csv"], run.summary
    ok = trials[(trials["status"] == "ok") & trials[cost].notna()]
    scale, unit = (1e6, "M MACs") if cost == "macs" else (1.0, "ms")
    reward_cost = "latency_ms" if summary.get("target_latency_ms") else "macs"
    target = summary.get("target_macs") if cost == "macs" else summary.get("target_latency_ms")
    fig, (ax,) = _axes(1, width=6.5, height=4.2)
    ax.scatter(ok[cost] / scale, ok["accuracy"], s=16, alpha=0.6, label="trial")
    pareto = run.tables["pareto.csv"]
    if cost == reward_cost and cost in pareto.columns and len(pareto):
        ax.step(
            pareto[cost] / scale,
            pareto["accuracy"],
            where="post",
            marker="o",
            color="tab:orange",
            label="Pareto front",
        )
    if target:
        ax.axvline(
            target / scale, color="tab:red", linestyle="--", label=f"target T = {target / scale:g} {unit}"
        )
    best = ok[ok["id"] == summary.get("best_trial")]
    if len(best):
        ax.scatter(
            best[cost] / scale,
            best["accuracy"],
            s=160,
            marker="*",
            color="tab:green",
            zorder=5,
            label=f"best reward (#{summary.get('best_trial')})",
        )
    ax.set(
        xlabel="MACs at 224x224, 1000 classes (millions)" if cost == "macs" else "predicted latency (ms)",
        ylabel="proxy validation accuracy",
        title=f"{run.label}: {summary.get('sampler')} on {summary.get('dataset')}",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def search_section(run: Run, figures: Figures) -> list[str]:
    trials, summary = run.tables["trials.csv"], run.summary
    target = (
        f"T = {summary['target_latency_ms']:g} ms (predicted latency)"
        if summary.get("target_latency_ms")
        else f"T = {_flops(summary.get('target_macs'))} MACs"
    )
    out = [f"### `{run.path}`: {summary.get('sampler')} sampler, {target}", ""]
    out.append(
        figures.save(
            f"{run.label}_accuracy_vs_macs.png", front_figure(run, "macs"), f"{run.label}: accuracy vs MACs"
        )
    )
    if "latency_ms" in trials.columns and trials["latency_ms"].notna().any():
        fig = front_figure(run, "latency_ms")
        out.append(
            figures.save(f"{run.label}_accuracy_vs_latency.png", fig, f"{run.label}: accuracy vs latency")
        )
    columns = ["id", "name", "macs", "params"]
    columns += [c for c in ("activations", "latency_ms") if c in trials.columns and trials[c].notna().any()]
    columns += ["accuracy", "reward"]
    top = trials[trials["status"] == "ok"].sort_values("reward", ascending=False).head(10)[columns]
    top = top.assign(id=[f"**{i}** (best)" if i == summary.get("best_trial") else str(i) for i in top["id"]])
    formats = {"macs": _flops, "params": _count, "activations": _count, "latency_ms": _fixed(2)}
    formats |= {"accuracy": _fixed(4), "reward": _fixed(4)}
    space = run.manifest.get("space") or {}
    size = space.get("size", summary.get("space_size"))
    out += [
        "",
        f"Top {len(top)} of {len(trials)} trials by reward:",
        "",
        table(top, formats),
        "",
        source_line(run),
        "",
        f"- sampler `{summary.get('sampler')}`, reward {summary.get('reward')}",
        f"- space: {'-' if size is None else f'{float(size):.3e}'} architectures"
        + (f" ({float(space['distinct']):.3e} distinct)" if space.get("distinct") else ""),
        f"- trials: {summary.get('trials_done')} ok, {summary.get('trials_stopped')} stopped, "
        f"{summary.get('trials_failed')} failed, {summary.get('trials_rejected')} rejected "
        f"(budget {summary.get('trials_budget')})",
        "",
    ]
    return out


# -- grid ---------------------------------------------------------------------------------------
def grid_points(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point: with a `seed` column its seeds, mean and std (sample, ddof=1) of
    the finished ones; without, the single trial's accuracy as the mean."""
    ok = trials["status"] == "ok"
    if "seed" not in trials.columns:
        return trials.assign(seeds=1, n=ok.astype(int), mean=trials["accuracy"].where(ok), std=math.nan)
    points = trials.drop_duplicates("id").set_index("id")
    stats = trials[ok].groupby("id")["accuracy"].agg(["mean", "std", "size"]).rename(columns={"size": "n"})
    points = points.join(stats).assign(seeds=trials.groupby("id").size())
    points["n"] = points["n"].fillna(0).astype(int)
    return points.reset_index()


def _is_paper(row: Mapping[str, Any]) -> bool:
    return all(
        math.isclose(float(row[k]), v, abs_tol=1e-9)
        for k, v in zip(("alpha", "beta", "gamma"), PAPER_COEFFICIENTS)
    )


def grid_figure(run: Run, points: pd.DataFrame, winner: Any) -> Any:
    """Proxy accuracy against MACs: each point's mean (std bars over seeds), the winner, the
    paper's point and the unscaled baseline."""
    done = points[points["mean"].notna()]
    cand = done[done["kind"] == "candidate"]
    fig, (ax,) = _axes(1, width=6.5, height=4.2)
    ax.errorbar(
        cand["macs"] / 1e9,
        cand["mean"],
        yerr=cand["std"].fillna(0),
        fmt="o",
        ms=4,
        capsize=3,
        alpha=0.7,
        label="candidate",
    )
    win = cand[cand["id"] == winner]
    ax.scatter(
        win["macs"] / 1e9, win["mean"], marker="*", s=180, color="tab:red", zorder=5, label=f"winner {winner}"
    )
    paper = cand[[_is_paper(r) for r in cand.to_dict("records")]]
    if len(paper):
        ax.scatter(
            paper["macs"] / 1e9,
            paper["mean"],
            marker="s",
            s=70,
            facecolors="none",
            edgecolors="k",
            zorder=6,
            label="paper (1.2, 1.1, 1.15)",
        )
    base = done[done["kind"] == "baseline"]
    if len(base):
        ax.axhline(float(base["mean"].iloc[0]), color="grey", ls="--", lw=1, label="unscaled baseline")
    ax.set(
        xlabel="MACs (G, deployment resolution, 1000 classes)",
        ylabel="proxy val accuracy",
        title=f"{run.label}: phi = {run.summary.get('phi')}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def grid_section(run: Run, figures: Figures) -> list[str]:
    trials, coeffs = run.tables["trials.csv"], run.docs["coefficients.yaml"]
    winner = coeffs.get("id")
    points = grid_points(trials).sort_values(["mean", "macs"], ascending=[False, True], na_position="last")

    def mark(row: Mapping[str, Any]) -> str:
        marks = ["**winner**"] if row["id"] == winner else []
        marks += ["paper (1.2, 1.1, 1.15)"] if row["kind"] == "candidate" and _is_paper(row) else []
        marks += ["unscaled baseline"] if row["kind"] == "baseline" else []
        return ", ".join(marks)

    points = points.assign(mark=[mark(r) for r in points.to_dict("records")])
    columns = [
        "id",
        "mark",
        "alpha",
        "beta",
        "gamma",
        "product",
        "resolution",
        "deploy_resolution",
        "macs",
        "macs_ratio",
        "params",
    ]
    columns += [c for c in ("activations",) if c in points.columns and points[c].notna().any()]
    seeded = "seed" in trials.columns
    columns += ["seeds", "n", "mean", "std", "status"] if seeded else ["mean", "status"]
    shown = points[[c for c in columns if c in points.columns]].rename(
        columns={} if seeded else {"mean": "accuracy"}
    )
    if seeded:  # a point's status: ok when every seed finished
        shown = shown.assign(
            status=["ok" if n == s else f"{n}/{s} ok" for n, s in zip(points["n"], points["seeds"])]
        )
    formats = {
        "macs": _flops,
        "params": _count,
        "activations": _count,
        "product": _fixed(4),
        "macs_ratio": _fixed(3),
    }
    formats |= {"mean": _fixed(4), "accuracy": _fixed(4), "std": _fixed(4)}
    paper_done = points[[r["kind"] == "candidate" and _is_paper(r) for r in points.to_dict("records")]]
    out = [
        f"### `{run.path}`: winner {winner} (alpha {coeffs.get('alpha')}, beta {coeffs.get('beta')}, "
        f"gamma {coeffs.get('gamma')})",
        "",
        figures.save(
            f"{run.label}_accuracy_vs_macs.png",
            grid_figure(run, points, winner),
            f"{run.label}: accuracy vs MACs",
        ),
        "",
        f"{len(points)} grid points"
        + (" (mean and sample std over seeds)" if seeded else "")
        + ", by proxy accuracy:",
        "",
        table(shown, formats),
        "",
        source_line(run),
        "",
    ]
    if paper_done.empty:
        out += ["The paper's point (1.2, 1.1, 1.15) was not among the trained candidates.", ""]
    verdict = coeffs.get("verdict")
    if isinstance(verdict, dict) and verdict:
        comparisons, notes = verdict_frame(verdict)
        out += [
            f"Is the winner {winner} ahead by more than the seeds and the validation images can tell?",
            "",
            table(comparisons),
            "",
        ]
        out += [source_line(run), "", *(f"- {note}" for note in notes), ""]
    grid = run.summary.get("grid") or {}
    if grid:
        out += [
            f"- constraint: |alpha·beta²·gamma² − {grid.get('target')}| ≤ {grid.get('tol')}, "
            f"step {grid.get('step')}; {run.summary.get('grid_points')} grid points, "
            f"{run.summary.get('candidates')} trained",
            f"- selection: {coeffs.get('selection', '-')}",
            "",
        ]
    return out


def verdict_frame(verdict: Mapping[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """coefficients.yaml's `verdict` as (a row per comparison: the other point's id, mean, std, n,
    margin, spread, call; empty when that point was not trained or is the winner itself, and the
    verdict's other entries, such as its rule, as `key: value` lines)."""
    import pandas as pd

    rows, notes = [], []
    for name, v in verdict.items():
        if isinstance(v, dict) and "low" in v:  # foundation.verdict.compare: margin, interval, call
            shown = {k: _cell(k, v.get(k)) for k in ("id", "mean", "std", "n")}
            rows.append({"against": name} | shown | {"margin [95% interval] -> call": describe(v)})
        elif isinstance(v, dict):  # a grid run from before foundation.verdict: as it was written
            rows.append({"against": name} | {k: _cell(k, x) for k, x in v.items()})
        elif v is None:
            rows.append({"against": name, "call": "not trained, or the winner itself"})
        else:
            notes.append(f"{name}: {v}")
    return pd.DataFrame(rows).fillna("-"), notes


def _cell(key: str, v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:+.4f}" if key == "margin" else f"{v:.4f}"
    return "-" if v is None else str(v)


# -- scale --------------------------------------------------------------------------------------
def official_activations(models: Sequence[str]) -> list[int]:
    """Activations of the released B-models (the cost model on the official table; no torch)."""
    from search_spaces.cost import count
    from search_spaces.official import official

    return [count(official(f"efficientnet_{m}")).activations for m in models]


def scale_family(run: Run) -> pd.DataFrame:
    """The official B1..B7 beside ours, joined on phi: params, MACs, activations and the phi each
    released model implies per dimension under the run's coefficients."""
    comp = run.tables["official_comparison.csv"].copy()
    models = run.tables["models.csv"]
    if "activations" not in comp.columns:
        comp["activations"] = official_activations(list(comp["model"]))
    ours = models.set_index("phi")
    comp["ours_phi"] = [int(m.lstrip("b")) for m in comp["model"]]
    for column in ("params", "macs", "activations"):
        comp[f"ours_{column}"] = [
            ours[column].get(p, math.nan) if column in ours.columns else math.nan for p in comp["ours_phi"]
        ]
    comp["ours_macs / official"] = comp["ours_macs"] / comp["macs"]
    return comp


def scale_figure(run: Run, family: pd.DataFrame) -> Any:
    columns = [c for c in ("params", "macs", "activations") if family[f"ours_{c}"].notna().any()]
    fig, axes = _axes(len(columns), width=4.2, height=3.6)
    for ax, column in zip(axes, columns):
        family.plot(x="ours_phi", y=column, marker="s", logy=True, ax=ax, label="released B1..B7", color="k")
        family.plot(
            x="ours_phi",
            y=f"ours_{column}",
            marker="o",
            logy=True,
            ax=ax,
            label=f"ours ({run.summary.get('mode')})",
        )
        ax.set(xlabel="phi", ylabel=column, title=column)
        ax.grid(alpha=0.3, which="both")
    return fig


def scale_section(run: Run, figures: Figures) -> list[str]:
    models, summary = run.tables["models.csv"], run.summary
    family = scale_family(run)
    columns = ["phi", "name", "width", "depth", "resolution", "params", "macs"]
    columns += [c for c in ("activations",) if c in models.columns] + ["macs_ratio"]
    formats = {
        "params": _count,
        "macs": _flops,
        "activations": _count,
        "width": _fixed(4),
        "depth": _fixed(4),
    }
    formats |= {"macs_ratio": _fixed(3), "phi": _plain}
    source = summary.get("coefficients_source") or {}
    out = [
        f"### `{run.path}`: {summary.get('mode')} mode, (alpha, beta, gamma) = "
        f"({summary.get('alpha')}, {summary.get('beta')}, {summary.get('gamma')}) "
        f"from {source.get('source', '?')}",
        "",
        figures.save(
            f"{run.label}_family.png",
            scale_figure(run, family),
            f"{run.label}: ours against the released B1..B7",
        ),
        "",
        "Our family (`macs_ratio` = MACs / (2^phi × the baseline's)):",
        "",
        table(
            models[columns].rename(columns={"macs_ratio": "macs / 2^phi·B0"}),
            formats | {"macs / 2^phi·B0": _fixed(3)},
        ),
        "",
        source_line(run),
        "",
    ]
    official = ["model", "width", "depth", "resolution", "params", "macs", "activations"]
    implied = ["phi_width", "phi_depth", "phi_resolution"]
    ours = ["ours_params", "ours_macs", "ours_activations", "ours_macs / official"]
    shown = family[[*official, *implied, *ours]]
    formats = {c: _count for c in ("params", "activations", "ours_params", "ours_activations")}
    formats |= {"macs": _flops, "ours_macs": _flops, "ours_macs / official": _fixed(3)}
    formats |= {c: _fixed(2) for c in ("phi_width", "phi_depth", "phi_resolution")}
    out += [
        "The released B1..B7 (activations from the cost model), the phi each implies per dimension under "
        "these coefficients (`-`: that coefficient is 1, it implies no phi), and ours at the same phi:",
        "",
        table(shown, formats),
        "",
        source_line(run),
        "",
    ]
    out += [f"- {note.removeprefix('note: ')}" for note in summary.get("notes") or []]
    return [*out, ""]


# -- study --------------------------------------------------------------------------------------
def _ordered(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def study_stats(study: pd.DataFrame) -> pd.DataFrame:
    """Per budget, level and method over its finished seeds: mean and sample std of accuracy, n,
    and the arm's mean MACs, activations and throughput."""
    ok = study[study["status"] == "ok"]
    return (
        ok.groupby(["budget", "level", "method"])
        .agg(
            mean=("accuracy", "mean"),
            std=("accuracy", "std"),
            n=("accuracy", "size"),
            macs=("macs", "mean"),
            activations=("activations", "mean"),
            images_per_s=("images_per_s", "mean"),
        )
        .reset_index()
    )


def study_verdicts(summary: Mapping[str, Any], budget: float, level: float) -> dict[str, Any]:
    """summary.json's winner and compound margin for one budget and level (keys as the study
    writes them: '5 epochs', '2x'); empty when the summary has none."""
    budgets = summary.get("budgets")
    entry = budgets.get(f"{budget:g} epochs", {}).get(f"{level:g}x", {}) if isinstance(budgets, dict) else {}
    return entry if isinstance(entry, dict) else {}


def study_accuracy_table(run: Run, stats: pd.DataFrame) -> pd.DataFrame:
    """Rows (budget, level), a column per method with mean ± std (n), then the study's own winner
    and compound's margin over the best single dimension (summary.json)."""
    import pandas as pd

    methods = _ordered(list(stats["method"].unique()))
    rows = []
    for (budget, level), part in stats.groupby(["budget", "level"]):
        cells = {r["method"]: _mean_std(r["mean"], r["std"], r["n"]) for r in part.to_dict("records")}
        v = study_verdicts(run.summary, budget, level)
        margin = v.get("compound_margin")
        judged = v.get("compound_vs_best_single")
        rows.append(
            {"budget (epochs)": f"{budget:g}", "MACs level": f"{level:g}x"}
            | {m: cells.get(m, "") for m in methods}
            | {
                "leader": _leader(v),
                "compound − best single": "-"
                if margin is None
                else (
                    f"{describe(judged)} (vs {judged['other']})"
                    if judged
                    else f"{margin:+.4f} (vs {v.get('best_single')}; not judged)"
                ),
            }
        )
    return pd.DataFrame(rows)


def _leader(v: Mapping[str, Any]) -> str:
    """The highest mean and whether the data show it ahead of the runner-up."""
    leader = v.get("leader") or v.get("winner")
    if not leader:
        return "-"
    call = v.get("winner_call")
    if call is None:
        return f"{leader} (not judged)"
    return f"{leader} ({'wins' if call == 'wins' else call + ' with ' + v['vs_runner_up']['other']})"


def study_cost_table(study: pd.DataFrame) -> pd.DataFrame:
    """Each arm (level, method) once: its multipliers, MACs, activations, whether it landed on its
    level, and the mean throughput of its finished trials."""
    columns = [
        c
        for c in (
            "level",
            "method",
            "multiplier",
            "depth",
            "width",
            "resolution",
            "macs",
            "macs_ratio",
            "params",
            "activations",
            "on_level",
        )
        if c in study.columns
    ]
    arms = study.drop_duplicates(["level", "method"])[columns].copy()
    speed = study[study["status"] == "ok"].groupby(["level", "method"])["images_per_s"].mean()
    arms["images_per_s"] = [speed.get((lv, m), math.nan) for lv, m in zip(arms["level"], arms["method"])]
    arms["order"] = [(_ordered(list(arms["method"].unique())).index(m)) for m in arms["method"]]
    return arms.sort_values(["level", "order"]).drop(columns="order")


def figure8(run: Run, stats: pd.DataFrame) -> Any:
    """Paper Figure 8: accuracy against MACs, a line per method over the levels (mean, std bars
    over seeds), a panel per budget; the unscaled baseline as a reference point."""
    budgets = sorted(stats["budget"].unique())
    fig, axes = _axes(len(budgets), width=5.0, height=3.9)
    for ax, budget in zip(axes, budgets):
        sub = stats[stats["budget"] == budget].assign(gmacs=lambda f: f["macs"] / 1e9)
        for method in _ordered(list(sub["method"].unique())):
            part = sub[sub["method"] == method].sort_values("gmacs")
            style = {"marker": "*", "ms": 10} if method.startswith("compound") else {"marker": "o"}
            if method == "baseline":
                style = {"marker": "D", "color": "k", "linestyle": "none"}
            part.plot(
                x="gmacs", y="mean", yerr=part["std"].fillna(0), capsize=3, ax=ax, label=method, **style
            )
        ax.set(
            xlabel="MACs (G, deployment resolution, 1000 classes)",
            ylabel="proxy val accuracy",
            title=f"{run.label}: {budget:g} epochs",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def figure3_dimensions(study: pd.DataFrame) -> list[str]:
    """Single dimensions with finished trials at two or more multipliers (Figure 3 needs a curve)."""
    ok = study[study["status"] == "ok"]
    x = "multiplier" if "multiplier" in study.columns else None
    return [d for d in SINGLE if ok.loc[ok["method"] == d, x or d].nunique() >= 2]


def figure3(run: Run, study: pd.DataFrame, dims: Sequence[str]) -> Any:
    """Paper Figure 3: accuracy against one dimension's multiplier, a panel per dimension, a line
    per budget (mean, std bars over seeds)."""
    ok = study[study["status"] == "ok"]
    fig, axes = _axes(len(dims), width=4.4, height=3.6)
    for ax, dim in zip(axes, dims):
        x = "multiplier" if "multiplier" in study.columns else dim
        for budget, part in ok[ok["method"] == dim].groupby("budget"):
            curve = part.groupby(x)["accuracy"].agg(["mean", "std"]).reset_index()
            curve.plot(
                x=x,
                y="mean",
                yerr=curve["std"].fillna(0),
                marker="o",
                capsize=3,
                ax=ax,
                label=f"{budget:g} epochs",
            )
        ax.set(
            xlabel=f"{dim} multiplier" if x == "multiplier" else dim,
            ylabel="proxy val accuracy",
            title=f"scaling {dim} alone",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def study_section(run: Run, figures: Figures) -> list[str]:
    study, summary = run.tables["study.csv"], run.summary
    stats = study_stats(study)
    budgets = ", ".join(f"{b:g}" for b in sorted(study["budget"].unique()))
    proxy = run.config.get("proxy") if isinstance(run.config.get("proxy"), dict) else {}
    budget = f"{budgets} epochs (the study's `budget` column){_recipe(proxy)}"
    if proxy.get("resolution"):
        budget += " (× each arm's resolution multiplier)"
    failed = int((study["status"] != "ok").sum())
    out = [
        f"### `{run.path}`: baseline {summary.get('baseline', '?')}, "
        f"compound coefficients {summary.get('coefficients', '?')}",
        "",
    ]
    if len(stats):
        out.append(
            figures.save(
                f"{run.label}_figure8.png",
                figure8(run, stats),
                f"{run.label}: accuracy vs MACs per method (Figure 8)",
            )
        )
    dims = figure3_dimensions(study)
    if dims:
        out.append(
            figures.save(
                f"{run.label}_figure3.png",
                figure3(run, study, dims),
                f"{run.label}: accuracy vs multiplier (Figure 3)",
            )
        )
    out += [
        "",
        "Proxy accuracy, mean ± sample std over seeds (n finished), per budget and MACs level; the "
        "winner and compound's margin over the best single dimension are the study's own (summary.json):",
        "",
        table(study_accuracy_table(run, stats)),
        "",
        source_line(run, budget),
        "",
    ]
    if failed:
        out += [f"{failed} of {len(study)} trials did not finish and are left out of the means.", ""]
    held = summary.get("ranking_held_across_budgets")
    if isinstance(held, dict) and held:
        out += [
            "- ranking held across budgets: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in held.items()),
            "",
        ]
    formats = {"macs": _flops, "params": _count, "activations": _count, "macs_ratio": _fixed(3)}
    formats |= {"images_per_s": _fixed(1), "width": _fixed(3), "depth": _fixed(3), "multiplier": _fixed(3)}
    out += [
        "Each arm: its multipliers and cost (MACs at the deployment resolution, 1000 classes), whether it "
        "landed on its level, and the proxy's training throughput:",
        "",
        table(study_cost_table(study), formats | {"level": lambda v: f"{v:g}x"}),
        "",
        source_line(run, budget),
        "",
    ]
    return out


# -- search study -------------------------------------------------------------------------------
def search_study_rows(entry: Mapping[str, Any]) -> pd.DataFrame:
    """One budget of summary.json: each architecture, best accuracy first."""
    import pandas as pd

    archs = entry.get("archs") or {}
    order = list(entry.get("accuracy_ranking") or []) + [
        k for k in archs if k not in (entry.get("accuracy_ranking") or [])
    ]
    rows = []
    for rank, label in enumerate(order, 1):
        v = archs[label]
        rows.append(
            {
                "rank": rank if v.get("mean") is not None else "-",
                "arch": label,
                "role": v.get("role"),
                "MACs": _flops(v.get("macs")),
                "MACs / searched": _fixed(3)(v.get("macs_ratio")),
                "accuracy": _mean_std(v.get("mean"), v.get("std"), v.get("n")),
                "reward": _mean_std(v.get("reward_mean"), v.get("reward_std")),
            }
        )
    return pd.DataFrame(rows)


def _versus(v: Mapping[str, Any] | None, what: str) -> str:
    if not v:
        return ""
    if "low" in v:  # foundation.verdict.compare
        return f"- vs {what} (`{v.get('id')}`): margin {describe(v).replace('-> ', '**')}**"
    spread = "no seed spread" if v.get("spread") is None else f"seed spread {v['spread']:.4f}"
    return f"- vs {what} (`{v.get('id')}`): margin {v.get('margin', 0):+.4f} accuracy ({spread}): **{v.get('call')}**"


def search_study_section(run: Run, figures: Figures) -> list[str]:
    study, summary = run.tables["study.csv"], run.summary
    budgets = ", ".join(f"{b:g}" for b in sorted(study["budget"].unique()))
    proxy = run.config.get("proxy") if isinstance(run.config.get("proxy"), dict) else {}
    budget = f"{budgets} epochs (the study's `budget` column){_recipe(proxy)}"
    out = [
        f"### `{run.path}`: `{summary.get('searched', '?')}` from `{summary.get('search_run', '?')}` vs "
        f"{summary.get('random', '?')} random architectures of its MACs and `{summary.get('base', '?')}`",
        "",
    ]
    if (study["status"] == "ok").any():
        out += [
            figures.save(
                f"{run.label}_accuracy_vs_macs.png",
                searched_among_random(run.tables["study.csv"]),
                f"{run.label}: the searched architecture among random ones of its MACs",
            ),
            "",
        ]
    reward = summary.get("reward") or {}
    out += [
        "Proxy accuracy and the search's own reward "
        f"(ACC x (cost / {reward.get('target', '?'):g} {reward.get('unit', '')})^w), mean ± sample std over "
        "seeds (n finished), best accuracy first:"
        if isinstance(reward.get("target"), (int, float))
        else "Proxy accuracy and reward, mean ± sample std over seeds (n finished), best accuracy first:",
        "",
    ]
    for label, entry in (summary.get("budgets") or {}).items():
        out += [f"**{label}**", "", table(search_study_rows(entry)), ""]
        r = entry.get("searched_rank")
        if r:
            out.append(
                f"- the searched architecture ranks **{r.get('accuracy')} of {r.get('of')}** in accuracy and "
                f"**{r.get('reward')} of {r.get('of')}** in reward"
            )
        out += [
            line
            for line in (
                _versus(entry.get("vs_best_random"), "the best random"),
                _versus(entry.get("vs_base"), "the base"),
            )
            if line
        ]
        out.append("")
    if summary.get("complete") is False:
        out += ["This study is unfinished: what finished is shown.", ""]
    failed = int((~study["status"].isin(["ok", "pending"])).sum())
    if failed:
        out += [f"{failed} of {len(study)} trials failed and are left out of the means.", ""]
    out += [source_line(run, budget), ""]
    return out


# -- train --------------------------------------------------------------------------------------
def train_section(runs: Sequence[Run], figures: Figures) -> list[str]:
    import pandas as pd

    rows = [
        {
            "run": r.label,
            "arch": r.summary.get("arch"),
            "val_accuracy": r.summary.get("val_accuracy"),
            "test_accuracy": r.summary.get("test_accuracy"),
            "params": r.summary.get("params"),
            "macs": r.summary.get("macs"),
            "resolution": r.summary.get("resolution"),
            "epochs": r.summary.get("epochs"),
            "seconds": r.summary.get("seconds"),
            "images_per_s": r.summary.get("images_per_second"),
        }
        for r in runs
    ]
    formats = {"val_accuracy": _fixed(4), "test_accuracy": _fixed(4), "params": _count, "macs": _flops}
    formats |= {"seconds": _fixed(1), "images_per_s": _fixed(1), "epochs": lambda v: f"{v:.3g}"}
    has_loss = all("train_loss" in r.tables["metrics.csv"].columns for r in runs)
    fig, axes = _axes(2 if has_loss else 1, width=5.0, height=3.6)
    for r in runs:
        metrics = r.tables["metrics.csv"]
        metrics.plot(
            x="epoch",
            y="val_accuracy",
            marker="o",
            ms=3,
            ax=axes[0],
            label=f"{r.label} {r.summary.get('arch')}",
        )
        if has_loss:
            metrics.plot(x="epoch", y="train_loss", marker="o", ms=3, ax=axes[1], label=r.label)
    axes[0].set(ylabel="validation accuracy", title="validation accuracy")
    if has_loss:
        axes[1].set(ylabel="training loss", title="training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    out = [
        figures.save("train_curves.png", fig, "validation accuracy and training loss per epoch"),
        "",
        "Final accuracy (test only where the run asked for it: `data.use_test=true`):",
        "",
        table(pd.DataFrame(rows), formats),
        "",
    ]
    out += [f"{source_line(r)} ({r.label})  " for r in runs]
    return [*out, ""]


# -- the report ---------------------------------------------------------------------------------
def inputs_table(runs: Sequence[Run]) -> pd.DataFrame:
    import pandas as pd

    def commit(r: Run) -> str:
        git = r.manifest.get("git") or {}
        return "-" if not git.get("commit") else git["commit"][:8] + (" (dirty)" if git.get("dirty") else "")

    return pd.DataFrame(
        [
            {
                "run": r.label,
                "directory": f"`{r.path}`",
                "status": r.manifest.get("status", "?"),
                "data": dataset_of(r),
                "proxy budget": budget_of(r) if "study" not in r.stage else "per row (`budget`)",
                "effnas": (r.manifest.get("versions") or {}).get("effnas", "?"),
                "commit": commit(r),
                "started": r.manifest.get("started", "?"),
            }
            for r in runs
        ]
    )


def render(cfg: Any, runs: Sequence[Run], figures: Figures) -> str:
    out = [f"# {cfg.title}", "", "Run directories read (the report reads their files only):", ""]
    out += [table(inputs_table(runs)), ""]
    sections: dict[str, Callable[[Run, Figures], list[str]]] = {
        "search": search_section,
        "grid": grid_section,
        "scale": scale_section,
        "study": study_section,
        "search study": search_study_section,
    }
    for stage, (heading, what) in SECTIONS.items():
        mine = [r for r in runs if r.stage == stage]
        if not mine:
            continue
        out += [f"## {heading}", "", f"*{what}*", ""]
        if stage == "train":
            out += train_section(mine, figures)
        else:
            for run in mine:
                out += sections[stage](run, figures)
    out += [
        "---",
        "",
        "Tables: pandas `to_markdown`; figures: matplotlib. MACs are multiply-adds (the paper's FLOPs).",
    ]
    return "\n".join(out).rstrip() + "\n"


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    """The stage entry: reads the runs, writes report.md and its PNGs into `rundir`."""
    runs = load_runs(list(cfg.runs))
    for r in runs:
        rundir.record_upstream(r.path, r.stage, "reported")
    figures = Figures(rundir)
    path = rundir.write_text("report.md", render(cfg, runs, figures))
    print(f"report: {path} ({len(runs)} runs, {len(figures.names)} figures)")
    return {
        "report": "report.md",
        "runs": [{"stage": r.stage, "path": str(r.path.resolve()), "label": r.label} for r in runs],
        "sections": [SECTIONS[s][0] for s in SECTIONS if any(r.stage == s for r in runs)],
        "figures": figures.names,
    }
