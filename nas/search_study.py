"""`effnas study search`: is the architecture a search found better than random ones of the same
cost, once all are trained with a longer recipe? (The control Yang et al. 2020, "NAS evaluation is
frustratingly hard", and Li & Talwalkar 2019 ask every NAS result for.)

    effnas study search --from results/search/<run> [--random 4] [--seeds 2] [--budgets 16]
    effnas study search --resume results/study/<run>

From the search run it reads best_arch.yaml, the space it sampled (`.hydra/config.yaml`'s
`space`) and its reward (target T, exponents, unit). It trains, with the same seeds, budgets,
data and proxy recipe:
- `searched`: the search's best architecture;
- `random1..N`: architectures drawn uniformly from the same space, kept when their MACs (224 px,
  1000 classes, the paper's unit) are within `tolerance` (5%) of the searched one's: rejection
  sampling, at most `max_draws` draws, an error naming the closest miss when too few land;
- `base`: the space's skeleton unchanged (EfficientNet-B0 for the default space).
Each architecture is written to `archs/<label>.yaml` (`effnas train archs/random1.yaml` retrains
it). Trials run through the executor the application hands in (Ray Tune, or in this process);
`study.csv` is rewritten after each, so `--resume` trains only what has not finished. Writes
`study.csv` (one row per trial, with the search's reward), `summary.json` (per budget: each
architecture's mean and spread over seeds, the searched one's rank in accuracy and in reward,
its margin over the best random one and over the base with its interval: `foundation.verdict`) and
`accuracy_vs_macs.png`.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation import verdict
from foundation.errors import UserError
from search_spaces.arch import Arch
from training.study_trials import (
    StudyTrials,
    check_eval_split,
    evaluation_split,
    resume_rows,
    stop_interrupted,
)

if TYPE_CHECKING:
    from search_spaces.mnasnet import MnasNetSpace
    from training.trials import Executor

ROLES = ("searched", "random", "base")
COLUMNS = (
    "id",
    "arch",
    "role",
    "name",
    "budget",
    "seed",
    "macs",
    "params",
    "activations",
    "macs_ratio",
    "latency_ms",
    "proxy_resolution",
    "accuracy",
    "reward",
    "images_per_s",
    "seconds",
    "status",
    "error",
)
# what `effnas report` reads of this stage's run: table -> (required columns, of which numeric);
# extra columns are tolerated, so runs from before a column was added still read
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "study.csv": (
        ("arch", "role", "name", "budget", "seed", "macs", "accuracy", "reward", "status"),
        ("budget", "seed", "macs", "accuracy", "reward"),
    ),
}


# -- the search run -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """The search's reward, ACC x (cost / T)^w with w = a at or below T and b above (MnasNet eq. 2).
    The formula of `nas.reward`, restated because stages hand over through files, never imports;
    tests/test_search_study.py checks the two agree."""

    target: float
    a: float
    b: float
    unit: str = "MACs"  # or "ms": cost is the latency the search's table predicts

    def __call__(self, accuracy: float, cost: float) -> float:
        w = self.a if cost <= self.target else self.b
        return float(accuracy) * math.pow(float(cost) / self.target, w)


def exponents(kind: str, w: float) -> tuple[float, float]:
    """(a, b) of a reward config: soft, w both sides; hard, 0 below T and -1 above (MnasNet §3)."""
    if kind == "soft":
        return float(w), float(w)
    if kind == "hard":
        return 0.0, -1.0
    raise UserError(f"the search's reward.kind {kind!r} is neither soft nor hard")


@dataclass(frozen=True)
class SearchRun:
    """What the study reads from a search run directory."""

    path: Path
    best: Arch
    space: MnasNetSpace
    objective: Objective
    latency_of: Callable[[Arch], float] | None  # the search's latency predictor (latency target)
    dataset: dict[str, Any]  # the manifest's dataset record
    images: float | None  # images one search trial trained on (its proxy budget)


def read_search_run(upstream: str | None) -> SearchRun:
    """The search run at `upstream`, checked: a search run, with a best architecture, its space
    and its reward recorded. Each failure is one UserError line."""
    from omegaconf import OmegaConf

    from foundation.runfiles import read_json, stage_of
    from foundation.units import parse_flops
    from search_spaces.arch import ArchError
    from search_spaces.mnasnet import MnasNetSpace, SpaceError

    if not upstream:
        raise UserError(
            "effnas study search needs --from RUN_DIR, a search run (its best arch, space, reward)"
        )
    run = Path(upstream)
    stage = stage_of(run) if run.is_dir() else None
    if stage != "search":
        what = f"a {stage} run" if stage else "not an effnas run directory"
        raise UserError(f"--from {run}: {what}; effnas study search needs a search run")
    manifest = read_json(run / "manifest.json")
    best_file = run / "best_arch.yaml"
    if not best_file.is_file():
        why = "it is still running" if manifest.get("status") == "running" else "no trial finished"
        raise UserError(f"--from {run}: the search has no best architecture yet (no best_arch.yaml: {why})")
    try:
        best = Arch.from_yaml(best_file.read_text())
    except (ArchError, UnicodeDecodeError) as exc:
        raise UserError(f"--from {run}: best_arch.yaml: {str(exc).splitlines()[0]}") from None
    recorded = run / ".hydra" / "config.yaml"
    if not recorded.is_file():
        raise UserError(f"--from {run}: no .hydra/config.yaml, so the search's space and reward are unknown")
    cfg = OmegaConf.load(recorded)
    try:
        space = MnasNetSpace.from_config(cfg.space)
    except SpaceError as exc:
        raise UserError(f"--from {run}: its space: {exc}") from None
    target = manifest.get("target") or {}
    value, unit = target.get("value"), target.get("unit", "MACs")
    if value is None:
        value = parse_flops(cfg.target_flops) if cfg.get("target_flops") is not None else None
    if value is None or not float(value) > 0:
        raise UserError(f"--from {run}: the search recorded no target T")
    latency_of = None
    if unit == "ms" and manifest.get("latency_predictor"):
        from search_spaces.latency_predictor import LatencyPredictor, PredictorError

        try:
            latency_of = LatencyPredictor.load(str(manifest["latency_predictor"])).predict
        except PredictorError as exc:
            raise UserError(f"--from {run}: the search's reward needs its latency predictor: {exc}") from None
        from nas.latency_check import Scaled, scaled_by

        latency_of = Scaled(latency_of, scaled_by(manifest.get("latency_drift")))  # as the search priced
    elif unit == "ms":
        from search_spaces.latency import LatencyTable, TableError

        try:
            table = LatencyTable.load(str(manifest.get("latency_table")))
        except TableError as exc:
            raise UserError(f"--from {run}: the search's reward needs its latency table: {exc}") from None
        latency_of = table.predict
    objective = Objective(float(value), *exponents(str(cfg.reward.kind), float(cfg.reward.w)), unit)
    dataset = dict(manifest.get("dataset") or {})
    proxy = cfg.get("proxy") or {}
    if proxy.get("images") is not None:
        images: float | None = float(proxy["images"])
    elif proxy.get("epochs") is not None and dataset.get("train"):
        images = float(proxy["epochs"]) * int(dataset["train"])
    else:
        images = None
    return SearchRun(run, best, space, objective, latency_of, dataset, images)


# -- the architectures --------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    label: str  # searched | random1..N | base
    role: str  # searched | random | base
    arch: Arch


def sample_matched(
    space: MnasNetSpace,
    macs: int,
    n: int,
    tolerance: float,
    rng: random.Random,
    max_draws: int,
    exclude: Sequence[Sequence[str]] = (),
) -> tuple[list[Arch], dict[str, Any]]:
    """`n` distinct architectures drawn uniformly from `space` whose MACs are within `tolerance`
    (relative) of `macs`: rejection sampling, so they are a uniform sample of the space's
    architectures of that cost. Fails (UserError) when fewer than `n` land in `max_draws` draws."""
    from foundation.units import format_flops
    from search_spaces.cost import count

    found: dict[tuple[str, ...], Arch] = {}
    seen = {tuple(blocks) for blocks in exclude}
    closest_miss = math.inf
    draws = 0
    while len(found) < n and draws < max_draws:
        draws += 1
        arch = space.decode(space.sample(rng))
        key = tuple(arch.blocks)
        if key in seen or key in found:
            continue
        err = abs(count(arch).macs / macs - 1)
        if err <= tolerance:
            found[key] = arch
        else:
            closest_miss = min(closest_miss, err)
    if len(found) < n:
        got = f"only {len(found)} of {n}" if found else f"none of {n}"
        hint = f"ask for fewer (--random {len(found)}), " if found else ""
        raise UserError(
            f"{got} random architectures of the search's space land within {tolerance:.0%} of the "
            f"searched one's {format_flops(macs)} MACs in {max_draws} draws (closest miss {closest_miss:.1%} "
            f"off); {hint}allow more draws (max_draws=) or a wider tolerance (tolerance=)"
        )
    archs = list(found.values())
    reached = max(abs(count(a).macs / macs - 1) for a in archs)
    return archs, {"draws": draws, "tolerance": tolerance, "tolerance_reached": round(reached, 5)}


def candidates(cfg: Any, search: SearchRun) -> tuple[list[Candidate], dict[str, Any]]:
    """searched, random1..N (seeded by run.seed), base; and the sampling's record."""
    from search_spaces.cost import count

    base = search.space.base
    randoms, record = sample_matched(
        search.space,
        count(search.best).macs,
        int(cfg.random),
        float(cfg.tolerance),
        random.Random(int(cfg.run.seed)),
        int(cfg.max_draws),
        exclude=(search.best.blocks, base.blocks),
    )
    found = [
        Candidate("searched", "searched", search.best),
        *(Candidate(f"random{i}", "random", a) for i, a in enumerate(randoms, 1)),
        Candidate("base", "base", base),
    ]
    return found, record


