"""The scale section of `effnas report`: our family against the released B1..B7."""

from __future__ import annotations

from typing import TYPE_CHECKING

from effnas.views.common import Figures, Run, count, fixed, flops, plain, source_line, table
from scaling.scaler import official_family, plot_against_official

if TYPE_CHECKING:
    pass


def section(run: Run, figures: Figures) -> list[str]:
    models, summary = run.tables["models.csv"], run.summary
    family = official_family(run.tables["models.csv"], run.tables["official_comparison.csv"])
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
            plot_against_official(family, str(run.summary.get("mode"))),
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
