"""The `effnas` command line: friendly flags over Hydra configs, one run directory per call.

    effnas <stage> [flags] [hydra overrides]

Flags map onto config keys (`--target-flops 400M` -> `target_flops=400M`); everything else is a
Hydra override (`proxy.epochs=3 data=cifar10`). This module imports neither torch nor ray, so
`effnas --help` is instant; a stage's code loads when the stage runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from effnas.errors import UserError
from effnas.registry import STAGES, Flag, Stage


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2; a stage's help lists its config keys."""

    config_stage: Stage | None = None

    def error(self, message: str) -> NoReturn:
        fail(message, prog=self.prog)

    def format_help(self) -> str:
        if self.config_stage:
            self.epilog = _config_keys(self.config_stage)
        return super().format_help()


def fail(message: str, code: int = 2, prog: str = "effnas") -> NoReturn:
    # one line, whatever a library put in the message (YAML's errors end with "in <file>, line N")
    message = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _checked_by(parser_name: str) -> Callable[[str], str]:
    """An argparse type that keeps the text but refuses what `effnas.units.<parser_name>` does."""

    def check(text: str) -> str:
        from effnas import units

        try:
            getattr(units, parser_name)(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _config_keys(stage: Stage) -> str:
    """The stage's main config keys, read from its schema and conf/ (no Hydra, no torch)."""
    import yaml

    from effnas.config import CONF_DIR, full_schema, group_options

    # The primary YAML's values are the defaults a user gets; the schema's are only fallbacks.
    primary = yaml.safe_load((CONF_DIR / f"{stage.name}.yaml").read_text()) or {}
    chosen = {k: v for d in primary.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}
    lines = []
    for f in dataclasses.fields(full_schema(stage)):
        group = f.default_factory if dataclasses.is_dataclass(f.default_factory) else None
        if group is not None:
            sub = [g.name for g in dataclasses.fields(group)]
            options = ""
            if f.name in stage.groups:
                found = "|".join(group_options(f.name))
                options = f"  (default {f.name}={chosen.get(f.name)}; choose: {found})"
            lines.append(f"  {f.name}.{{{', '.join(sub)}}}{options}")
        else:
            lines.append(f"  {f.name}={primary.get(f.name, f.default)}")
    return "config keys (override as key=value):\n" + "\n".join(lines)


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    kwargs: dict[str, Any] = {"help": flag.help, "dest": flag.key.replace(".", "_")}
    if flag.kind == "switch":  # sets its key to true
        parser.add_argument(flag.name, action="store_const", const=True, **kwargs)
        return
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    if flag.kind == "choice":
        kwargs["choices"] = flag.choices
    elif flag.kind == "list":
        kwargs["nargs"] = "+"
    elif flag.kind == "mapping":
        kwargs["type"] = _mapping
    elif flag.kind != "text":
        kwargs["type"] = {
            "int": int,
            "positive_int": _positive_int,
            "flops": _checked_by("parse_flops"),
            "duration": _checked_by("parse_duration"),
            "latency": _checked_by("parse_latency"),
        }[flag.kind]
    parser.add_argument(flag.name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="effnas",
        description="EfficientNet's method as a framework: search a baseline, grid the compound "
        "coefficients, scale to B1..B7.",
        epilog="Run `effnas <stage> --help` for a stage's flags and config keys.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter
    for stage in STAGES.values():
        description = f"{stage.help}\n\n{stage.notes}" if stage.notes else stage.help
        p = sub.add_parser(stage.name, help=stage.help, description=description, formatter_class=fmt)
        p.config_stage = stage
        for flag in stage.all_flags:
            _add_flag(p, flag)
        if "arch" in stage.groups:
            p.add_argument("--arch", help="a registered arch name or an arch YAML file")
        if stage.resume:
            p.add_argument("--resume", metavar="RUN_DIR", help=f"continue an interrupted {stage.name} run")
        if stage.subcommands:
            p.add_argument("kind", choices=stage.subcommands, help=f"which {stage.name}")
        p.add_argument(
            "--config-dir",
            dest="config_dirs",
            action="append",
            default=[],
            metavar="DIR",
            help="a folder of your own config groups (DIR/arch/x.yaml is arch=x); repeatable",
        )
        p.add_argument("overrides", nargs="*", metavar="override", help="Hydra overrides key=value")

    p = sub.add_parser("rerun", help="re-execute a run from its recorded config and compare results")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", help="e.g. run.root=elsewhere")
    return parser


def to_overrides(args: argparse.Namespace) -> tuple[list[str], Path | None, Path | None]:
    """(hydra overrides, arch file or None, resume dir or None) from parsed flags."""
    stage = STAGES[args.stage]
    overrides: list[str] = []
    arch_file: Path | None = None
    bare: list[str] = []
    routed: dict[str, list[str]] = {}  # list key -> overrides kept as text (Stage.routes)
    for token in args.overrides:
        if "=" not in token:
            if stage.positionals:
                bare.append(token)
                continue
            if token.endswith((".yaml", ".yml")) and "arch" in stage.groups:
                arch_file = Path(token)
                continue
            fail(f"{token!r} is neither key=value nor an arch YAML file")
        if token.lstrip("~").startswith("+"):
            fail(f"unknown config key in {token!r}: adding keys is not allowed")
        route = _route(stage, token)
        if route is not None:
            routed.setdefault(route[0], []).append(route[1])
            continue
        overrides.append(token)
    set_by: dict[str, str] = {}  # config key -> the flag that set it
    for flag in stage.all_flags:
        value = getattr(args, flag.key.replace(".", "_"), None)
        if value is None:
            continue
        if flag.kind == "list":  # `--methods depth width` and `--methods depth,width` alike
            value = [item for v in value for item in str(v).split(",") if item]
        implied = [tuple(o.split("=", 1)) for o in flag.also]
        for key, text in [(flag.key, _override_value(value)), *implied]:
            if key in set_by:
                fail(f"{set_by[key]} and {flag.name} cannot be given together")
            set_by[key] = flag.name
            overrides.append(f"{key}={text}")
    if stage.subcommands:
        overrides.append(f"kind={args.kind}")
    if bare:
        overrides.append(f"{stage.positionals}={_override_value(bare)}")
    overrides += [f"{key}={_override_value(items)}" for key, items in routed.items()]
    arch = getattr(args, "arch", None)
    if arch:
        if arch.endswith((".yaml", ".yml")) or Path(arch).is_file():
            arch_file = Path(arch)
        else:
            overrides.append(f"arch={arch}")
    resume = getattr(args, "resume", None)
    return overrides, arch_file, Path(resume) if resume else None


def _route(stage: Stage, token: str) -> tuple[str, str] | None:
    """(list key, the override as that key keeps it) when `token` matches one of `stage.routes`."""
    body = token.lstrip("~")
    tilde, key = token[: len(token) - len(body)], body.split("=", 1)[0]
    for prefix, target in stage.routes:
        if prefix.endswith("."):
            if key.startswith(prefix) and len(key) > len(prefix):
                return target, tilde + body[len(prefix) :]
        elif key == prefix or key.startswith(prefix + "."):
            return target, token
    return None


def _mapping(text: str) -> list[str]:
    """`NAME=NUMBER[,NAME=NUMBER...]` (e.g. `--accuracy efficientnet_b1=79.1,resnet152=77.8`) ->
    its items, checked; the config key holds them as a list of `NAME=NUMBER` strings."""
    items = [item.strip() for item in text.split(",")]
    for item in items:
        name, _, number = item.rpartition("=")
        try:
            float(number)
        except ValueError:
            name = ""
        if not name:
            raise argparse.ArgumentTypeError(f"expected NAME=NUMBER[,NAME=NUMBER...], got {text!r}")
    return items


def _override_value(value: object) -> str:
    """A flag's value as a Hydra override value: quoted when Hydra's grammar would read it as
    something else (`--phi 1,3,5` is a string, not a sweep over three values); lists in Hydra's
    own syntax, their items quoted the same way."""
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
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


def check_config(stage: Stage, cfg: Any) -> Any:
    """Every check that can run before anything starts (no run directory, no Ray, no data): the
    run settings, the proxy contract, the Ray settings, then the stage's own `validate`. Returns
    the stage's module."""
    from effnas.config import check_run
    from effnas.proxy_config import checked

    check_run(cfg.run)
    if "proxy" in cfg:
        checked(cfg.proxy)
    if "data" in cfg:  # values and directories, no image read: before a run directory exists
        from effnas.data import check_data_config

        check_data_config(cfg.data)
    check_storage(cfg)
    if stage.trials:
        from effnas import raytune

        raytune.check(cfg.ray)
    module = stage.load()
    validate: Callable[[Any], None] | None = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg)
    return module


def check_storage(cfg: Any) -> None:
    """An Optuna storage that is an SQLite file must be one and must not lie in another run's
    directory: that run's study database is its own record, and a new study written into it would
    change a finished run. On --resume, the run's own journal (study.log) must be one."""
    from effnas.runfiles import stage_of
    from effnas.trial_log import JOURNAL, check_sqlite, open_journal

    storage = cfg.get("storage") if "storage" in cfg else None
    resume = cfg.get("resume") if "resume" in cfg else None
    if not storage and resume:
        journal = Path(str(resume)) / JOURNAL
        if journal.is_file():
            open_journal(str(journal))
        return
    if not (storage and str(storage).startswith("sqlite:///")):
        return
    db = Path(str(storage)[len("sqlite:///") :])
    owner = db.resolve().parent
    if stage_of(owner) and (not resume or owner != Path(str(resume)).resolve()):
        raise UserError(
            f"storage {storage}: the study database of another run ({stage_of(owner)} run {owner}); "
            "give a storage of your own or leave storage unset (the run's own study.log)"
        )
    check_sqlite(db)


def _executor(cfg: Any, run: Any) -> Any:
    """The trial executor of a trial stage: Ray Tune (the one adapter) or in this process."""
    if not cfg.ray.enabled:
        from effnas.trials import inline_executor

        return inline_executor
    from effnas import raytune

    return raytune.executor(cfg.ray, run.path / "ray")


def run_stage(
    name: str, cfg: Any, argv: list[str], resume: Path | None = None, overrides: Sequence[str] = ()
) -> tuple[Path | None, dict[str, Any]]:
    """Check, make (or reopen) the run directory, run the stage, write summary + manifest."""
    from omegaconf import OmegaConf, open_dict

    from effnas.rundir import RunDir

    stage = STAGES[name]
    module = check_config(stage, cfg)
    if not stage.writes_run:
        return None, module.run(cfg, None)
    hydra_cfg = cfg.get("hydra") if OmegaConf.is_dict(cfg) else None
    if hydra_cfg is not None:
        with open_dict(cfg):
            del cfg["hydra"]
    if resume is not None:
        run = RunDir.open(resume, name)
        run.record(status="running", resumed=[*run.manifest.get("resumed", []), argv])
    else:
        run = RunDir.create(cfg.run.root, name, cfg.run.dir)
        run.write_text(".hydra/config.yaml", OmegaConf.to_yaml(cfg))
        run.write_text(".hydra/overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        if hydra_cfg is not None:
            run.write_text(".hydra/hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
        run.start_manifest(cfg, argv)
        _record_arch_file_upstream(run, cfg)
    print(f"effnas {name}: run directory {run.path}", file=sys.stderr)
    try:
        summary = module.run(cfg, run, _executor(cfg, run)) if stage.trials else module.run(cfg, run)
    except UserError:
        run.record(status="failed")
        raise
    except KeyboardInterrupt:
        run.record(status="interrupted")
        raise
    except BaseException:
        run.record(status="crashed")
        raise
    else:
        run.finish(summary)
    finally:
        run.release()  # the run directory's lock (RunDir.create/open took it)
    return run.path, summary


def _record_arch_file_upstream(run: Any, cfg: Any) -> None:
    """An arch file inside another run directory (a scale run's b1.yaml, a search run's
    best_arch.yaml) makes that run an upstream of this one, whichever stage reads it."""
    from omegaconf import OmegaConf

    from effnas.runfiles import stage_of

    source = OmegaConf.select(cfg, "arch.meta.source", default=None)
    if source:
        parent = Path(source).parent
        found = stage_of(parent)
        if found:
            run.record_upstream(parent, found, f"arch file {Path(source).name}")


def rerun(run_dir: Path, overrides: Sequence[str], argv: list[str]) -> int:
    """Re-execute RUN_DIR's recorded config into a new run and compare summaries."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from effnas.rerun import compare_summaries
    from effnas.runfiles import read_json, stage_of

    stage = stage_of(run_dir)
    if stage not in STAGES or not STAGES[stage].writes_run:
        raise UserError(f"{run_dir} is not an effnas run directory (no manifest.json with a stage)")
    recorded = run_dir / ".hydra" / "config.yaml"
    if not recorded.is_file():
        raise UserError(f"{run_dir} has no .hydra/config.yaml to re-run")
    cfg = compose_config(stage, [])
    with open_dict(cfg):
        merge_recorded(cfg, recorded)
        try:
            cfg.merge_with(OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise UserError(f"rerun override: {str(exc).splitlines()[0]}") from None
        cfg.run.dir = None
    old = read_json(run_dir / "summary.json")
    path, _ = run_stage(stage, cfg, argv, overrides=list(overrides))
    new = read_json(path / "summary.json")  # as written, with the stage and status finish() adds
    report = compare_summaries(old, new)
    from effnas.runfiles import write_json

    write_json(path / "rerun.json", {"original": str(run_dir.resolve()), **report})
    for line in report["lines"]:
        print(line)
    print(f"rerun of {run_dir}: {'MATCH' if report['match'] else 'DIFFERENT'} -> {path}")
    return 0


def _flags_first(argv: list[str]) -> list[str]:
    """Gather the positional tokens (a subcommand, overrides, an arch file) in front of the flags,
    so flags and overrides may be interleaved: argparse cannot take one `nargs="*"` positional in
    several pieces, and a list flag (`--methods depth width`) would swallow what follows it."""
    if not argv or argv[0] not in STAGES:
        return argv
    kinds = {f.name: f.kind for f in STAGES[argv[0]].all_flags}
    flags: list[str] = []
    positionals: list[str] = []
    tokens = argv[1:]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-"):
            positionals.append(token)
            continue
        flags.append(token)
        if "=" in token or token in ("-h", "--help") or kinds.get(token) == "switch":
            continue
        if kinds.get(token) == "list":  # its values: every token up to a flag or an override
            while i < len(tokens) and not tokens[i].startswith("-") and "=" not in tokens[i]:
                flags.append(tokens[i])
                i += 1
        elif i < len(tokens):
            flags.append(tokens[i])
            i += 1
    return [argv[0], *positionals, *flags]  # positionals first: a list flag's values end at a flag


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
        from effnas.config import with_config_dirs

        with with_config_dirs(args.config_dirs):
            overrides, arch_file, resume = to_overrides(args)
            if resume is not None:
                cfg = resumed_config(args.stage, resume)
            else:
                cfg = compose_config(args.stage, overrides, arch_file)
            run_stage(args.stage, cfg, ["effnas", *argv], resume, overrides)
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept in the run directory", code=130)
    return 0


def resumed_config(stage: str, run_dir: Path) -> Any:
    """The recorded config of an interrupted run, marked to resume in place."""
    from omegaconf import open_dict

    from effnas.rundir import RunDir

    # validates: exists, is a run of this stage, no other process has it (refused before composing)
    RunDir.open(run_dir, stage).release()
    check_records(run_dir)
    cfg = compose_config(stage, [])
    with open_dict(cfg):
        del cfg["hydra"]
        merge_recorded(cfg, run_dir / ".hydra" / "config.yaml")
        if "resume" in cfg:
            cfg.resume = str(run_dir)
    return cfg


def check_records(run_dir: Path) -> None:
    """The CSV tables a resumed run (and a pipeline's stage runs) will read back, checked whole
    before anything is written: a truncated or edited table is refused, not half-read."""
    from effnas.runfiles import check_table

    for table in sorted([*run_dir.glob("*.csv"), *run_dir.glob("*/*.csv")]):
        if not any(part.startswith(".") for part in table.relative_to(run_dir).parts):
            check_table(table)


def merge_recorded(cfg: Any, path: Path) -> None:
    """Merge a run's recorded `.hydra/config.yaml` into `cfg`; unreadable is a UserError."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg.merge_with(OmegaConf.load(path))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the run's recorded config") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: the run's recorded config is unreadable: {first}") from None


if __name__ == "__main__":
    raise SystemExit(main())
