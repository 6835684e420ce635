"""Where the Hydra configs are: the one place that knows the layout of an install.

The configs live in the repo's top-level `conf/`. A wheel or `pip install .` ships them inside
the package as `effnas/conf/` (pyproject.toml maps the package `effnas.conf` onto `conf/`); an
editable install or a run from the checkout reads `conf/` beside the `effnas/` source folder.
This module imports only the standard library (no torch, no Hydra).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config directory: the packaged `effnas/conf/` when installed, else the checkout's `conf/`."""
    packaged = PACKAGE_DIR / "conf"
    checkout = PACKAGE_DIR.parent / "conf"
    for candidate in (packaged, checkout):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"effnas configs not found: neither {packaged} (installed package) nor {checkout} "
        "(source checkout) holds train.yaml; reinstall effnas (`pip install .` or `make install`)"
    )