def _saved(rundir: Any, n_random: int) -> list[Candidate] | None:
    """The candidates a first attempt wrote to archs/ (what --resume trains), or None."""
    labels = ["searched", *(f"random{i}" for i in range(1, n_random + 1)), "base"]
    paths = [rundir.file(f"archs/{label}.yaml") for label in labels]
    if not all(p.is_file() for p in paths):
        return None
    return [
        Candidate(label, "random" if label.startswith("random") else label, Arch.from_yaml(p.read_text()))
        for label, p in zip(labels, paths)
    ]


# -- inputs -------------------------------------------------------------------------------------
def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists: the study's numbers, the search run, and that
    its space has enough architectures of the searched one's MACs (sampled here, in seconds)."""
    from search_spaces.arch_config import arch_given
    from training.trial_log import check

    check(cfg)
    if int(cfg.seeds) < 1:
        raise UserError(f"--seeds must be >= 1, got {cfg.seeds}")
    check_eval_split(cfg)
    if not cfg.budgets or any(not float(b) > 0 for b in cfg.budgets):
        raise UserError(f"--budgets must be epochs > 0, got {list(cfg.budgets or [])}")
    if not 0 < float(cfg.tolerance) < 1:
        raise UserError(f"tolerance must be in (0, 1), got {cfg.tolerance}")
    if int(cfg.random) < 1:
        raise UserError(f"--random must be >= 1 (random architectures to compare with), got {cfg.random}")
    if int(cfg.max_draws) < 1:
        raise UserError(f"max_draws must be >= 1, got {cfg.max_draws}")
    if arch_given(cfg):
        raise UserError("effnas study search trains the search run's architectures: give --from, not --arch")
    if cfg.sweep is not None:
        raise UserError("--sweep belongs to effnas study scaling")
    search = read_search_run(upstream_of(cfg))
    if not cfg.get("resume"):
        candidates(cfg, search)


