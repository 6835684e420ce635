"""`effnas latency`: measured inference latency, the paper's protocol, and a latency table.

    effnas latency --arch efficientnet_b0                       # batch 1, one thread, median of 20
    effnas latency --compare efficientnet_b1 resnet152 --accuracy efficientnet_b1=79.1,resnet152=77.8
    effnas latency --build-table                                # every part of the search space
    effnas latency --arch b3.yaml --table results/latency/<run>/latency_table.json
    effnas latency --noise-check                                # how far one measurement can be trusted
    effnas latency --fit-predictor 300 --table <table run>/latency_table.json   # learned predictor
    effnas latency --check-predictor 100 --predictor <fit run>  # does it still hold here, now?
    effnas latency --resume results/latency/<run>               # an interrupted --fit-/--check-predictor

Protocol (EfficientNet Table 4; MnasNet §4): batch 1 on one CPU thread, the process pinned to
that core, `warmup` untimed runs, then the median and spread of `runs` timed runs (default 20)
of one forward pass in inference mode (`training.timing`). `--repeat K` re-measures K times and
keeps the median of the medians; each measurement's coefficient of variation over its repeats
is reported, and flagged over `cv_threshold` (2%). `--threads`, `--batch`, `--runtime
torch|onnxruntime` and `--device cpu|cuda` change it; the machine, the runtimes' versions and the
load average before and after are recorded. Writes `latency.csv` (one row per model) and the
summary.

`--build-table` times every part an architecture of the search space can contain (the stem, each
layer setting at the shape it meets, the head: `search_spaces.latency.space_parts`) or the parts
of `table_archs`, fits `measured = overhead + scale x sum of parts` on `calibrate` random
architectures measured end to end (a Huber regression: one disturbed measurement on a shared
machine does not move it), writes `latency_table.json`, then checks the table on `evaluate`
other random architectures: `predictor.csv`, the rank agreement (Spearman) and the share
predicted within +-10%, and a plot of predicted vs measured.

`--noise-check` and `--fit-predictor N` are `deploy.latency_fit`'s: the CV of repeated
measurements of B0 and of random architectures (what ceiling that puts on any predictor), and a
regressor learned from N architectures measured end to end (`search_spaces.latency_predictor`).
`--check-predictor N --predictor P` holds a fitted predictor against N architectures it was not
fitted on, measured now, as fitted and scaled by the drift its reference architectures show.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundation import tables
from foundation.errors import UserError
from search_spaces.arch import Arch
from search_spaces.arch_config import ArchConfig
from search_spaces.mnasnet import SpaceConfig
from training.timing import (
    RUNTIMES,
    Setup,
    cv_text,
    flagged,
    machine,
    measure,
    model_latency,
    pin_threads,
    runner,
    runtime_missing,
    warn_noisy,
)

__all__ = ["RUNTIMES", "Setup", "machine", "measure", "model_latency", "runner"]  # training.timing's
PAPER_B1_VS_RESNET152 = 5.7  # EfficientNet Table 4: 0.098 s vs 0.554 s on one Xeon core, batch 1


@dataclass
class LatencyConfig:
    """Schema of `conf/latency.yaml` (`run` is added by the stage registry)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    compare: list[str] = MISSING  # arch names or YAML files, measured in this order
    accuracy: list[str] = MISSING  # NAME=TOP1 items the user reports (Table 4's column)
    batch: int = MISSING
    threads: int = MISSING
    runs: int = MISSING
    warmup: int = MISSING
    runtime: str = MISSING
    channels_last: bool = MISSING
    pin: bool = MISSING
    resolution: Optional[int] = MISSING
    num_classes: int = MISSING
    stem_stride: Optional[int] = MISSING
    table: Optional[str] = MISSING
    build_table: bool = MISSING
    table_archs: list[str] = MISSING
    calibrate: int = MISSING
    evaluate: int = MISSING
    table_runs: int = MISSING
    repeat: int = MISSING  # measurements per model; the median of their medians is kept
    cv_threshold: float = MISSING  # flag a measurement whose CV over its repeats is above this
    noise_check: bool = MISSING
    noise_archs: int = MISSING
    noise_repeats: int = MISSING
    fit_predictor: int = MISSING  # N architectures to measure and fit on (0: off)
    remeasure: int = MISSING  # --fit-predictor: rounds re-measuring the flagged ones before the fit
    passes: int = MISSING  # --fit-predictor: sweeps over every architecture, combined (1: one)
    anchor: bool = MISSING  # --fit-predictor: each architecture timed beside `arch`, run by run
    predictor_model: str = MISSING  # auto | linear | boosted | table
    folds: int = MISSING
    predictor: Optional[str] = MISSING  # a fitted predictor: read to predict (compare mode)
    check_predictor: int = MISSING  # N architectures `predictor` was not fitted on, measured now (0: off)
    resume: Optional[str] = None  # set by `--resume RUN_DIR` (a --fit-predictor or --check-predictor run)


