"""The run lifecycle: compose a stage's config, check it, make (or reopen) its run directory,
run it, record how it ended; resume and rerun. The CLI (argparse only) and the pipeline both
call these functions; nothing here parses a command line.

A stage is run by `run_stage`: `check_config` (run settings, proxy, data, storage, Ray settings,
the stage's own `validate`), then the run directory (`effnas.rundir.RunDir`: lock, `.hydra/`,
manifest), then `module.run(cfg, rundir[, executor | lifecycle])`, then summary + manifest status
(`done`, `interrupted`, `failed`, `crashed`). Stages that run proxy trials get an executor
(Ray Tune through `adapters.raytune`, or in this process); a stage that trains data-parallel
(train) gets a launcher of Ray Train workers (`adapters.raytrain`); a stage that runs other stages (the
pipeline) gets `LIFECYCLE`, these functions as one value, so it never imports them: the registry
names it, and an import back would be a loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnas.registry import STAGES, Stage
from foundation.errors import UserError


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
    from training.proxy_config import checked

    check_run(cfg.run)
    if "proxy" in cfg:
        checked(cfg.proxy)
    if "data" in cfg:  # values and directories, no image read: before a run directory exists
        from training.data import check_data_config

        check_data_config(cfg.data)
    check_storage(cfg)
    if stage.trials or stage.data_parallel:
        from adapters import raytune

        raytune.check(cfg.ray)
    if stage.data_parallel:
        from adapters import raytrain

        raytrain.check(cfg)
    module = stage.load()
    validate: Callable[..., None] | None = getattr(module, "validate", None)
    if validate is not None:
        validate(cfg, LIFECYCLE) if stage.runs_stages else validate(cfg)
    return module


def check_storage(cfg: Any) -> None:
    """An Optuna storage that is an SQLite file must be one and must not lie in another run's
    directory: that run's study database is its own record, and a new study written into it would
    change a finished run. On --resume, the run's own journal (study.log) must be one."""
    from foundation.runfiles import stage_of
    from training.trial_log import JOURNAL, check_sqlite, open_journal

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
        from training.trials import inline_executor

        return inline_executor
    from adapters import raytune

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
        if stage.trials:
            summary = module.run(cfg, run, _executor(cfg, run))
        elif stage.runs_stages:
            summary = module.run(cfg, run, LIFECYCLE)
        elif stage.data_parallel:
            from adapters import raytrain

            summary = module.run(cfg, run, raytrain.launcher(cfg.ray, run.path / "ray"))
        else:
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
    else:
        run.finish(summary)
    finally:
        run.release()  # the run directory's lock (RunDir.create/open took it)
    return run.path, summary


def _record_arch_file_upstream(run: Any, cfg: Any) -> None:
    """An arch file inside another run directory (a scale run's b1.yaml, a search run's
    best_arch.yaml) makes that run an upstream of this one, whichever stage reads it."""
    from omegaconf import OmegaConf

    from foundation.runfiles import stage_of

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
    from foundation.runfiles import read_json, stage_of

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
    from foundation.runfiles import write_json

    write_json(path / "rerun.json", {"original": str(run_dir.resolve()), **report})
    for line in report["lines"]:
        print(line)
    print(f"rerun of {run_dir}: {'MATCH' if report['match'] else 'DIFFERENT'} -> {path}")
    return 0


# What a resumed run may change: where and how it runs, never what it computes. Everything else
# (`seeds=5`, `proxy.epochs=8`, another arch) would mix two experiments in one run directory, so
# it is refused unless it repeats the recorded value (the CLI adds `kind=` for a study itself).
RESUME_ENVIRONMENT = ("run.root", "run.threads", "run.device", "ray.", "mlflow.")
_ABSENT = object()


def resumed_config(stage: str, run_dir: Path, overrides: Sequence[str] = ()) -> Any:
    """The recorded config of an interrupted run, marked to resume in place, with `overrides`
    applied where they change only the environment (`RESUME_ENVIRONMENT`); an override that
    would change what the run computes is a UserError naming it and the recorded value."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from effnas.rundir import RunDir

    # validates: exists, is a run of this stage, no other process has it (refused before composing)
    RunDir.open(run_dir, stage).release()
    check_records(run_dir)
    cfg = compose_config(stage, [])
    with open_dict(cfg):
        del cfg["hydra"]
        merge_recorded(cfg, run_dir / ".hydra" / "config.yaml")
        recorded_tokens = _recorded_overrides(run_dir)
        for token in overrides:
            key, _, text = token.lstrip("~").partition("=")
            if token in recorded_tokens:
                continue
            if not any(key == k or key.startswith(k) for k in RESUME_ENVIRONMENT):
                asked = OmegaConf.select(compose_config(stage, [token]), key, default=None)
                have = OmegaConf.select(cfg, key, default=None)
                if asked is not None and _plain(asked) == _plain(have):
                    continue
                raise UserError(
                    f"--resume continues {run_dir} as recorded; {token!r} would change it "
                    f"(recorded: {_plain(have)!r}); only run.root, run.threads, run.device, ray.* "
                    "and mlflow.* may change on resume (start a new run for the rest)"
                )
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                raise UserError(f"unknown config key in {token!r}")
            try:
                cfg.merge_with(OmegaConf.from_dotlist([f"{key}={text}"]))
            except OmegaConfBaseException as exc:
                raise UserError(f"{token}: {str(exc).splitlines()[0]}") from None
        if "resume" in cfg:
            cfg.resume = str(run_dir)
    from effnas.config import check_run

    check_run(cfg.run)
    return cfg


def _recorded_overrides(run_dir: Path) -> list[str]:
    """The override tokens the run was started with (`.hydra/overrides.yaml`; [] when absent)."""
    import yaml

    try:
        found = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(t) for t in found] if isinstance(found, list) else []


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def check_records(run_dir: Path) -> None:
    """The CSV tables a resumed run (and a pipeline's stage runs) will read back, checked whole
    before anything is written: a truncated or edited table is refused, not half-read."""
    from foundation.runfiles import check_table

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


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle as one value, handed to a stage that runs other stages (`Stage.runs_stages`)."""

    stages: Mapping[str, Stage]
    compose: Callable[..., Any]  # compose_config
    check: Callable[..., Any]  # check_config
    resumed: Callable[..., Any]  # resumed_config
    run: Callable[..., Any]  # run_stage


LIFECYCLE = Lifecycle(STAGES, compose_config, check_config, resumed_config, run_stage)
