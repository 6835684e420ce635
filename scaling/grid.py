"""`effnas grid`: the compound-coefficient grid search on the proxy (EfficientNet §3.3, step 1).

    effnas grid --phi 1 [--from results/search/<run> | --arch efficientnet_b0 | --arch a.yaml]

Every (alpha, beta, gamma) >= 1 on the grid with |alpha*beta^2*gamma^2 - target| <= tol
(`scaling.compound.enumerate_candidates`) scales the baseline by depth alpha^phi, width beta^phi
and proxy resolution round(gamma^phi x proxy.resolution) and is trained `seeds` times (seeds
run.seed .. run.seed+seeds-1) with the shared proxy trainer (`training.trials.run_trial`), by the
executor the application hands in (Ray Tune through `adapters.raytune`, or in this process). The
winner is the highest mean proxy validation accuracy over the seeds (`pick_winner`); its margins
over the unscaled baseline, the paper's point and the runner-up carry their intervals (seeds and
the validation images, paired over each trial's per-image record: `foundation.verdict`), and
`winner_call` says whether the data tell it from the runner-up. MACs are the paper's: conv + linear multiply-adds of the scaled model at its
deployment resolution round(gamma^phi x the baseline's, 224 for B0) with 1000 classes, whatever the
proxy trains at (DESIGN.md).

`trials.csv` is the record: one row per (id, seed), every planned row (status `pending`) from the
start, rewritten after each finished trial, so `--resume RUN_DIR` trains only what is not `ok` yet.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation import per_image, verdict
from foundation.errors import UserError
from scaling.compound import PAPER_COEFFICIENTS, Candidate, enumerate_candidates, scale_arch, spread_subset
from search_spaces.arch import Arch
from search_spaces.arch_config import arch_from_cfg, arch_given
from training.trial_table import TrialTable, error_of, read_table, restore

if TYPE_CHECKING:
    from training.trials import Executor

BASELINE_ID = "baseline"
COLUMNS = (
    "id",
    "seed",
    "kind",
    "alpha",
    "beta",
    "gamma",
    "product",
    "depth",
    "width",
    "resolution",
    "deploy_resolution",
    "macs",
    "macs_ratio",
    "activations",
    "nominal_ratio",
    "params",
    "accuracy",
    "loss",
    "status",
    "seconds",
    "epochs",
    "proxy_macs",
    "error",
)
# what `effnas report` reads of this stage's run: table -> (required columns, of which numeric);
# extra columns are tolerated, so runs from before a column was added still read
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "trials.csv": (
        (
            "id",
            "kind",
            "alpha",
            "beta",
            "gamma",
            "product",
            "macs",
            "macs_ratio",
            "params",
            "accuracy",
            "status",
        ),
        ("alpha", "beta", "gamma", "product", "macs", "macs_ratio", "params", "accuracy"),
    ),
}
DOCUMENTS = ("coefficients.yaml",)  # and the YAML files it reads
# what one trial of a point records (the rest of a row is the point's, the same for every seed)
TRIAL_KEYS = ("seed", "accuracy", "loss", "status", "seconds", "epochs", "proxy_macs", "error")


# -- inputs -----------------------------------------------------------------------------------


def candidates_of(cfg: Any) -> tuple[list[Candidate], int]:
    """(the candidates to train, how many grid points satisfy the constraint)."""
    every = enumerate_candidates(
        float(cfg.step),
        float(cfg.max_alpha),
        float(cfg.max_beta),
        float(cfg.max_gamma),
        float(cfg.target),
        float(cfg.tol),
    )
    return spread_subset(every, int(cfg.max_candidates)), len(every)


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists: phi, the grid, the baseline (the proxy and
    Ray settings are checked by the application for every stage)."""
    from foundation.runfiles import upstream_run
    from training.trial_log import check

    check(cfg)
    if not cfg.phi > 0:
        raise UserError(f"--phi must be > 0 for a grid, got {cfg.phi}")
    candidates_of(cfg)
    if cfg.upstream and arch_given(cfg):
        raise UserError("give the baseline either with --from (a search run) or --arch, not both")
    if cfg.upstream:
        _read_best_arch(upstream_run(cfg.upstream, "search", "best_arch.yaml"))
    elif arch_given(cfg):
        arch_from_cfg(cfg.arch)
    if cfg.seeds < 1:
        raise UserError(f"seeds must be >= 1 (trainings per candidate), got {cfg.seeds}")
    if cfg.resolution_divisor < 1 or cfg.max_candidates < 0:
        raise UserError(
            f"resolution_divisor must be >= 1 and max_candidates >= 0, got {cfg.resolution_divisor}, "
            f"{cfg.max_candidates}"
        )


