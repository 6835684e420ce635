"""Random search: every decision drawn uniformly and independently (the baseline to beat)."""

from __future__ import annotations

from nas.samplers.base import Ask, Outcome, Sampler


class RandomSampler(Sampler):
    name = "random"

    def ask(self) -> Ask:
        return Ask(self._key(), self.space.sample(self.rng))

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        pass  # nothing to learn