def upstream_of(cfg: Any) -> str | None:
    """`--from` as given; on `--resume`, the absolute path the first attempt recorded (the
    resume may run from another directory than the relative `--from` was given in)."""
    if cfg.get("resume"):
        from foundation.runfiles import read_json

        manifest = Path(str(cfg.resume)) / "manifest.json"
        recorded = (
            read_json(manifest).get("search_study", {}).get("search_run") if manifest.is_file() else None
        )
        if recorded:
            return str(recorded)
    return cfg.upstream


# -- the trials ---------------------------------------------------------------------------------
def plan(cfg: Any, found: Sequence[Candidate], search: SearchRun) -> list[dict[str, Any]]:
    """Every trial (status pending), budgets outermost, seeds innermost."""
    from search_spaces.cost import count

    reference = count(found[0].arch).macs
    rows = []
    seed0 = int(cfg.run.seed)
    for budget in cfg.budgets:
        for c in found:
            cost = count(c.arch)
            latency = search.latency_of(c.arch) if search.latency_of is not None else None
            for k in range(int(cfg.seeds)):
                rows.append(
                    {
                        "id": f"{c.label}/{float(budget):g}ep/seed{seed0 + k}",
                        "arch": c.label,
                        "role": c.role,
                        "name": c.arch.name,
                        "budget": float(budget),
                        "seed": seed0 + k,
                        "macs": cost.macs,
                        "params": cost.params,
                        "activations": cost.activations,
                        "macs_ratio": round(cost.macs / reference, 4),
                        "latency_ms": None if latency is None else round(latency, 4),
                        "proxy_resolution": int(cfg.proxy.resolution),
                        "accuracy": None,
                        "reward": None,
                        "images_per_s": None,
                        "seconds": None,
                        "status": "pending",
                        "error": None,
                        "_arch": c.arch.to_dict(),
                        "_cost": latency if latency is not None else cost.macs,
                    }
                )
    return rows


