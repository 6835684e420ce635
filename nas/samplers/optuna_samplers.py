"""Optuna-backed samplers: TPE on the reward, NSGA-II on (accuracy up, MACs down).

Each decision of the space is one `CategoricalDistribution` over its choice *indices*, so Optuna
sees the same vector every other sampler does. The study lives in an Optuna storage (the run's
journal file by default; any storage URL works) and is owned by this one process:
the driver asks and tells, Ray workers only train (DESIGN.md: SQLite locks under many writers).

What Optuna is told: TPE gets the reward; NSGA-II gets (accuracy, MACs) and the baseline is then
the best reward on its Pareto set. A rejected sample is told accuracy 0 (reward 0) so both learn
to avoid the region; a failed one is marked FAIL and ignored by both.
"""

from __future__ import annotations

import warnings
from typing import Any

from nas.samplers.base import Ask, History, Outcome, Sampler
from search_spaces.mnasnet import MnasNetSpace


class OptunaSampler(Sampler):
    """Common part: the study, the distributions, ask/tell through `study.ask`/`study.tell`."""

    directions: tuple[str, ...] = ("maximize",)

    def __init__(
        self,
        space: MnasNetSpace,
        seed: int = 0,
        storage: Any = None,  # a URL or an opened Optuna storage (the run's journal)
        study_name: str = "effnas-search",
        **options: Any,
    ) -> None:
        import optuna

        super().__init__(space, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.options = options
        self.distributions = {
            d.name: optuna.distributions.CategoricalDistribution(list(range(len(d.values))))
            for d in space.dims
        }
        self.names = [d.name for d in space.dims]
        self._pending: dict[int, Any] = {}  # trial number -> optuna.Trial, asked and not told
        self.study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=list(self.directions),
            sampler=self._make_sampler(self.seed),
            load_if_exists=True,
        )
        self.study.set_user_attr("space", space.describe())

    def _make_sampler(self, seed: int) -> Any:
        raise NotImplementedError

    def _values(self, outcome: Outcome) -> list[float]:
        raise NotImplementedError

    def ask(self) -> Ask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning etc. from multivariate options
            trial = self.study.ask(self.distributions)
        self._pending[trial.number] = trial
        return Ask(trial.number, tuple(int(trial.params[n]) for n in self.names))

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        trial = self._pending.pop(ask.key, None)
        if trial is not None:  # (a trial repaired by `restore` has no live handle)
            trial.set_user_attr("status", outcome.status)
            trial.set_user_attr("macs", int(outcome.macs))
        if outcome.status == "failed":
            self.study.tell(ask.key, state=TrialState.FAIL, skip_if_finished=True)
        else:
            self.study.tell(ask.key, self._values(outcome), skip_if_finished=True)

    def restore(self, history: History) -> None:
        """Make the study agree with the finished history: tell what finished but was not told
        (killed between the record and the tell), FAIL what was running when the run died, and
        add trials the storage lacks (a fresh storage URL); then reseed the sampler."""
        import optuna
        from optuna.trial import TrialState

        by_key = {ask.key: (ask, outcome) for ask, outcome in history}
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for number, trial in trials.items():
            if trial.state != TrialState.RUNNING:
                continue
            if number in by_key:
                self.tell(*by_key[number])
            else:
                self.study.tell(number, state=TrialState.FAIL)
        for key, (ask, outcome) in by_key.items():
            if key in trials:
                continue
            failed = outcome.status == "failed"
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=dict(zip(self.names, ask.choices)),
                    distributions=self.distributions,
                    values=None if failed else self._values(outcome),
                    state=TrialState.FAIL if failed else TrialState.COMPLETE,
                    user_attrs={"status": outcome.status, "macs": int(outcome.macs), "effnas_key": key},
                )
            )
        self.study.sampler = self._make_sampler(self.seed + len(history))


class TPESampler(OptunaSampler):
    """Tree-structured Parzen estimator on the reward (Bergstra et al. 2011), multivariate."""

    name = "tpe"

    def _make_sampler(self, seed: int) -> Any:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.samplers.TPESampler(
                n_startup_trials=int(self.options.get("n_startup", 4)),
                seed=seed,
                multivariate=True,
                constant_liar=True,  # pending trials count as bad guesses: parallel asks spread
            )

    def _values(self, outcome: Outcome) -> list[float]:
        return [float(outcome.value)]  # type: ignore[arg-type]


class NSGA2Sampler(OptunaSampler):
    """NSGA-II (Deb et al. 2002) on two objectives: proxy accuracy up, MACs down."""

    name = "nsga2"
    directions = ("maximize", "minimize")

    def _make_sampler(self, seed: int) -> Any:
        import optuna

        return optuna.samplers.NSGAIISampler(
            population_size=int(self.options.get("population", 16)), seed=seed
        )

    def _values(self, outcome: Outcome) -> list[float]:
        accuracy = 0.0 if outcome.status == "rejected" else float(outcome.accuracy)  # type: ignore[arg-type]
        return [accuracy, outcome.objective_cost]
