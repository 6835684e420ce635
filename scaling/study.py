"""`effnas study scaling`: does compound scaling win on your data? (EfficientNet Table 3, Table 7,
Figures 3 and 8, run on the user's baseline and data.)

    effnas study scaling --arch efficientnet_b0 --flops 2x [--seeds 2] [--budgets 5,15]
    effnas study scaling --from results/grid/<run> --flops 2x,4x --methods depth,width,compound
    effnas study scaling --sweep width --multipliers 1,1.4,1.8,2.6          # Figure 3's curve
    effnas study scaling --resume results/study/<run>

At each MACs level (a multiple of the baseline's MACs at its deployment resolution with 1000
classes, the paper's unit) every method scales the same baseline and trains it with the same
proxy recipe, data, seeds and budget:
- `depth`, `width`, `resolution`: one dimension alone, its multiplier solved so the MACs after
  rounding land within `tolerance` (5%) of the level, or the closest reachable point, flagged
  `on_level: false`;
- `compound`: depth alpha^phi, width beta^phi, resolution gamma^phi with the grid run's
  coefficients (`--from`) or the paper's (1.2, 1.1, 1.15), phi solved for the level;
- `compound_paper`: compound with the paper's (1.2, 1.1, 1.15) whatever `--from` fitted, so a
  grid run's coefficients and the paper's are judged side by side;
- `dwr`: Dollar et al. 2021 ("Fast and Accurate Model Scaling"), their fast compound scaling at
  alpha = 0.8: for a MACs factor s, depth s^0.1, width s^0.4, resolution s^0.05;
- `baseline`: the unscaled baseline (level 1x, trained once per seed and budget).
The proxy trains at `proxy.resolution` times the method's resolution multiplier (as the grid
does); MACs are always the deployment model's. Trials run through the executor the application
hands in (Ray Tune, or in this process); `study.csv` is rewritten after each one, so `--resume`
trains only what has not finished. Writes `study.csv`, `summary.json` (per level and budget: each
method's mean and spread, the winner, compound's margin over the best single dimension, whether
the ranking held across budgets) and the plots `accuracy_vs_macs.png` (Figure 8) and, for a
sweep, `accuracy_vs_multiplier.png` (Figure 3).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from foundation import per_image, verdict
from foundation.errors import UserError
from scaling.compound import PAPER_COEFFICIENTS, macs_of, scale_arch
from search_spaces.arch import Arch
from training.study_trials import (
    StudyTrials,
    check_eval_split,
    evaluation_split,
    resume_rows,
    stop_interrupted,
)

if TYPE_CHECKING:
    from training.trials import Executor

KINDS = ("scaling",)
METHODS = ("baseline", "depth", "width", "resolution", "compound", "compound_paper", "dwr")
COMPOUND = ("compound", "compound_paper")  # compound_paper: the paper's (1.2, 1.1, 1.15) beside a grid's
SINGLE = ("depth", "width", "resolution")
DWR_EXPONENTS = (0.1, 0.4, 0.05)  # Dollar et al. 2021, alpha = 0.8: depth, width, resolution of s
STEP = 0.005  # resolution of the multiplier search
COLUMNS = (
    "id",
    "method",
    "level",
    "budget",
    "seed",
    "multiplier",
    "width",
    "depth",
    "resolution",
    "proxy_resolution",
    "macs",
    "params",
    "activations",
    "macs_ratio",
    "on_level",
    "accuracy",
    "val_accuracy",
    "images_per_s",
    "seconds",
    "status",
    "error",
)
# what `effnas report` reads of this stage's run: table -> (required columns, of which numeric);
# extra columns are tolerated, so runs from before a column was added still read
NUMERIC = (
    "level",
    "budget",
    "seed",
    "width",
    "depth",
    "resolution",
    "macs",
    "params",
    "activations",
    "macs_ratio",
    "accuracy",
    "images_per_s",
)
ARM_SHAPE = ("multiplier", "depth", "width", "resolution")  # what an arm scaled, and by how much
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "study.csv": (("method", *NUMERIC[:-1], "on_level", "images_per_s", "status"), NUMERIC),
}


# -- inputs -------------------------------------------------------------------------------------
def parse_levels(text: Any) -> list[float]:
    """`2x`, `2x,4x` or `2,4` -> [2.0, 4.0]; every level above 1 (the baseline is 1x)."""
    levels = []
    for item in str(text).split(","):
        item = item.strip().lower().removesuffix("x")
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--flops {text!r}: expected MACs levels like 2x or 2x,4x") from None
        if not value > 1.0 or not math.isfinite(value):
            raise UserError(
                f"--flops {text!r}: a level must be above 1x (the baseline itself), got {value:g}x"
            )
        levels.append(value)
    if len(set(levels)) != len(levels):
        raise UserError(f"--flops {text!r}: a level is listed twice")
    return sorted(levels)


def _coefficients(cfg: Any, grid: Mapping[str, Any] | None) -> tuple[tuple[float, float, float], str]:
    given = [cfg.get(k) for k in ("alpha", "beta", "gamma")]
    if any(v is not None for v in given):
        if any(v is None for v in given) or min(given) < 1:
            raise UserError(f"give alpha, beta, gamma all >= 1 (or none), got {given}")
        return (float(given[0]), float(given[1]), float(given[2])), "config"
    if grid is not None:
        return (float(grid["alpha"]), float(grid["beta"]), float(grid["gamma"])), "grid run"
    return PAPER_COEFFICIENTS, "paper (EfficientNet §3.3)"


def resolve_inputs(cfg: Any) -> tuple[Arch, tuple[float, float, float], dict[str, Any]]:
    """(baseline, compound coefficients, where each came from): `--arch`, else `--from` (a
    search run's best_arch.yaml, or a grid run's baseline and coefficients), else the official B0."""
    import yaml

    from foundation.runfiles import read_json, stage_of
    from search_spaces.arch import ArchError
    from search_spaces.arch_config import arch_from_cfg, arch_given
    from search_spaces.official import efficientnet_b0

    grid = None
    source: dict[str, Any] = {}
    baseline = None
    if cfg.upstream:
        from pathlib import Path

        run = Path(cfg.upstream)
        stage = stage_of(run) if run.is_dir() else None
        if stage not in ("search", "grid"):
            what = f"a {stage} run" if stage else "not an effnas run directory"
            raise UserError(f"--from {run}: {what}; expected a search run or a grid run")
        read_json(run / "manifest.json")
        name = "best_arch.yaml" if stage == "search" else "coefficients.yaml"
        try:
            doc = yaml.safe_load((run / name).read_text())
            if stage == "search":
                baseline = Arch.from_dict(doc)
            else:
                grid = doc
                baseline = Arch.from_dict(doc["baseline"]) if doc.get("baseline") else None
        except (OSError, yaml.YAMLError, ArchError, KeyError, TypeError) as exc:
            raise UserError(f"--from {run}: {name}: {str(exc).splitlines()[0]}") from None
        source = {"upstream": str(run.resolve()), "stage": stage}
    if arch_given(cfg):
        if baseline is not None and stage == "search":
            raise UserError("give the baseline either with --from (a search run) or --arch, not both")
        baseline = arch_from_cfg(cfg.arch)
        source["baseline"] = "--arch"
    elif baseline is None:
        baseline = efficientnet_b0()
        source["baseline"] = "official efficientnet_b0 (paper Table 1)"
    else:
        source["baseline"] = f"{source['stage']} run"
    coeffs, where = _coefficients(cfg, grid)
    source["coefficients"] = where
    return baseline, coeffs, source


# -- solving each method for a MACs level ------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One method at one level: its multipliers, the deployment arch, and how close it landed."""

    method: str
    level: float
    multiplier: float  # the solved parameter: d, w or r; phi for compound; s for dwr
    arch: Arch
    res_mult: float
    macs: int
    macs_ratio: float
    on_level: bool


