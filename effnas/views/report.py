"""`effnas report`: search, grid, scale, study, train and latency runs laid out as the paper does, in one
Markdown file with its PNGs.

    effnas report results/search/<run> results/grid/<run> results/scale/<run> ...

A view above the stages: each run directory is read through its files (`effnas.views.common`:
the tables and columns each stage declares in its own `TABLES`), and each stage's section
(`effnas.views.search`, `grid`, `scale`, `study`, `search_study`, `train`, `latency`) lays it out; this
module assembles `report.md`, whose image links are relative to the report's own run directory.
Every input is read and checked in `validate`, before the run directory exists, so a bad input
writes nothing. Each table is followed by a line naming the run directory, the data (name and
fingerprint) and the proxy budget it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from effnas.views import grid, latency, scale, search, search_study, study, train
from effnas.views.common import Figures, Run, budget_of, dataset_of, load_runs, table

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class ReportConfig:
    """Schema of `conf/report.yaml` (`run` is added by the stage registry)."""

    runs: list[str] = MISSING  # run directories of search, grid, scale, study, train, latency, any mix
    title: str = MISSING


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
    "latency": (
        "Latency predictors",
        "MnasNet prices every candidate by its latency on the target device; a predictor of it is only as "
        "good as its agreement with end-to-end measurements of architectures it was not fitted on.",
    ),
}


def validate(cfg: Any) -> None:
    """Read and check every input before a run directory exists: a bad one writes nothing."""
    load_runs(list(cfg.runs))


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
        "search": search.section,
        "grid": grid.section,
        "scale": scale.section,
        "study": study.section,
        "search study": search_study.section,
        "latency": latency.section,
    }
    for stage, (heading, what) in SECTIONS.items():
        mine = [r for r in runs if r.stage == stage]
        if not mine:
            continue
        out += [f"## {heading}", "", f"*{what}*", ""]
        if stage == "train":
            out += train.section(mine, figures)
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
