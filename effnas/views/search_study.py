"""The search-study section of `effnas report`: the searched architecture against random ones of its MACs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, fixed, flops, mean_std, recipe, source_line, table
from foundation.verdict import describe
from nas import search_study

if TYPE_CHECKING:
    import pandas as pd


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
                "MACs": flops(v.get("macs")),
                "MACs / searched": fixed(3)(v.get("macs_ratio")),
                "accuracy": mean_std(v.get("mean"), v.get("std"), v.get("n")),
                "reward": mean_std(v.get("reward_mean"), v.get("reward_std")),
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


def section(run: Run, figures: Figures) -> list[str]:
    study, summary = run.tables["study.csv"], run.summary
    budgets = ", ".join(f"{b:g}" for b in sorted(study["budget"].unique()))
    proxy = run.config.get("proxy") if isinstance(run.config.get("proxy"), dict) else {}
    budget = f"{budgets} epochs (the study's `budget` column){recipe(proxy)}"
    out = [
        f"### `{run.path}`: `{summary.get('searched', '?')}` from `{summary.get('search_run', '?')}` vs "
        f"{summary.get('random', '?')} random architectures of its MACs and `{summary.get('base', '?')}`",
        "",
    ]
    if (study["status"] == "ok").any():
        out += [
            figures.save(
                f"{run.label}_accuracy_vs_macs.png",
                search_study.figure(summary, run.label),
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
