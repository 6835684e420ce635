"""A latency predictor learned from whole networks measured end to end (`effnas latency
--fit-predictor N`), read by the search without torch.

The latency table (`search_spaces.latency`) times each part alone; inside a network a part runs
slower or faster than alone (its weights and input are not hot in cache; other kernels get picked
for other neighbours), so `overhead + scale x sum of parts` left 38% of held-out architectures
outside +-10% (docs/latency.md). On a CPU at batch 1, a whole network is measured in well under a
second, so a regressor can learn that gap from a few hundred end-to-end measurements (BRP-NAS,
HELP). The features, and why each:

- `table_sum`: the table's sum of parts, the physics of the thing; most of the signal.
- `stem_head`, `stage0..`: the same sum per stage: early stages move large activations, late ones
  large weights, and the cache penalty differs between them.
- `layers`, `ops`: eager PyTorch at batch 1 is dispatch-bound; `ops` counts the operators a
  forward pass dispatches (convolutions, batch norms, activations, SE, residual adds).
- `depthwise`, `se`, `residual`: memory-bound operators a MACs count does not price.
- `macs`, `params`, `activations` (millions, at the predicted resolution): compute, weights to
  read, and memory traffic (Dollar et al. 2021: runtime follows activations more than FLOPs).

Regressors (`KINDS`): `linear`, a ridge regression on the features weighted by 1/latency^2 (a
relative error, which +-10% is); `boosted`, gradient-boosted trees on log(measured / table_sum),
the correction of the table rather than the latency itself; `table`, the old `overhead + scale x
sum` refit (the baseline every learned model must beat); `auto`, the better of linear and
boosted by inner k-fold (nested inside the outer folds, so its reported figures stay honest).

A predictor remembers the space (`MnasNetSpace.fingerprint`), the runtime, the thread count and
the machine it was measured on, and embeds the table it was fitted with; `check` refuses it for
another space, runtime or thread count.

It also keeps `REFERENCES` of the architectures it was fitted on, with their measured latency
(`choose_references`): the same machine runs a median 1.35x slower one afternoon than that
morning (400 architectures measured twice, docs/latency.md), so a search re-measures these
before it trusts the predictor and says (and by default corrects, `drift`) how far the machine
moved since.
"""

from __future__ import annotations

import math
import pickle
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.arch import Arch
from search_spaces.latency import LatencyTable, TableError, bn_as_built, parts
from search_spaces.plan import layer_plan

FORMAT = "effnas-latency-predictor/1"
KINDS = ("auto", "linear", "boosted", "table")
WITHIN = 0.10  # the goal: predictions within +-10% of the measured latency
# Reference architectures a predictor keeps for the drift check. benchmarks/latency_drift.py on
# 400 architectures measured a morning and an afternoon apart: rescaling the morning's predictions
# by the median ratio of 1 / 5 / 10 references re-measured put 56% (13-65% over 200 draws) / 63%
# (45-66%) / 64% (56-66%) within +-10% of the afternoon's latency (6% as they were). Five buy
# nearly all of it for ~10 s of measuring at a search's start; more buy ~1 point.
REFERENCES = 5


class PredictorError(ValueError):
    """A predictor file that cannot serve this request (missing, corrupt, another space,
    runtime or thread count)."""


# -- features -------------------------------------------------------------------------------------
def layer_ops(op: str, expand: int, se: float, residual: bool) -> int:
    """Operators one layer dispatches in eager PyTorch: conv+BN+act per conv (the projection has
    no act), 5 for SE (pool, reduce, act, expand, sigmoid) and its multiply, 1 residual add."""
    if op == "conv":
        n = 3
    elif op == "bneck":
        n = 8  # 1x1, 3x3, 1x1 with BN each, acts after the first two
    else:  # mbconv, ds, dsa: [expand], depthwise, [se], project
        n = (3 if expand > 1 else 0) + 3 + 2 + (1 if op == "dsa" else 0)
    return n + (6 if se else 0) + (1 if residual else 0)


