"""effnas: EfficientNet's method (NAS baseline, compound grid, B1..B7) as a framework.

This package holds the plumbing every stage shares: the CLI, configs, run directories, data and
the proxy trainer. Architectures live in `search_spaces`, the search in `nas`, scaling in `scaling`.
"""

__version__ = "0.1.0"
