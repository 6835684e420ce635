"""Compound scaling: the (alpha, beta, gamma) grid and the B1..B7 scaler (the rounding rules they
apply are the architecture vocabulary's: `search_spaces.rounding`)."""
