"""Figures drawn from run tables, shared by the stage that writes a table and by `effnas report`,
which redraws from the same table (stages hand over only through run directories, so a figure
both draw lives here, below them). matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def axes(ncols: int, width: float = 5.0, height: float = 3.8) -> tuple[Any, list[Any]]:
    """A figure with a row of `ncols` axes, each `width` x `height` inches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(grid[0])


def close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# `effnas study search`: marker, colour, size per role; the searched one drawn last, on top
ROLE_STYLE = {
    "random": {"marker": "o", "color": "0.55", "markersize": 6},
    "base": {"marker": "s", "color": "tab:blue", "markersize": 7},
    "searched": {"marker": "*", "color": "tab:red", "markersize": 14},
}


def searched_among_random(study: pd.DataFrame) -> Any:
    """A search study's `study.csv` as accuracy against MACs, one panel per budget: each
    architecture's mean and sample std over its finished seeds, labelled; random ones grey, the
    base blue, the searched one a red star. None when no trial finished."""
    done = study[study["status"] == "ok"].copy()
    if done.empty:
        return None
    done["gmacs"] = done["macs"].astype(float) / 1e9
    budgets = sorted(done["budget"].unique())
    fig, panels = axes(len(budgets), width=5.0, height=3.9)
    for ax, budget in zip(panels, budgets):
        stats = (
            done[done["budget"] == budget]
            .groupby(["arch", "role", "gmacs"], sort=False)["accuracy"]
            .agg(["mean", "std"])
            .reset_index()
        )
        for role, style in ROLE_STYLE.items():
            part = stats[stats["role"] == role]
            if part.empty:
                continue
            ax.errorbar(
                part["gmacs"],
                part["mean"],
                yerr=part["std"].fillna(0),
                linestyle="none",
                capsize=3,
                label=role,
                zorder=3 if role == "searched" else 2,
                **style,
            )
            for _, p in part.iterrows():
                ax.annotate(
                    p["arch"], (p["gmacs"], p["mean"]), fontsize=6, xytext=(4, 3), textcoords="offset points"
                )
        ax.set(xlabel="MACs (G, deployment resolution, 1000 classes)", ylabel="proxy val accuracy")
        ax.set_title(f"searched vs random of its MACs, {budget:g} epochs", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
