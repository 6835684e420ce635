"""A surrogate benchmark of the search space: proxy accuracy predicted from a choice vector.

Fitted by `effnas surrogate fit` on architectures that were really trained (the `trials.csv` of
searches, or a collected table such as `benchmarks/data/cifar10_mnasnet_proxy.csv`), so that
`effnas search evaluator=surrogate` runs hundreds of trials in seconds and samplers can be
compared over many seeds (NAS-Bench-301's idea, Zela et al. 2022, on effnas's own space).

Features: one-hot of every decision (stage x field) plus the analytic cost of the decoded
architecture (log MACs, log params, log activations at the deployment resolution): the cost model
is exact and free, so the regressor spends its capacity on what the cost does not explain.
The regressors are scikit-learn's; `auto` picks the one with the best k-fold Kendall tau. A
surrogate remembers the space it was fitted on (`MnasNetSpace.fingerprint`) and refuses another.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.mnasnet import Choices, MnasNetSpace

MODELS = ("gbr", "rf", "ridge", "knn")
FORMAT = "effnas-surrogate-1"


class SurrogateError(ValueError):
    """A surrogate file that cannot serve this request (missing, corrupt, another space)."""


def features(space: MnasNetSpace, rows: Sequence[Choices]) -> np.ndarray:
    """One row per choice vector: the decisions one-hot, then log MACs, params, activations."""
    from search_spaces.cost import count

    width = sum(space.sizes)
    out = np.zeros((len(rows), width + 3), dtype=np.float64)
    offsets = np.cumsum((0, *space.sizes[:-1]))
    for i, choices in enumerate(rows):
        space.check(choices)
        out[i, offsets + np.asarray(choices)] = 1.0
        cost = count(space.decode(choices))
        out[i, width:] = (math.log(cost.macs), math.log(cost.params), math.log(cost.activations))
    return out


def make_model(kind: str, seed: int, rows: int = 1000) -> Any:
    """An unfitted scikit-learn regressor; small-data settings (a few hundred `rows`)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbr":
        return GradientBoostingRegressor(
            n_estimators=300, learning_rate=0.03, max_depth=3, subsample=0.8, random_state=seed
        )
    if kind == "rf":
        return RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
    if kind == "knn":
        return make_pipeline(
            StandardScaler(), KNeighborsRegressor(n_neighbors=min(7, rows), weights="distance")
        )
    raise SurrogateError(f"unknown surrogate model {kind!r}; expected auto or one of {', '.join(MODELS)}")


@dataclass
class CrossValidation:
    """Held-out rank agreement of one regressor: per-fold means and the pooled out-of-fold figure."""

    model: str
    folds: int
    kendall: float  # mean over folds
    kendall_std: float
    spearman: float
    spearman_std: float
    pooled_kendall: float  # all out-of-fold predictions against the measured accuracies
    pooled_spearman: float
    rmse: float
    predictions: list[float] = field(repr=False, default_factory=list)  # out of fold, row order

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "predictions"}


