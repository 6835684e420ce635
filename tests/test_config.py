"""Hydra composition: every primary config with every option of every group it uses."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from effnas.cli import GROUPS
from effnas.config import CONF_DIR, compose
from search_spaces.arch import Arch
from search_spaces.cost import count
from search_spaces.official import OFFICIAL_PARAMS


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for stage, groups in GROUPS.items():
        for group in groups:
            for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
                cases.append((stage, group, option))
    return cases


@pytest.mark.parametrize(("stage", "group", "option"), _cases())
def test_every_group_option_composes(stage: str, group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "data" and option != "digits":
        overrides.append("data.root=/some/dir")
    cfg = compose(stage, overrides)
    node = cfg[group]
    assert OmegaConf.is_config(node)
    missing = OmegaConf.missing_keys(node)
    assert not missing, f"{stage}: {group}={option} leaves {missing} unset"


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_arch_configs_are_the_official_family(name: str) -> None:
    cfg = compose("describe", [f"arch={name}"])
    arch = Arch.from_dict(OmegaConf.to_container(cfg.arch))
    assert arch.name == name and count(arch).params == OFFICIAL_PARAMS[name]


def test_overrides_are_typed() -> None:
    cfg = compose("train", ["proxy.epochs=3", "run.seed=7"])
    assert cfg.proxy.epochs == 3.0 and cfg.run.seed == 7
