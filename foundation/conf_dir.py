"""Where the Hydra configs are: the one place that knows the layout of an install.

The configs live in the repo's top-level `conf/`. A wheel or `pip install .` ships them inside
the package as `effnas/conf/` (pyproject.toml maps the package `effnas.conf` onto `conf/`); an
editable install or a run from the checkout reads `conf/` beside the source folders.
This module imports only the standard library (no torch, no Hydra).
"""

from __future__ import annotations

import os
from pathlib import Path

INSTALL_ROOT = Path(__file__).resolve().parents[1]  # site-packages, or the checkout
CONFIG_PATH_ENV = "EFFNAS_CONFIG_PATH"  # the user's config folders, os.pathsep-separated


def conf_dir() -> Path:
    """The config directory: the packaged `effnas/conf/` when installed, else the checkout's `conf/`."""
    packaged = INSTALL_ROOT / "effnas" / "conf"
    checkout = INSTALL_ROOT / "conf"
    for candidate in (packaged, checkout):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"effnas configs not found: neither {packaged} (installed package) nor {checkout} "
        "(source checkout) holds train.yaml; reinstall effnas (`pip install .` or `make install`)"
    )


def user_dirs() -> list[Path]:
    """The user's config folders (`EFFNAS_CONFIG_PATH`; `--config-dir` adds to it), in order."""
    return [Path(d).resolve() for d in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if d]


def option_file(group: str, name: str) -> Path | None:
    """The YAML of option `name` of config group `group`, searched as Hydra does: effnas's own
    configs first, then the user's folders; None if no folder has it."""
    for folder in (conf_dir(), *user_dirs()):
        path = folder / group / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def load_option(group: str, name: str, _seen: tuple[str, ...] = ()) -> dict:
    """Option `name` of config group `group` as a plain mapping, the options it extends through
    its `defaults` list (`defaults: [efficientnet_b0, _self_]`) merged in first, the way Hydra
    composes a group option; for code that needs one option without composing a stage (an arch
    named on the command line, a proxy in a benchmark). Raises LookupError naming what is missing."""
    import yaml

    path = option_file(group, name)
    if path is None or name in _seen:
        why = "extends itself" if name in _seen else "no such file in effnas's configs or your folders"
        raise LookupError(f"{group}/{name}.yaml: {why}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise LookupError(f"{path}: not a mapping")
    merged: dict = {}
    for entry in data.pop("defaults", []) or []:
        if entry != "_self_" and isinstance(entry, str):
            merged.update(load_option(group, entry, (*_seen, name)))
    merged.update(data)
    return merged
