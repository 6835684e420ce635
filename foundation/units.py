"""Parsing of human quantities on the command line: FLOP counts, durations and latencies."""

from __future__ import annotations

import math
import re

from foundation.errors import UserError

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
_FLOPS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KkMmGgBbTt]?)\s*$")


def parse_flops(text: str | int | float) -> int:
    """'400M', '0.4G', '4e8', '400000000' -> 400_000_000 multiply-adds. 'B' means billion."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _FLOPS.match(str(text))
        if not m:
            raise UserError(
                f"bad FLOP count {text!r}: expected a positive number with an optional K/M/G suffix, e.g. 400M"
            )
        value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not math.isfinite(value) or value < 1:
        raise UserError(f"bad FLOP count {text!r}: must be a positive number, e.g. 400M")
    return round(value)


def format_flops(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:g}"


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|hr)?\s*$")


def parse_duration(text: str | int | float) -> float:
    """'90s', '30m', '2h', '45' (seconds) -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise UserError(f"bad duration {text!r}: expected e.g. 90s, 30m or 2h")
        seconds = (
            float(m.group(1))
            * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}[m.group(2)]
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"bad duration {text!r}: must be > 0")
    return seconds


_LATENCY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|us|s)?\s*$")


def parse_latency(text: str | int | float) -> float:
    """'15ms', '0.015s', '800us', '15' (milliseconds) -> milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        ms = float(text)
    else:
        m = _LATENCY.match(str(text))
        if not m:
            raise UserError(f"bad latency {text!r}: expected e.g. 15ms, 0.015s or 800us")
        ms = float(m.group(1)) * {None: 1.0, "ms": 1.0, "s": 1e3, "us": 1e-3}[m.group(2)]
    if not math.isfinite(ms) or ms <= 0:
        raise UserError(f"bad latency {text!r}: must be > 0")
    return ms


def parse_latency_target(text: str | int | float) -> tuple[float, str | None]:
    """A latency target with an optional runtime: '15ms' -> (15.0, None), '15ms@onnxruntime' ->
    (15.0, 'onnxruntime'). Which runtimes exist is the measuring code's to say."""
    value, at, runtime = str(text).partition("@")
    if at and not re.fullmatch(r"[A-Za-z][\w.-]*", runtime.strip()):
        raise UserError(f"bad latency target {text!r}: expected e.g. 15ms or 15ms@onnxruntime")
    return parse_latency(value if at else text), (runtime.strip() if at else None)


_PHI_ITEM = re.compile(r"^\s*(-?\d+)\s*(?:\.\.\s*(-?\d+)\s*)?$")


def parse_phi(text: object) -> list[int]:
    """`3`, `1..7` (inclusive) or `1,3,5` (items may be ranges) -> sorted distinct phis >= 1."""
    raw = str(text).strip()
    phis: list[int] = []
    for item in raw.split(","):
        m = _PHI_ITEM.match(item)
        if not m:
            raise UserError(f"--phi {raw!r}: expected an integer (3), a range (1..7) or a list (1,3,5)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"--phi {raw!r}: range {lo}..{hi} runs backwards; write {hi}..{lo}")
        phis.extend(range(lo, hi + 1))
    if min(phis) < 1:
        raise UserError(f"--phi {raw!r}: phi must be >= 1 (phi = 0 is the baseline itself)")
    if len(set(phis)) != len(phis):
        raise UserError(f"--phi {raw!r}: a phi is listed twice")
    return sorted(phis)