def feature_names(stages: int) -> list[str]:
    names = ["table_sum", "stem_head", *(f"stage{i}" for i in range(stages))]
    return [*names, "layers", "ops", "depthwise", "se", "residual", "macs", "params", "activations"]


def features(arch: Arch, table: LatencyTable, stages: int, **kw: Any) -> list[float]:
    """The feature vector of `arch` (`feature_names(stages)` order); `kw` are `parts`' keywords
    (resolution, num_classes, stem_stride). A stage past `stages` counts into the last one."""
    from search_spaces.cost import count

    arch_parts = parts(arch, **kw)
    lacking = table.missing(arch_parts)
    if lacking:
        raise TableError(
            f"the latency table lacks {len(lacking)} of this architecture's parts (first: {lacking[0]})"
        )
    _, layers, _ = layer_plan(arch)
    per_stage = [0.0] * stages
    for layer, part in zip(layers, arch_parts[1:-1]):
        per_stage[min(layer.stage, stages - 1)] += table.ms[part.key]
    residual = [bool(p.get("residual")) for p in arch_parts[1:-1]]
    ops = sum(layer_ops(la.op, la.expand, la.se, r) for la, r in zip(layers, residual))
    cost = count(
        arch,
        resolution=kw.get("resolution"),
        num_classes=kw.get("num_classes", 1000),
        stem_stride=kw.get("stem_stride"),
    )
    return [
        table.parts_sum(arch_parts),
        table.ms[arch_parts[0].key] + table.ms[arch_parts[-1].key],
        *per_stage,
        float(len(layers)),
        float(ops),  # the stem's and head's are the same in every architecture
        float(sum(la.op not in ("conv", "bneck") for la in layers)),
        float(sum(bool(la.se) for la in layers)),
        float(sum(residual)),
        cost.macs / 1e6,
        cost.params / 1e6,
        cost.activations / 1e6,
    ]


# -- the regressors -------------------------------------------------------------------------------
class Linear:
    """Ridge on standardized features, each architecture weighted 1/latency^2: least squares on
    the relative error."""

    def fit(self, x: Any, y: Any) -> Linear:
        import numpy as np
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
        self.model.fit(x, y, ridgecv__sample_weight=1.0 / np.square(y))
        return self

    def predict(self, x: Any) -> Any:
        return self.model.predict(x)


