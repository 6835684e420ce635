"""The latency section of `effnas report`: a latency predictor held against measurements it was
not fitted on (`effnas latency --build-table`'s check, `--fit-predictor`'s k-fold), as a scatter
of predicted against measured latency with the +-10% band, and the agreement figures."""

from __future__ import annotations

from typing import Any

from effnas.views.common import Figures, Run, fixed, table


def agreement_rows(frame: Any, columns: dict[str, str]) -> Any:
    """One row per predictor column of predictor.csv: the share within +-10%, Spearman, errors."""
    import pandas as pd

    from search_spaces.latency_predictor import agreement

    measured = list(frame["measured_ms"])
    rows = []
    for label, column in columns.items():
        a = agreement(measured, list(frame[column]))
        rows.append({"predictor": label, **a})
    return pd.DataFrame(rows)


def section(run: Run, figures: Figures) -> list[str]:
    from foundation.figures import predicted_vs_measured

    frame, summary = run.tables["predictor.csv"], run.summary
    fitted = "fitted" in summary  # --fit-predictor: held-out (k-fold) predictions
    if fitted:
        what = (
            f"learned predictor ({summary['fitted']}, chosen by `{summary['model']}`), "
            f"{summary['folds']}-fold: every prediction by a model that did not see that architecture"
        )
        columns = {f"{summary['fitted']} (k-fold)": "predicted_ms"}
        if "table_refit_ms" in frame.columns:
            columns["table refit (k-fold)"] = "table_refit_ms"
        if "table_ms" in frame.columns:
            columns["table as built"] = "table_ms"
    else:
        what = "latency table (sum of parts, overhead + scale fitted on other architectures)"
        columns = {"table": "predicted_ms"}
    scores = agreement_rows(frame, columns)
    measured = list(frame["measured_ms"])
    panels = [
        (f"{label}: {a['within_10pct']:.0%} within +-10%", measured, list(frame[column]))
        for (label, column), a in zip(columns.items(), scores.to_dict("records"))
    ]
    setup = run.manifest.get("latency_setup") or {}
    machine = run.manifest.get("machine") or {}
    out = [f"### `{run.path}`: {what}", ""]
    out.append(
        figures.save(
            f"{run.label}_predicted_vs_measured.png",
            predicted_vs_measured(panels),
            f"{run.label}: predicted vs measured latency, +-10% band",
        )
    )
    formats = {k: fixed(3) for k in ("within_10pct", "spearman", "median_abs_error", "max_abs_error")}
    formats["mean_signed_error"] = fixed(3)
    out += [
        "",
        f"On {len(frame)} architectures the predictor did not see:",
        "",
        table(scores, formats),
        "",
        f"*Source: `{run.path}` (latency run, {run.manifest.get('status', '?')}) · "
        f"{setup.get('runtime', '?')}, {setup.get('threads', '?')} thread(s), batch {setup.get('batch', '?')} "
        f"on {machine.get('cpu') or '?'} · load average before {summary.get('load_average_before', '?')}, "
        f"after {summary.get('load_average_after', '?')}*",
        "",
    ]
    return out
