"""Compound scaling: rounding rules, the (alpha, beta, gamma) grid and the B1..B7 scaler."""

from scaling.rounding import resolve_stages, round_channels, round_repeats

__all__ = ["resolve_stages", "round_channels", "round_repeats"]