def _read_best_arch(run_dir: Path) -> Arch:
    from search_spaces.arch import ArchError

    path = run_dir / "best_arch.yaml"
    try:
        return Arch.from_yaml(path.read_text())
    except (OSError, ArchError) as exc:
        raise UserError(f"--from {run_dir}: best_arch.yaml: {exc}") from None


def resolve_baseline(cfg: Any) -> tuple[Arch, dict[str, Any]]:
    """(baseline, where it came from): --from's best_arch.yaml, --arch, or the official B0."""
    from foundation.runfiles import upstream_run
    from search_spaces.official import efficientnet_b0

    if cfg.upstream:
        run_dir = upstream_run(cfg.upstream, "search", "best_arch.yaml")
        arch = _read_best_arch(run_dir)
        return arch, {"source": "search run", "path": str(run_dir.resolve()), "name": arch.name}
    if arch_given(cfg):
        arch = arch_from_cfg(cfg.arch)
        return arch, {"source": "--arch", "path": arch.meta.get("source"), "name": arch.name}
    arch = efficientnet_b0()
    return arch, {"source": "official efficientnet_b0 (paper Table 1)", "path": None, "name": arch.name}


# -- the plan -----------------------------------------------------------------------------------
def plan(
    baseline: Arch,
    candidates: Sequence[Candidate],
    phi: float,
    proxy_resolution: int,
    target: float = 2.0,
    include_baseline: bool = True,
    resolution_divisor: int = 8,
    seeds: Sequence[int] = (0,),
) -> list[dict[str, Any]]:
    """One row per trial, (point, seed) in plan order with seeds inner (status pending), with
    everything known before training: the scaled multipliers, the proxy and deployment
    resolutions, and MACs/params from the cost model."""
    from search_spaces.cost import count

    base_macs = count(baseline).macs
    points = [(BASELINE_ID, "baseline", 1.0, 1.0, 1.0)] if include_baseline else []
    points += [(c.id, "candidate", c.alpha, c.beta, c.gamma) for c in candidates]
    rows = []
    for pid, kind, a, b, g in points:
        deploy = scale_arch(
            baseline, a, b, g, phi, resolution_divisor=resolution_divisor, name=f"{baseline.name}-{pid}"
        )
        proxy_res = scale_arch(baseline, a, b, g, phi, base_resolution=proxy_resolution).resolution
        cost = count(deploy)
        rows += [
            {
                "id": pid,
                "seed": int(seed),
                "kind": kind,
                "alpha": a,
                "beta": b,
                "gamma": g,
                "product": round(a * b * b * g * g, 6),
                "depth": deploy.depth,
                "width": deploy.width,
                "resolution": proxy_res,
                "deploy_resolution": deploy.resolution,
                "macs": cost.macs,
                "macs_ratio": round(cost.macs / base_macs, 4),
                "activations": cost.activations,
                "nominal_ratio": round(target**phi, 4) if kind == "candidate" else 1.0,
                "params": cost.params,
                "accuracy": None,
                "loss": None,
                "status": "pending",
                "seconds": None,
                "epochs": None,
                "proxy_macs": None,
                "error": None,
                "_arch": deploy.to_dict(),
            }
            for seed in seeds
        ]
    return rows


def _key(row: Mapping[str, Any]) -> tuple[str, Any]:
    return row["id"], row.get("seed")


def record_key(row: Mapping[str, Any]) -> str:
    """The trial's per-image record (`foundation.per_image`): `<point id>/seed<seed>`."""
    return f"{row['id']}/seed{row.get('seed')}"


KEPT = ("accuracy", "loss", "status", "seconds", "epochs", "proxy_macs", "error")  # restored on --resume


