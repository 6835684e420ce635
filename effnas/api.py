"""effnas from Python: the functions the CLI stands on, for notebooks.

    import effnas
    arch = effnas.arch("efficientnet_b3")             # a name, an arch YAML file, or an Arch
    effnas.cost(arch)                                  # {'macs': ..., 'params': ..., 'activations': ...}
    model = effnas.create_model("efficientnet_b0", num_classes=10, weights="results/train/<run>")
    run = effnas.run("grid", ["--phi", "1", "ray.enabled=false"])   # as `effnas grid ...`
    effnas.load_run(run).tables["trials.csv"]          # every table of a run as a DataFrame

`run` goes through the same command line and lifecycle as `effnas <stage>` (flags, overrides,
run directory, manifest, summary), so a run started here is an ordinary run directory. Errors
are the CLI's: `foundation.errors.UserError` with its one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.errors import UserError
from foundation.runfiles import Run

if TYPE_CHECKING:
    import torch

    from search_spaces.arch import Arch


def arch(spec: str | Path | Arch) -> Arch:
    """An architecture: an `Arch`, a YAML file (a scale run's `b3.yaml`, a search's
    `best_arch.yaml`), or a name (`efficientnet_b0`..`b7`, `mobilenet_v1/v2`, `resnet50/101/152`)."""
    from search_spaces.arch import Arch, ArchError
    from search_spaces.official import BASELINES, official

    if isinstance(spec, Arch):
        return spec
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            return Arch.from_yaml(path.read_text())
        except OSError as exc:
            raise UserError(f"arch file {path}: {exc.strerror}") from None
        except ArchError as exc:
            raise UserError(f"arch file {path}: {exc}") from None
    name = str(spec)
    try:
        return BASELINES[name]() if name in BASELINES else official(name)
    except KeyError:
        raise UserError(
            f"unknown architecture {name!r}: give efficientnet_b0..b7, one of {', '.join(BASELINES)}, "
            "or an arch YAML file"
        ) from None


def cost(
    spec: str | Path | Arch, *, resolution: int | None = None, num_classes: int = 1000
) -> dict[str, int]:
    """MACs (the paper's FLOPs: conv + linear multiply-adds), params and activations of the
    architecture at `resolution` (default: its own) with `num_classes` outputs; no torch."""
    from search_spaces.cost import count

    c = count(arch(spec), resolution=resolution, num_classes=num_classes)
    return {"macs": int(c.macs), "params": int(c.params), "activations": int(c.activations)}


def create_model(
    spec: str | Path | Arch,
    *,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    stem_stride: int | None = None,
) -> torch.nn.Module:
    """The torch model of an architecture (`arch` takes the same `spec`), in eval mode. `weights`:
    a state_dict file or a finished `effnas train` run directory; a train run also gives the
    class count and stem stride it trained with, unless given here. Without weights:
    `num_classes` defaults to 1000."""
    from search_spaces.builder import build_model
    from training.weights import load_into, load_state_dict, weight_source

    a = arch(spec)
    file, _, facts = weight_source(weights)
    classes = int(num_classes or facts.get("num_classes") or 1000)
    stride = stem_stride if stem_stride is not None else facts.get("stem_stride")
    model = build_model(a, num_classes=classes, stem_stride=stride)
    if file is not None:
        load_into(model, load_state_dict(file), f"weights {file} do not fit {a.name} ({classes} classes)")
    return model.eval()


def load_run(path: str | Path) -> Run:
    """Read any effnas run directory (finished or not): its CSV tables (also one folder down),
    `summary.json` (empty when the run has none yet), `manifest.json` and recorded config."""
    import pandas as pd
    from omegaconf import OmegaConf

    from foundation.runfiles import check_table, read_json, stage_of

    run = Path(path)
    stage = stage_of(run)
    if stage is None:
        raise UserError(f"{run}: not an effnas run directory (no manifest.json with a stage)")
    summary = read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    recorded = run / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(recorded)) if recorded.is_file() else {}
    tables = {}
    for table in sorted([*run.glob("*.csv"), *run.glob("*/*.csv")]):
        name = str(table.relative_to(run))
        if name.startswith("."):
            continue
        check_table(table)
        tables[name] = pd.read_csv(table)
    return Run(run, stage, read_json(run / "manifest.json"), summary, config, tables)  # type: ignore[arg-type]


def run(stage: str, args: Sequence[str] = ()) -> Path:
    """Run a stage as `effnas <stage> <args>` would (flags and key=value overrides alike) and
    return its run directory; the summary is `load_run(path).summary`."""
    from effnas.cli import execute, parse

    argv = [stage, *map(str, args)]
    try:
        parsed = parse(argv)
    except SystemExit:
        raise UserError(
            f"effnas {' '.join(argv)}: not a valid command (see `effnas {stage} --help`)"
        ) from None
    if parsed.stage == "rerun":
        raise UserError("effnas.run('rerun', ...): use the command line (`effnas rerun RUN_DIR`)")
    path = execute(parsed, argv)
    if path is None:
        raise UserError(f"effnas {stage} writes no run directory (it prints only)")
    return path
