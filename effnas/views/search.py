"""The search section of `effnas report`: the front, the best trials, the run's counts."""

from __future__ import annotations

from typing import Any

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table


def front_figure(run: Run, cost: str) -> Any:
    """The search's own accuracy-against-`cost` figure (`nas.records.plot_pareto`: every trained
    trial, the Pareto front, the target T on the reward's own axis and the best trial), drawn from
    the run's trials.csv."""
    from nas.records import plot_pareto, read_trials

    summary = run.summary
    target = summary.get("target_macs") if cost == "macs" else summary.get("target_latency_ms")
    title = f"{run.label}: {summary.get('sampler')} on {summary.get('dataset')}"
    rows = read_trials(run.path / "trials.csv")
    return plot_pareto(rows, float(target or 0), title, cost, show_target=bool(target))


def section(run: Run, figures: Figures) -> list[str]:
    trials, summary = run.tables["trials.csv"], run.summary
    target = (
        f"T = {summary['target_latency_ms']:g} ms (predicted latency)"
        if summary.get("target_latency_ms")
        else f"T = {flops(summary.get('target_macs'))} MACs"
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
    out += measured_lines(run, figures)
    columns = ["id", "name", "macs", "params"]
    shown = ("activations", "latency_ms", "measured_ms")
    columns += [c for c in shown if c in trials.columns and trials[c].notna().any()]
    columns += ["accuracy", "reward"]
    if "measured_reward" in trials.columns and trials["measured_reward"].notna().any():
        columns.append("measured_reward")
    top = trials[trials["status"] == "ok"].sort_values("reward", ascending=False).head(10)[columns]
    top = top.assign(id=[f"**{i}** (best)" if i == summary.get("best_trial") else str(i) for i in top["id"]])
    formats = {"macs": flops, "params": count, "activations": count, "latency_ms": fixed(2)}
    formats |= {
        "accuracy": fixed(4),
        "reward": fixed(4),
        "measured_ms": fixed(2),
        "measured_reward": fixed(4),
    }
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


def measured_lines(run: Run, figures: Figures) -> list[str]:
    """A latency-aware search that measured its top trials end to end before naming the best:
    their predicted against measured latency (the +-10% band), and whether measuring changed the
    winner. Nothing for a search that measured none."""
    trials, summary = run.tables["trials.csv"], run.summary
    if "measured_ms" not in trials.columns or not trials["measured_ms"].notna().any():
        return []
    from foundation.figures import predicted_vs_measured

    done = trials[trials["measured_ms"].notna()]
    measured, predicted = list(done["measured_ms"]), list(done["latency_ms"])
    within = sum(abs(p / m - 1) <= 0.10 for m, p in zip(measured, predicted))
    title = f"{run.label}: top {len(done)} by reward, {within}/{len(done)} within +-10%"
    fig = predicted_vs_measured([(title, measured, predicted)])
    picked = summary.get("best_by_prediction")
    changed = picked is not None and picked != summary.get("best_trial")
    source = run.manifest.get("latency_predictor") or run.manifest.get("latency_table") or "?"
    return [
        figures.save(
            f"{run.label}_predicted_vs_measured.png", fig, f"{run.label}: predicted vs measured latency"
        ),
        "",
        f"The top {len(done)} trials by reward measured end to end before the best was named "
        f"(predicted by `{source}`); the best is picked on the measured latency: trial "
        f"{summary.get('best_trial')}, measured {summary.get('best_measured_ms')} ms against "
        f"{summary.get('best_latency_ms')} ms predicted"
        + (
            f"; the prediction alone would have picked trial {picked}."
            if changed
            else " (the same trial the prediction picks)."
        )
        + drift_sentence(run.manifest.get("latency_drift"), run.manifest.get("latency_drift_end"))
        + (
            " Each was measured beside the predictor's anchor architecture, its ratio to it converted to "
            "the speed the predictor was fitted at (`measured_raw_ms` keeps the plain milliseconds)."
            if "measured_raw_ms" in done.columns and done["measured_raw_ms"].notna().any()
            else ""
        ),
        "",
    ]


def drift_sentence(drift: dict | None, end: dict | None = None) -> str:
    """What the search's drift check found (nothing when it did not run)."""
    if not drift:
        return ""
    moved = (
        f" Before the first trial, the predictor's {drift['references']} reference architectures ran "
        f"{drift['factor']:.3f}x the latency they had when it was fitted "
        f"(each {drift['low']:.3f}-{drift['high']:.3f}x)"
        + (f", and {end['factor']:.3f}x after the trials" if end else "")
    )
    from nas.latency_check import scaled_by

    if scaled_by(drift) != 1.0:
        return moved + f"; every prediction above is the predictor's x{drift['factor']:.3f}."
    why = "latency_drift=warn" if drift.get("mode") == "warn" else "within +-10%"
    return moved + f"; the predictions above are not scaled ({why})."