def _read_trials(path: Path, seed: int) -> dict[Any, dict[str, Any]]:
    """Rows of an earlier attempt (for --resume), by (id, seed); a trials.csv from before the
    `seed` column trained every point once, with `seed` (the run's)."""

    def key(r: Mapping[str, Any]) -> tuple[str, int]:
        return str(r["id"]), seed if r.get("seed") is None else int(r["seed"])

    return read_table(path, key, "grid trials table")


# -- the trials ---------------------------------------------------------------------------------
class GridTrials(TrialTable):
    """The grid's rows, one per (id, seed), as a `training.trial_table.TrialTable`: proposed in
    plan order; each end fills its row (and keeps its per-image record), rewrites trials.csv and
    prints one line."""

    name = "grid"
    file = "trials.csv"
    columns = COLUMNS

    def __init__(self, rows: list[dict[str, Any]], rundir: Any, out: Any = None, log: Any = None) -> None:
        super().__init__(rows, rundir, log=log, out=out)
        self.many_seeds = len({r.get("seed") for r in rows}) > 1

    def key(self, row: Mapping[str, Any]) -> Any:
        return _key(row)

    def config(self, row: dict[str, Any]) -> dict[str, Any]:
        config = {
            "name": f"{row['id']}_s{row['seed']}" if self.many_seeds else row["id"],  # Ray's trial dir
            "id": row["id"],
            "arch": row["_arch"],
            "resolution": int(row["resolution"]),
        }
        if row.get("seed") is not None:
            config["seed"] = int(row["seed"])
        return config

    def record(self, row: dict[str, Any], result: dict[str, Any], error: str | bool) -> None:
        status = "failed" if error else (result.get("status") or "failed")
        per_image.save(self.rundir.path, record_key(row), result.get("correct") if status == "ok" else None)
        row.update(
            status=status,
            accuracy=result.get("accuracy") if status == "ok" else None,
            loss=result.get("loss"),
            seconds=round(float(result["seconds"]), 2) if result.get("seconds") is not None else None,
            epochs=result.get("epochs"),
            proxy_macs=result.get("proxy_macs"),
            error=None if status == "ok" else error_of(result, error),
        )

    def line(self, row: dict[str, Any]) -> str:
        pid = row["id"] + (f" seed {row['seed']}" if self.many_seeds else "")
        acc = f"acc {row['accuracy']:.4f}" if row["accuracy"] is not None else f"FAILED {row['error']}"
        return (
            f"{pid:<22} product {row['product']:.3f}  "
            f"MACs x{row['macs_ratio']:.2f} (nominal x{row['nominal_ratio']:g})  res {row['resolution']}  "
            f"{acc}  {row['seconds'] if row['seconds'] is not None else '-'}s"
        )

    logged = ("id", "seed", "kind", "product", "depth", "width", "resolution", "deploy_resolution")
    logged += (
        "macs",
        "macs_ratio",
        "activations",
        "params",
        "accuracy",
        "loss",
        "seconds",
        "epochs",
        "error",
    )

    def entry_key(self, row: Mapping[str, Any]) -> str:
        return f"{row['id']}/seed{row['seed']}"  # one entry per (point, seed)

    def entry_params(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: float(row[k]) for k in ("alpha", "beta", "gamma")}


