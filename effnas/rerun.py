"""Comparison of a re-executed run's summary with the original's (`effnas rerun`)."""

from __future__ import annotations

import math
from typing import Any

# Keys that legitimately differ between two executions of the same config.
VOLATILE = {
    "wall_seconds",
    "seconds",
    "images_per_second",
    "run_dir",
    "started",
    "finished",
    "compile_seconds",
}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def compare_summaries(old: dict[str, Any], new: dict[str, Any], rel_tol: float = 0.0) -> dict[str, Any]:
    """Every non-volatile summary value must match (exactly by default)."""
    a, b = _flatten(old), _flatten(new)
    lines, mismatches = [], []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in VOLATILE or "seconds" in key.split(".")[-1]:
            continue
        x, y = a.get(key), b.get(key)
        same = x == y
        if not same and isinstance(x, (int, float)) and isinstance(y, (int, float)):
            same = math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0)
        if not same:
            mismatches.append(key)
        lines.append(f"  {'=' if same else '!'} {key}: {x!r} -> {y!r}")
    return {"match": not mismatches, "mismatches": mismatches, "lines": lines}
