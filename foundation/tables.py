"""Fixed-width text tables for the console (and Markdown ones for a run's notes): the one layout
every stage prints with, and the cell formats its numbers print in."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from foundation.units import format_flops

Formatter = Callable[[Any], str]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def count(v: Any) -> str:
    """1,234,567 (`-` when missing)."""
    return "-" if _missing(v) else f"{int(v):,}"


def flops(v: Any) -> str:
    """Multiply-adds with a unit, 390.1M (`-` when missing)."""
    return "-" if _missing(v) else format_flops(int(v))


def fixed(digits: int) -> Formatter:
    """A formatter with `digits` decimals (`-` when missing)."""

    def fmt(v: Any) -> str:
        return "-" if _missing(v) else f"{float(v):.{digits}f}"

    return fmt


def plain(v: Any) -> str:
    return "-" if v is None else str(v)


# column -> formatter for the scaling stages' tables; columns not listed print with `plain`
FORMATS: dict[str, Formatter] = {
    "params": count,
    "macs": flops,
    "target_macs": flops,
    "ours_macs": flops,
    "ours_params": count,
    "width": fixed(4),
    "depth": fixed(4),
    "dropout": fixed(3),
    "macs_ratio": fixed(3),
    "accuracy": fixed(4),
    "product": fixed(4),
    "phi_width": fixed(2),
    "phi_depth": fixed(2),
    "phi_resolution": fixed(2),
    "phi_used": fixed(2),
    "seconds": fixed(1),
}


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    formats: Mapping[str, Formatter] | None = None,
    headers: Sequence[str] | None = None,
    align: str = "right",
    markdown: bool = False,
) -> str:
    """`rows` as an aligned text table, one header line (`headers`, else the column names), each
    cell through its column's formatter (`formats`, else FORMATS, else `plain`). `align`: right
    (numbers), left, or first-left (a name column, then numbers). `markdown`: pipes and a rule
    under the header, so the text is a Markdown table as well."""
    formats = FORMATS if formats is None else formats
    cells = [list(headers or columns)] + [[formats.get(c, plain)(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def pad(i: int, text: str, width: int) -> str:
        left = align == "left" or (align == "first-left" and i == 0)
        return text.ljust(width) if left else text.rjust(width)

    lines = [[pad(i, c, w) for i, (c, w) in enumerate(zip(row, widths))] for row in cells]
    if not markdown:
        return "\n".join("  ".join(line).rstrip() for line in lines)
    out = ["| " + " | ".join(line) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