# what `effnas report` reads of a latency run: the predictor check of --build-table (with
# evaluate > 0) or --fit-predictor (held-out predictions); runs without one are not reported
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "predictor.csv": (("arch", "measured_ms", "predicted_ms"), ("measured_ms", "predicted_ms")),
}
MIN_FIT = 20  # --fit-predictor: below this, k-fold figures on held-out architectures mean little


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists."""
    from search_spaces.arch_config import arch_from_cfg

    rules = [
        (cfg.batch >= 1, "--batch must be >= 1", cfg.batch),
        (cfg.threads >= 1, "--threads must be >= 1", cfg.threads),
        (cfg.runs >= 1 and cfg.warmup >= 0, "runs must be >= 1 and warmup >= 0", (cfg.runs, cfg.warmup)),
        (cfg.runtime in RUNTIMES, f"--runtime must be one of {', '.join(RUNTIMES)}", cfg.runtime),
        (cfg.num_classes >= 1, "num_classes must be >= 1", cfg.num_classes),
        (cfg.stem_stride in (None, 1, 2), "stem_stride must be 1, 2 or null", cfg.stem_stride),
        (cfg.resolution is None or cfg.resolution >= 8, "resolution must be >= 8", cfg.resolution),
        (
            cfg.calibrate >= 1 and cfg.evaluate >= 0,
            "calibrate must be >= 1, evaluate >= 0",
            (cfg.calibrate, cfg.evaluate),
        ),
        (cfg.table_runs >= 1, "table_runs must be >= 1", cfg.table_runs),
        (cfg.repeat >= 1, "--repeat must be >= 1", cfg.repeat),
        (cfg.cv_threshold > 0, "cv_threshold must be > 0", cfg.cv_threshold),
        (cfg.get("remeasure", 0) >= 0, "remeasure must be >= 0", cfg.get("remeasure")),
        (cfg.get("passes", 1) >= 1, "passes must be >= 1", cfg.get("passes")),
        (
            not (cfg.get("anchor") and cfg.get("passes", 1) > 1),
            "anchor=true measures one pass (combining passes of ratios is not built); give passes=1 or anchor=false",
            cfg.get("passes"),
        ),
        (
            cfg.noise_archs >= 0 and cfg.noise_repeats >= 2,
            "noise_archs must be >= 0 and noise_repeats >= 2",
            (cfg.noise_archs, cfg.noise_repeats),
        ),
        (
            cfg.fit_predictor == 0 or cfg.fit_predictor >= MIN_FIT,
            f"--fit-predictor N needs N >= {MIN_FIT} architectures (k-fold on fewer means little)",
            cfg.fit_predictor,
        ),
        (
            cfg.check_predictor == 0 or cfg.check_predictor >= MIN_FIT,
            f"--check-predictor N needs N >= {MIN_FIT} architectures (a share within +-10% of fewer means little)",
            cfg.check_predictor,
        ),
        (cfg.folds >= 2, "folds must be >= 2", cfg.folds),
    ]
    for ok, rule, value in rules:
        if not ok:
            raise UserError(f"{rule}, got {value}")
    missing = runtime_missing(str(cfg.runtime))
    if missing:
        raise UserError(f"--runtime {cfg.runtime}: {missing}")
    device = _device(cfg)
    if device.startswith("cuda") and cfg.runtime == "onnxruntime":
        raise UserError("--runtime onnxruntime runs on the CPU here; use --runtime torch with --device cuda")
    modes = [f for f, on in (("--build-table", cfg.build_table), ("--compare", bool(cfg.compare)),
             ("--noise-check", cfg.noise_check), ("--fit-predictor", bool(cfg.fit_predictor)),
             ("--check-predictor", bool(cfg.check_predictor))) if on]  # fmt: skip
    if len(modes) > 1:
        raise UserError(f"give {' or '.join(modes)}, not both")
    if cfg.resume and not cfg.fit_predictor and not cfg.check_predictor:
        raise UserError(
            f"--resume {cfg.resume}: only a --fit-predictor or --check-predictor run resumes; run the others again"
        )
    if cfg.fit_predictor:
        _fit_inputs(cfg)
    if cfg.check_predictor:
        _check_inputs(cfg)
    if cfg.predictor:
        load_predictor(cfg.predictor, runtime=str(cfg.runtime), threads=int(cfg.threads))
    if cfg.build_table and cfg.resolution is not None:
        raise UserError(
            f"--build-table times each part at its architecture's own resolution (where the search "
            f"prices it); drop resolution={cfg.resolution}"
        )
    if cfg.table and not cfg.build_table and not cfg.fit_predictor:
        from search_spaces.latency import LatencyTable, TableError

        # its predictions carry overhead + scale fitted on whole networks (a predictor's fit
        # reads only the parts, timed alone on unit-scale inputs, so an older table serves there)
        try:
            LatencyTable.load(cfg.table).check(f"latency table {cfg.table}")
        except TableError as exc:
            raise UserError(str(exc)) from None
    for spec in cfg.compare or []:
        resolve_arch(spec)
    for spec in cfg.table_archs or []:
        resolve_arch(spec)
    if not cfg.compare and not cfg.build_table and not cfg.fit_predictor and not cfg.check_predictor:
        arch_from_cfg(cfg.arch)
    parse_accuracy(cfg.accuracy)
    if cfg.accuracy and not cfg.compare:
        raise UserError("--accuracy labels the rows of --compare; give --compare too")


def load_predictor(path: str, **expected: Any) -> Any:
    """The predictor file `path` (or a fit run holding one), refused for another runtime or
    thread count (`expected`) in one line."""
    from search_spaces.latency_predictor import LatencyPredictor, PredictorError

    try:
        predictor = LatencyPredictor.load(path)
        predictor.check(where=f"latency predictor {path}", **expected)
    except PredictorError as exc:
        raise UserError(str(exc)) from None
    return predictor


def _check_inputs(cfg: Any) -> tuple[Any, Any]:
    """(the space, the predictor) a --check-predictor run reads: a predictor of this space,
    runtime and thread count, and room in the space for N architectures it was not fitted on."""
    if not cfg.predictor:
        raise UserError("--check-predictor N needs --predictor PATH (a --fit-predictor run or its file)")
    space = _space(cfg)
    predictor = load_predictor(cfg.predictor, space=space, runtime=str(cfg.runtime), threads=int(cfg.threads))
    room = space.distinct_size() - len(predictor.trained_on)
    if room < int(cfg.check_predictor):
        raise UserError(
            f"--check-predictor {cfg.check_predictor}: the space has only {room} distinct architectures "
            "besides the ones the predictor was fitted on"
        )
    return space, predictor


def _fit_inputs(cfg: Any) -> tuple[Any, Any]:
    """(the space, the table) a --fit-predictor run reads: a table given and covering the space;
    on --resume, the run must be unfinished."""
    from search_spaces.latency import LatencyTable, TableError, space_parts
    from search_spaces.latency_predictor import KINDS

    if cfg.predictor_model not in KINDS:
        raise UserError(
            f"unknown predictor_model {cfg.predictor_model!r}; expected one of {', '.join(KINDS)}"
        )
    if cfg.resume:
        from foundation.runfiles import read_json

        status = read_json(Path(str(cfg.resume)) / "manifest.json").get("status")
        if status == "done":
            raise UserError(f"--resume {cfg.resume}: the run finished (status done); nothing to resume")
    if not cfg.table:
        raise UserError(
            "--fit-predictor needs a latency table of this space (its sum of parts is a feature): "
            "--table PATH (build one with `effnas latency --build-table`)"
        )
    if cfg.resolution is not None:
        raise UserError(
            f"--fit-predictor measures each architecture at its own resolution (where the search "
            f"prices it); drop resolution={cfg.resolution}"
        )
    space = _space(cfg)
    if space.distinct_size() < int(cfg.fit_predictor):
        raise UserError(
            f"--fit-predictor {cfg.fit_predictor}: the space has only {space.distinct_size()} distinct "
            "architectures"
        )
    try:
        table = LatencyTable.load(cfg.table)
    except TableError as exc:
        raise UserError(str(exc)) from None
    lacking = table.missing(space_parts(space, num_classes=int(cfg.num_classes), stem_stride=cfg.stem_stride))
    if lacking:
        raise UserError(
            f"latency table {cfg.table} lacks {len(lacking)} parts of this search space (first: "
            f"{lacking[0]}); build it for this space: `effnas latency --build-table`"
        )
    return space, table


def parse_accuracy(items: Sequence[str]) -> dict[str, float]:
    """`["efficientnet_b1=79.1", ...]` -> {name: top-1}."""
    out = {}
    for item in items or []:
        name, _, value = str(item).rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--accuracy: expected NAME=NUMBER items, got {item!r}") from None
        if not name:
            raise UserError(f"--accuracy: expected NAME=NUMBER items, got {item!r}")
    return out


def _device(cfg: Any) -> str:
    """`run.device`: auto means the CPU here (the paper's protocol times one CPU core)."""
    device = str(cfg.run.device)
    if device == "auto":
        return "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine")
    return device


