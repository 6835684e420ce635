"""Weight files: a plain state_dict (`model.pt`, what `effnas train` and `effnas convert` write)
or a finished train or convert run that holds one, read and fitted to a built model with one-line errors. Used by `effnas export`,
`effnas latency` and the Python API (`effnas.create_model(..., weights=...)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundation.errors import UserError


def weight_source(
    value: str | Path | None, flag: str = "--weights"
) -> tuple[Path | None, Path | None, dict[str, Any]]:
    """(the state_dict file, the train or convert run it belongs to, that run's facts) for
    `--weights` (or `flag`: `effnas train --init`): a file, or a finished train or convert run
    directory (its model.pt)."""
    from foundation.runfiles import require_run, stage_of

    if not value:
        return None, None, {}
    path = Path(str(value))
    if path.is_dir() and stage_of(path) == "convert":
        if not (path / "model.pt").is_file():
            raise UserError(f"{flag} {path}: the convert run has no model.pt (converted --to a library?)")
        return path / "model.pt", path, convert_facts(path, flag)
    if path.is_file() and stage_of(path.parent) == "convert":
        return path, path.parent, convert_facts(path.parent, flag)
    if path.is_dir():
        run = require_run(path, "train", flag)
        weights = run / "model.pt"
        if not weights.is_file():
            raise UserError(f"{flag} {run}: the train run has no model.pt (trained with save_weights=false?)")
        return weights, run, train_facts(run, flag)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file or directory")
    if stage_of(path.parent) == "train":  # results/train/<run>/model.pt: that run's facts too
        return path, path.parent, train_facts(path.parent, flag)
    return path, None, {}


def train_facts(run: Path, flag: str = "--weights") -> dict[str, Any]:
    """What a finished train run trained: its arch node, classes, resolution and stem stride."""
    from omegaconf import OmegaConf

    from foundation.runfiles import read_json

    summary = read_json(run / "summary.json")
    if summary.get("status") != "done":
        raise UserError(f"{flag} {run}: the train run did not finish (status {summary.get('status')!r})")
    recorded = run / ".hydra" / "config.yaml"
    if not recorded.is_file():
        raise UserError(f"{flag} {run}: the train run has no .hydra/config.yaml")
    cfg = OmegaConf.load(recorded)
    dataset = read_json(run / "manifest.json").get("dataset") or {}
    return {
        "arch": cfg.arch,
        "num_classes": OmegaConf.select(cfg, "proxy.num_classes") or dataset.get("num_classes"),
        "resolution": summary.get("resolution") or OmegaConf.select(cfg, "proxy.resolution"),
        "stem_stride": OmegaConf.select(cfg, "proxy.stem_stride"),
    }


def convert_facts(run: Path, flag: str = "--weights") -> dict[str, Any]:
    """What a finished `effnas convert` run holds: its arch.yaml (padding and BN eps included),
    classes and resolution."""
    import yaml

    from foundation.runfiles import read_json

    summary = read_json(run / "summary.json")
    if summary.get("status") != "done" or not (run / "arch.yaml").is_file():
        raise UserError(f"{flag} {run}: the convert run did not finish or has no arch.yaml")
    try:
        arch = yaml.safe_load((run / "arch.yaml").read_text())
    except yaml.YAMLError:
        raise UserError(f"{flag} {run}: arch.yaml is not valid YAML") from None
    return {
        "arch": arch,
        "num_classes": summary.get("num_classes"),
        "resolution": summary.get("resolution"),
        "stem_stride": (arch or {}).get("stem_stride") if isinstance(arch, dict) else None,
    }


def load_state_dict(path: Path) -> dict[str, Any]:
    """A state_dict file as a dict of tensors, read with `weights_only=True`."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # zip, pickle and unpickler errors alike: not weights we can read
        raise UserError(
            f"--weights {path}: not a state_dict file that torch.load(weights_only=True) reads "
            "(save model.state_dict(), as effnas train does)"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights {path}: not a state_dict (a mapping of names to tensors)")
    return dict(state)


def load_into(model: Any, state: dict[str, Any], what: str) -> None:
    """Load `state` into `model`, or say how far it is from fitting (`what`: the error's subject,
    e.g. "--weights m.pt do not fit efficientnet_b0 (10 classes)")."""
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = [k for k in own if k in state and own[k].shape != state[k].shape]
    bad = len(missing) + len(unexpected) + len(reshaped)
    if bad:
        if reshaped:
            k = reshaped[0]
            example = f"{k} is {list(state[k].shape)} in the weights, {list(own[k].shape)} in the model"
        else:
            example = f"{missing[0]} missing" if missing else f"{unexpected[0]} not in the model"
        raise UserError(
            f"{what}: {bad} of {len(own)} keys mismatch ({len(reshaped)} shapes, {len(missing)} missing, "
            f"{len(unexpected)} unexpected); first: {example}"
        )
    model.load_state_dict(state)
