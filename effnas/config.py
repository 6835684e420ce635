"""Composition of a stage's config: the run settings every stage shares, the schemas Hydra checks
against (derived from the stage registry), and the config search path.

Each stage's primary config (`conf/<stage>.yaml`) starts from `<stage>_schema`, the stage's own
schema (beside its code) plus `run` and, for trial stages, `ray` (`effnas.registry.full_schema`),
so a mistyped key or a wrong-typed value fails at composition. Defaults live in `conf/`, not
here. Users add config groups (an arch, a proxy, a data source) from folders of their own:
`--config-dir DIR` or `EFFNAS_CONFIG_PATH=DIR[:DIR...]`, appended to Hydra's search path, so
`DIR/arch/my_net.yaml` is `arch=my_net`. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from effnas.registry import STAGES, Stage
from foundation.conf_dir import CONFIG_PATH_ENV, conf_dir, user_dirs
from foundation.errors import UserError

CONF_DIR: Path = conf_dir()
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunConfig:
    root: str = "results"  # runs land in <root>/<stage>/<timestamp>/
    dir: Optional[str] = None  # an explicit run directory instead
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores (a Ray trial: its CPUs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N


def check_run(run: Any) -> None:
    device = str(run.device)
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UserError(f"run.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if int(run.threads) < 0:
        raise UserError(f"run.threads must be >= 0 (0 = all cores), got {run.threads}")


def full_schema(stage: Stage) -> type:
    """The schema Hydra composes `stage` against: its own, plus `run` for every stage and `ray`
    and `mlflow` for trial stages (the application's, the adapter's and the trial log's
    settings, declared once)."""
    added: list[Any] = [("run", RunConfig, dataclasses.field(default_factory=RunConfig))]
    if stage.trials or stage.data_parallel:
        from adapters.raytune import RayConfig

        added.append(("ray", RayConfig, dataclasses.field(default_factory=RayConfig)))
    if stage.trials:
        from training.trial_log import MlflowConfig

        added.append(("mlflow", MlflowConfig, dataclasses.field(default_factory=MlflowConfig)))
    base = stage.schema_class()
    return dataclasses.make_dataclass(base.__name__, added, bases=(base,))


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for stage in STAGES.values():
        cs.store(name=f"{stage.name}_schema", node=full_schema(stage))


@contextmanager
def with_config_dirs(dirs: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """The user's `--config-dir`s in front of `EFFNAS_CONFIG_PATH` while one command runs, so
    every reader of config groups (composition, a stage resolving an arch name) sees them."""
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"config directory {d} does not exist")
    before = os.environ.get(CONFIG_PATH_ENV)
    if dirs:
        os.environ[CONFIG_PATH_ENV] = os.pathsep.join([*(str(Path(d).resolve()) for d in dirs), before or ""])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONFIG_PATH_ENV, None)
        else:
            os.environ[CONFIG_PATH_ENV] = before


def config_dirs() -> list[Path]:
    """The user's config folders, in search order (`EFFNAS_CONFIG_PATH`, checked)."""
    dirs = user_dirs()
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"config directory {d} (from {CONFIG_PATH_ENV}) does not exist")
    return dirs


def group_options(group: str) -> list[str]:
    """The options of config group `group`: effnas's own and those in the user's folders."""
    found = {p.stem for d in (CONF_DIR, *config_dirs()) for p in (d / group).glob("*.yaml")}
    return sorted(found)


def compose(stage: str, overrides: Sequence[str] = ()) -> Any:
    """The composed, validated config of `stage` (a DictConfig), Hydra's own composition."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    overrides = list(overrides)
    dirs = config_dirs()
    if dirs:
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{d}" for d in dirs) + "]")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=stage):
        return hydra_compose(config_name=stage, overrides=overrides, return_hydra_config=True)
