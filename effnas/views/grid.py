"""The grid section of `effnas report`: the points by accuracy, the winner and its verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table
from foundation.verdict import describe
from scaling.grid import is_paper

if TYPE_CHECKING:
    import pandas as pd


def grid_points(run: Run) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any] | None]:
    """The grid's points as the stage computes them (`scaling.grid.point_stats`: the point's
    fields, mean, sample std and n of its finished seeds, seeds), with each point's `status` (a
    run without seeds: its trial's; with: ok when every seed finished), as a frame and as rows;
    and each point's scores on the validation images where the run recorded them."""
    import pandas as pd

    from scaling.grid import point_scores, point_stats, rows_of

    trials = run.tables["trials.csv"]
    rows = rows_of(trials)
    points = point_stats(rows)
    seeded = "seed" in trials.columns
    status = dict(zip(trials["id"], trials["status"]))
    for p in points:
        p["status"] = (
            ("ok" if p["n"] == p["seeds"] else f"{p['n']}/{p['seeds']} ok") if seeded else status[p["id"]]
        )
    frame = pd.DataFrame(points)
    for column in ("mean", "std"):
        frame[column] = pd.to_numeric(frame[column])
    images = run.summary.get("validation_images")
    scores = point_scores(rows, run.path, int(images)) if seeded and images else None
    return frame, points, scores


def figure(run: Run, points: list[dict[str, Any]], winner: Any, scores: Any, figures: Figures) -> list[str]:
    """The grid stage's accuracy-against-MACs figure (`scaling.grid.figure_macs`), titled for
    the report; nothing when no candidate finished."""
    from scaling.grid import figure_macs, ranked_candidates

    best = next((p for p in points if p["id"] == winner and p["n"]), None) or next(
        iter(ranked_candidates(points)), None
    )
    if best is None:
        return []
    fig = figure_macs(points, best, scores, f"{run.label}: phi = {run.summary.get('phi')}")
    return [figures.save(f"{run.label}_accuracy_vs_macs.png", fig, f"{run.label}: accuracy vs MACs"), ""]


def section(run: Run, figures: Figures) -> list[str]:
    trials, coeffs = run.tables["trials.csv"], run.docs["coefficients.yaml"]
    winner = coeffs.get("id")
    frame, found, scores = grid_points(run)
    points = frame.sort_values(["mean", "macs"], ascending=[False, True], na_position="last")

    def mark(row: Mapping[str, Any]) -> str:
        marks = ["**winner**"] if row["id"] == winner else []
        marks += ["paper (1.2, 1.1, 1.15)"] if row["kind"] == "candidate" and is_paper(row) else []
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
    formats = {
        "macs": flops,
        "params": count,
        "activations": count,
        "product": fixed(4),
        "macs_ratio": fixed(3),
    }
    formats |= {"mean": fixed(4), "accuracy": fixed(4), "std": fixed(4)}
    paper_done = points[[r["kind"] == "candidate" and is_paper(r) for r in points.to_dict("records")]]
    out = [
        f"### `{run.path}`: winner {winner} (alpha {coeffs.get('alpha')}, beta {coeffs.get('beta')}, "
        f"gamma {coeffs.get('gamma')})",
        "",
        *figure(run, found, winner, scores, figures),
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
