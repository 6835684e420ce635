"""Local search (White, Nolen, Nguyen and Savani 2021, "Exploring the loss landscape in neural
architecture search"): hill climbing over one-decision neighbours, restarted at random.

After `n_init` uniform samples, the incumbent is the best architecture told so far. Its
neighbours (every choice vector that differs in exactly one decision) are proposed in a random
order, one per ask; as soon as a neighbour beats the incumbent it becomes the incumbent and its
own neighbours are queued. When every neighbour of the incumbent has been told and none was
better, the incumbent is a local optimum: the climb restarts from a uniform sample. On
NAS-Bench-101/201 and DARTS this simple scheme matches or beats the model-based samplers at a
few hundred queries (ibid., Table 1); it is the cheapest sampler here that exploits structure.
Trials in flight are handled by proposing the next queued neighbour; a failed or rejected
neighbour counts as "not better".
"""

from __future__ import annotations

from typing import Any

from nas.samplers.base import Ask, Outcome, Sampler
from search_spaces.mnasnet import Choices, MnasNetSpace


class LocalSearchSampler(Sampler):
    name = "local"

    def __init__(self, space: MnasNetSpace, seed: int = 0, n_init: int = 10, **_: Any) -> None:
        super().__init__(space, seed)
        if int(n_init) < 1:
            raise ValueError(f"local search needs n_init >= 1, got n_init={n_init}")
        self.n_init = int(n_init)
        self.told = 0
        self.seen: set[Choices] = set()
        self.incumbent: tuple[Choices, float] | None = None  # the point being climbed from
        self.queue: list[Choices] = []  # its untried neighbours, next last
        self.waiting: set[Choices] = set()  # its neighbours proposed and not yet told

    def _neighbours(self, choices: Choices) -> list[Choices]:
        out = []
        for i, n in enumerate(self.space.sizes):
            for v in range(n):
                if v != choices[i]:
                    out.append((*choices[:i], v, *choices[i + 1 :]))
        self.rng.shuffle(out)
        return out

    def _climb_from(self, choices: Choices, value: float) -> None:
        self.incumbent = (choices, value)
        self.queue = [c for c in self._neighbours(choices) if c not in self.seen]
        self.waiting = set()

    def ask(self) -> Ask:
        if self.incumbent is not None and self.told >= self.n_init:
            while self.queue:
                choices = self.queue.pop()
                if choices not in self.seen:
                    self.seen.add(choices)
                    self.waiting.add(choices)
                    return Ask(self._key(), choices)
            if not self.waiting:  # a local optimum: every neighbour told, none better
                self.incumbent = None
        return self._fresh(self.seen)

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        choices = tuple(ask.choices)
        self.seen.add(choices)
        self.told += 1
        self.waiting.discard(choices)
        value = outcome.value if outcome.status in ("ok", "stopped") else None
        if self.told <= self.n_init:  # the uniform start: remember the best, climb from it at the end
            if value is not None and (self.incumbent is None or value > self.incumbent[1]):
                self.incumbent = (choices, value)
            if self.told == self.n_init and self.incumbent is not None:
                self._climb_from(*self.incumbent)
            return
        if value is not None and (self.incumbent is None or value > self.incumbent[1]):
            self._climb_from(choices, value)  # a better neighbour, or the first point after a restart
