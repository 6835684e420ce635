"""`effnas pipeline`: the whole method in one command, each stage a run directory inside one.

    effnas pipeline --target-flops 400M --phi 1..7 [--train b0,b1] [search.trials=4 grid.seeds=1 ...]
    effnas pipeline --resume results/pipeline/<run>

search -> grid (--from the search run) -> scale (--from the grid run) -> train of the chosen
models (b0: the search's best_arch.yaml, bN: the scale run's bN.yaml), as `<run>/search`,
`<run>/grid`, `<run>/scale`, `<run>/train_b1` ... Each child is an ordinary run of its stage,
made here by the same lifecycle as `effnas <stage>` (`effnas.lifecycle`, handed in as `life`:
checks, its own run directory and lock, manifest with its upstream run, summary, plots), so any child can be read,
reported on or resumed on its own. The parent's manifest and summary list the children and their
status; the run ends with a table (stage, run dir, status, headline result).

How overrides reach the stages (the CLI gathers them through the registry row's `routes`):
`search.KEY=V` (likewise grid., scale., train.) goes to that stage only, `data`, `proxy` and `ray`
overrides to every stage that has the key, `run.seed/threads/device` to all. The models train on
the data and proxy the grid ran with (read from its recorded config), then `train.*`.

`--resume` skips finished children, continues an interrupted search, grid or train with that
stage's own resume (no finished trial is trained again; a train continues from its last
checkpoint) and restarts an interrupted scale, whose partial directory is kept aside as
`<name>.partial-N`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from foundation import per_image, tables
from foundation.errors import UserError
from foundation.runfiles import read_json, stage_of
from foundation.units import parse_phi
from foundation.verdict import describe

CHAIN = ("search", "grid", "scale")  # then one train run per model
_MODEL = re.compile(r"^b(\d+)$")
# keys the pipeline sets for its children: a child override may not set them
_CHAINED = {
    "search": ("resume", "run.dir", "run.root"),
    "grid": ("upstream", "resume", "arch", "run.dir", "run.root"),
    "scale": ("upstream", "arch", "run.dir", "run.root"),
    "train": ("arch", "run.dir", "run.root"),
}


@dataclass
class PipelineConfig:
    """Schema of `conf/pipeline.yaml` (`run` is added by the stage registry)."""

    target_flops: str = "400M"  # the search's T
    phi: str = "1..7"  # the scaled models (scale --phi)
    models: list[str] = field(default_factory=list)  # --train: b0 (the search's), b1..b7 (scaled)
    shared: list[str] = field(default_factory=list)  # data/proxy/ray overrides for every stage with them
    search: list[str] = field(default_factory=list)  # each stage's own overrides, as text
    grid: list[str] = field(default_factory=list)
    scale: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    resume: Optional[str] = None


@dataclass
class Child:
    name: str  # its directory inside the pipeline run: search, grid, scale, train_b1
    stage: str
    model: Optional[str] = None  # train children: b0, b1, ...


def models_of(cfg: Any) -> list[str]:
    """The models to train, checked against the scaled phis (`--train none`: none)."""
    phis = parse_phi(cfg.phi)
    models = [str(m).strip().lower() for m in cfg.models]
    if models == ["none"]:
        return []
    for m in models:
        found = _MODEL.match(m)
        if not found:
            raise UserError(f"--train {m!r}: expected b0 (the searched baseline) or bN with N in --phi")
        if int(found.group(1)) and int(found.group(1)) not in phis:
            raise UserError(f"--train {m}: phi {found.group(1)} is not among --phi {cfg.phi} ({phis})")
    if len(set(models)) != len(models):
        raise UserError(f"--train {','.join(models)}: a model is listed twice")
    return models


def children_of(cfg: Any) -> list[Child]:
    return [Child(s, s) for s in CHAIN] + [Child(f"train_{m}", "train", m) for m in models_of(cfg)]


def _key(override: str) -> str:
    return override.lstrip("~").split("=", 1)[0]


def _shared_for(stage: str, shared: list[str], stages: Any) -> list[str]:
    """The shared overrides that apply to `stage` (data/proxy: its groups; ray: trial and data-parallel stages)."""
    spec = stages[stage]
    keep = {*spec.groups, *(("ray",) if spec.trials or spec.data_parallel else ())}
    return [o for o in shared if _key(o).split(".", 1)[0] in keep]


def _run_forwarded(cfg: Any) -> list[str]:
    """The pipeline's run settings every child shares (the device is resolved by each stage)."""
    run = cfg.run
    return [f"run.seed={run.seed}", f"run.threads={run.threads}", f"run.device={run.device}"]


def _value(v: Any) -> str:
    """A plain value (or a list of them) as a Hydra override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):  # e.g. proxy.crop_area: Hydra's list syntax, not a quoted string
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def trained_like(grid_cfg: Any) -> list[str]:
    """Overrides that give a train run the grid's data and proxy (every key, as recorded)."""
    from omegaconf import OmegaConf

    out = []
    for group in ("data", "proxy"):
        node = OmegaConf.to_container(grid_cfg[group], resolve=True)
        out += [f"{group}.{k}={_value(v)}" for k, v in node.items()]
    return out


