"""Regularized (aging) evolution, Real et al. 2019 (AmoebaNet), on choice vectors.

The population is the `population` most recently finished trials. Until it is full, proposals
are uniform samples; after that, each proposal draws `sample_size` members at random, takes the
one with the best reward and changes exactly one of its decisions. The oldest member dies when a
new one arrives, whatever its reward (the "aging" that regularizes against lucky evaluations).
Failed and rejected trials never join the population.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from nas.samplers.base import Ask, Outcome, Sampler
from search_spaces.mnasnet import Choices, MnasNetSpace


class EvolutionSampler(Sampler):
    name = "evolution"

    def __init__(
        self, space: MnasNetSpace, seed: int = 0, population: int = 16, sample_size: int = 4, **_: Any
    ) -> None:
        super().__init__(space, seed)
        if population < 2 or not 1 <= sample_size <= population:
            raise ValueError(
                f"evolution needs population >= 2 and 1 <= sample_size <= population, "
                f"got population={population} sample_size={sample_size}"
            )
        self.sample_size = int(sample_size)
        self.population: deque[tuple[Choices, float]] = deque(maxlen=int(population))

    def ask(self) -> Ask:
        if len(self.population) < (self.population.maxlen or 0):
            return Ask(self._key(), self.space.sample(self.rng))
        contenders = self.rng.sample(list(self.population), self.sample_size)
        parent = max(contenders, key=lambda member: member[1])[0]
        return Ask(self._key(), self.space.mutate(parent, self.rng))

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        if outcome.status in ("ok", "stopped"):
            self.population.append((tuple(ask.choices), float(outcome.reward)))  # type: ignore[arg-type]
