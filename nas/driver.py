"""The search driver: proposals from a sampler, trials run by an executor, one record of what
finished.

`Search` is the driver's whole state and logic, free of Ray: `propose()` asks the sampler, decodes
the choice vector to an `Arch`, prices it with the analytic cost model and either rejects it (over
`reject_above` x T: recorded, told to the sampler, never trained) or hands out a trial config;
`complete()` turns a trial's final result into a row of trials.csv (written first, so a kill
cannot lose it), tells the sampler, and prints one progress line. Budgets: trained trials
(`--trials`, counting the ones an interrupted run finished) and wall time (`--time-budget`: no
new trial starts after it).

`Search` is an `training.trials.TrialSource`: the application's executor drives it (Ray Tune through
`adapters.raytune`, or `training.trials.run_inline` in this process: benchmarks, tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from nas.records import TRAINED, best_of
from nas.reward import RewardFn
from nas.samplers import Ask, Outcome, Sampler
from search_spaces.arch import Arch
from search_spaces.mnasnet import MnasNetSpace

# A sampler stuck in a region the MACs filter rejects would otherwise loop for ever.
MAX_REJECTED_IN_A_ROW = 500


class Search:
    """Proposals, completions, budget and the trial table of one search run."""

    name = "search"

    def __init__(
        self,
        space: MnasNetSpace,
        sampler: Sampler,
        reward_fn: RewardFn,
        rows: Sequence[dict[str, Any]] = (),
        *,
        trials: int,
        time_budget: float | None = None,
        elapsed_before: float = 0.0,
        reject_above: float | None = None,
        save: Callable[[list[dict[str, Any]]], None] | None = None,
        out: TextIO | None = None,
        latency_of: Callable[[Arch], float] | None = None,
        prerank: Callable[[list[tuple[int, ...]]], list[float]] | None = None,
        prerank_candidates: int = 1,
    ) -> None:
        """`latency_of`: predicted latency (ms) of an arch, recorded for every trial; when the
        reward's unit is "ms" it is also the reward's cost (MnasNet's latency objective)."""
        self.space, self.sampler, self.reward_fn = space, sampler, reward_fn
        self.rows: list[dict[str, Any]] = list(rows)
        self.trials = int(trials)
        self.t0 = time.monotonic()
        self.elapsed_before = float(elapsed_before)
        self.deadline = None if time_budget is None else self.t0 + float(time_budget) - self.elapsed_before
        self.latency_of = latency_of
        # zero-cost pre-ranking: of `prerank_candidates` proposals within the MACs filter, only the
        # best-scored trains (the others are never told: only random search may use it)
        self.prerank, self.prerank_candidates = prerank, max(1, int(prerank_candidates))
        self.objective = "latency_ms" if reward_fn.unit == "ms" else "macs"  # the reward's cost
        if self.objective == "latency_ms" and latency_of is None:
            raise ValueError("a latency target needs latency_of (a latency table)")
        self.reject_over = None if not reject_above else float(reject_above) * reward_fn.target
        self.save = save or (lambda rows: None)
        self.out = out or sys.stderr
        self.pending: dict[str, tuple[Ask, dict[str, Any]]] = {}
        self.next_id = max((int(r["id"]) for r in self.rows), default=-1) + 1
        self.rejected_in_a_row = 0
        self.stop_reason: str | None = None

    # -- budget -----------------------------------------------------------------------------
    @property
    def trained(self) -> int:
        return sum(r["status"] in TRAINED for r in self.rows)

    @property
    def remaining(self) -> int:
        return max(0, self.trials - self.trained - len(self.pending))

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0

    def _may_start(self) -> bool:
        if self.stop_reason is not None:
            return False
        if self.trained + len(self.pending) >= self.trials:
            self.stop_reason = "trials"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = "time"
        elif self.rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
            self.stop_reason = "rejections"
            print(
                f"search: stopping: {MAX_REJECTED_IN_A_ROW} proposals in a row were over "
                f"{self._format_cost(self.reject_over or 0)}; widen reject_above or the space",
                file=self.out,
                flush=True,
            )
        return self.stop_reason is None

    # -- proposals and completions -----------------------------------------------------------
    def propose(self, trial_id: str) -> dict[str, Any] | None:
        """The config of the next trial to train, or None when the search should start no more."""
        from search_spaces.cost import count

        while self._may_start():
            ask = self.sampler.ask()
            zero_cost = None
            if self.prerank is not None:
                ask, zero_cost = self._preranked(ask)
            arch = self.space.decode(ask.choices)
            cost = count(arch)
            row = {
                "id": self.next_id,
                "arch": " ".join(arch.blocks),
                "macs": cost.macs,
                "params": cost.params,
                "activations": cost.activations,
                "latency_ms": None if self.latency_of is None else round(self.latency_of(arch), 4),
                "accuracy": None,
                "reward": None,
                "status": "pending",
                "seconds": None,
                "epochs": None,
                "loss": None,
                "proxy_macs": None,
                "name": arch.name,
                "choices": " ".join(str(c) for c in ask.choices),
                "sampler_key": ask.key,
                "error": None,
                "zero_cost": zero_cost,
            }
            self.next_id += 1
            if self.reject_over is not None and row[self.objective] > self.reject_over:
                row.update(status="rejected", seconds=0.0)
                self._record(ask, row, self._outcome("rejected", row))
                self.rejected_in_a_row += 1
                continue
            self.rejected_in_a_row = 0
            self.pending[trial_id] = (ask, row)
            return {
                "trial": row["id"],
                "name": f"trial{row['id']}",
                "arch": arch.to_dict(),
                "choices": list(ask.choices),
                "macs": cost.macs,
                "cost": row[self.objective],
            }
        return None

    def _preranked(self, first: Ask) -> tuple[Ask, float | None]:
        """The best-scored of `prerank_candidates` proposals within the MACs filter (the first
        proposal, unscored, when none is)."""
        from search_spaces.cost import count

        asks = [first, *(self.sampler.ask() for _ in range(self.prerank_candidates - 1))]
        within = []
        for ask in asks:
            arch = self.space.decode(ask.choices)
            cost = count(arch).macs if self.objective == "macs" else self.latency_of(arch)  # type: ignore[misc]
            if self.reject_over is None or cost <= self.reject_over:
                within.append(ask)
        if not within:
            return first, None
        scores = self.prerank([a.choices for a in within])
        best = max(range(len(within)), key=lambda i: scores[i])
        return within[best], round(float(scores[best]), 4)

    def complete(self, trial_id: str, result: Mapping[str, Any] | None, error: str | bool = False) -> None:
        """Record the end of a trial: its final result (`status` present), the last intermediate
        report of one stopped early (no `status`), or a crash (`error`)."""
        if trial_id not in self.pending:
            return
        ask, row = self.pending.pop(trial_id)
        result = dict(result or {})
        accuracy = None
        if error:
            status = "failed"
            row["error"] = error if isinstance(error, str) else "trial crashed (see the ray/ folder)"
        elif "status" in result:
            status = "ok" if result["status"] == "ok" and result.get("accuracy") is not None else "failed"
            accuracy = result.get("accuracy") if status == "ok" else None
            row["error"] = result.get("error") if status == "failed" else None
        else:
            accuracy = result.get("val_accuracy")
            status = "stopped" if accuracy is not None else "failed"
            if accuracy is None:
                row["error"] = "stopped before its first report"
        reward = None if accuracy is None else self.reward_fn(float(accuracy), row[self.objective])
        row.update(
            status=status,
            accuracy=None if accuracy is None else float(accuracy),
            reward=reward,
            seconds=_round(result.get("seconds", result.get("time_total_s"))),
            epochs=result.get("epochs", result.get("epoch")),
            loss=result.get("loss", result.get("val_loss")),
            proxy_macs=result.get("proxy_macs"),
        )
        self._record(ask, row, self._outcome(status, row))

    def _outcome(self, status: str, row: dict[str, Any]) -> Outcome:
        cost = row["latency_ms"] if self.objective == "latency_ms" else None
        return Outcome(status, row["accuracy"], row["macs"], row["reward"], cost)

    def _record(self, ask: Ask, row: dict[str, Any], outcome: Outcome) -> None:
        self.rows.append(row)
        self.save(self.rows)  # on disk before the sampler learns it: a kill loses nothing told
        self.sampler.tell(ask, outcome)
        self._progress(row)

    def abandon_pending(self) -> None:
        """Forget trials that will not finish (interrupted run); they are not in the record."""
        self.pending.clear()

    # -- console --------------------------------------------------------------------------------
    def _progress(self, row: dict[str, Any]) -> None:
        from foundation.units import format_flops

        head = f"#{row['id']:<4} {row['status']:<8} MACs {format_flops(row['macs']):>7}"
        if row.get("latency_ms") is not None:
            head += f"  {row['latency_ms']:6.2f} ms"
        if row["status"] == "rejected":
            limit = self._format_cost(self.reject_over or 0)
            line = f"{head}  over {limit} (reject_above x T): not trained"
            print(f"{'':>{_BAR + 10}} {line}", file=self.out, flush=True)
            return
        done = min(self.trained, self.trials)
        filled = round(_BAR * done / max(1, self.trials))
        bar = f"[{'#' * filled}{'-' * (_BAR - filled)}] {done:>3}/{self.trials:<3}"
        if row["status"] == "failed":
            body = f"{head}  FAILED: {row['error']}"
        else:
            body = (
                f"{head}  acc {row['accuracy']:.4f}  reward {row['reward']:.4f}"
                f"  {row['seconds'] if row['seconds'] is not None else '-'}s"
            )
        best = best_of(self.rows, self.objective)
        tail = (
            f" | best {best['reward']:.4f} (#{best['id']}, acc {best['accuracy']:.4f}, "
            f"{self._format_cost(best[self.objective])})"
            if best
            else " | best -"
        )
        print(f"{bar} {body}{tail}  [{self.elapsed():.0f}s]", file=self.out, flush=True)

    def _format_cost(self, value: float) -> str:
        from foundation.units import format_flops

        return f"{value:.2f} ms" if self.objective == "latency_ms" else format_flops(value)


_BAR = 20


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


class RewardMetric:
    """Adds `reward` to every report a trial sends to Tune (ASHA and the searcher rank on it).
    Picklable: Ray ships it to the workers with the trainable."""

    def __init__(self, reward_fn: RewardFn) -> None:
        self.reward_fn = reward_fn

    def __call__(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
        if "status" in metrics:
            accuracy = metrics.get("accuracy") if metrics["status"] == "ok" else None
        else:
            accuracy = metrics.get("val_accuracy")
        # Tune insists that every report carries the metric; a failure ranks last.
        cost = config.get("cost", config["macs"])  # the reward's cost: MACs or predicted latency
        value = 0.0 if accuracy is None else self.reward_fn(float(accuracy), float(cost))
        return {"reward": value}