def child_overrides(
    cfg: Any, child: Child, parent: Path | None, grid_cfg: Any = None, stages: Any = None
) -> list[str]:
    """The overrides of one child, in the order they apply (later wins)."""
    own = list(cfg[child.stage])
    for o in own:
        key = _key(o)
        if any(key == k or key.startswith(k + ".") for k in _CHAINED[child.stage]):
            raise UserError(f"{child.stage}.{key}: the pipeline sets this for its {child.stage} run")
    fwd = _run_forwarded(cfg)
    if child.stage == "search":
        head = [f"target_flops={_value(str(cfg.target_flops))}"]
    elif child.stage == "grid":
        head = [] if parent is None else [f"upstream={_value(str(parent / 'search'))}"]
    elif child.stage == "scale":
        head = [f"phi={_value(str(cfg.phi))}"]
        head += [] if parent is None else [f"upstream={_value(str(parent / 'grid'))}"]
    else:
        return [*(trained_like(grid_cfg) if grid_cfg is not None else []), *fwd, *own]
    return [*head, *_shared_for(child.stage, list(cfg.shared), stages), *fwd, *own]


def _compose_child(life: Any, stage: str, overrides: list[str], arch_file: Path | None = None) -> Any:
    try:
        return life.compose(stage, overrides, arch_file)
    except UserError as exc:
        raise UserError(f"pipeline, {stage}: {exc}") from None


def validate(cfg: Any, life: Any) -> None:
    """Every child's config composes and passes its stage's checks, before anything runs (the
    upstream runs do not exist yet: grid and scale are checked on their own defaults). `life`:
    the lifecycle (`effnas.lifecycle.LIFECYCLE`)."""
    from foundation.units import parse_flops

    parse_flops(str(cfg.target_flops))
    grid_cfg = None
    for child in children_of(cfg)[:4]:  # every model trains on the same config but its arch
        cfg_child = _compose_child(
            life, child.stage, child_overrides(cfg, child, None, grid_cfg, life.stages)
        )
        try:
            life.check(life.stages[child.stage], cfg_child)
        except UserError as exc:
            raise UserError(f"pipeline, {child.stage}: {exc}") from None
        if child.stage == "grid":
            grid_cfg = cfg_child


# -- running ------------------------------------------------------------------------------------
def state_of(path: Path, stage: str, resumable: bool) -> str:
    """absent (nothing there), done (finished), resumable (its stage can continue it: `resumable`,
    the stage's registry row says it takes --resume) or partial."""
    if not path.exists() or not any(path.iterdir()):
        return "absent"
    if stage_of(path) != stage:
        return "partial"
    manifest = read_json(path / "manifest.json")
    if manifest.get("status") == "done" and (path / "summary.json").is_file():
        return "done"
    if resumable and (path / ".hydra" / "config.yaml").is_file():
        return "resumable"
    return "partial"


def _set_aside(path: Path) -> Path:
    n = 1
    while path.with_name(f"{path.name}.partial-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.partial-{n}")
    path.rename(aside)
    return aside


def _arch_file(parent: Path, child: Child) -> Path | None:
    if child.model is None:
        return None
    if child.model == "b0":
        return parent / "search" / "best_arch.yaml"
    return parent / "scale" / f"{child.model}.yaml"


def _banner(i: int, n: int, child: Child, what: str) -> None:
    print(f"\n=== pipeline {i}/{n}: {child.name} ({what})", file=sys.stderr, flush=True)


def run(cfg: Any, rundir: Any, life: Any) -> dict[str, Any]:
    """The pipeline stage; `life` is the lifecycle every child runs through
    (`effnas.lifecycle.LIFECYCLE`: compose, check, resumed, run, and the stage registry)."""
    from omegaconf import OmegaConf

    parent = rundir.path.resolve()
    children = children_of(cfg)
    records: list[dict[str, Any]] = [
        {"name": c.name, "stage": c.stage, "path": str(parent / c.name), "status": "pending"}
        for c in children
    ]
    rundir.record(children=records)

    def mark(i: int, status: str) -> None:
        records[i]["status"] = status
        rundir.record(children=records)

    for i, child in enumerate(children):
        path = parent / child.name
        state = state_of(path, child.stage, life.stages[child.stage].resume)
        if state == "done":
            _banner(i + 1, len(children), child, "done already, skipped")
            mark(i, "done")
            continue
        if state == "partial":
            aside = _set_aside(path)
            print(
                f"pipeline: {path} was left unfinished; kept as {aside}, starting it again", file=sys.stderr
            )
        mark(i, "running")
        try:
            if state == "resumable":
                _banner(i + 1, len(children), child, f"resuming: effnas {child.stage} --resume {path}")
                life.run(child.stage, life.resumed(child.stage, path), _argv(child, path), path)
            else:
                grid_cfg = None
                if child.stage == "train":
                    grid_cfg = OmegaConf.load(parent / "grid" / ".hydra" / "config.yaml")
                overrides = [
                    *child_overrides(cfg, child, parent, grid_cfg, life.stages),
                    f"run.dir={_value(str(path))}",
                ]
                arch = _arch_file(parent, child)
                if arch is not None and not arch.is_file():
                    raise UserError(f"pipeline, {child.name}: {arch} is missing (did the upstream run fail?)")
                argv = ["effnas", child.stage, *([str(arch)] if arch else []), *overrides]
                shown = (
                    argv if child.stage != "train" else [*argv[:3], "<the grid's data and proxy>", *cfg.train]
                )
                _banner(i + 1, len(children), child, " ".join(shown))
                child_cfg = _compose_child(life, child.stage, overrides, arch)
                life.run(child.stage, child_cfg, argv, overrides=overrides)
        except BaseException:
            mark(i, _status(path))
            raise
        mark(i, _status(path))

    rows = [_row(r) for r in records]
    judged = trained_verdicts(records)
    for row in rows:
        if row["name"] in judged:
            row["result"] += f"; vs {judged[row['name']]['against']}: {describe(judged[row['name']])}"
    table = runs_table(rows)
    rundir.write_text("pipeline.md", table + "\n")
    print(f"\npipeline {parent}\n{table}")
    return {
        "target_flops": str(cfg.target_flops),
        "phi": str(cfg.phi),
        "children": rows,
        "verdicts": judged,
    }


