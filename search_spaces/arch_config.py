"""An `Arch` as a config node: its schema for the `arch` config group, and the way back.

`ArchConfig` is derived from `Arch`'s own fields (blocks in place of the decoded stages), so the
two cannot drift apart; `arch_from_cfg` turns a composed node back into an `Arch`, a bad value
being one `UserError` line. No torch.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from omegaconf import MISSING, OmegaConf

from foundation.errors import UserError
from search_spaces.arch import Arch, ArchError


def _schema() -> type:
    hints = typing.get_type_hints(Arch)
    fields: list[Any] = [("name", str, MISSING), ("blocks", list[str], MISSING)]
    for f in dataclasses.fields(Arch):
        if f.name in ("stages", "name"):
            continue
        if f.name == "meta":
            fields.append(("meta", dict[str, Any], dataclasses.field(default_factory=dict)))
        else:
            fields.append((f.name, hints[f.name], f.default))
    return dataclasses.make_dataclass("ArchConfig", fields)


ArchConfig = _schema()


def arch_given(cfg: Any) -> bool:
    """Whether a composed stage config names an architecture (`--arch`, `arch=`, an arch file);
    stages whose `arch` group defaults to null fall back to an upstream run or the paper's."""
    arch = cfg.get("arch")
    return arch is not None and not OmegaConf.is_missing(arch, "name")


def arch_from_cfg(cfg_arch: Any) -> Arch:
    """The `Arch` of a composed config's `arch` node; bad values are a UserError."""
    data = OmegaConf.to_container(cfg_arch, resolve=True) if OmegaConf.is_config(cfg_arch) else cfg_arch
    try:
        return Arch.from_dict(data)
    except ArchError as exc:
        raise UserError(f"arch: {exc}") from None
