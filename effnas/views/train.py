"""The train section of `effnas report`: final accuracy and the curves."""

from __future__ import annotations

from collections.abc import Sequence

from effnas.views.common import Figures, Run, count, fixed, flops, source_line, table
from models.train import plot_curves


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
    if any(r.summary.get("weights") == "ema" for r in runs):  # scored the EMA: its trained weights beside it
        for row, r in zip(rows, runs):
            row["weights"] = r.summary.get("weights")
            row["raw_test_accuracy"] = r.summary.get("raw_test_accuracy")
    formats = {"val_accuracy": fixed(4), "test_accuracy": fixed(4), "params": count, "macs": flops}
    formats |= {"raw_test_accuracy": fixed(4)}
    formats |= {"seconds": fixed(1), "images_per_s": fixed(1), "epochs": lambda v: f"{v:.3g}"}
    fig = plot_curves(
        [(r.label, f"{r.label} {r.summary.get('arch')}", r.tables["metrics.csv"]) for r in runs]
    )
    out = [
        figures.save("train_curves.png", fig, "validation accuracy and training loss per epoch"),
        "",
        "Final accuracy (test only where the run asked for it: `data.use_test=true`; with the EMA on,"
        " `test_accuracy` is the EMA's and `raw_test_accuracy` the trained weights' own):",
        "",
        table(pd.DataFrame(rows), formats),
        "",
    ]
    out += [f"{source_line(r)} ({r.label})  " for r in runs]
    return [*out, ""]