class Boosted:
    """Gradient-boosted trees on log(measured / table_sum): trees learn the table's correction,
    which varies far less than the latency itself; Huber loss for the odd disturbed run."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: Any, y: Any) -> Boosted:
        import numpy as np
        from sklearn.ensemble import GradientBoostingRegressor

        self.model = GradientBoostingRegressor(
            loss="huber",
            n_estimators=300,
            learning_rate=0.05,
            max_depth=3,
            subsample=0.8,
            random_state=self.seed,
        )
        self.model.fit(x, np.log(y / x[:, 0]))
        return self

    def predict(self, x: Any) -> Any:
        import numpy as np

        return x[:, 0] * np.exp(self.model.predict(x))


class TableFit:
    """The old predictor: `overhead + scale x table_sum`, Huber regression (one disturbed run
    does not move it)."""

    def fit(self, x: Any, y: Any) -> TableFit:
        from sklearn.linear_model import HuberRegressor

        self.model = HuberRegressor(alpha=0.0, max_iter=1000).fit(x[:, :1], y)
        return self

    def predict(self, x: Any) -> Any:
        return self.model.predict(x[:, :1])


def make(kind: str, seed: int = 0) -> Any:
    if kind == "linear":
        return Linear()
    if kind == "boosted":
        return Boosted(seed)
    if kind == "table":
        return TableFit()
    raise PredictorError(f"unknown predictor model {kind!r}; expected one of {', '.join(KINDS)}")


# -- judging a predictor --------------------------------------------------------------------------
def agreement(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """How well `predicted` matches `measured`: the share within +-10%, Spearman's rank
    correlation, the median and largest relative error, the mean signed one (bias)."""
    from scipy.stats import spearmanr

    errors = [p / m - 1 for m, p in zip(measured, predicted)]
    ab = sorted(abs(e) for e in errors)
    ranked = len(errors) > 2 and len(set(measured)) > 1 and len(set(predicted)) > 1
    rho = float(spearmanr(measured, predicted).statistic) if ranked else math.nan  # undefined if constant
    return {
        "n": len(errors),
        "within_10pct": round(sum(e <= WITHIN + 1e-12 for e in ab) / len(ab), 4),
        "spearman": round(rho, 4),
        "median_abs_error": round(statistics.median(ab), 4),
        "max_abs_error": round(ab[-1], 4),
        "mean_signed_error": round(sum(errors) / len(errors), 4),
    }


def _score(measured: Any, predicted: Any) -> tuple[float, float]:
    a = agreement(list(measured), list(predicted))
    return a["within_10pct"], a["spearman"]


def _choose(x: Any, y: Any, folds: int, seed: int) -> str:
    """`auto`'s pick on (x, y): the better of linear and boosted by k-fold within-10%, then
    Spearman."""
    scores = {kind: _score(y, out_of_fold(kind, x, y, folds, seed)) for kind in ("linear", "boosted")}
    return max(scores, key=lambda k: scores[k])


def out_of_fold(kind: str, x: Any, y: Any, folds: int, seed: int) -> Any:
    """Each architecture's prediction by a model fitted on the other folds (k-fold, shuffled
    with `seed`); `auto` chooses inside each training part (nested), never on the held-out one."""
    import numpy as np
    from sklearn.model_selection import KFold

    pred = np.zeros_like(y)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        chosen = _choose(x[train], y[train], min(3, folds), seed) if kind == "auto" else kind
        pred[test] = make(chosen, seed).fit(x[train], y[train]).predict(x[test])
    return pred


# -- the drift check ------------------------------------------------------------------------------
def choose_references(rows: Sequence[dict[str, Any]], k: int = REFERENCES) -> list[dict[str, Any]]:
    """`k` of a fit's measured rows (measurements.csv: `choices`, `arch`, `measured_ms`, `cv`,
    `flagged`) to re-measure later: spread over the latency range (at the quantiles (i + 0.5) / k
    of the measured latencies) so a drift that hits small and large networks differently still
    shows, and taken from the steady ones (not flagged over the fit's CV threshold; the
    steadiest rows when fewer than `k` are). The rule reads the measurements only, never a
    prediction."""
    usable = [r for r in rows if r.get("measured_ms") is not None and r.get("choices")]

    def cv(r: dict[str, Any]) -> float:
        return math.inf if r.get("cv") is None else float(r["cv"])

    steady = [r for r in usable if str(r.get("flagged")).lower() not in ("true", "1")]
    pool = steady if len(steady) >= k else sorted(usable, key=cv)[:k]
    pool = sorted(pool, key=lambda r: float(r["measured_ms"]))
    picked = sorted({min(len(pool) - 1, int((i + 0.5) / k * len(pool))) for i in range(k)}) if pool else []
    return [
        {
            "arch": str(pool[i].get("arch") or ""),
            "choices": str(pool[i]["choices"]),
            "measured_ms": float(pool[i]["measured_ms"]),
            "cv": None if pool[i].get("cv") is None else float(pool[i]["cv"]),
        }
        for i in picked
    ]


def drift(then: Sequence[float], now: Sequence[float]) -> dict[str, Any]:
    """How far the machine moved between two measurements of the same references: the median
    ratio now / then (the factor a search scales its predictions by), and the smallest and
    largest ratio (how far one factor describes it)."""
    if not then or len(then) != len(now):
        raise ValueError(f"drift needs as many measurements now as then, got {len(then)} and {len(now)}")
    ratios = [float(b) / float(a) for a, b in zip(then, now)]
    return {
        "factor": round(statistics.median(ratios), 4),
        "low": round(min(ratios), 4),
        "high": round(max(ratios), 4),
        "references": len(ratios),
    }


def combine_passes(passes: Sequence[Sequence[float]]) -> list[float]:
    """One latency per architecture from `passes` whole sweeps over the same architectures (pass
    j's latency of architecture i is `passes[j][i]`): each pass divided by its own median (the
    speed the machine had over that sweep), the median over passes per architecture, in the first
    pass's milliseconds. Why: on this VM the same 400 architectures measured three times hours
    apart agreed within +-10% for only 64-81% after one factor per sweep (docs/latency.md), and
    the k-fold errors of predictors fitted on each sweep hardly correlated (0.03-0.33): most of
    what a predictor misses there is the sweep's noise, which a median over sweeps averages out
    (84% within +-10% fitted on one sweep, 89% on the median of three; benchmarks/latency_passes.py)."""
    if not passes or any(len(p) != len(passes[0]) for p in passes) or not passes[0]:
        raise ValueError(
            f"combine_passes needs passes of equal, non-zero length, got {[len(p) for p in passes]}"
        )
    level = [statistics.median(p) for p in passes]
    return [
        statistics.median(float(p[i]) / m for p, m in zip(passes, level)) * level[0]
        for i in range(len(passes[0]))
    ]


def fit_rows(path: Path) -> list[dict[str, Any]]:
    """The measurements.csv of the run that fitted the predictor at `path` ([] when not there):
    where a predictor saved before predictors kept references and their names finds them."""
    import csv

    beside = path.parent / "measurements.csv"
    if not beside.is_file():
        return []
    with beside.open(newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


# -- the predictor ---------------------------------------------------------------------------------
def predictor_file(path: str | Path) -> Path:
    """A predictor file, or the `latency_predictor.pkl` inside a `--fit-predictor` run directory."""
    path = Path(path)
    return path / "latency_predictor.pkl" if path.is_dir() else path


@dataclass
class LatencyPredictor:
    """A fitted regressor, the table its features read, and what it was measured under."""

    model: Any
    kind: str  # the regressor actually fitted (linear | boosted | table)
    table: LatencyTable
    stages: int
    space_fingerprint: str
    space_description: str
    runtime: str
    threads: int
    batch: int
    kw: dict[str, Any]  # parts' keywords the architectures were measured with (classes, stride)
    machine: dict[str, Any]
    rows: int
    cv: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)  # how each was measured (training.timing.Setup)
    references: list[dict[str, Any]] = field(default_factory=list)  # choose_references' rows
    trained_on: list[str] = field(default_factory=list)  # the fitted architectures' names
    # fitted beside an anchor (`anchor=true`): its name, Arch YAML, median latency over the sweep
    # (`reference_ms`: the speed every prediction is at) and that median's CV; {} when not
    anchor: dict[str, Any] = field(default_factory=dict)

    def predict(self, arch: Arch, resolution: int | None = None) -> float:
        """Predicted latency of `arch` in milliseconds, at `resolution` (default: its own)."""
        import numpy as np

        x = np.asarray([features(arch, self.table, self.stages, **self.kw, resolution=resolution)])
        return float(self.model.predict(x)[0])

    def describe(self) -> str:
        return (
            f"{self.kind} latency predictor ({self.runtime}, {self.threads} thread(s), fitted on "
            f"{self.rows} architectures measured on {self.machine.get('cpu') or '?'}"
            + (
                f"; milliseconds at the speed that ran {self.anchor['arch']} in {self.anchor['reference_ms']:.2f} ms"
                if self.anchor
                else ""
            )
            + ")"
        )

    def check(
        self,
        *,
        space: Any = None,
        runtime: str | None = None,
        threads: int | None = None,
        where: str = "the latency predictor",
    ) -> None:
        """Refuse it for another space, runtime or thread count than it was measured on, or
        when it was measured with BN statistics as built (`bn_as_built`)."""
        if space is not None and space.fingerprint() != self.space_fingerprint:
            raise PredictorError(
                f"{where} was fitted on another search space ({self.space_description}, fingerprint "
                f"{self.space_fingerprint}); this one is {space.fingerprint()}: fit one on this space "
                "(effnas latency --fit-predictor N)"
            )
        if runtime is not None and runtime != self.runtime:
            raise PredictorError(
                f"{where} was measured on {self.runtime}, not {runtime}: fit one with "
                f"`effnas latency --fit-predictor N --runtime {runtime}`"
            )
        if threads is not None and int(threads) != self.threads:
            raise PredictorError(
                f"{where} was measured with {self.threads} thread(s), not {threads}: fit one with "
                f"`effnas latency --fit-predictor N --threads {threads}`"
            )
        stale = bn_as_built(self.setup, where, "effnas latency --fit-predictor N")
        if stale is not None:
            raise PredictorError(stale)

    # -- file ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from foundation.runfiles import atomic_write

        state = {k: v for k, v in self.__dict__.items() if k != "table"}
        state["table"] = self.table.to_json()
        atomic_write(path, pickle.dumps({"format": FORMAT, **state}))

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        """A predictor file, or a `--fit-predictor` run directory holding one. Pickle: load only
        files you (or a run you trust) wrote."""
        path = predictor_file(path)
        if not path.is_file():
            raise PredictorError(
                f"latency predictor {path} not found; fit one with `effnas latency --fit-predictor N`"
            )
        try:
            state = pickle.loads(path.read_bytes())
        except Exception as exc:  # a truncated or foreign pickle fails in many ways
            raise PredictorError(
                f"{path} is not a readable latency predictor ({type(exc).__name__})"
            ) from None
        if not isinstance(state, dict) or state.pop("format", None) != FORMAT:
            raise PredictorError(f"{path} is not an effnas latency predictor ({FORMAT})")
        try:
            state["table"] = LatencyTable.from_mapping(_json(state["table"]), str(path))
            predictor = cls(**state)
        except (TableError, TypeError, KeyError, ValueError) as exc:
            raise PredictorError(f"{path} is not a whole latency predictor: {exc}") from None
        if not predictor.references or not predictor.trained_on:  # saved before predictors kept them
            try:
                rows = fit_rows(path)
                predictor.references = predictor.references or choose_references(rows)
                predictor.trained_on = predictor.trained_on or [str(r["arch"]) for r in rows]
            except (OSError, ValueError, KeyError) as exc:
                raise PredictorError(
                    f"{path.parent / 'measurements.csv'} (the architectures it was fitted on) is not readable: {exc}"
                ) from None
        return predictor


def _json(text: Any) -> Any:
    import json

    return json.loads(text)


def fit(
    x: Any, y: Any, *, kind: str, folds: int, seed: int
) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """(the regressor fitted on every row, the kind it is, its out-of-fold predictions and the
    agreement of every candidate on the same folds): `kind` and the table baseline always."""
    import numpy as np

    make(kind if kind != "auto" else "linear", seed)  # an unknown kind fails before any work
    if len(y) < 2 * folds:
        raise PredictorError(f"{len(y)} measured architectures are too few for {folds}-fold validation")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    oof = {k: out_of_fold(k, x, y, folds, seed) for k in dict.fromkeys((kind, "table"))}
    chosen = _choose(x, y, folds, seed) if kind == "auto" else kind
    model = make(chosen, seed).fit(x, y)
    return model, chosen, oof, {k: agreement(list(y), list(p)) for k, p in oof.items()}
