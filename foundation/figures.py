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