class SearchStudyTrials(StudyTrials):
    """The studies' trial table (`training.study_trials`) over this study's rows and columns, with
    the reward."""

    columns = COLUMNS

    def __init__(
        self,
        rows: list[dict[str, Any]],
        rundir: Any,
        objective: Objective,
        log: Any = None,
        test: bool = False,
    ) -> None:
        super().__init__(rows, rundir, log, test)
        self.objective = objective

    def prepare(self) -> None:
        for r in self.rows:
            ok = r["status"] == "ok" and r["accuracy"] is not None
            r["reward"] = round(self.objective(float(r["accuracy"]), r["_cost"]), 6) if ok else None

    logged = ("name", "seed", "macs", "params", "activations", "macs_ratio", "latency_ms", "accuracy")
    logged += ("reward", "images_per_s", "seconds", "error")

    def entry_params(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"arch": row["arch"], "role": row["role"], "budget": float(row["budget"])}

    def entry_attrs(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"blocks": " ".join(row["_arch"]["blocks"])}  # `arch` is the name here


def trial_space(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The study's trials as the trial log's parameters: which architecture, its role, the budget."""
    from training.trial_log import Choice

    return {
        "arch": Choice(dict.fromkeys(r["arch"] for r in rows)),
        "role": Choice(dict.fromkeys(r["role"] for r in rows)),
        "budget": Choice(sorted({float(r["budget"]) for r in rows})),
    }


# -- results ------------------------------------------------------------------------------------
def rank(scores: Mapping[str, float], label: str) -> int:
    """1 + how many score strictly higher (ties share the better rank)."""
    return 1 + sum(1 for other, s in scores.items() if other != label and s > scores[label])


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
    mean = round(statistics.fmean(values), 6) if values else None
    std = round(statistics.stdev(values), 6) if len(values) > 1 else None
    return mean, std


def summarize(
    rows: Sequence[dict[str, Any]], run: Any = None, images: int = 0, split: str = "val"
) -> dict[str, Any]:
    """Per budget: each architecture's accuracy (mean, sample std over seeds, n, and its interval)
    and reward, the rankings, the searched one's rank in each, and its margin over the best
    random architecture and over the base with the interval and call of `foundation.verdict`
    (seeds + the `images` evaluation images of `split`, paired over the per-image records)."""
    from foundation import per_image

    out: dict[str, Any] = {}
    every: list[verdict.Scores] = []
    for budget in sorted({r["budget"] for r in rows}):
        mine = [r for r in rows if r["budget"] == budget]
        archs: dict[str, Any] = {}
        scores: dict[str, verdict.Scores] = {}
        for label in dict.fromkeys(r["arch"] for r in mine):
            trials = [r for r in mine if r["arch"] == label]
            ok = [r for r in trials if r["status"] == "ok" and r["accuracy"] is not None]
            acc_mean, acc_std = _stats([float(r["accuracy"]) for r in ok])
            rew_mean, rew_std = _stats([float(r["reward"]) for r in ok if r.get("reward") is not None])
            first = trials[0]
            archs[label] = {
                "role": first["role"],
                "name": first["name"],
                "macs": int(first["macs"]),
                "macs_ratio": float(first["macs_ratio"]),
                "mean": acc_mean,
                "std": acc_std,
                "n": len(ok),
                "reward_mean": rew_mean,
                "reward_std": rew_std,
            }
            if ok and run is not None and images:
                scores[label] = per_image.scores(
                    run, [(str(r["id"]), float(r["accuracy"])) for r in ok], images
                )
                iv = verdict.arm_interval(scores[label])
                archs[label].update(low=iv["low"], high=iv["high"], images_half=iv["images_half"])
        every += scores.values()
        acc = {k: v["mean"] for k, v in archs.items() if v["mean"] is not None}
        rew = {k: v["reward_mean"] for k, v in archs.items() if v["reward_mean"] is not None}
        entry: dict[str, Any] = {
            "archs": archs,
            "accuracy_ranking": sorted(acc, key=lambda k: -acc[k]),
            "reward_ranking": sorted(rew, key=lambda k: -rew[k]),
        }
        if "searched" in acc:
            entry["searched_rank"] = {
                "accuracy": rank(acc, "searched"),
                "reward": rank(rew, "searched") if "searched" in rew else None,
                "of": len(acc),
            }
            randoms = [k for k in acc if archs[k]["role"] == "random"]
            others = {"vs_best_random": max(randoms, key=lambda k: acc[k]) if randoms else None}
            others["vs_base"] = "base" if "base" in acc else None
            for name, other in others.items():
                if other is None or "searched" not in scores or other not in scores:
                    continue
                entry[name] = {
                    "id": other,
                    "mean": archs[other]["mean"],
                    "std": archs[other]["std"],
                    "n": archs[other]["n"],
                    **verdict.compare(scores["searched"], scores[other]),
                }
        out[f"{budget:g} epochs"] = entry
    result: dict[str, Any] = {"budgets": out}
    if every:
        result["evaluation"] = verdict.evaluation(every, split)
    return result


# marker, colour, size per role; the searched one drawn last, on top
ROLE_STYLE = {
    "random": {"marker": "o", "color": "0.55", "markersize": 6},
    "base": {"marker": "s", "color": "tab:blue", "markersize": 7},
    "searched": {"marker": "*", "color": "tab:red", "markersize": 14},
}


def figure(summary: Mapping[str, Any], label: str = "") -> Any:
    """Accuracy against MACs from `summarize(...)`, one panel per budget: each architecture's mean
    over its finished seeds with its 95% interval (`foundation.verdict.arm_interval`: seeds +
    evaluation images); where the seed spread is not estimable (under 3 seeds, or no per-image
    records) the bars are the evaluation set's error alone, or none, and the title says which.
    Random ones grey, the base blue, the searched one a red star. None when no trial finished."""
    import numpy as np

    from foundation import figures

    budgets = {b: e["archs"] for b, e in (summary.get("budgets") or {}).items()}
    budgets = {b: {k: v for k, v in a.items() if v.get("mean") is not None} for b, a in budgets.items()}
    budgets = {b: a for b, a in budgets.items() if a}
    if not budgets:
        return None
    fig, panels = figures.axes(len(budgets), width=5.0, height=3.9)
    for ax, (budget, archs) in zip(panels, budgets.items()):
        intervals = all(v.get("low") is not None for v in archs.values())
        half = any(v.get("images_half") is not None for v in archs.values())
        for role, style in ROLE_STYLE.items():
            part = {k: v for k, v in archs.items() if v["role"] == role}
            if not part:
                continue
            x = [v["macs"] / 1e9 for v in part.values()]
            y = [v["mean"] for v in part.values()]
            lower = [
                v["mean"] - v["low"] if v.get("low") is not None else v.get("images_half")
                for v in part.values()
            ]
            upper = [
                v["high"] - v["mean"] if v.get("high") is not None else v.get("images_half")
                for v in part.values()
            ]
            bars = np.nan_to_num(np.array([lower, upper], dtype=float))
            ax.errorbar(
                x,
                y,
                yerr=bars,
                linestyle="none",
                capsize=3,
                label=role,
                zorder=3 if role == "searched" else 2,
                **style,
            )
            for name, xi, yi in zip(part, x, y):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(4, 3), textcoords="offset points")
        what = (
            "95% interval (seeds + eval images)"
            if intervals
            else "bars: eval-set error only (seed spread not estimable)"
            if half
            else "no interval"
        )
        ax.set(xlabel="MACs (G, deployment resolution, 1000 classes)", ylabel="proxy accuracy")
        ax.set_title(
            f"{label + ': ' if label else ''}searched vs random of its MACs, {budget}; {what}", fontsize=8
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(rundir: Any, summary: Mapping[str, Any]) -> None:
    """`figure(summary)` as the run's accuracy_vs_macs.png (the report draws the same function)."""
    from foundation import figures

    fig = figure(summary)
    if fig is not None:
        rundir.save_figure("accuracy_vs_macs.png", fig)
        figures.close(fig)


# -- the stage ----------------------------------------------------------------------------------
def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    """The search study; `execute` runs its trials (Ray Tune, or in this process)."""
    from foundation import tables
    from training.data import load_dataset
    from training.trial_log import TrialLog

    t0 = time.time()
    search = read_search_run(upstream_of(cfg))
    found = _architectures(cfg, rundir, search)
    sampling = {k: v for k, v in rundir.manifest.get("search_study", {}).items() if k != "search_run"}
    data = load_dataset(cfg.data)  # fail on bad data before any trial; record what was used
    rundir.record_dataset(data)
    same_data, longer = _compare_with_search(cfg, search, data)
    split, images = evaluation_split(cfg, data)
    rows = plan(cfg, found, search)
    resumed = resume_rows(rundir, rows, bool(cfg.get("resume")))
    log = TrialLog.open(rundir, cfg, "study", trial_space(rows))
    trials = SearchStudyTrials(rows, rundir, search.objective, log, test=split == "test")
    done = len(rows) - trials.remaining if resumed else None
    print(
        _plan_line(cfg, search, found, sampling, data.name, len(rows), split, images, done),
        file=sys.stderr,
        flush=True,
    )
    shown = {r["arch"]: r for r in rows}.values()
    print(tables.format_table(list(shown), ["arch", "name", "macs", "macs_ratio", "params", "activations"]))
    pending = trials.run_trials(execute, cfg)

    summary = summarize(rows, rundir.path, images, split)
    plot(rundir, summary)
    for line in summary_lines(summary):
        print(line)
    log.finish(rundir, ["study.csv", "accuracy_vs_macs.png"], "KILLED" if pending else "FINISHED")
    obj = search.objective
    record = {
        "search_run": str(search.path.resolve()),
        "searched": search.best.name,
        "base": found[-1].arch.name,
        "random": len(found) - 2,
        "reward": {"target": obj.target, "unit": obj.unit, "a": obj.a, "b": obj.b},
        "sampling": sampling,
        "same_data_as_search": same_data,
        "budget_vs_search": longer,
        **summary,
    }
    if pending:  # what finished is summarised and plotted all the same (`complete: false`)
        interrupted = {"stage": "study", "kind": "search", "status": "interrupted", "complete": False}
        stop_interrupted(rundir, "search", pending, interrupted | {"pending": pending} | record)
    return {
        "kind": "search",
        "complete": True,
        **record,
        "trials": len(rows),
        "failed": [r["id"] for r in rows if r["status"] != "ok"],
        "wall_seconds": round(time.time() - t0, 1),
    }


def _architectures(cfg: Any, rundir: Any, search: SearchRun) -> list[Candidate]:
    """The architectures to train: on --resume, those the first attempt wrote to archs/; else
    sampled now, written to archs/ and recorded (with the sampling) in the manifest."""
    found = _saved(rundir, int(cfg.random)) if cfg.get("resume") else None
    if found is None:
        found, sampling = candidates(cfg, search)
        for c in found:
            rundir.write_text(f"archs/{c.label}.yaml", c.arch.to_yaml())
        rundir.record_upstream(search.path, "search", "best arch, space, reward")
        rundir.record(search_study={"search_run": str(search.path.resolve()), **sampling})
    return found


def _compare_with_search(cfg: Any, search: SearchRun, data: Any) -> tuple[bool, dict[str, float | None]]:
    """(whether the data are the search's, each budget as a multiple of the search's proxy budget
    in images); a warning on the console for other data, or a budget no longer than the search's."""
    same_data = search.dataset.get("fingerprint") == data.fingerprint
    if not same_data:
        print(
            f"study search: warning: the data ({data.name}, {len(data.train)} training images) is not "
            f"what the search trained on ({search.dataset.get('name')}, {search.dataset.get('train')}); "
            "give the search's data=... overrides to compare like with like",
            file=sys.stderr,
        )
    longer = {
        f"{float(b):g} epochs": round(float(b) * len(data.train) / search.images, 3)
        if search.images
        else None
        for b in cfg.budgets
    }
    for budget, ratio in longer.items():
        if ratio is not None and ratio <= 1:
            print(
                f"study search: warning: {budget} is {ratio:g}x the search's proxy budget, not longer",
                file=sys.stderr,
            )
    return same_data, longer


def _plan_line(
    cfg: Any,
    search: SearchRun,
    found: Sequence[Candidate],
    sampling: Mapping[str, Any],
    dataset: str,
    trials: int,
    split: str,
    images: int,
    done: int | None,
) -> str:
    """The console's first line: what is compared, by which reward, on what; `done` trials of a
    resumed run (None: a first attempt)."""
    obj = search.objective
    return (
        f"study search: {search.best.name} from {search.path} vs {len(found) - 2} random architectures "
        f"of its MACs (within {float(cfg.tolerance):.0%}, reached {sampling.get('tolerance_reached', 0):.1%}) "
        f"vs {found[-1].arch.name}; reward ACC x (cost / {obj.target:g} {obj.unit})^(a={obj.a:g}, b={obj.b:g}); "
        f"{trials} trials on {dataset}, budgets {list(cfg.budgets)} epochs"
        + f"; judged on the {split} split ({images} images)"
        + (f"; resuming: {done} done" if done is not None else "")
    )


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The console's summary: per budget, each architecture's accuracy (mean, spread, n) and
    reward, the searched one's ranks and its margins over the best random one and the base."""
    from foundation.units import format_flops

    lines = []
    for budget, entry in summary["budgets"].items():
        lines.append(f"{budget}:")
        for label, v in entry["archs"].items():
            if v["mean"] is None:
                continue
            spread = f" +- {v['std']:.4f}" if v["std"] is not None else ""
            lines.append(
                f"  {label:<9} {format_flops(v['macs']):>8} MACs  acc {v['mean']:.4f}{spread} "
                f"(n={v['n']})  reward {v['reward_mean']:.4f}"
            )
        if "searched_rank" in entry:
            r = entry["searched_rank"]
            lines.append(
                f"  searched ranks {r['accuracy']}/{r['of']} in accuracy, {r['reward']}/{r['of']} in reward"
            )
            for name, what in (("vs_best_random", "best random"), ("vs_base", "base")):
                b = entry.get(name)
                if b:
                    lines.append(f"  searched vs {what} ({b['id']}): {verdict.describe(b)}")
    return lines
