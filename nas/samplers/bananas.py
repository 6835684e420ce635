"""A predictor-guided sampler in the manner of BANANAS (White, Neiswanger and Savani 2021):
an ensemble predicts the reward of candidate architectures, an acquisition function picks which
to train.

After `n_init` uniform samples, every `batch` asks the sampler refits its predictor on every
trained outcome, makes `candidates` proposals by mutating the best `parents` architectures told
so far in one or two decisions (BANANAS's "mutation" acquisition optimizer; a tenth are uniform
samples, so the search can leave a basin), scores them by independent Thompson sampling
(one draw from N(mean, std) of the ensemble per candidate, BANANAS's ITS) and queues the best
`batch`. Differences from the paper, and why: the ensemble is a random forest's trees (mean and
spread of per-tree predictions, as SMAC does) instead of five MLPs on a path encoding: on a few
hundred rows trees fit in a fraction of a second on one CPU core, and a factorized space needs
no path encoding; the features are the decisions one-hot plus the exactly known cost (log MACs,
params, activations: `nas.surrogate.features`). Rejected samples (over the MACs filter) never
train the predictor; candidates at or above the smallest rejected MACs are not proposed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.samplers.base import Ask, Outcome, Sampler
from search_spaces.mnasnet import Choices, MnasNetSpace


class BananasSampler(Sampler):
    name = "bananas"

    def __init__(
        self,
        space: MnasNetSpace,
        seed: int = 0,
        n_init: int = 10,
        batch: int = 5,
        candidates: int = 200,
        parents: int = 10,
        trees: int = 100,
        **_: Any,
    ) -> None:
        super().__init__(space, seed)
        if int(n_init) < 2 or int(batch) < 1 or int(candidates) < int(batch) or int(parents) < 1:
            raise ValueError(
                f"bananas needs n_init >= 2, batch >= 1, candidates >= batch and parents >= 1, got "
                f"n_init={n_init} batch={batch} candidates={candidates} parents={parents}"
            )
        self.n_init, self.batch, self.n_candidates = int(n_init), int(batch), int(candidates)
        self.n_parents, self.trees = int(parents), int(trees)
        self.trained: list[tuple[Choices, float]] = []
        self.seen: set[Choices] = set()
        self.reject_macs: float = float("inf")  # the smallest MACs the filter rejected
        self.queue: list[Choices] = []
        self.fits = 0
        self.told = 0

    def ask(self) -> Ask:
        if self.told >= self.n_init and len(self.trained) >= 2 and not self.queue:
            self.queue = self._select()
        while self.queue:
            choices = self.queue.pop(0)
            if choices not in self.seen:
                self.seen.add(choices)
                return Ask(self._key(), choices)
        return self._fresh(self.seen)

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        choices = tuple(ask.choices)
        self.seen.add(choices)
        self.told += 1
        if outcome.status == "rejected":
            self.reject_macs = min(self.reject_macs, float(outcome.macs))
        elif outcome.status in ("ok", "stopped"):
            self.trained.append((choices, float(outcome.reward)))  # type: ignore[arg-type]

    # -- the acquisition ---------------------------------------------------------------------
    def _select(self) -> list[Choices]:
        from sklearn.ensemble import RandomForestRegressor

        from nas.surrogate import features

        x = features(self.space, [c for c, _ in self.trained])
        y = np.array([v for _, v in self.trained])
        seed = self.rng.randrange(2**31)
        forest = RandomForestRegressor(
            n_estimators=self.trees, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
        forest.fit(x, y)
        self.fits += 1
        pool = self._candidates()
        if not pool:
            return []
        fx = features(self.space, pool)
        macs = np.exp(fx[:, -3])
        per_tree = np.stack([tree.predict(fx) for tree in forest.estimators_])
        mean, std = per_tree.mean(axis=0), per_tree.std(axis=0)
        draw = np.random.default_rng(seed).normal(mean, std)  # independent Thompson sampling
        draw[macs >= self.reject_macs] = -np.inf
        order = np.argsort(-draw, kind="stable")
        return [pool[i] for i in order[: self.batch] if np.isfinite(draw[i])]

    def _candidates(self) -> list[Choices]:
        parents = [c for c, _ in sorted(self.trained, key=lambda t: -t[1])[: self.n_parents]]
        pool: set[Choices] = set()
        tries = 0
        while len(pool) < self.n_candidates and tries < 20 * self.n_candidates:
            tries += 1
            if self.rng.random() < 0.1:
                child = self.space.sample(self.rng)
            else:
                child = self.space.mutate(self.rng.choice(parents), self.rng)
                if self.rng.random() < 0.5:
                    child = self.space.mutate(child, self.rng)
            if child not in self.seen:
                pool.add(child)
        return sorted(pool)  # a set's order is not reproducible across processes
