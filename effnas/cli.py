"""The `effnas` command line: friendly flags over Hydra configs, one run directory per call.

    effnas <stage> [flags] [hydra overrides]

Flags map onto config keys (`--target-flops 400M` -> `target_flops=400M`); everything else is a
Hydra override (`proxy.epochs=3 data=cifar10`). This module parses the command line and hands
the composed config to the run lifecycle (`effnas.lifecycle`), which the pipeline and the Python
API call too. It imports neither torch nor ray, so `effnas --help` is instant; a stage's code
loads when the stage runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from effnas.lifecycle import compose_config, rerun, resumed_config, run_stage
from effnas.registry import STAGES, Flag, Stage
from foundation.errors import UserError


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
    """An argparse type that keeps the text but refuses what `foundation.units.<parser_name>` does."""

    def check(text: str) -> str:
        from foundation import units

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
            "latency": _checked_by("parse_latency_target"),
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


def execute(args: argparse.Namespace, argv: list[str]) -> Path | None:
    """Run the stage a parsed command line names, through the lifecycle; its run directory (None
    for a stage that prints only). `effnas.api.run` calls this too."""
    from effnas.config import with_config_dirs

    with with_config_dirs(args.config_dirs):
        overrides, arch_file, resume = to_overrides(args)
        if resume is not None:
            if arch_file is not None:
                raise UserError(f"{arch_file} cannot be given with --resume: the run keeps its recorded arch")
            cfg = resumed_config(args.stage, resume, overrides)
        else:
            cfg = compose_config(args.stage, overrides, arch_file)
        path, _ = run_stage(args.stage, cfg, ["effnas", *argv], resume, overrides)
    return path


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """A command line (without the program name) as the parser reads it."""
    return build_parser().parse_args(_flags_first(list(argv)))


def _terminate(signum: int, frame: Any) -> None:
    from foundation import interrupt

    interrupt.request()  # checked by long loops should this raise land where Python drops it
    raise KeyboardInterrupt  # `kill PID` ends a run like Ctrl-C: status recorded, work kept


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = parse(argv)
    if not args.stage:
        build_parser().print_help(sys.stderr)
        return 2
    try:
        if args.stage == "rerun":
            return rerun(Path(args.run_dir), args.overrides, ["effnas", *argv])
        execute(args, argv)
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept in the run directory", code=130)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