def multipliers(method: str, t: float, coeffs: Sequence[float]) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers of `method` at parameter `t`."""
    if method == "depth":
        return t, 1.0, 1.0
    if method == "width":
        return 1.0, t, 1.0
    if method == "resolution":
        return 1.0, 1.0, t
    if method in COMPOUND:
        a, b, g = PAPER_COEFFICIENTS if method == "compound_paper" else coeffs
        return a**t, b**t, g**t
    if method == "dwr":
        return tuple(t**e for e in DWR_EXPONENTS)  # type: ignore[return-value]
    if method == "baseline":
        return 1.0, 1.0, 1.0
    raise UserError(f"unknown scaling method {method!r}; expected one of {', '.join(METHODS)}")


def scaled(baseline: Arch, dims: tuple[float, float, float], divisor: int, **changes: Any) -> Arch:
    d, w, r = dims
    return scale_arch(baseline, d, w, r, 1.0, resolution_divisor=divisor, **changes)


def _range(method: str, coeffs: Sequence[float], level: float, max_mult: float) -> Sequence[float]:
    if method in COMPOUND:  # phi: from 0 until every multiplier passes max_mult or MACs pass 2x level
        coeffs = PAPER_COEFFICIENTS if method == "compound_paper" else coeffs
        top = math.log(max_mult) / math.log(max(coeffs)) if max(coeffs) > 1 else 0.0
        return [i * STEP for i in range(int(top / STEP) + 1)]
    top = level * 2 if method == "dwr" else max_mult
    return [1.0 + i * STEP for i in range(int((top - 1.0) / STEP) + 1)]


def solve(
    baseline: Arch,
    method: str,
    level: float,
    coeffs: Sequence[float],
    *,
    tolerance: float = 0.05,
    max_mult: float = 4.0,
    divisor: int = 8,
) -> Arm:
    """The parameter whose rounded MACs land closest (in log ratio) to `level` x the baseline's;
    among equally close ones the smallest. A method that cannot move MACs at all is refused."""
    base = macs_of(baseline)
    if method == "baseline":
        return Arm(method, 1.0, 1.0, baseline, 1.0, base, 1.0, True)
    best: tuple[float, float, Arch, float] | None = None
    seen_ratios = set()
    for t in _range(method, coeffs, level, max_mult):
        dims = multipliers(method, t, coeffs)
        arch = scaled(baseline, dims, divisor)
        ratio = macs_of(arch) / base
        seen_ratios.add(round(ratio, 6))
        err = abs(math.log(ratio / level))
        if best is None or err < best[0] - 1e-12:
            best = (err, t, arch, dims[2])
        if ratio > level * 2:
            break
    if len(seen_ratios) <= 1:
        raise UserError(f"{baseline.name} cannot be scaled by {method}: its MACs do not change")
    assert best is not None
    err, t, arch, res_mult = best
    ratio = macs_of(arch) / base
    return Arm(
        method,
        level,
        round(t, 4),
        arch,
        res_mult,
        macs_of(arch),
        round(ratio, 4),
        abs(ratio / level - 1) <= tolerance,
    )


def sweep_arm(baseline: Arch, method: str, mult: float, divisor: int) -> Arm:
    """One point of Figure 3's curve: `method`'s dimension at multiplier `mult`."""
    dims = multipliers(method, mult, PAPER_COEFFICIENTS)
    arch = scaled(baseline, dims, divisor)
    ratio = macs_of(arch) / macs_of(baseline)
    return Arm(method, round(ratio, 4), mult, arch, dims[2], macs_of(arch), round(ratio, 4), True)


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists: kind, levels, methods, seeds, budgets, sweep,
    the baseline and that each method can reach each level (solved here, in milliseconds)."""
    from training.trial_log import check

    if cfg.kind not in KINDS:
        raise UserError(f"unknown study {cfg.kind!r}; expected one of {', '.join(KINDS)}")
    check(cfg)
    if int(cfg.seeds) < 1:
        raise UserError(f"--seeds must be >= 1, got {cfg.seeds}")
    check_eval_split(cfg)
    if not cfg.budgets or any(not float(b) > 0 for b in cfg.budgets):
        raise UserError(f"--budgets must be epochs > 0, got {list(cfg.budgets or [])}")
    if not 0 < float(cfg.tolerance) < 1 or not float(cfg.max_multiplier) > 1:
        raise UserError(
            f"tolerance must be in (0, 1) and max_multiplier > 1, got {cfg.tolerance}, {cfg.max_multiplier}"
        )
    for m in cfg.methods:
        if m not in METHODS:
            raise UserError(f"unknown scaling method {m!r}; expected one of {', '.join(METHODS)}")
    baseline, coeffs, _ = resolve_inputs(cfg)
    if cfg.sweep is not None:
        if cfg.sweep not in SINGLE:
            raise UserError(f"--sweep must be one of {', '.join(SINGLE)}, got {cfg.sweep!r}")
        if not cfg.multipliers or any(not float(m) >= 1 for m in cfg.multipliers):
            raise UserError(f"--multipliers must be >= 1, got {list(cfg.multipliers or [])}")
        return
    levels = parse_levels(cfg.flops)
    if not cfg.methods:
        raise UserError("--methods is empty")
    for level in levels:
        for m in cfg.methods:
            solve(
                baseline, m, level, coeffs, tolerance=float(cfg.tolerance), max_mult=float(cfg.max_multiplier)
            )


