"""The `effnas` command line: friendly flags over Hydra configs, one run directory per call.

    effnas <stage> [flags] [hydra overrides]

Flags map onto config keys (`--target-flops 400M` -> `target_flops=400M`); everything else is a
Hydra override (`proxy.epochs=3 data=cifar10`). This module imports neither torch nor ray, so
`effnas --help` is instant; a stage's code loads when the stage runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from effnas.errors import UserError

# stage -> (module with `run(cfg, rundir) -> dict` and optional `validate(cfg)`, help line)
STAGES: dict[str, tuple[str, str]] = {
    "search": ("nas.stage", "NAS for the baseline: sample, train on the proxy, score ACC*(MACs/T)^w"),
    "grid": ("scaling.grid", "grid over (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ 2, on the proxy"),
    "scale": ("scaling.scaler", "emit B1..B7 configs with their params and MACs"),
    "train": ("effnas.train", "train one architecture with the proxy trainer"),
    "describe": ("effnas.describe", "per-stage table of an architecture's shape, MACs and params"),
}
GROUPS = {
    "search": ("data", "proxy", "sampler", "space"),
    "grid": ("arch", "data", "proxy"),
    "scale": ("arch",),
    "train": ("arch", "data", "proxy"),
    "describe": ("arch",),
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2; a stage's help lists its config keys."""

    config_stage: str | None = None

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message}")

    def format_help(self) -> str:
        if self.config_stage:
            self.epilog = _config_keys(self.config_stage)
        return super().format_help()


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"effnas: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _flops(text: str) -> str:
    from effnas.units import parse_flops

    try:
        parse_flops(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _duration(text: str) -> str:
    from effnas.units import parse_duration

    try:
        parse_duration(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _config_keys(stage: str) -> str:
    """The stage's main config keys, read from its schema and conf/ (no Hydra, no torch)."""
    from effnas import config

    schema_mod = {"search": "nas.config", "grid": "scaling.config", "scale": "scaling.config"}.get(
        stage, "effnas.config"
    )
    schema = getattr(importlib.import_module(schema_mod), f"{stage.capitalize()}Config")
    import yaml

    # The primary YAML's values are the defaults a user gets; the schema's are only fallbacks.
    primary = yaml.safe_load((config.CONF_DIR / f"{stage}.yaml").read_text()) or {}
    chosen = {k: v for d in primary.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}
    lines = []
    for f in dataclasses.fields(schema):
        group = f.default_factory if dataclasses.is_dataclass(f.default_factory) else None
        if group is not None:
            sub = [g.name for g in dataclasses.fields(group)]
            options = ""
            if f.name in GROUPS[stage]:
                found = sorted(p.stem for p in (config.CONF_DIR / f.name).glob("*.yaml"))
                options = f"  (default {f.name}={chosen.get(f.name)}; choose: {'|'.join(found)})"
            lines.append(f"  {f.name}.{{{', '.join(sub)}}}{options}")
        else:
            lines.append(f"  {f.name}={primary.get(f.name, f.default)}")
    return "config keys (override as key=value):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="effnas",
        description="EfficientNet's method as a framework: search a baseline, grid the compound "
        "coefficients, scale to B1..B7.",
        epilog="Run `effnas <stage> --help` for a stage's flags and config keys.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter

    def stage_parser(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=STAGES[name][1], description=STAGES[name][1], formatter_class=fmt)
        p.config_stage = name
        return p

    p = stage_parser("search")
    p.add_argument("--target-flops", type=_flops, help="T: MACs at 224x224, 1000 classes (e.g. 400M)")
    p.add_argument("--trials", type=_positive_int, help="number of architectures to try")
    p.add_argument("--time-budget", type=_duration, help="stop starting trials after this (30m, 2h)")
    p.add_argument("--sampler", help="random | tpe | nsga2 | evolution | controller")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search run")

    p = stage_parser("grid")
    p.add_argument("--phi", help="compound coefficient of the grid (default 1)")
    p.add_argument("--from", dest="upstream", metavar="RUN_DIR", help="a search run: its best_arch.yaml")
    p.add_argument("--arch", help="baseline: a registered arch name or an arch YAML file")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted grid run")

    p = stage_parser("scale")
    p.add_argument("--phi", help="3, 1..7 or 1,3,5")
    p.add_argument("--from", dest="upstream", metavar="RUN_DIR", help="a grid run: its coefficients.yaml")
    p.add_argument("--arch", help="baseline: a registered arch name or an arch YAML file")
    p.add_argument("--mode", help="formula | official | flops-matched")

    p = stage_parser("train")
    p.add_argument("--arch", help="a registered arch name or an arch YAML file")

    p = stage_parser("describe")
    p.add_argument("--arch", help="a registered arch name or an arch YAML file")
    p.add_argument("--format", choices=("table", "csv", "json"), help="output format")

    p = sub.add_parser("rerun", help="re-execute a run from its recorded config and compare results")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", help="e.g. run.root=elsewhere")

    for name in STAGES:
        sp = sub.choices[name]
        sp.add_argument("--seed", type=int, help="run.seed")
        sp.add_argument("overrides", nargs="*", metavar="override", help="Hydra overrides key=value")
    return parser


FLAG_KEYS = {
    "target_flops": "target_flops",
    "trials": "trials",
    "time_budget": "time_budget",
    "phi": "phi",
    "upstream": "upstream",
    "mode": "mode",
    "seed": "run.seed",
    "format": "format",
}


def to_overrides(args: argparse.Namespace) -> tuple[list[str], Path | None, Path | None]:
    """(hydra overrides, arch file or None, resume dir or None) from parsed flags."""
    overrides: list[str] = []
    arch_file: Path | None = None
    for token in args.overrides:
        if "=" not in token:
            if token.endswith((".yaml", ".yml")) and args.stage in GROUPS and "arch" in GROUPS[args.stage]:
                arch_file = Path(token)
                continue
            fail(f"{token!r} is neither key=value nor an arch YAML file")
        if token.lstrip("~").startswith("+"):
            fail(f"unknown config key in {token!r}: adding keys is not allowed")
        overrides.append(token)
    for attr, key in FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={_override_value(value)}")
    sampler = getattr(args, "sampler", None)
    if sampler:
        overrides.append(f"sampler={sampler}")
    arch = getattr(args, "arch", None)
    if arch:
        if arch.endswith((".yaml", ".yml")) or Path(arch).is_file():
            arch_file = Path(arch)
        else:
            overrides.append(f"arch={arch}")
    resume = getattr(args, "resume", None)
    return overrides, arch_file, Path(resume) if resume else None


def _override_value(value: object) -> str:
    """A flag's value as a Hydra override value: quoted when Hydra's grammar would read it as
    something else (`--phi 1,3,5` is a string, not a sweep over three values)."""
    text = str(value)
    if re.fullmatch(r"[\w./:@+-]*", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def _hydra_message(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(exc).__name__
    if msg.endswith(":") and len(lines) > 1:  # "In 'proxy/default': ... while composing config:"
        msg = f"{msg} {lines[1]}"
    if "Available options" in str(exc):
        opts = str(exc).split("Available options", 1)[1].split("Config search path")[0]
        choices = [o.strip() for o in opts.splitlines()[1:] if o.strip()]
        msg += f" (available: {', '.join(choices)})"
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        msg = msg.rstrip(".") + ": " + str(cause).strip().splitlines()[0]
    return msg


def compose_config(stage: str, overrides: Sequence[str], arch_file: Path | None = None) -> Any:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from effnas.config import compose

    try:
        cfg = compose(stage, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(_hydra_message(exc)) from None
    if arch_file is not None:
        load_arch_file(cfg, arch_file)
    return cfg


def load_arch_file(cfg: Any, path: Path) -> None:
    """Replace cfg.arch with the architecture stored in YAML file `path`."""
    from omegaconf import open_dict

    from search_spaces.arch import Arch, ArchError

    if not path.is_file():
        raise UserError(f"arch file {path} does not exist")
    try:
        arch = Arch.from_yaml(path.read_text())
    except (ArchError, UnicodeDecodeError) as exc:
        raise UserError(f"arch file {path}: {exc}") from None
    with open_dict(cfg):
        for key, value in arch.to_dict().items():
            cfg.arch[key] = value
        cfg.arch.meta = {**arch.meta, "source": str(path.resolve())}


def run_stage(
    stage: str, cfg: Any, argv: list[str], resume: Path | None = None, overrides: Sequence[str] = ()
) -> tuple[Path, dict[str, Any]]:
    """Validate, make (or reopen) the run directory, run the stage, write summary + manifest."""
    from omegaconf import OmegaConf, open_dict

    from effnas.rundir import RunDir

    module = importlib.import_module(STAGES[stage][0])
    validate: Callable[[Any], None] | None = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg)
    hydra_cfg = cfg.get("hydra") if OmegaConf.is_dict(cfg) else None
    if hydra_cfg is not None:
        with open_dict(cfg):
            del cfg["hydra"]
    if resume is not None:
        run = RunDir.open(resume, stage)
        run.record(status="running", resumed=[*run.manifest.get("resumed", []), argv])
    else:
        run = RunDir.create(cfg.run.root, stage, cfg.run.dir)
        run.write_text(".hydra/config.yaml", OmegaConf.to_yaml(cfg))
        run.write_text(".hydra/overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        if hydra_cfg is not None:
            run.write_text(".hydra/hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
        run.start_manifest(cfg, argv)
        _record_arch_file_upstream(run, cfg)
    print(f"effnas {stage}: run directory {run.path}", file=sys.stderr)
    try:
        summary = module.run(cfg, run)
    except UserError:
        run.record(status="failed")
        raise
    except KeyboardInterrupt:
        run.record(status="interrupted")
        raise
    except BaseException:
        run.record(status="crashed")
        raise
    run.finish(summary)
    return run.path, summary


def _record_arch_file_upstream(run: Any, cfg: Any) -> None:
    """An arch file inside another run directory (a scale run's b1.yaml, a search run's
    best_arch.yaml) makes that run an upstream of this one, whichever stage reads it."""
    from omegaconf import OmegaConf

    from effnas.rundir import stage_of

    source = OmegaConf.select(cfg, "arch.meta.source", default=None)
    if source:
        parent = Path(source).parent
        found = stage_of(parent)
        if found:
            run.record_upstream(parent, found, f"arch file {Path(source).name}")


def rerun(run_dir: Path, overrides: Sequence[str], argv: list[str]) -> int:
    """Re-execute RUN_DIR's recorded config into a new run and compare summaries."""
    from omegaconf import OmegaConf, open_dict

    from effnas.rerun import compare_summaries
    from effnas.rundir import read_json, stage_of

    stage = stage_of(run_dir)
    if stage not in STAGES:
        raise UserError(f"{run_dir} is not an effnas run directory (no manifest.json with a stage)")
    recorded = run_dir / ".hydra" / "config.yaml"
    if not recorded.is_file():
        raise UserError(f"{run_dir} has no .hydra/config.yaml to re-run")
    cfg = compose_config(stage, [])
    with open_dict(cfg):
        cfg.merge_with(OmegaConf.load(recorded))
        cfg.merge_with(OmegaConf.from_dotlist(list(overrides)))
        cfg.run.dir = None
    old = read_json(run_dir / "summary.json")
    path, _ = run_stage(stage, cfg, argv, overrides=list(overrides))
    new = read_json(path / "summary.json")  # as written, with the stage and status finish() adds
    report = compare_summaries(old, new)
    from effnas.rundir import write_json

    write_json(path / "rerun.json", {"original": str(run_dir.resolve()), **report})
    for line in report["lines"]:
        print(line)
    print(f"rerun of {run_dir}: {'MATCH' if report['match'] else 'DIFFERENT'} -> {path}")
    return 0


def _flags_first(argv: list[str]) -> list[str]:
    """Move positional tokens (overrides, an arch file) after the flags, so flags and overrides
    may be interleaved: argparse cannot take one `nargs="*"` positional in several pieces."""
    if not argv or argv[0] not in STAGES:
        return argv
    flags: list[str] = []
    positionals: list[str] = []
    rest = iter(argv[1:])
    for token in rest:
        if token.startswith("-"):
            flags.append(token)
            if "=" not in token and token not in ("-h", "--help"):
                value = next(rest, None)
                if value is not None:
                    flags.append(value)
        else:
            positionals.append(token)
    return [argv[0], *flags, *positionals]


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # `kill PID` ends a run like Ctrl-C: status recorded, work kept


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(_flags_first(argv))
    if not args.stage:
        build_parser().print_help(sys.stderr)
        return 2
    try:
        if args.stage == "rerun":
            return rerun(Path(args.run_dir), args.overrides, ["effnas", *argv])
        overrides, arch_file, resume = to_overrides(args)
        if resume is not None:
            cfg = resumed_config(args.stage, resume)
        else:
            cfg = compose_config(args.stage, overrides, arch_file)
        if args.stage == "describe":
            from effnas.describe import describe

            describe(cfg)
            return 0
        run_stage(args.stage, cfg, ["effnas", *argv], resume, overrides)
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept in the run directory", code=130)
    return 0


def resumed_config(stage: str, run_dir: Path) -> Any:
    """The recorded config of an interrupted run, marked to resume in place."""
    from omegaconf import OmegaConf, open_dict

    from effnas.rundir import RunDir

    RunDir.open(run_dir, stage)  # validates: exists, is a run of this stage
    cfg = compose_config(stage, [])
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.merge_with(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
        if "resume" in cfg:
            cfg.resume = str(run_dir)
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