def trial_space(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The grid's trials as the trial log's parameters: the point's alpha, beta, gamma."""
    from training.trial_log import Range

    return {k: Range.over(r[k] for r in rows) for k in ("alpha", "beta", "gamma")}


def _budget(proxy: Any) -> str:
    if proxy.get("images"):
        return f"{int(proxy.images)} images"
    return f"{proxy.epochs:g} epoch(s)"


# -- results ------------------------------------------------------------------------------------
def point_stats(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per grid point, in plan order, from the per-trial rows: the point's fields plus
    `mean`, `std` (sample std over seeds, ddof=1; None under two finished seeds) and `n` of its
    finished (`ok`) seeds' accuracies, `seeds` (its trials) and `complete` (every seed ok)."""
    points: dict[str, dict[str, Any]] = {}
    accuracies: dict[str, list[float]] = {}
    for r in rows:
        pid = r["id"]
        if pid not in points:
            points[pid] = {k: v for k, v in r.items() if k not in TRIAL_KEYS} | {"seeds": 0, "seconds": 0.0}
            accuracies[pid] = []
        point = points[pid]
        point["seeds"] += 1
        point["seconds"] += float(r.get("seconds") or 0.0)
        if r["status"] == "ok" and r["accuracy"] is not None:
            accuracies[pid].append(float(r["accuracy"]))
    for pid, point in points.items():
        acc = accuracies[pid]
        point.update(
            mean=statistics.fmean(acc) if acc else None,
            std=statistics.stdev(acc) if len(acc) > 1 else None,
            n=len(acc),
            complete=len(acc) == point["seeds"],
        )
    return list(points.values())


def ranked_candidates(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Candidates with every seed ok, best first: highest mean accuracy, ties to fewer MACs, then
    grid order (the unscaled baseline is a reference row, never ranked)."""
    done = [(i, p) for i, p in enumerate(points) if p["kind"] == "candidate" and p["complete"] and p["n"]]
    return [p for _, p in sorted(done, key=lambda ip: (-ip[1]["mean"], int(ip[1]["macs"]), ip[0]))]


def pick_winner(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The winning point (with its `mean`, `std`, `n`) of the per-trial rows: the highest mean
    proxy accuracy among candidates whose every seed finished; ties to fewer MACs, then grid order."""
    ranked = ranked_candidates(point_stats(rows))
    return dict(ranked[0]) if ranked else None


def point_scores(rows: Sequence[Mapping[str, Any]], run: Any, images: int) -> dict[str, verdict.Scores]:
    """Each point's finished seeds as `foundation.verdict.Scores` on the `images` validation images:
    paired over the images where every seed left its per-image record."""
    found: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["accuracy"] is not None:
            found.setdefault(r["id"], []).append((record_key(r), float(r["accuracy"])))
    return {pid: per_image.scores(run, trials, images) for pid, trials in found.items()}


def compare_points(
    winner: Mapping[str, Any], other: Mapping[str, Any], scores: Mapping[str, verdict.Scores]
) -> dict[str, Any]:
    """The winner's mean accuracy minus `other`'s with its interval and call (`foundation.verdict.compare`:
    seeds + validation images, paired; under 3 seeds no spread and no win)."""
    return {
        "id": other.get("id"),
        "mean": float(other["mean"]),
        "std": None if other.get("std") is None else float(other["std"]),
        "n": int(other["n"]),
        **verdict.compare(scores[winner["id"]], scores[other["id"]]),
    }


COMPARISONS = {"baseline": "unscaled baseline", "paper": "paper's point", "runner_up": "runner-up"}


def verdicts(
    points: Sequence[Mapping[str, Any]], winner: Mapping[str, Any], scores: Mapping[str, verdict.Scores]
) -> dict[str, dict[str, Any] | None]:
    """`compare_points` of the winner against the unscaled baseline, the paper's (1.2, 1.1, 1.15)
    and the runner-up (None where that point was not trained, has no finished seed, or is the
    winner). The winner is the largest of many noisy means, so its margin over the runner-up is
    biased upwards: even "wins" there means "not visibly noise", no more."""
    runner_up = ranked_candidates(points)[1:2]
    others = {
        "baseline": next((p for p in points if p["kind"] == "baseline"), None),
        "paper": next((p for p in points if p["id"] == _paper_id()), None),
        "runner_up": runner_up[0] if runner_up else None,
    }
    return {
        name: None
        if p is None or not p["n"] or p["id"] == winner["id"] or p["id"] not in scores
        else compare_points(winner, p, scores)
        for name, p in others.items()
    }


def verdict_line(name: str, v: Mapping[str, Any] | None, winner_id: str) -> str:
    """One console line: the winner against one compared point (`verdicts`' `name`)."""
    what = COMPARISONS[name]
    if v is None:
        if name == "paper" and winner_id == _paper_id():
            return f"  vs {what}: it is the winner"
        return f"  vs {what}: " + ("no other candidate finished" if name == "runner_up" else "not trained")
    label = what if v["id"] == BASELINE_ID else f"{what} {v['id']}"
    other = f"{v['mean']:.4f}" + (f" +- {v['std']:.4f}" if v["std"] is not None else "") + f" (n={v['n']})"
    return f"  vs {label} {other}: margin {verdict.describe(v)}"


def _winner_call(compared: Mapping[str, Mapping[str, Any] | None]) -> str:
    """One sentence: is the picked point distinguishable from the runner-up, as the data show?"""
    v = compared.get("runner_up")
    if v is None:
        return "the only candidate that finished"
    if v["call"] == "wins":
        return "the winner's margin over the runner-up excludes zero"
    if v["call"] == "tie":
        return (
            "tied with the runner-up: the data do not tell these points apart (the pick is the higher mean)"
        )
    return f"seed spread not estimable with {v['seeds'][0]} seed(s): run --seeds 3 to call the winner"


def _paper_id() -> str:
    return Candidate(*PAPER_COEFFICIENTS).id


def _rounded(v: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {k: round(x, 6) if isinstance(x, float) else x for k, x in v.items()}


def _marker(
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    scores: Mapping[str, verdict.Scores] | None,
) -> Callable[[Any, Callable[[Mapping[str, Any]], float]], None]:
    """Draws the grid's points on one axes against `x`: each point at its mean over seeds, error
    bars its 95% interval (seeds + validation images, `foundation.verdict.arm_interval`), or the
    validation set's error alone where the seed spread is not estimable (under 3 seeds); the
    winner, the paper's point and the unscaled baseline marked."""
    ok = [p for p in points if p["kind"] == "candidate" and p["n"]]
    base = next((p for p in points if p["kind"] == "baseline" and p["n"]), None)
    paper = next((p for p in ok if p["id"] == _paper_id()), None)
    intervals = {pid: verdict.arm_interval(s) for pid, s in (scores or {}).items()}

    def err(ps: Sequence[Mapping[str, Any]]) -> list[list[float]] | None:
        found = [intervals.get(p["id"]) for p in ps]
        if not any(found):
            return None
        low = [
            0.0 if iv is None else (iv["mean"] - iv["low"] if iv["low"] is not None else iv["images_half"])
            for iv in found
        ]
        high = [
            0.0 if iv is None else (iv["high"] - iv["mean"] if iv["high"] is not None else iv["images_half"])
            for iv in found
        ]
        return [low, high]

    def marks(ax: Any, x: Callable[[Mapping[str, Any]], float]) -> None:
        ax.errorbar(
            [x(p) for p in ok],
            [p["mean"] for p in ok],
            yerr=err(ok),
            fmt="o",
            ms=4,
            alpha=0.7,
            elinewidth=1,
            label="candidate",
        )
        ax.errorbar(
            [x(winner)],
            [winner["mean"]],
            yerr=err([winner]),
            fmt="*",
            ms=14,
            c="C3",
            label=f"winner {winner['id']}",
        )
        if paper is not None:
            ax.scatter(
                [x(paper)],
                [paper["mean"]],
                marker="s",
                s=50,
                facecolors="none",
                edgecolors="k",
                label="paper (1.2, 1.1, 1.15)",
            )
        if base is not None:
            ax.axhline(base["mean"], color="grey", ls="--", lw=1, label="unscaled baseline")
            band = err([base])
            if band is not None:
                ax.axhspan(base["mean"] - band[0][0], base["mean"] + band[1][0], color="grey", alpha=0.15)
        ax.grid(alpha=0.3)
        ax.set_ylabel("proxy val accuracy (mean over seeds)")

    return marks


def figure_coefficients(
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    scores: Mapping[str, verdict.Scores] | None = None,
) -> Any:
    """Accuracy against alpha, beta and gamma, a panel each (`point_stats`' points)."""
    from foundation import figures

    marks = _marker(points, winner, scores)
    fig, axes = figures.axes(3, 4.2, 3.4)
    for ax, name in zip(axes, ("alpha", "beta", "gamma")):
        marks(ax, lambda p, name=name: p[name])
        ax.set(xlabel=name, title=f"accuracy vs {name}")
    axes[0].legend(fontsize=7)
    return fig


def figure_macs(
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    scores: Mapping[str, verdict.Scores] | None = None,
    title: str = "accuracy vs MACs",
) -> Any:
    """Accuracy against MACs (`point_stats`' points): the grid stage's figure and the report's."""
    from foundation import figures

    marks = _marker(points, winner, scores)
    fig, axes = figures.axes(1, 5.5, 3.4)
    marks(axes[0], lambda p: p["macs"] / 1e9)
    axes[0].set(xlabel="MACs (G, conv+linear at deployment resolution, 1000 classes)", title=title)
    axes[0].legend(fontsize=7)
    return fig


def plot_grid(
    rundir: Any,
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    scores: Mapping[str, verdict.Scores] | None = None,
) -> None:
    """accuracy_vs_coefficients.png and accuracy_vs_macs.png into the run directory."""
    from foundation import figures

    for name, fig in (
        ("accuracy_vs_coefficients.png", figure_coefficients(points, winner, scores)),
        ("accuracy_vs_macs.png", figure_macs(points, winner, scores)),
    ):
        rundir.save_figure(name, fig)
        figures.close(fig)


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A grid run's trials.csv (a DataFrame) as the per-trial rows `point_stats` reads."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def is_paper(row: Mapping[str, Any]) -> bool:
    """Whether a grid point is the paper's (1.2, 1.1, 1.15)."""
    return all(
        math.isclose(float(row[k]), v, abs_tol=1e-9)
        for k, v in zip(("alpha", "beta", "gamma"), PAPER_COEFFICIENTS)
    )


def _table_row(p: Mapping[str, Any]) -> dict[str, Any]:
    """A point as the console table shows it: mean, std and finished/planned seeds."""
    std = "-" if p["std"] is None else f"{p['std']:.4f}"
    n = str(p["n"]) if p["complete"] else f"{p['n']}/{p['seeds']}"
    return dict(p) | {"mean": f"{p['mean']:.4f}", "std": std, "n": n}


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    """The grid stage; `execute` runs its trials (Ray Tune, or in this process)."""
    from training.data import load_dataset
    from training.trial_log import TrialLog

    t0 = time.time()
    baseline, source = resolve_baseline(cfg)
    if not cfg.get("resume"):  # a resumed run's manifest already names its inputs
        _record_baseline(rundir, baseline, source)
    data = load_dataset(cfg.data)  # fail on bad data before Ray starts; record what was used
    rundir.record_dataset(data)

    candidates, n_every = candidates_of(cfg)
    seeds = [int(cfg.run.seed) + i for i in range(int(cfg.seeds))]
    rows = plan(
        baseline,
        candidates,
        float(cfg.phi),
        int(cfg.proxy.resolution),
        float(cfg.target),
        bool(cfg.include_baseline),
        int(cfg.resolution_divisor),
        seeds,
    )
    previous = _read_trials(rundir.file("trials.csv"), int(cfg.run.seed)) if cfg.get("resume") else {}
    restore(rows, previous, _key, KEPT)
    log = TrialLog.open(rundir, cfg, "grid", trial_space(rows))
    trials = GridTrials(rows, rundir, log=log)
    done = len(rows) - trials.remaining if previous else None
    print(_plan_line(cfg, len(candidates), n_every, seeds, baseline, source, data.name, done), flush=True)
    unfinished = trials.run_trials(execute, cfg)
    if unfinished:  # Tune returns from fit() on Ctrl-C with trials still pending
        log.finish(rundir, ["trials.csv"], "KILLED")
        print(
            f"grid: interrupted with {unfinished} trial(s) unfinished; continue with "
            f"`effnas grid --resume {rundir.path}`",
            file=sys.stderr,
        )
        raise KeyboardInterrupt

    points = point_stats(rows)
    winner = pick_winner(rows)
    if winner is None:
        raise _no_winner(len(seeds), len(_failed(rows, seeds)), rundir.file("trials.csv"))
    scores = point_scores(rows, rundir.path, len(data.val))
    compared = verdicts(points, winner, scores)
    verdict_record = _verdict_record(scores, compared, len(data.val), len(seeds))
    coefficients = _coefficients(cfg, winner, seeds, len(candidates), verdict_record, baseline, source, data)
    rundir.write_yaml("coefficients.yaml", coefficients)
    plot_grid(rundir, points, winner, scores)
    log.finish(
        rundir, ["trials.csv", "coefficients.yaml", "accuracy_vs_coefficients.png", "accuracy_vs_macs.png"]
    )
    for line in _result_lines(points, winner, compared, verdict_record, len(seeds)):
        print(line)
    summary = _summary(cfg, rows, seeds, len(candidates), n_every, points, winner, verdict_record, source)
    return summary | {"wall_seconds": round(time.time() - t0, 1)}


# -- the stage's phases ---------------------------------------------------------------------------
def _record_baseline(rundir: Any, baseline: Arch, source: Mapping[str, Any]) -> None:
    """The manifest names the baseline and, for a search run or the official B0, where it came from."""
    if source["source"] == "search run":
        rundir.record_upstream(source["path"], "search", f"baseline arch {baseline.name} (best_arch.yaml)")
    elif source["path"] is None and source["source"] != "--arch":
        rundir.record_upstream(None, "official", f"baseline {source['source']}")
    rundir.record(baseline=source)


def _plan_line(
    cfg: Any,
    n_cand: int,
    n_every: int,
    seeds: Sequence[int],
    baseline: Arch,
    source: Mapping[str, Any],
    dataset: str,
    done: int | None,
) -> str:
    """The console's first line: the grid, what of it trains, the baseline and the proxy; `done`
    trials of a resumed run (None: a first attempt)."""
    return (
        f"grid: phi={float(cfg.phi):g}, {n_every} grid points with |alpha*beta^2*gamma^2 - {cfg.target:g}| "
        f"<= {cfg.tol:g} (step {cfg.step:g}, alpha <= {cfg.max_alpha:g}, beta <= {cfg.max_beta:g}, "
        f"gamma <= {cfg.max_gamma:g})"
        + (f", training a spread-out subset of {n_cand}" if n_cand < n_every else "")
        + (" + the unscaled baseline" if cfg.include_baseline else "")
        + (f", each with seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else "")
        + f"; baseline {baseline.name} ({source['source']}); proxy {_budget(cfg.proxy)} on {dataset} "
        f"at {cfg.proxy.resolution}px x gamma^phi" + (f"; resuming: {done} done" if done is not None else "")
    )


def _failed(rows: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[str]:
    """The trials not `ok`, by point id (and seed, when there are several)."""
    return [r["id"] + (f" (seed {r['seed']})" if len(seeds) > 1 else "") for r in rows if r["status"] != "ok"]


def _no_winner(n_seeds: int, n_failed: int, table: Path) -> UserError:
    """The error when no candidate finished every seed: nothing to pick."""
    return UserError(
        "no grid candidate finished"
        + (f" all {n_seeds} seeds" if n_seeds > 1 else "")
        + f" ({n_failed} trial(s) failed or unfinished); see {table}"
    )


def _verdict_record(
    scores: Mapping[str, verdict.Scores],
    compared: Mapping[str, Mapping[str, Any] | None],
    images: int,
    n_seeds: int,
) -> dict[str, Any]:
    """How the pick was judged (coefficients.yaml's and the summary's `verdict`): the method, what
    the data resolve, the call against the runner-up and each comparison (`verdicts`)."""
    evaluation = verdict.evaluation(list(scores.values()), "val")
    return {
        "method": evaluation["method"],
        "validation_images": images,
        "seeds": n_seeds,
        "seed_spread": evaluation["seed_spread"],
        "resolvable_difference": evaluation["resolvable_difference"],
        "winner_call": _winner_call(compared),
        **{name: _rounded(v) for name, v in compared.items()},
    }


def _std(point: Mapping[str, Any]) -> float | None:
    """A point's std over seeds as a float (None under two finished seeds)."""
    return None if point["std"] is None else float(point["std"])


def _coefficients(
    cfg: Any,
    winner: Mapping[str, Any],
    seeds: Sequence[int],
    n_cand: int,
    verdict_record: Mapping[str, Any],
    baseline: Arch,
    source: Mapping[str, Any],
    data: Any,
) -> dict[str, Any]:
    """coefficients.yaml: the winner's (alpha, beta, gamma) and how it was picked, from what."""
    from omegaconf import OmegaConf

    return {
        "alpha": winner["alpha"],
        "beta": winner["beta"],
        "gamma": winner["gamma"],
        "product": winner["product"],
        "phi": float(cfg.phi),
        "id": winner["id"],
        "accuracy": float(winner["mean"]),  # mean over seeds
        "accuracy_std": _std(winner),
        "seeds": list(seeds),
        "macs_ratio": float(winner["macs_ratio"]),
        "selection": f"highest mean proxy validation accuracy over {len(seeds)} seed(s) of {n_cand} candidates",
        "verdict": verdict_record,
        "baseline": baseline.to_dict(),
        "baseline_source": source,
        "proxy": OmegaConf.to_container(cfg.proxy, resolve=True),
        "data": {"name": data.name, "fingerprint": data.fingerprint},
    }


def _best_first(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points with a finished seed, highest mean first (the console's table, the paper's rank)."""
    return sorted((p for p in points if p["n"]), key=lambda p: -p["mean"])


def _result_lines(
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    compared: Mapping[str, Mapping[str, Any] | None],
    verdict_record: Mapping[str, Any],
    n_seeds: int,
) -> list[str]:
    """The console's result: the top ten points, the winner, its margins and the call."""
    from foundation import tables

    shown = _best_first(points)
    columns = ["id", "alpha", "beta", "gamma", "product", "resolution", "macs", "macs_ratio"]
    columns += ["mean", "std", "n", "seconds"]
    std = _std(winner)
    return [
        f"\ngrid: top of {len(shown)} finished (of {len(points)}), accuracy as mean over "
        f"{n_seeds} seed(s), std over seeds:",
        tables.format_table([_table_row(p) for p in shown[:10]], columns),
        f"winner {winner['id']}: alpha={winner['alpha']:g} beta={winner['beta']:g} gamma={winner['gamma']:g} "
        f"(product {winner['product']:.4f}), proxy accuracy {float(winner['mean']):.4f}"
        + (f" +- {std:.4f}" if std is not None else "")
        + f" (n={winner['n']})",
        *(verdict_line(name, v, winner["id"]) for name, v in compared.items()),
        f"  -> {verdict_record['winner_call']}",
    ]


def _summary(
    cfg: Any,
    rows: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    n_cand: int,
    n_every: int,
    points: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    verdict_record: Mapping[str, Any],
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The stage's summary: what trained and failed, whether the constraint held, the winner, the
    paper's point (with its rank) and the unscaled baseline's accuracy, the grid's settings."""
    by_id = {p["id"]: p for p in points}
    paper = by_id.get(_paper_id())
    base = by_id.get(BASELINE_ID)
    failed = _failed(rows, seeds)
    violations = [
        r["id"] for r in rows if r["kind"] == "candidate" and abs(r["product"] - cfg.target) > cfg.tol + 1e-9
    ]
    return {
        "phi": float(cfg.phi),
        "candidates": n_cand,
        "grid_points": n_every,
        "trials": len(rows),
        "ok": len(rows) - len(failed),
        "failed": failed,
        "constraint_holds": not violations,
        "seeds": list(seeds),
        "winner": {
            k: winner[k]
            for k in ("id", "alpha", "beta", "gamma", "product", "macs", "macs_ratio", "resolution", "n")
        }
        | {"accuracy": float(winner["mean"]), "std": _std(winner)},
        "paper_point": None
        if paper is None
        else {
            "id": paper["id"],
            "accuracy": paper["mean"],
            "std": paper["std"],
            "n": paper["n"],
            "rank": next((i + 1 for i, p in enumerate(_best_first(points)) if p["id"] == paper["id"]), None),
        },
        "baseline_accuracy": None if base is None else base["mean"],
        "verdict": verdict_record,
        "baseline": source,
        "grid": {
            "step": cfg.step,
            "max_alpha": cfg.max_alpha,
            "max_beta": cfg.max_beta,
            "max_gamma": cfg.max_gamma,
            "target": cfg.target,
            "tol": cfg.tol,
        },
        "proxy_budget": _budget(cfg.proxy),
    }
