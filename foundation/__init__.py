"""The ground floor: what every other folder may use and that uses none of them.

Errors, units, run-directory files, figure helpers, verdicts (`foundation.verdict`) and the
per-image evaluation records they pair over. Standard library, numpy, scipy; no torch.
"""