def trained_verdicts(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each trained model after the first against the first (B0), paired over the validation
    images both were scored on (`foundation.verdict.compare`; one seed each: the call is a tie or
    not estimable, never a win, and the line says so)."""
    from foundation.verdict import Scores, compare

    trained = [r for r in records if r["stage"] == "train" and r["status"] == "done"]
    found = {r["name"]: per_image.load(r["path"], "val") for r in trained}
    out: dict[str, dict[str, Any]] = {}
    if not trained or found[trained[0]["name"]] is None:
        return out
    first = trained[0]["name"]
    for r in trained[1:]:
        mine = found[r["name"]]
        if mine is not None and mine.size == found[first].size:
            out[r["name"]] = {"against": first, **compare(Scores.of([mine]), Scores.of([found[first]]))}
    return out


def _argv(child: Child, path: Path) -> list[str]:
    return ["effnas", child.stage, "--resume", str(path)]


def _status(path: Path) -> str:
    try:
        return read_json(path / "manifest.json").get("status", "unknown")
    except UserError:
        return "not started"


# -- the table ------------------------------------------------------------------------------------
def headline(stage: str, summary: dict[str, Any]) -> str:
    """One line of a child's result, from its summary.json."""
    from foundation.units import format_flops

    def flops(v: Any) -> str:
        return format_flops(v) if v else "-"

    if stage == "search":
        return (
            f"best reward {_acc(summary.get('best_reward'))} (acc {_acc(summary.get('best_accuracy'))}, "
            f"{flops(summary.get('best_macs'))} MACs) of {summary.get('trials_done')} trials"
        )
    if stage == "grid":
        w = summary.get("winner") or {}
        if w.get("accuracy") is None:
            return "no winner"
        base = summary.get("baseline_accuracy")
        call = (summary.get("verdict") or {}).get("winner_call")
        return (
            f"alpha={w.get('alpha')} beta={w.get('beta')} gamma={w.get('gamma')} (acc {_acc(w['accuracy'])}"
            + (f", unscaled baseline {_acc(base)})" if base is not None else ")")
            + (f"; {call}" if call else "")
        )
    if stage == "scale":
        phis = summary.get("phis") or []
        span = f"b{phis[0]}..b{phis[-1]}" if len(phis) > 1 else "".join(f"b{p}" for p in phis)
        return (
            f"{span} ({summary.get('mode')}), alpha={summary.get('alpha')} beta={summary.get('beta')} "
            f"gamma={summary.get('gamma')}; MACs / 2^phi x B0: "
            f"{summary.get('macs_ratio_min')}..{summary.get('macs_ratio_max')}"
        )
    acc = summary.get("val_accuracy")
    test = summary.get("test_accuracy")
    params = summary.get("params")
    return (
        f"{summary.get('arch')}: val acc {_acc(acc)}"
        + (f", test acc {_acc(test)}" if test is not None else "")
        + f", {flops(summary.get('macs'))} MACs"
        + (f", {params:,} params" if isinstance(params, int) else "")
    )


def _acc(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    path = Path(record["path"])
    result = "-"
    if record["status"] == "done":
        try:
            result = headline(record["stage"], read_json(path / "summary.json"))
        except (UserError, KeyError, TypeError, ValueError):
            result = "(summary unreadable)"
    return {**record, "result": result}


def runs_table(rows: list[dict[str, Any]]) -> str:
    """stage | run dir | status | headline result, as a Markdown table (readable as text too)."""
    cols = ("name", "path", "status", "result")
    heads = ("stage", "run dir", "status", "headline result")
    return tables.format_table(rows, cols, {c: str for c in cols}, heads, align="left", markdown=True)
