"""Figures drawn from run tables, shared by the stage that writes a table and by `effnas report`,
which redraws from the same table (stages hand over only through run directories, so a figure
both draw lives here, below them). matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from typing import Any


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


def predicted_vs_measured(panels: list[tuple[str, list[float], list[float]]]) -> Any:
    """One scatter per (title, measured ms, predicted ms) panel, with the diagonal and the +-10%
    band a latency predictor is judged by: the latency stage's own plots, the search's check of
    its winners, and `effnas report` redrawing either."""
    fig, grid = axes(len(panels), width=4.5, height=4.5)
    for ax, (title, measured, predicted) in zip(grid, panels):
        ax.scatter(measured, predicted, s=14)
        lo, hi = min([*measured, *predicted]), max([*measured, *predicted])
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between(
            [lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.2, label="+-10%"
        )
        ax.set(xlabel="measured ms", ylabel="predicted ms", title=title)
        ax.legend(loc="upper left")
    return fig
