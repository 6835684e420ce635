"""The search's record on disk: trials.csv, the Pareto set, the winner, and the two plots.

`trials.csv` has one row per finished trial, in the order trials finished, rewritten atomically
after each one, so a killed search loses only the trials that were still running. It is the
source of truth for `--resume` (`read_trials` -> the samplers' `History`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.samplers.base import Ask, Outcome

COLUMNS = (
    "id",
    "arch",
    "macs",
    "params",
    "activations",
    "latency_ms",
    "accuracy",
    "reward",
    "status",
    "seconds",
    "epochs",
    "loss",
    "proxy_macs",
    "name",
    "choices",
    "sampler_key",
    "error",
    "zero_cost",
    "measured_ms",  # latency target: the top trials measured end to end (nas.latency_check)
    "measured_cv",
    "measured_raw_ms",  # a predictor fitted beside an anchor: the plain milliseconds of that measurement
    "measured_reward",  # the reward on the measured latency; the best is picked on it
)
# what `effnas report` reads of this stage's run: table -> (required columns, of which numeric);
# extra columns are tolerated, so runs from before a column was added still read
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "trials.csv": (
        ("id", "name", "macs", "params", "accuracy", "reward", "status"),
        ("macs", "params", "accuracy", "reward"),
    ),
    "pareto.csv": (("id", "macs", "accuracy"), ("macs", "accuracy")),
}
TRAINED = ("ok", "stopped", "failed")  # statuses that consumed a training run (the --trials budget)


def read_trials(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier attempt's trials.csv (empty if there is none yet)."""
    import pandas as pd

    from foundation.runfiles import check_table

    if not path.is_file() or path.stat().st_size == 0:
        return []
    check_table(path)
    frame = pd.read_csv(path, keep_default_na=True)
    frame = frame.astype(object).where(frame.notna(), None)
    rows = []
    for rec in frame.to_dict("records"):
        row = {k: rec.get(k) for k in COLUMNS}
        for key in ("id", "macs", "params", "activations", "sampler_key", "proxy_macs"):
            if row[key] is not None:
                row[key] = int(row[key])
        floats = ("latency_ms", "accuracy", "reward", "seconds", "epochs", "loss", "zero_cost")
        for key in (*floats, "measured_ms", "measured_cv", "measured_raw_ms", "measured_reward"):
            if row[key] is not None:
                row[key] = float(row[key])
        rows.append(row)
    return rows


def history_of(rows: Sequence[dict[str, Any]], cost: str = "macs") -> list[tuple[Ask, Outcome]]:
    """The samplers' view of finished rows, in finishing order; `cost` is the reward's (the
    column `macs` or `latency_ms`)."""
    out = []
    for row in rows:
        choices = tuple(int(c) for c in str(row["choices"]).split())
        out.append(
            (
                Ask(int(row["sampler_key"]), choices),
                Outcome(
                    row["status"],
                    row["accuracy"],
                    int(row["macs"]),
                    row["reward"],
                    None if cost == "macs" else row[cost],
                ),
            )
        )
    return out


def pareto_front(rows: Sequence[dict[str, Any]], cost: str = "macs") -> list[dict[str, Any]]:
    """Fully trained rows that no other one beats on both accuracy (up) and `cost` (down: the
    column `macs`, or `latency_ms` for a latency target), ordered by that cost."""
    ok = sorted(
        (r for r in rows if r["status"] == "ok" and r["accuracy"] is not None and r.get(cost) is not None),
        key=lambda r: (r[cost], -r["accuracy"]),
    )
    front, best_acc = [], -math.inf
    for row in ok:
        if row["accuracy"] > best_acc:
            front.append(row)
            best_acc = row["accuracy"]
    return front


def best_of(rows: Sequence[dict[str, Any]], cost: str = "macs") -> dict[str, Any] | None:
    """The baseline B0: the best reward on the Pareto set (ties: fewer MACs).

    For any reward that grows with accuracy and does not grow with MACs (every w <= 0), the best
    reward over all trials lies on the Pareto set, so this is also the overall best; taking it
    from the front breaks ties in favour of the cheaper model.
    """
    front = pareto_front(rows, cost)
    if not front:
        return None
    return max(front, key=lambda r: (r["reward"], -r[cost]))


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    out = {s: 0 for s in ("ok", "stopped", "failed", "rejected")}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    out["trained"] = sum(out[s] for s in TRAINED)
    return out


def plot_rewards(rows: Sequence[dict[str, Any]], title: str) -> Any:
    """Reward of each trained trial in finishing order, with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r["status"] in ("ok", "stopped")]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = list(range(1, len(trained) + 1))
    for status, color, label in (
        ("ok", "tab:blue", "trial reward"),
        ("stopped", "tab:gray", "stopped early"),
    ):
        points = [(x, r["reward"]) for x, r in zip(xs, trained) if r["status"] == status]
        if points:
            ax.scatter(*zip(*points), s=18, color=color, label=label)
    best, running = -math.inf, []
    for r in trained:
        if r["status"] == "ok":
            best = max(best, r["reward"])
        running.append(best if best > -math.inf else math.nan)
    ax.step(xs, running, where="post", color="tab:red", label="running best")
    ax.set_xlabel("trained trial (finishing order)")
    ax.set_ylabel("reward ACC x (MACs/T)^w")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def plot_pareto(
    rows: Sequence[dict[str, Any]], target: float, title: str, cost: str = "macs", show_target: bool = True
) -> Any:
    """Accuracy vs `cost` (`macs`, or `latency_ms`: the front drawn against predicted latency);
    `show_target` marks T (only meaningful on the reward's own axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get(cost) is not None]
    front = pareto_front(rows, cost)
    best = best_of(rows, cost)
    scale, unit = (1.0, "ms") if cost == "latency_ms" else (1e6, "M")

    def x(r: dict[str, Any]) -> float:
        return r[cost] / scale

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([x(r) for r in ok], [r["accuracy"] for r in ok], s=16, alpha=0.6, label="trial")
    if front:
        ax.step(
            [x(r) for r in front],
            [r["accuracy"] for r in front],
            where="post",
            color="tab:orange",
            marker="o",
            label="Pareto front",
        )
    if show_target:
        ax.axvline(
            target / scale, color="tab:red", linestyle="--", label=f"target T = {target / scale:g}{unit}"
        )
    if best is not None:
        ax.scatter(
            [x(best)],
            [best["accuracy"]],
            s=140,
            marker="*",
            color="tab:green",
            zorder=5,
            label=f"best reward (#{best['id']})",
        )
    if cost == "latency_ms":
        ax.set_xlabel("predicted latency (ms, the latency table's machine and setup)")
    else:
        ax.set_xlabel("MACs at 224x224, 1000 classes (millions)")
    ax.set_ylabel("proxy validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig
