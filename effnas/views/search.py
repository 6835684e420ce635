"""The search section of `effnas report`: the front, the best trials, the run's counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table
from foundation import figures as plots

if TYPE_CHECKING:
    pass


def front_figure(run: Run, cost: str) -> Any:
    """Accuracy against `cost` (macs or latency_ms): every trained trial, the Pareto front the
    search recorded when `cost` is its reward's own, the target T and the best trial."""
    trials, summary = run.tables["trials.csv"], run.summary
    ok = trials[(trials["status"] == "ok") & trials[cost].notna()]
    scale, unit = (1e6, "M MACs") if cost == "macs" else (1.0, "ms")
    reward_cost = "latency_ms" if summary.get("target_latency_ms") else "macs"
    target = summary.get("target_macs") if cost == "macs" else summary.get("target_latency_ms")
    fig, (ax,) = plots.axes(1, width=6.5, height=4.2)
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
