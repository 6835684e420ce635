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
    columns = ["id", "name", "macs", "params"]
    columns += [c for c in ("activations", "latency_ms") if c in trials.columns and trials[c].notna().any()]
    columns += ["accuracy", "reward"]
    top = trials[trials["status"] == "ok"].sort_values("reward", ascending=False).head(10)[columns]
    top = top.assign(id=[f"**{i}** (best)" if i == summary.get("best_trial") else str(i) for i in top["id"]])
    formats = {"macs": flops, "params": count, "activations": count, "latency_ms": fixed(2)}
    formats |= {"accuracy": fixed(4), "reward": fixed(4)}
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