def plan(cfg: Any, baseline: Arch, coeffs: Sequence[float]) -> list[dict[str, Any]]:
    """Every trial of the study (status pending), budgets outermost, seeds innermost."""
    from search_spaces.cost import count

    divisor = int(cfg.resolution_divisor)
    if cfg.sweep is not None:
        arms = [sweep_arm(baseline, str(cfg.sweep), float(m), divisor) for m in cfg.multipliers]
    else:
        arms = []
        if "baseline" in cfg.methods:
            arms.append(solve(baseline, "baseline", 1.0, coeffs))
        for level in parse_levels(cfg.flops):
            for m in cfg.methods:
                if m != "baseline":
                    kw = {"tolerance": float(cfg.tolerance), "max_mult": float(cfg.max_multiplier)}
                    arms.append(solve(baseline, m, level, coeffs, divisor=divisor, **kw))
    rows = []
    seed0 = int(cfg.run.seed)
    for budget in cfg.budgets:
        for arm in arms:
            cost = count(arm.arch)
            proxy_res = max(8, round(int(cfg.proxy.resolution) * arm.res_mult))
            for k in range(int(cfg.seeds)):
                rows.append(
                    {
                        "id": f"{arm.method}@{arm.level:g}x/{float(budget):g}ep/seed{seed0 + k}",
                        "method": arm.method,
                        "level": arm.level,
                        "budget": float(budget),
                        "seed": seed0 + k,
                        "multiplier": arm.multiplier,
                        "width": arm.arch.width,
                        "depth": arm.arch.depth,
                        "resolution": arm.arch.resolution,
                        "proxy_resolution": proxy_res,
                        "macs": cost.macs,
                        "params": cost.params,
                        "activations": cost.activations,
                        "macs_ratio": arm.macs_ratio,
                        "on_level": arm.on_level,
                        "accuracy": None,
                        "images_per_s": None,
                        "seconds": None,
                        "status": "pending",
                        "error": None,
                        "_arch": arm.arch.scaled(
                            name=f"{baseline.name}-{arm.method}-{arm.level:g}x"
                        ).to_dict(),
                    }
                )
    return rows


