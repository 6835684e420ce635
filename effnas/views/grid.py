"""The grid section of `effnas report`: the points by accuracy, the winner and its verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table
from foundation import figures as plots
from foundation.verdict import describe
from search_spaces.official import PAPER_COEFFICIENTS

if TYPE_CHECKING:
    import pandas as pd


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
    fig, (ax,) = plots.axes(1, width=6.5, height=4.2)
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


def section(run: Run, figures: Figures) -> list[str]:
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
        "macs": flops,
        "params": count,
        "activations": count,
        "product": fixed(4),
        "macs_ratio": fixed(3),
    }
    formats |= {"mean": fixed(4), "accuracy": fixed(4), "std": fixed(4)}
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
