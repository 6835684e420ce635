"""effnas: EfficientNet's method (NAS baseline, compound grid, B1..B7) as a framework.

The top floor: the CLI, the stage registry, configs, run directories and their lifecycle, the
pipeline, and the views over finished runs (report, dashboard). What it builds on sits in the
folders below: `foundation` (errors, units, run files, verdicts), `search_spaces` (architectures),
`training` (data, the proxy trainer, trials), the stages (`nas`, `scaling`, `deploy`, `models`)
and `adapters` (Ray Tune).
"""

from effnas.api import Run, arch, cost, create_model, load_run, run

__version__ = "0.1.0"
__all__ = ["Run", "arch", "cost", "create_model", "load_run", "run"]
