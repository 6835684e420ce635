"""The study section of `effnas report`: paper Figure 8, Figure 3 and Table 3 at matched MACs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, count, fixed, flops, mean_std, recipe, source_line, table
from foundation.verdict import describe
from scaling.study import arm_table, figure3, figure8, ordered_methods, seed_stats, swept_dimensions

if TYPE_CHECKING:
    import pandas as pd


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

    methods = ordered_methods(list(stats["method"].unique()))
    rows = []
    for (budget, level), part in stats.groupby(["budget", "level"]):
        cells = {r["method"]: mean_std(r["mean"], r["std"], r["n"]) for r in part.to_dict("records")}
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


def figures_of(run: Run) -> tuple[Any, str]:
    """The study stage's per-arm means and intervals (`scaling.study.point_intervals`) on the
    evaluation images its summary names, and that split; empty where the run does not say."""
    import pandas as pd

    from scaling.study import point_intervals, rows_of

    evaluation = run.summary.get("evaluation")
    evaluation = evaluation if isinstance(evaluation, dict) else {}
    images, split = int(evaluation.get("images") or 0), str(evaluation.get("split") or "val")
    if not images:
        return pd.DataFrame(), split
    return point_intervals(rows_of(run.tables["study.csv"]), run.path, images, "gmacs"), split


def section(run: Run, figures: Figures) -> list[str]:
    study, summary = run.tables["study.csv"], run.summary
    stats = seed_stats(study)
    budgets = ", ".join(f"{b:g}" for b in sorted(study["budget"].unique()))
    proxy = run.config.get("proxy") if isinstance(run.config.get("proxy"), dict) else {}
    budget = f"{budgets} epochs (the study's `budget` column){recipe(proxy)}"
    if proxy.get("resolution"):
        budget += " (× each arm's resolution multiplier)"
    failed = int((study["status"] != "ok").sum())
    out = [
        f"### `{run.path}`: baseline {summary.get('baseline', '?')}, "
        f"compound coefficients {summary.get('coefficients', '?')}",
        "",
    ]
    intervals, split = figures_of(run)
    if len(intervals):
        out.append(
            figures.save(
                f"{run.label}_figure8.png",
                figure8(intervals, split, run.label),
                f"{run.label}: accuracy vs MACs per method (Figure 8)",
            )
        )
        dims = swept_dimensions(intervals)
        if dims:
            out.append(
                figures.save(
                    f"{run.label}_figure3.png",
                    figure3(intervals, dims, split),
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
    formats = {"macs": flops, "params": count, "activations": count, "macs_ratio": fixed(3)}
    formats |= {"images_per_s": fixed(1), "width": fixed(3), "depth": fixed(3), "multiplier": fixed(3)}
    out += [
        "Each arm: its multipliers and cost (MACs at the deployment resolution, 1000 classes), whether it "
        "landed on its level, and the proxy's training throughput:",
        "",
        table(arm_table(study), formats | {"level": lambda v: f"{v:g}x"}),
        "",
        source_line(run, budget),
        "",
    ]
    return out
