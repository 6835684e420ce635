"""`effnas grid`: the compound-coefficient grid search on the proxy (EfficientNet §3.3, step 1).

    effnas grid --phi 1 [--from results/search/<run> | --arch efficientnet_b0 | --arch a.yaml]

Every (alpha, beta, gamma) >= 1 on the grid with |alpha*beta^2*gamma^2 - target| <= tol
(`scaling.compound.enumerate_candidates`) scales the baseline by depth alpha^phi, width beta^phi
and proxy resolution round(gamma^phi x proxy.resolution) and is trained once with the shared proxy
trainer (`effnas.trials.run_trial`), by the executor the application hands in (Ray Tune through
`effnas.raytune`, or in this process). The winner is the highest proxy validation accuracy. MACs are the paper's: conv + linear
multiply-adds of the scaled model at its deployment resolution round(gamma^phi x the baseline's,
224 for B0) with 1000 classes, whatever the proxy trains at (DESIGN.md).

`trials.csv` is the record: it lists every planned row (status `pending`) from the start and is
rewritten after each finished trial, so `--resume RUN_DIR` trains only what is not `ok` yet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effnas.errors import UserError
from scaling.compound import PAPER_COEFFICIENTS, Candidate, enumerate_candidates, scale_arch, spread_subset
from search_spaces.arch import Arch
from search_spaces.arch_config import arch_from_cfg, arch_given

if TYPE_CHECKING:
    from effnas.trials import Executor

BASELINE_ID = "baseline"
COLUMNS = (
    "id",
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
    from effnas.runfiles import upstream_run

    if not cfg.phi > 0:
        raise UserError(f"--phi must be > 0 for a grid, got {cfg.phi}")
    candidates_of(cfg)
    if cfg.upstream and arch_given(cfg):
        raise UserError("give the baseline either with --from (a search run) or --arch, not both")
    if cfg.upstream:
        _read_best_arch(upstream_run(cfg.upstream, "search", "best_arch.yaml"))
    elif arch_given(cfg):
        arch_from_cfg(cfg.arch)
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
    from effnas.runfiles import upstream_run
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
) -> list[dict[str, Any]]:
    """One row per trial (status pending) with everything known before training: the scaled
    multipliers, the proxy and deployment resolutions, and MACs/params from the cost model."""
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
        rows.append(
            {
                "id": pid,
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
        )
    return rows


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in COLUMNS}


def _read_trials(path: Path) -> dict[str, dict[str, Any]]:
    """Finished rows of an earlier attempt (for --resume), by id."""
    import pandas as pd

    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return {str(r["id"]): dict(r) for r in frame.to_dict("records")}


# -- the trials ---------------------------------------------------------------------------------
class GridTrials:
    """The grid's unfinished rows as an `effnas.trials.TrialSource`: proposed in plan order; each
    end fills its row, rewrites trials.csv and prints one line."""

    name = "grid"

    def __init__(self, rows: list[dict[str, Any]], rundir: Any, out: Any = None) -> None:
        self.order = rows
        self.rows = {r["id"]: r for r in rows}
        self.queue = [r for r in rows if r["status"] != "ok"]
        self.total = len(self.queue)
        self.rundir = rundir
        self.pending: dict[str, str] = {}  # executor's trial id -> row id
        self.finished = 0
        self.out = out  # None: sys.stdout at print time

    @property
    def remaining(self) -> int:
        return len(self.queue)

    def save(self) -> None:
        self.rundir.write_csv("trials.csv", [_public(r) for r in self.order])

    def propose(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue:
            return None
        row = self.queue.pop(0)
        self.pending[trial_id] = row["id"]
        return {
            "name": row["id"],
            "id": row["id"],
            "arch": row["_arch"],
            "resolution": int(row["resolution"]),
        }

    def complete(self, trial_id: str, result: Mapping[str, Any] | None, error: str | bool = False) -> None:
        pid = self.pending.pop(trial_id, None)
        if pid is None:
            return
        row = self.rows[pid]
        result = dict(result or {})
        status = "failed" if error else (result.get("status") or "failed")
        reason = (error if isinstance(error, str) else "trial crashed") if error else result.get("error")
        row.update(
            status=status,
            accuracy=result.get("accuracy") if status == "ok" else None,
            loss=result.get("loss"),
            seconds=round(float(result["seconds"]), 2) if result.get("seconds") is not None else None,
            epochs=result.get("epochs"),
            proxy_macs=result.get("proxy_macs"),
            error=None if status == "ok" else (reason or "stopped before it finished"),
        )
        self.finished += 1
        self.save()
        acc = f"acc {row['accuracy']:.4f}" if row["accuracy"] is not None else f"FAILED {row['error']}"
        print(
            f"[{self.finished}/{self.total}] {pid:<22} product {row['product']:.3f}  "
            f"MACs x{row['macs_ratio']:.2f} (nominal x{row['nominal_ratio']:g})  res {row['resolution']}  "
            f"{acc}  {row['seconds'] if row['seconds'] is not None else '-'}s",
            file=self.out or sys.stdout,
            flush=True,
        )


def _budget(proxy: Any) -> str:
    if proxy.get("images"):
        return f"{int(proxy.images)} images"
    return f"{proxy.epochs:g} epoch(s)"


# -- results ------------------------------------------------------------------------------------
def pick_winner(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest proxy accuracy among finished candidates; ties to fewer MACs, then grid order."""
    ok = [r for r in rows if r["kind"] == "candidate" and r["status"] == "ok" and r["accuracy"] is not None]
    if not ok:
        return None
    order = {r["id"]: i for i, r in enumerate(rows)}
    return min(ok, key=lambda r: (-float(r["accuracy"]), int(r["macs"]), order[r["id"]]))


