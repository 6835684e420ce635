"""What the grid and scale stages show a person: fixed-width text tables and their figures.

Figures use matplotlib's Agg backend (no display) and go through `RunDir.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from foundation import figures
from foundation.units import format_flops

# column -> (header, formatter); columns not listed print with str()
Formatter = Callable[[Any], str]


def _count(v: Any) -> str:
    return "-" if v is None else f"{int(v):,}"


def _flops(v: Any) -> str:
    return "-" if v is None else format_flops(int(v))


def _fixed(digits: int) -> Formatter:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{float(v):.{digits}f}"

    return fmt


FORMATS: dict[str, Formatter] = {
    "params": _count,
    "macs": _flops,
    "target_macs": _flops,
    "ours_macs": _flops,
    "ours_params": _count,
    "width": _fixed(4),
    "depth": _fixed(4),
    "dropout": _fixed(3),
    "macs_ratio": _fixed(3),
    "accuracy": _fixed(4),
    "product": _fixed(4),
    "phi_width": _fixed(2),
    "phi_depth": _fixed(2),
    "phi_resolution": _fixed(2),
    "phi_used": _fixed(2),
    "seconds": _fixed(1),
}


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table (numbers right-aligned), one header line."""
    cells = [list(columns)] + [[FORMATS.get(c, _plain)(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _plain(v: Any) -> str:
    return "-" if v is None else str(v)


def figure(ncols: int, width: float = 4.2, height: float = 3.4) -> tuple[Any, list[Any]]:
    """A row of `ncols` axes on the Agg backend."""
    return figures.axes(ncols, width, height)


close = figures.close
