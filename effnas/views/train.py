"""The train section of `effnas report`: final accuracy and the curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table
from foundation import figures as plots

if TYPE_CHECKING:
    pass


def section(runs: Sequence[Run], figures: Figures) -> list[str]:
    import pandas as pd

    rows = [
        {
            "run": r.label,
            "arch": r.summary.get("arch"),
            "val_accuracy": r.summary.get("val_accuracy"),
            "test_accuracy": r.summary.get("test_accuracy"),
            "params": r.summary.get("params"),
            "macs": r.summary.get("macs"),
            "resolution": r.summary.get("resolution"),
            "epochs": r.summary.get("epochs"),
            "seconds": r.summary.get("seconds"),
            "images_per_s": r.summary.get("images_per_second"),
        }
        for r in runs
    ]
    formats = {"val_accuracy": fixed(4), "test_accuracy": fixed(4), "params": count, "macs": flops}
    formats |= {"seconds": fixed(1), "images_per_s": fixed(1), "epochs": lambda v: f"{v:.3g}"}
    has_loss = all("train_loss" in r.tables["metrics.csv"].columns for r in runs)
    fig, axes = plots.axes(2 if has_loss else 1, width=5.0, height=3.6)
    for r in runs:
        metrics = r.tables["metrics.csv"]
        metrics.plot(
            x="epoch",
            y="val_accuracy",
            marker="o",
            ms=3,
            ax=axes[0],
            label=f"{r.label} {r.summary.get('arch')}",
        )
        if has_loss:
            metrics.plot(x="epoch", y="train_loss", marker="o", ms=3, ax=axes[1], label=r.label)
    axes[0].set(ylabel="validation accuracy", title="validation accuracy")
    if has_loss:
        axes[1].set(ylabel="training loss", title="training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    out = [
        figures.save("train_curves.png", fig, "validation accuracy and training loss per epoch"),
        "",
        "Final accuracy (test only where the run asked for it: `data.use_test=true`):",
        "",
        table(pd.DataFrame(rows), formats),
        "",
    ]
    out += [f"{source_line(r)} ({r.label})  " for r in runs]
    return [*out, ""]