# -- the trials ---------------------------------------------------------------------------------
class ScalingTrials(StudyTrials):
    """The study's trial table (`training.study_trials`) over its columns and trial-log entries."""

    columns = COLUMNS
    logged = ("level", "seed", "multiplier", "macs", "params", "activations", "macs_ratio", "accuracy")
    logged += ("images_per_s", "seconds", "error", "proxy_resolution")

    def entry_params(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"method": row["method"], "budget": float(row["budget"]), **{k: float(row[k]) for k in SCALED}}


def trial_space(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The study's trials as the trial log's parameters: method, budget, the multipliers."""
    from training.trial_log import Choice, Range

    return {
        "method": Choice(METHODS),
        "budget": Choice(sorted({float(r["budget"]) for r in rows})),
        "depth": Range.over(r["depth"] for r in rows),
        "width": Range.over(r["width"] for r in rows),
        "resolution": Range.over(r["resolution"] for r in rows),
    }


SCALED = ("depth", "width", "resolution")  # the multipliers a trial is logged with


# -- results ------------------------------------------------------------------------------------
def arm_scores(rows: Sequence[dict[str, Any]], run: Any, images: int) -> dict[tuple, verdict.Scores]:
    """Each arm's finished seeds as `foundation.verdict.Scores`, keyed (budget, level, method); the
    baseline's level is 1. Paired over the evaluation images where every seed left its record."""
    trials: dict[tuple, list[tuple[str, float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["accuracy"] is not None:
            key = (float(r["budget"]), float(r["level"]), r["method"])
            trials.setdefault(key, []).append((str(r["id"]), float(r["accuracy"])))
    return {key: per_image.scores(run, found, images) for key, found in trials.items()}


def summarize(
    rows: Sequence[dict[str, Any]], run: Any = None, images: int = 0, split: str = "val"
) -> dict[str, Any]:
    """Per budget and level: each method's mean, seed std and interval (`foundation.verdict`); the
    ranking by mean; the leader and whether it wins (its interval over the runner-up excludes
    zero) or ties; compound against the best single dimension and every arm against the
    unscaled baseline, each with its interval and call; whether the ranking held across budgets.
    `images`: the evaluation set's size (`split`), for runs without per-image records."""
    scores = arm_scores(rows, run, images) if run is not None and images else {}
    out: dict[str, Any] = {}
    rankings: dict[str, dict[float, list[str]]] = {}
    for budget in sorted({r["budget"] for r in rows}):
        per_level: dict[str, Any] = {}
        for level in sorted({r["level"] for r in rows if r["method"] != "baseline"} or {1.0}):
            methods: dict[str, Any] = {}
            arms: dict[str, verdict.Scores] = {}
            for m in METHODS:
                mine = [r for r in rows if r["budget"] == budget and r["method"] == m]
                if not mine:
                    continue
                at = 1.0 if m == "baseline" else float(level)
                accs = [float(r["accuracy"]) for r in mine if r["status"] == "ok" and r["level"] == at]
                entry = {
                    "mean": round(statistics.fmean(accs), 5) if accs else None,
                    "std": round(statistics.stdev(accs), 5) if len(accs) > 1 else None,
                    "n": len(accs),
                    "macs_ratio": next((r["macs_ratio"] for r in mine if r["level"] == at), None),
                    "on_level": all(r["on_level"] for r in mine if r["level"] == at),
                }
                arm = scores.get((float(budget), at, m))
                if arm is not None:
                    arms[m] = arm
                    iv = verdict.arm_interval(arm)
                    entry.update(low=iv["low"], high=iv["high"], images_half=iv["images_half"])
                methods[m] = entry
            scored = {m: v["mean"] for m, v in methods.items() if v["mean"] is not None and m != "baseline"}
            entry: dict[str, Any] = {"methods": methods}
            if scored:
                ranking = sorted(scored, key=lambda m: -scored[m])
                entry["ranking"] = ranking
                entry["leader"] = ranking[0]  # the highest mean
                entry.update(_verdicts(arms, ranking, scored))
                # named only when the data show it: its interval over the runner-up excludes zero
                # (a lone scaled method has no runner-up: it leads, it does not win)
                entry["winner"] = ranking[0] if entry.get("winner_call") == "wins" else None
                rankings.setdefault(f"{level:g}x", {})[budget] = ranking
            per_level[f"{level:g}x"] = entry
        out[f"{budget:g} epochs"] = per_level
    held = {
        lvl: len({tuple(r) for r in by_budget.values()}) == 1
        for lvl, by_budget in rankings.items()
        if len(by_budget) > 1
    }
    result: dict[str, Any] = {"budgets": out, "ranking_held_across_budgets": held or None}
    if scores:
        result["evaluation"] = verdict.evaluation(list(scores.values()), split)
    return result


def _verdicts(
    arms: Mapping[str, verdict.Scores], ranking: list[str], means: Mapping[str, float]
) -> dict[str, Any]:
    """The leader against the runner-up (`winner_call`: wins, or a tie / not estimable: then no
    method is named the winner), compound against the best single dimension, each arm against the
    unscaled baseline."""
    out: dict[str, Any] = {}
    leader = ranking[0]
    if len(ranking) > 1 and leader in arms and ranking[1] in arms:
        v = verdict.compare(arms[leader], arms[ranking[1]])
        out["vs_runner_up"] = {"other": ranking[1], **v}
        out["winner_call"] = v["call"]
        out["tied_with_leader"] = [
            m
            for m in ranking[1:]
            if m in arms and verdict.compare(arms[leader], arms[m])["call"] in ("tie", "not estimable")
        ]
    singles = {m: means[m] for m in SINGLE if m in means}
    if "compound" in means and singles:
        best_single = max(singles, key=lambda m: singles[m])
        out["best_single"] = best_single
        out["compound_margin"] = round(means["compound"] - singles[best_single], 5)
        if "compound" in arms and best_single in arms:
            out["compound_vs_best_single"] = {
                "other": best_single,
                **verdict.compare(arms["compound"], arms[best_single]),
            }
    if "compound_paper" in arms and singles:
        best_single = max(singles, key=lambda m: singles[m])
        if best_single in arms:
            out["compound_paper_vs_best_single"] = {
                "other": best_single,
                **verdict.compare(arms["compound_paper"], arms[best_single]),
            }
    if "baseline" in arms:
        out["vs_baseline"] = {m: verdict.compare(arms[m], arms["baseline"]) for m in ranking if m in arms}
    return out


def _error_bars(stats: Any) -> Any:
    """Error bars (lower, upper) from each point's interval (`low`/`high`), or, where the seed
    spread is not estimable, the evaluation set's own half-width (`images_half`)."""
    import numpy as np

    lower = np.where(stats["low"].notna(), stats["mean"] - stats["low"], stats["images_half"])
    upper = np.where(stats["high"].notna(), stats["high"] - stats["mean"], stats["images_half"])
    return np.nan_to_num(np.vstack([lower, upper]).astype(float))


def point_intervals(rows: Sequence[dict[str, Any]], run: Any, images: int, by: str) -> Any:
    """Per budget, method and `by` (gmacs or multiplier): mean accuracy and its interval."""
    import pandas as pd

    scores = arm_scores(rows, run, images) if images else {}
    found = []
    for (budget, level, method), arm in scores.items():
        first = next(r for r in rows if r["method"] == method and float(r["level"]) == level)
        iv = verdict.arm_interval(arm)
        found.append(
            {
                "budget": budget,
                "method": method,
                "gmacs": first["macs"] / 1e9,
                "multiplier": first.get("multiplier"),
                **{k: iv[k] for k in ("mean", "low", "high", "images_half")},
            }
        )
    frame = pd.DataFrame(found)
    return frame.sort_values(["budget", "method", by]) if not frame.empty else frame


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """`methods` in the study's order (METHODS), any others after, sorted."""
    known = [m for m in METHODS if m in methods]
    return known + sorted(m for m in methods if m not in METHODS)


def seed_stats(study: Any) -> Any:
    """A study.csv (DataFrame) per budget, level and method over its finished seeds: mean and
    sample std of accuracy, n, and the arm's mean MACs, activations and throughput."""
    ok = study[study["status"] == "ok"]
    return (
        ok.groupby(["budget", "level", "method"])
        .agg(
            mean=("accuracy", "mean"),
            std=("accuracy", "std"),
            n=("accuracy", "size"),
            macs=("macs", "mean"),
            activations=("activations", "mean"),
            images_per_s=("images_per_s", "mean"),
        )
        .reset_index()
    )


def arm_table(study: Any) -> Any:
    """A study.csv (DataFrame) with each arm (level, method) once: its multipliers, MACs,
    activations, whether it landed on its level, and the mean throughput of its finished trials."""
    columns = [
        c
        for c in ("level", "method", *ARM_SHAPE, "macs", "macs_ratio", "params", "activations", "on_level")
        if c in study.columns
    ]
    arms = study.drop_duplicates(["level", "method"])[columns].copy()
    speed = study[study["status"] == "ok"].groupby(["level", "method"])["images_per_s"].mean()
    arms["images_per_s"] = [speed.get((lv, m), math.nan) for lv, m in zip(arms["level"], arms["method"])]
    arms["order"] = [(ordered_methods(list(arms["method"].unique())).index(m)) for m in arms["method"]]
    return arms.sort_values(["level", "order"]).drop(columns="order")


def _bars(stats: Any) -> str:
    if stats["low"].notna().all():
        return "95% interval (seeds + eval images)"
    return "bars: eval-set error only (seed spread not estimable)"


def figure8(stats: Any, split: str = "val", label: str = "") -> Any:
    """Paper Figure 8 from `point_intervals(..., "gmacs")`: accuracy against MACs, a line per
    method over the levels, a panel per budget. Each point is an arm's mean over seeds with its
    interval (`foundation.verdict.arm_interval`: seeds + evaluation set); where the seed spread is
    not estimable (under 3 seeds) the bars are the evaluation set's error alone, and the title
    says so. `label` prefixes each panel's title (the report's run label)."""
    from foundation import figures

    bars = _bars(stats)
    budgets = sorted(stats["budget"].unique())
    fig, axes = figures.axes(len(budgets), 5.0, 3.4)
    for ax, budget in zip(axes, budgets):
        sub = stats[stats["budget"] == budget]
        for method, part in sub.groupby("method", sort=False):
            part = part.sort_values("gmacs")
            marker = "*" if method in COMPOUND else "o"
            ax.errorbar(
                part["gmacs"], part["mean"], yerr=_error_bars(part), marker=marker, capsize=3, label=method
            )
        ax.set(xlabel="MACs (G, deployment resolution, 1000 classes)", ylabel=f"accuracy ({split})")
        ax.set_title(f"{label + ': ' if label else ''}{budget:g} epochs; {bars}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def swept_dimensions(stats: Any) -> list[str]:
    """Single dimensions with finished arms at two or more multipliers (Figure 3 needs a curve)."""
    return [d for d in SINGLE if stats.loc[stats["method"] == d, "multiplier"].nunique() >= 2]


def figure3(stats: Any, dims: Sequence[str], split: str = "val") -> Any:
    """Paper Figure 3 from `point_intervals`: accuracy against one dimension's multiplier, a panel
    per dimension in `dims`, a line per budget; bars as in `figure8`."""
    from foundation import figures

    bars = _bars(stats)
    budgets = sorted(stats["budget"].unique())
    fig, axes = figures.axes(len(dims), 5.0, 3.4)
    for ax, dim in zip(axes, dims):
        for budget in budgets:
            part = stats[(stats["budget"] == budget) & (stats["method"] == dim)].sort_values("multiplier")
            if part.empty:
                continue
            ax.errorbar(
                part["multiplier"],
                part["mean"],
                yerr=_error_bars(part),
                marker="o",
                capsize=3,
                label=f"{budget:g} epochs",
            )
        ax.set(xlabel=f"{dim} multiplier", ylabel=f"accuracy ({split})")
        ax.set_title(f"scaling {dim} alone; {bars}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot(
    rundir: Any, rows: Sequence[dict[str, Any]], sweep: str | None, images: int = 0, split: str = "val"
) -> None:
    """accuracy_vs_macs.png (Figure 8) and, for a sweep, accuracy_vs_multiplier.png (Figure 3)."""
    from foundation import figures

    stats = point_intervals(rows, rundir.path, images, "gmacs")
    if stats.empty:
        return
    drawn = [("accuracy_vs_macs.png", figure8(stats, split))]
    if sweep:
        drawn.append(("accuracy_vs_multiplier.png", figure3(stats, [sweep], split)))
    for name, fig in drawn:
        rundir.save_figure(name, fig)
        figures.close(fig)


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A study run's study.csv (a DataFrame) as the per-trial rows `point_intervals` reads."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The console's summary: per budget and level, each arm's mean (and interval), the leader's
    call against the runner-up, compound against the best single dimension."""
    lines = []
    ev = summary.get("evaluation") or {}
    if ev:
        lines.append(
            f"judged on {ev['images']} {ev['split']} images, seeds {ev['seeds']}, "
            f"{ev['method'].split(':')[0]}; "
            f"resolvable difference ~{ev['resolvable_difference']:.4f}; seed spread {ev['seed_spread']}"
        )
    for budget, levels in summary["budgets"].items():
        for level, entry in levels.items():
            arms = []
            for m, v in entry["methods"].items():
                if v["mean"] is None:
                    continue
                iv = f" [{v['low']:.4f}, {v['high']:.4f}]" if v.get("low") is not None else ""
                arms.append(f"{m} {v['mean']:.4f}{iv}")
            lines.append(f"{budget}, {level}: " + ", ".join(arms))
            if "vs_runner_up" in entry:
                v = entry["vs_runner_up"]
                lines.append(f"  leader {entry['leader']} vs {v['other']}: {verdict.describe(v)}")
            if "compound_vs_best_single" in entry:
                v = entry["compound_vs_best_single"]
                lines.append(f"  compound vs best single ({v['other']}): {verdict.describe(v)}")
            if "compound_paper_vs_best_single" in entry:
                v = entry["compound_paper_vs_best_single"]
                lines.append(
                    f"  compound (paper's coefficients) vs best single ({v['other']}): {verdict.describe(v)}"
                )
            if "compound_vs_best_single" not in entry and "compound_margin" in entry:
                lines.append(
                    f"  compound vs best single ({entry['best_single']}): {entry['compound_margin']:+.4f}"
                )
    return lines


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    """The study stage; `execute` runs its trials (Ray Tune, or in this process)."""
    from foundation import tables
    from training.data import load_dataset

    t0 = time.time()
    baseline, coeffs, source = resolve_inputs(cfg)
    if not cfg.get("resume"):
        if source.get("upstream"):
            rundir.record_upstream(source["upstream"], source["stage"], "baseline / coefficients")
        rundir.record(study_inputs={**source, "baseline_name": baseline.name, "coefficients": list(coeffs)})
    data = load_dataset(cfg.data)  # fail on bad data before any trial; record what was used
    rundir.record_dataset(data)
    split, images = evaluation_split(cfg, data)
    rows = plan(cfg, baseline, coeffs)
    resumed = resume_rows(rundir, rows, bool(cfg.get("resume")))
    from training.trial_log import TrialLog

    log = TrialLog.open(rundir, cfg, "study", trial_space(rows))
    trials = ScalingTrials(rows, rundir, log, test=split == "test")
    print(
        f"study scaling: baseline {baseline.name} ({source['baseline']}), compound coefficients "
        f"{tuple(coeffs)} ({source['coefficients']}); {len(rows)} trials on {data.name} at "
        f"{cfg.proxy.resolution}px x the resolution multiplier, budgets {list(cfg.budgets)} epochs; "
        f"judged on the {split} split ({images} images)"
        + (f"; resuming: {len(rows) - trials.remaining} done" if resumed else ""),
        file=sys.stderr,
        flush=True,
    )
    shown = {(r["method"], r["level"]): r for r in rows}.values()
    print(
        tables.format_table(
            list(shown),
            ["method", "level", *ARM_SHAPE, "macs", "macs_ratio", "on_level"],
        )
    )
    pending = trials.run_trials(execute, cfg)
    summary = summarize(rows, rundir.path, images, split)
    plot(rundir, rows, cfg.sweep, images, split)
    log.finish(
        rundir,
        ["study.csv", "accuracy_vs_macs.png", "accuracy_vs_multiplier.png"],
        "KILLED" if pending else "FINISHED",
    )
    for line in summary_lines(summary):
        print(line)
    if pending:  # what finished is summarised and plotted all the same (`complete: false`)
        status = {"stage": "study", "status": "interrupted", "complete": False, "pending": pending}
        stop_interrupted(rundir, "scaling", pending, {**status, **summary})
    return {
        "complete": True,
        **summary,
        "baseline": baseline.name,
        "coefficients": list(coeffs),
        "trials": len(rows),
        "failed": [r["id"] for r in rows if r["status"] != "ok"],
        "off_level": sorted({f"{r['method']}@{r['level']:g}x" for r in rows if not r["on_level"]}),
        "wall_seconds": round(time.time() - t0, 1),
    }