def plot_grid(rundir: Any, rows: Sequence[dict[str, Any]], winner: dict[str, Any]) -> None:
    from scaling import report

    ok = [r for r in rows if r["kind"] == "candidate" and r["status"] == "ok"]
    base = next((r for r in rows if r["kind"] == "baseline" and r["status"] == "ok"), None)
    paper = next((r for r in ok if (r["alpha"], r["beta"], r["gamma"]) == PAPER_COEFFICIENTS), None)

    def marks(ax: Any, x: Callable[[dict[str, Any]], float]) -> None:
        ax.scatter([x(r) for r in ok], [r["accuracy"] for r in ok], s=18, alpha=0.7, label="candidate")
        ax.scatter(
            [x(winner)], [winner["accuracy"]], marker="*", s=160, c="C3", label=f"winner {winner['id']}"
        )
        if paper is not None:
            ax.scatter(
                [x(paper)],
                [paper["accuracy"]],
                marker="s",
                s=50,
                facecolors="none",
                edgecolors="k",
                label="paper (1.2, 1.1, 1.15)",
            )
        if base is not None:
            ax.axhline(base["accuracy"], color="grey", ls="--", lw=1, label="unscaled baseline")
        ax.grid(alpha=0.3)
        ax.set_ylabel("proxy val accuracy")

    fig, axes = report.figure(3)
    for ax, name in zip(axes, ("alpha", "beta", "gamma")):
        marks(ax, lambda r, name=name: r[name])
        ax.set(xlabel=name, title=f"accuracy vs {name}")
    axes[0].legend(fontsize=7)
    rundir.save_figure("accuracy_vs_coefficients.png", fig)
    report.close(fig)

    fig, axes = report.figure(1, width=5.5)
    marks(axes[0], lambda r: r["macs"] / 1e9)
    axes[0].set(
        xlabel="MACs (G, conv+linear at deployment resolution, 1000 classes)", title="accuracy vs MACs"
    )
    axes[0].legend(fontsize=7)
    rundir.save_figure("accuracy_vs_macs.png", fig)
    report.close(fig)


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    """The grid stage; `execute` runs its trials (Ray Tune, or in this process)."""
    from omegaconf import OmegaConf

    from effnas.data import load_dataset
    from effnas.trials import Scheduling, TrialSetup
    from scaling import report

    t0 = time.time()
    baseline, source = resolve_baseline(cfg)
    if not cfg.get("resume"):  # a resumed run's manifest already names its inputs
        if source["source"] == "search run":
            rundir.record_upstream(
                source["path"], "search", f"baseline arch {baseline.name} (best_arch.yaml)"
            )
        elif source["path"] is None and source["source"] != "--arch":
            rundir.record_upstream(None, "official", f"baseline {source['source']}")
        rundir.record(baseline=source)
    data = load_dataset(cfg.data)  # fail on bad data before Ray starts; record what was used
    rundir.record_dataset(data)

    candidates, n_every = candidates_of(cfg)
    phi = float(cfg.phi)
    rows = plan(
        baseline,
        candidates,
        phi,
        int(cfg.proxy.resolution),
        float(cfg.target),
        bool(cfg.include_baseline),
        int(cfg.resolution_divisor),
    )
    previous = _read_trials(rundir.file("trials.csv")) if cfg.get("resume") else {}
    for row in rows:
        old = previous.get(row["id"])
        if old is not None and old.get("status") == "ok":
            row.update(
                {
                    k: old.get(k)
                    for k in ("accuracy", "loss", "status", "seconds", "epochs", "proxy_macs", "error")
                }
            )
    trials = GridTrials(rows, rundir)
    todo = list(trials.queue)
    n_cand = len(candidates)
    print(
        f"grid: phi={phi:g}, {n_every} grid points with |alpha*beta^2*gamma^2 - {cfg.target:g}| <= {cfg.tol:g} "
        f"(step {cfg.step:g}, alpha <= {cfg.max_alpha:g}, beta <= {cfg.max_beta:g}, gamma <= {cfg.max_gamma:g})"
        + (f", training a spread-out subset of {n_cand}" if n_cand < n_every else "")
        + (" + the unscaled baseline" if cfg.include_baseline else "")
        + f"; baseline {baseline.name} ({source['source']}); proxy {_budget(cfg.proxy)} on {data.name} "
        f"at {cfg.proxy.resolution}px x gamma^phi"
        + (f"; resuming: {len(rows) - len(todo)} done" if previous else ""),
        flush=True,
    )
    trials.save()
    if todo:
        execute(trials, TrialSetup.of(cfg), Scheduling())
    trials.save()
    unfinished = [r["id"] for r in rows if r["status"] == "pending"]
    if unfinished:  # Tune returns from fit() on Ctrl-C with trials still pending
        print(
            f"grid: interrupted with {len(unfinished)} trial(s) unfinished; continue with "
            f"`effnas grid --resume {rundir.path}`",
            file=sys.stderr,
        )
        raise KeyboardInterrupt

    winner = pick_winner(rows)
    failed = [r["id"] for r in rows if r["status"] != "ok"]
    if winner is None:
        raise UserError(
            f"no grid candidate finished ({len(failed)} failed or unfinished); see {rundir.file('trials.csv')}"
        )
    proxy = OmegaConf.to_container(cfg.proxy, resolve=True)
    coefficients = {
        "alpha": winner["alpha"],
        "beta": winner["beta"],
        "gamma": winner["gamma"],
        "product": winner["product"],
        "phi": phi,
        "id": winner["id"],
        "accuracy": float(winner["accuracy"]),
        "macs_ratio": float(winner["macs_ratio"]),
        "selection": f"highest proxy validation accuracy of {n_cand} candidates",
        "baseline": baseline.to_dict(),
        "baseline_source": source,
        "proxy": proxy,
        "data": {"name": data.name, "fingerprint": data.fingerprint},
    }
    rundir.write_yaml("coefficients.yaml", coefficients)
    plot_grid(rundir, rows, winner)

    ranked = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -float(r["accuracy"]))
    print(f"\ngrid: top of {len(ranked)} finished (of {len(rows)}):")
    print(
        report.format_table(
            ranked[:10],
            [
                "id",
                "alpha",
                "beta",
                "gamma",
                "product",
                "resolution",
                "macs",
                "macs_ratio",
                "accuracy",
                "seconds",
            ],
        )
    )
    by_id = {r["id"]: r for r in rows}
    paper = by_id.get(Candidate(*PAPER_COEFFICIENTS).id)
    base = by_id.get(BASELINE_ID)
    print(
        f"winner {winner['id']}: alpha={winner['alpha']:g} beta={winner['beta']:g} gamma={winner['gamma']:g} "
        f"(product {winner['product']:.4f}), proxy accuracy {float(winner['accuracy']):.4f}"
        + (
            f"; paper point {paper['id']}: {float(paper['accuracy']):.4f}"
            if paper and paper["status"] == "ok"
            else ""
        )
        + (f"; unscaled baseline: {float(base['accuracy']):.4f}" if base and base["status"] == "ok" else "")
    )
    violations = [
        r["id"] for r in rows if r["kind"] == "candidate" and abs(r["product"] - cfg.target) > cfg.tol + 1e-9
    ]
    return {
        "phi": phi,
        "candidates": n_cand,
        "grid_points": n_every,
        "trials": len(rows),
        "ok": len(rows) - len(failed),
        "failed": failed,
        "constraint_holds": not violations,
        "winner": {
            k: winner[k]
            for k in ("id", "alpha", "beta", "gamma", "product", "macs", "macs_ratio", "resolution")
        }
        | {"accuracy": float(winner["accuracy"])},
        "paper_point": None
        if paper is None
        else {
            "id": paper["id"],
            "accuracy": paper["accuracy"],
            "rank": next((i + 1 for i, r in enumerate(ranked) if r["id"] == paper["id"]), None),
        },
        "baseline_accuracy": None if base is None else base["accuracy"],
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
        "wall_seconds": round(time.time() - t0, 1),
    }
