"""The scale section of `effnas report`: our family against the released B1..B7."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from effnas.views.common import Figures, Run, count, fixed, flops, plain, source_line, table
from foundation import figures as plots

if TYPE_CHECKING:
    import pandas as pd


def official_activations(models: Sequence[str]) -> list[int]:
    """Activations of the released B-models (the cost model on the official table; no torch)."""
    from search_spaces.cost import count
    from search_spaces.official import official

    return [count(official(f"efficientnet_{m}")).activations for m in models]


def scale_family(run: Run) -> pd.DataFrame:
    """The official B1..B7 beside ours, joined on phi: params, MACs, activations and the phi each
    released model implies per dimension under the run's coefficients."""
    comp = run.tables["official_comparison.csv"].copy()
    models = run.tables["models.csv"]
    if "activations" not in comp.columns:
        comp["activations"] = official_activations(list(comp["model"]))
    ours = models.set_index("phi")
    comp["ours_phi"] = [int(m.lstrip("b")) for m in comp["model"]]
    for column in ("params", "macs", "activations"):
        comp[f"ours_{column}"] = [
            ours[column].get(p, math.nan) if column in ours.columns else math.nan for p in comp["ours_phi"]
        ]
    comp["ours_macs / official"] = comp["ours_macs"] / comp["macs"]
    return comp


def scale_figure(run: Run, family: pd.DataFrame) -> Any:
    columns = [c for c in ("params", "macs", "activations") if family[f"ours_{c}"].notna().any()]
    fig, axes = plots.axes(len(columns), width=4.2, height=3.6)
    for ax, column in zip(axes, columns):
        family.plot(x="ours_phi", y=column, marker="s", logy=True, ax=ax, label="released B1..B7", color="k")
        family.plot(
            x="ours_phi",
            y=f"ours_{column}",
            marker="o",
            logy=True,
            ax=ax,
            label=f"ours ({run.summary.get('mode')})",
        )
        ax.set(xlabel="phi", ylabel=column, title=column)
        ax.grid(alpha=0.3, which="both")
    return fig


def section(run: Run, figures: Figures) -> list[str]:
    models, summary = run.tables["models.csv"], run.summary
    family = scale_family(run)
    columns = ["phi", "name", "width", "depth", "resolution", "params", "macs"]
    columns += [c for c in ("activations",) if c in models.columns] + ["macs_ratio"]
    formats = {
        "params": count,
        "macs": flops,
        "activations": count,
        "width": fixed(4),
        "depth": fixed(4),
    }
    formats |= {"macs_ratio": fixed(3), "phi": plain}
    source = summary.get("coefficients_source") or {}
    out = [
        f"### `{run.path}`: {summary.get('mode')} mode, (alpha, beta, gamma) = "
        f"({summary.get('alpha')}, {summary.get('beta')}, {summary.get('gamma')}) "
        f"from {source.get('source', '?')}",
        "",
        figures.save(
            f"{run.label}_family.png",
            scale_figure(run, family),
            f"{run.label}: ours against the released B1..B7",
        ),
        "",
        "Our family (`macs_ratio` = MACs / (2^phi × the baseline's)):",
        "",
        table(
            models[columns].rename(columns={"macs_ratio": "macs / 2^phi·B0"}),
            formats | {"macs / 2^phi·B0": fixed(3)},
        ),
        "",
        source_line(run),
        "",
    ]
    official = ["model", "width", "depth", "resolution", "params", "macs", "activations"]
    implied = ["phi_width", "phi_depth", "phi_resolution"]
    ours = ["ours_params", "ours_macs", "ours_activations", "ours_macs / official"]
    shown = family[[*official, *implied, *ours]]
    formats = {c: count for c in ("params", "activations", "ours_params", "ours_activations")}
    formats |= {"macs": flops, "ours_macs": flops, "ours_macs / official": fixed(3)}
    formats |= {c: fixed(2) for c in ("phi_width", "phi_depth", "phi_resolution")}
    out += [
        "The released B1..B7 (activations from the cost model), the phi each implies per dimension under "
        "these coefficients (`-`: that coefficient is 1, it implies no phi), and ours at the same phi:",
        "",
        table(shown, formats),
        "",
        source_line(run),
        "",
    ]
    out += [f"- {note.removeprefix('note: ')}" for note in summary.get("notes") or []]
    return [*out, ""]
