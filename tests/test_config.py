"""Hydra composition: every primary config with every option of every group it uses."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from effnas.config import CONF_DIR, compose
from effnas.registry import STAGES
from search_spaces.arch import Arch
from search_spaces.cost import count
from search_spaces.official import OFFICIAL_PARAMS


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for stage in STAGES.values():
        for group in stage.groups:
            for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
                cases.append((stage.name, group, option))
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


def test_every_registered_stage_composes_with_run_and_ray_where_it_uses_ray() -> None:
    """`ray` settings where a stage runs trials (Ray Tune) or data-parallel workers (Ray Train)."""
    for stage in STAGES.values():
        cfg = compose(stage.name, [])
        assert "run" in cfg and ("ray" in cfg) == (stage.trials or stage.data_parallel), stage.name
    assert STAGES["train"].data_parallel and not STAGES["train"].trials


def test_proxy_defaults_live_in_conf_once() -> None:
    """The schema declares the keys; conf/proxy/default.yaml gives every value."""
    import dataclasses

    import yaml

    from training.proxy_config import ProxyConfig, load_proxy

    fields = {f.name for f in dataclasses.fields(ProxyConfig)}
    assert OmegaConf.missing_keys(OmegaConf.structured(ProxyConfig)) == fields  # no value in code
    assert set(yaml.safe_load((CONF_DIR / "proxy" / "default.yaml").read_text())) == fields
    composed = compose("search", ["proxy=default"]).proxy
    assert dataclasses.asdict(load_proxy("default")) == OmegaConf.to_container(composed)


def test_a_users_config_folder_adds_group_options(tmp_path, monkeypatch, capsys) -> None:
    from effnas.cli import main

    (tmp_path / "mine" / "arch").mkdir(parents=True)
    b0 = (CONF_DIR / "arch" / "efficientnet_b0.yaml").read_text()
    (tmp_path / "mine" / "arch" / "half_b0.yaml").write_text(
        b0.replace("name: efficientnet_b0", "name: half_b0").replace("width: 1.0", "width: 0.5")
    )
    assert main(["describe", "--config-dir", str(tmp_path / "mine"), "arch=half_b0"]) == 0
    assert "half_b0  width=0.5" in capsys.readouterr().out
    monkeypatch.setenv("EFFNAS_CONFIG_PATH", str(tmp_path / "mine"))
    assert compose("train", ["arch=half_b0"]).arch.width == 0.5
    with pytest.raises(SystemExit):
        main(["describe", "--help"])
    assert "half_b0" in capsys.readouterr().out  # the help lists the user's options too