def cross_validate(kind: str, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> CrossValidation:
    from scipy.stats import kendalltau, spearmanr
    from sklearn.model_selection import KFold

    if len(y) < 2 * folds:
        raise SurrogateError(f"{len(y)} trained architectures are too few for {folds}-fold validation")
    pred = np.zeros_like(y)
    taus, rhos = [], []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        model = make_model(kind, seed, len(train)).fit(x[train], y[train])
        pred[test] = model.predict(x[test])
        taus.append(kendalltau(pred[test], y[test]).statistic)
        rhos.append(spearmanr(pred[test], y[test]).statistic)
    return CrossValidation(
        model=kind,
        folds=folds,
        kendall=float(np.mean(taus)),
        kendall_std=float(np.std(taus)),
        spearman=float(np.mean(rhos)),
        spearman_std=float(np.std(rhos)),
        pooled_kendall=float(kendalltau(pred, y).statistic),
        pooled_spearman=float(spearmanr(pred, y).statistic),
        rmse=float(np.sqrt(np.mean((pred - y) ** 2))),
        predictions=[float(p) for p in pred],
    )


@dataclass
class Surrogate:
    """A fitted regressor and what it was fitted on; `predict` takes choice vectors."""

    model: Any
    kind: str
    space_fingerprint: str
    space_description: str
    rows: int
    accuracy_range: tuple[float, float]
    cv: dict[str, Any]
    sources: list[str]

    def check_space(self, space: MnasNetSpace, path: str | Path = "the surrogate") -> None:
        if space.fingerprint() != self.space_fingerprint:
            raise SurrogateError(
                f"{path} was fitted on another search space ({self.space_description}, fingerprint "
                f"{self.space_fingerprint}); this run's space is {space.fingerprint()}: refit it on "
                "trials of this space (effnas surrogate fit)"
            )

    def predict(self, space: MnasNetSpace, rows: Sequence[Choices]) -> np.ndarray:
        """Predicted proxy accuracy, clipped to the range seen in training (a tree model cannot
        extrapolate; a linear one must not be allowed to)."""
        low, high = self.accuracy_range
        return np.clip(self.model.predict(features(space, rows)), low, high)

    def save(self, path: str | Path) -> None:
        from foundation.runfiles import atomic_write

        atomic_write(path, pickle.dumps({"format": FORMAT, **self.__dict__}))

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        path = Path(path)
        if path.is_dir():
            path = path / "surrogate.pkl"
        if not path.is_file():
            raise SurrogateError(
                f"surrogate file {path} not found; fit one with `effnas surrogate fit RUN_DIR_OR_CSV...`"
            )
        try:
            state = pickle.loads(path.read_bytes())
        except Exception as exc:  # a truncated or foreign pickle fails in many ways
            raise SurrogateError(f"{path} is not a readable surrogate file ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.pop("format", None) != FORMAT:
            raise SurrogateError(f"{path} is not an effnas surrogate ({FORMAT}) file")
        return cls(**state)


def fit(
    space: MnasNetSpace,
    choices: Sequence[Choices],
    accuracy: Sequence[float],
    *,
    model: str = "auto",
    folds: int = 5,
    seed: int = 0,
    sources: Sequence[str] = (),
) -> tuple[Surrogate, list[CrossValidation]]:
    """Cross-validate the candidate regressor(s), then refit the chosen one on every row."""
    kinds = MODELS if model == "auto" else (model,)
    for kind in kinds:
        make_model(kind, seed)  # unknown names fail before any work
    x = features(space, choices)
    y = np.asarray(accuracy, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise SurrogateError("accuracies must be finite numbers")
    results = [cross_validate(kind, x, y, folds, seed) for kind in kinds]
    best = max(results, key=lambda r: r.kendall)
    fitted = make_model(best.model, seed, len(y)).fit(x, y)
    surrogate = Surrogate(
        model=fitted,
        kind=best.model,
        space_fingerprint=space.fingerprint(),
        space_description=space.describe(),
        rows=len(y),
        accuracy_range=(float(y.min()), float(y.max())),
        cv=best.to_dict(),
        sources=list(sources),
    )
    return surrogate, results


def executor(surrogate: Surrogate, space: MnasNetSpace, noise: float = 0.0, seed: int = 0) -> Any:
    """An `training.trials.Executor` that scores each proposed trial with the surrogate, in this
    process: the trial config's `choices` -> a result as the proxy trainer would report it."""
    import time

    from training.trials import run_inline

    def execute(source: Any, setup: Any, scheduling: Any) -> None:
        def evaluate(config: dict[str, Any]) -> dict[str, Any]:
            t0 = time.perf_counter()
            accuracy = float(surrogate.predict(space, [tuple(config["choices"])])[0])
            if noise:
                accuracy += float(np.random.default_rng([seed, int(config["trial"])]).normal(0.0, noise))
            result: dict[str, Any] = {
                "status": "ok",
                "accuracy": accuracy,
                "seconds": time.perf_counter() - t0,
                "epochs": None,
            }
            if setup.metrics is not None:
                result.update(setup.metrics(config, result))
            return result

        run_inline(source, evaluate)

    return execute