def resolve_arch(spec: str) -> Arch:
    """An arch name (a `conf/arch` option, or one in the user's config folders) or a YAML file
    (a scale run's b3.yaml, a search's best_arch.yaml)."""
    from foundation.conf_dir import load_option
    from search_spaces.arch import ArchError

    try:
        if not spec.endswith((".yaml", ".yml")):
            try:
                return Arch.from_dict(load_option("arch", spec))
            except LookupError:
                raise UserError(
                    f"unknown arch {spec!r}: not in conf/arch nor your config folders, and not a YAML file"
                ) from None
        if not Path(spec).is_file():
            raise UserError(f"arch file {spec} does not exist")
        return Arch.from_yaml(Path(spec).read_text())
    except (ArchError, UnicodeDecodeError) as exc:
        raise UserError(f"arch {spec}: {exc}") from None


# -- measuring ----------------------------------------------------------------------------------
def part_latency(part: Any, setup: Setup, runs: int) -> list[float]:
    from search_spaces.builder import build_part

    module, shape = build_part(part, setup.batch)
    return measure(runner(module, shape, setup), runs, setup.warmup)


# -- the stage ----------------------------------------------------------------------------------
def setup_of(cfg: Any) -> Setup:
    return Setup(
        batch=int(cfg.batch),
        threads=int(cfg.threads),
        runs=int(cfg.runs),
        warmup=int(cfg.warmup),
        runtime=str(cfg.runtime),
        device=_device(cfg),
        channels_last=bool(cfg.channels_last),
        repeat=int(cfg.repeat),
    )


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    from search_spaces.arch_config import arch_from_cfg

    setup = setup_of(cfg)
    pin_threads(setup.threads, bool(cfg.pin) and setup.device == "cpu")
    before = machine()
    rundir.record(machine=before, latency_setup=setup.__dict__)
    print(
        f"latency: batch {setup.batch}, {setup.threads} thread(s), {setup.runtime} on {setup.device}, "
        f"median of {setup.runs} after {setup.warmup} warm-up, x{setup.repeat} repeat(s); "
        f"{before['cpu']} (load {before['load_average'][0]:.2f})",
        file=sys.stderr,
    )
    if cfg.build_table:
        summary = build_table(cfg, rundir, setup)
    elif cfg.noise_check:
        from deploy.latency_fit import noise_check

        summary = noise_check(cfg, rundir, setup, _space(cfg))
    elif cfg.fit_predictor:
        from deploy.latency_fit import fit_predictor

        space, table = _fit_inputs(cfg)
        summary = fit_predictor(cfg, rundir, setup, space, table)
    elif cfg.check_predictor:
        from deploy.latency_fit import check_predictor

        space, predictor = _check_inputs(cfg)
        summary = check_predictor(cfg, rundir, setup, space, predictor)
    else:
        specs = list(cfg.compare) or [None]
        archs = [resolve_arch(s) if s else arch_from_cfg(cfg.arch) for s in specs]
        summary = compare(cfg, rundir, setup, archs, [s or archs[0].name for s in specs])
    summary["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    summary["load_average_before"] = before["load_average"]
    return summary


def compare(cfg: Any, rundir: Any, setup: Setup, archs: list[Arch], labels: list[str]) -> dict[str, Any]:
    """Each model measured end to end (with its predicted latency when a table is given):
    latency.csv and a Table 4-style table."""
    from search_spaces.cost import count
    from search_spaces.latency import LatencyTable, TableError

    table = LatencyTable.load(cfg.table) if cfg.table else None
    predictor = load_predictor(cfg.predictor) if cfg.predictor else None
    if predictor is not None and predictor.anchor:
        print(
            f"latency: {cfg.predictor} was fitted beside an anchor: its `learned_ms` is milliseconds at the speed "
            f"that ran {predictor.anchor['arch']} in {predictor.anchor['reference_ms']:.2f} ms; the measurements "
            "here are plain milliseconds now (--check-predictor measures beside the anchor)",
            file=sys.stderr,
        )
    accuracy = parse_accuracy(cfg.accuracy)
    rows = []
    for label, arch in zip(labels, archs):
        res = int(cfg.resolution or arch.resolution)
        cost = count(arch, resolution=res, num_classes=int(cfg.num_classes), stem_stride=cfg.stem_stride)
        measured = model_latency(arch, setup, res, int(cfg.num_classes), cfg.stem_stride)
        row: dict[str, Any] = {
            "model": label,
            "arch": arch.name,
            "resolution": res,
            "params": cost.params,
            "macs": cost.macs,
            "activations": getattr(cost, "activations", None),
            **measured.row(),
            "flagged": flagged(measured, float(cfg.cv_threshold)),
            "runs": setup.runs,
            "batch": setup.batch,
            "threads": setup.threads,
            "runtime": setup.runtime,
            "device": setup.device,
        }
        if table is not None:
            try:
                row["predicted_ms"] = round(
                    table.predict(
                        arch,
                        resolution=res,
                        num_classes=int(cfg.num_classes),
                        stem_stride=cfg.stem_stride,
                    ),
                    4,
                )
            except TableError as exc:
                row["predicted_ms"] = None
                print(f"latency: {label}: no prediction: {exc}", file=sys.stderr)
        if predictor is not None:
            try:
                row["learned_ms"] = round(predictor.predict(arch, resolution=res), 4)
            except TableError as exc:
                row["learned_ms"] = None
                print(f"latency: {label}: no learned prediction: {exc}", file=sys.stderr)
        if accuracy:
            row["top1"] = accuracy.get(label, accuracy.get(arch.name))
        rows.append(row)
        print(
            f"  {label:<24} {row['median_ms']:9.2f} ms  (p25 {row['p25_ms']:.2f}, p75 {row['p75_ms']:.2f}; "
            f"{cost.params / 1e6:.1f}M params, {cost.macs / 1e9:.2f}G MACs{cv_text(measured)})",
            file=sys.stderr,
            flush=True,
        )
        warn_noisy(label, measured, float(cfg.cv_threshold))
    rundir.write_csv("latency.csv", rows)
    print(latency_table(rows))
    summary: dict[str, Any] = {"models": {r["model"]: r["median_ms"] for r in rows}, "setup": setup.__dict__}
    by_arch = {r["arch"]: r for r in rows} | {r["model"]: r for r in rows}
    if "efficientnet_b1" in by_arch and "resnet152" in by_arch:
        ratio = by_arch["resnet152"]["median_ms"] / by_arch["efficientnet_b1"]["median_ms"]
        summary["b1_vs_resnet152"] = round(ratio, 2)
        print(
            f"efficientnet_b1 is {ratio:.2f}x faster than resnet152 here "
            f"(paper Table 4: {PAPER_B1_VS_RESNET152}x on one Xeon core)"
        )
    summary["flagged"] = [r["model"] for r in rows if r["flagged"]]
    summary["cv_threshold"] = float(cfg.cv_threshold)
    if len(rows) == 1:
        keys = ("median_ms", "p25_ms", "p75_ms", "min_ms", "max_ms", "cv", "repeats")
        summary.update({k: rows[0][k] for k in keys})
        summary["predicted_ms"] = rows[0].get("predicted_ms")
        summary["learned_ms"] = rows[0].get("learned_ms")
    return summary


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Table 4's layout: model, (top-1 when given), params, MACs, latency, speed-up over the
    slowest row."""
    slowest = max(r["median_ms"] for r in rows)
    has_top1 = any(r.get("top1") is not None for r in rows)
    head = ["model", *(["top-1"] if has_top1 else []), "params", "MACs", "latency ms", "p25-p75", "x slowest"]
    if any(r.get("cv") is not None for r in rows):
        head.append("CV")
    if any(r.get("predicted_ms") is not None for r in rows):
        head.append("predicted ms")
    if any(r.get("learned_ms") is not None for r in rows):
        head.append("learned ms")
    lines = []
    for r in rows:
        line = [r["model"]]
        if has_top1:
            line.append("-" if r.get("top1") is None else f"{r['top1']:g}")
        line += [
            f"{r['params'] / 1e6:.1f}M",
            f"{r['macs'] / 1e9:.2f}G",
            f"{r['median_ms']:.2f}",
            f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f}",
            f"{slowest / r['median_ms']:.1f}x",
        ]
        if "CV" in head:
            cv = "-" if r.get("cv") is None else f"{r['cv']:.1%}"
            line.append(cv + (" !" if r.get("flagged") else ""))
        if "predicted ms" in head:
            line.append("-" if r.get("predicted_ms") is None else f"{r['predicted_ms']:.2f}")
        if "learned ms" in head:
            line.append("-" if r.get("learned_ms") is None else f"{r['learned_ms']:.2f}")
        lines.append(dict(zip(head, line)))
    return tables.format_table(lines, head, {h: str for h in head}, align="first-left")


def _space(cfg: Any) -> Any:
    from search_spaces.mnasnet import MnasNetSpace, SpaceError

    try:
        return MnasNetSpace.from_config(cfg.space)
    except SpaceError as exc:
        raise UserError(str(exc)) from None


def build_table(cfg: Any, rundir: Any, setup: Setup) -> dict[str, Any]:
    """Time every part, measure the overhead, check the table on random architectures."""
    from search_spaces.latency import LatencyTable, parts, space_parts

    kw = {"num_classes": int(cfg.num_classes), "stem_stride": cfg.stem_stride}
    space = _space(cfg)
    if cfg.table_archs:
        archs = [resolve_arch(s) for s in cfg.table_archs]
        todo = list({p.key: p for a in archs for p in parts(a, **kw)}.values())
        source = f"{len(archs)} architecture(s)"
    else:
        todo = space_parts(space, **kw)
        source = f"the {space.base.name} MnasNet space"
    print(f"latency table: {len(todo)} parts of {source}, {int(cfg.table_runs)} runs each", file=sys.stderr)
    ms: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, part in enumerate(todo, 1):
        ms[part.key] = round(statistics.median(part_latency(part, setup, int(cfg.table_runs))), 5)
        if i % 50 == 0 or i == len(todo):
            eta = (time.perf_counter() - t0) / i * (len(todo) - i)
            print(
                f"  [{i}/{len(todo)}] {part.key}: {ms[part.key]:.3f} ms  ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    table = LatencyTable(ms, 0.0, {"machine": machine(), **setup.__dict__, **kw, "parts_of": source})
    # whole networks: the first `calibrate` fit overhead and scale, the rest check the table
    rng = random.Random(int(cfg.run.seed))
    n = int(cfg.calibrate) + int(cfg.evaluate)
    pool = archs if cfg.table_archs else [space.decode(space.sample(rng)) for _ in range(n)]
    calib, check = pool[: int(cfg.calibrate)], pool[int(cfg.calibrate) :]
    table.scale, table.overhead_ms = calibrate(
        [table.parts_sum(parts(a, **kw)) for a in calib], [_measured(a, setup, kw) for a in calib]
    )
    path = Path(cfg.table) if cfg.table else rundir.file("latency_table.json")
    from foundation.runfiles import atomic_write

    atomic_write(path, table.to_json())
    print(
        f"latency table: {len(ms)} parts; measured = {table.overhead_ms:.3f} ms + {table.scale:.4f} x sum "
        f"of parts ({len(calib)} calibration archs) -> {path}",
        file=sys.stderr,
    )
    summary: dict[str, Any] = {
        "table": str(path.resolve()),
        "parts": len(ms),
        "overhead_ms": table.overhead_ms,
        "scale": table.scale,
        "calibrated_on": len(calib),
        "table_seconds": round(time.perf_counter() - t0, 1),
    }
    if check:
        summary.update(check_table(table, check, setup, kw, rundir))
    return summary


def calibrate(sums: list[float], measured: list[float]) -> tuple[float, float]:
    """(scale, overhead_ms) of `measured = overhead + scale x sum`: scikit-learn's Huber
    regression over the calibration architectures (robust to one run a neighbour disturbed);
    with a single architecture, scale 1 and the gap as the overhead."""
    if len(sums) < 2:
        return 1.0, round(measured[0] - sums[0], 5)
    import numpy as np
    from sklearn.linear_model import HuberRegressor

    fit = HuberRegressor(alpha=0.0).fit(np.array(sums).reshape(-1, 1), np.array(measured))
    return round(float(fit.coef_[0]), 6), round(float(fit.intercept_), 5)


def _measured(arch: Arch, setup: Setup, kw: dict[str, Any]) -> float:
    return model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"]).median_ms


def check_table(
    table: Any, archs: list[Arch], setup: Setup, kw: dict[str, Any], rundir: Any
) -> dict[str, Any]:
    """Predicted vs measured on architectures the table was not calibrated on."""
    from scipy.stats import spearmanr

    rows = []
    for i, arch in enumerate(archs, 1):
        measured = _measured(arch, setup, kw)
        predicted = table.predict(arch, **kw)
        rows.append(
            {
                "arch": arch.name,
                "blocks": " ".join(arch.blocks),
                "measured_ms": round(measured, 4),
                "predicted_ms": round(predicted, 4),
                "error": round(predicted / measured - 1, 4),
            }
        )
        print(
            f"  check [{i}/{len(archs)}] {arch.name}: measured {measured:.2f} ms, predicted {predicted:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
    rundir.write_csv("predictor.csv", rows)
    measured = [r["measured_ms"] for r in rows]
    predicted = [r["predicted_ms"] for r in rows]
    rho = float(spearmanr(measured, predicted).statistic) if len(rows) > 2 else math.nan
    within = sum(abs(r["error"]) <= 0.10 for r in rows) / len(rows)
    errors = sorted(abs(r["error"]) for r in rows)
    _plot_check(rundir, measured, predicted, rho, within)
    print(
        f"latency table on {len(rows)} unseen architectures: Spearman {rho:.3f}, "
        f"{within:.0%} within +-10% (median |error| {statistics.median(errors):.1%}, max {errors[-1]:.1%})"
    )
    return {
        "checked": len(rows),
        "spearman": round(rho, 4),
        "within_10pct": round(within, 4),
        "median_abs_error": round(statistics.median(errors), 4),
        "max_abs_error": round(errors[-1], 4),
        "mean_signed_error": round(statistics.fmean(r["error"] for r in rows), 4),
    }


def _plot_check(
    rundir: Any, measured: list[float], predicted: list[float], rho: float, within: float
) -> None:
    from foundation.figures import close, predicted_vs_measured

    title = f"Spearman {rho:.3f}, {within:.0%} within +-10%"
    fig = predicted_vs_measured([(title, measured, predicted)])
    rundir.save_figure("predicted_vs_measured.png", fig)
    close(fig)
