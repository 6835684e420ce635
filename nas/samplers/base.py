"""The sampler interface every search strategy implements: ask for a choice vector, tell its outcome.

A sampler proposes points of a `search_spaces.mnasnet.MnasNetSpace` as choice-index vectors and
learns from the outcomes it is told. Asks and tells may interleave in any order (several trials
run at once), and a sampler can be rebuilt from the finished history of an interrupted run
(`restore`), continuing with a fresh random stream so that it does not propose the same points
again. The driver (`nas.driver`) is the only caller: one process owns every sampler.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from search_spaces.mnasnet import Choices, MnasNetSpace

STATUSES = ("ok", "stopped", "failed", "rejected")


@dataclass(frozen=True)
class Ask:
    """One proposal: `key` is the sampler's handle for it (the Optuna trial number, or a counter)."""

    key: int
    choices: Choices


@dataclass(frozen=True)
class Outcome:
    """What became of a proposal.

    status: ok (trained to the end), stopped (ended early by ASHA; accuracy of its last report),
    failed (training broke: no accuracy), rejected (over the MACs filter: never trained).
    """

    status: str
    accuracy: float | None
    macs: int
    reward: float | None
    cost: float | None = None  # the reward's cost when it is not MACs (predicted latency, ms)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}; expected one of {STATUSES}")
        if self.status in ("ok", "stopped") and (self.accuracy is None or self.reward is None):
            raise ValueError(f"a {self.status} outcome needs accuracy and reward")

    @property
    def objective_cost(self) -> float:
        """What the reward penalises: MACs, or the predicted latency of a latency target."""
        return float(self.macs if self.cost is None else self.cost)

    @property
    def value(self) -> float | None:
        """The reward a learner sees: the real one, 0 for a rejected sample, None for a failure."""
        if self.status == "failed":
            return None
        return 0.0 if self.status == "rejected" else float(self.reward)  # type: ignore[arg-type]


History = Sequence[tuple[Ask, Outcome]]


class Sampler(ABC):
    """Base class: a seeded `random.Random` stream and the ask/tell/restore protocol."""

    name: ClassVar[str]

    def __init__(self, space: MnasNetSpace, seed: int = 0, **options: Any) -> None:
        self.space = space
        self.seed = int(seed)
        self.rng = stream(self.seed, 0)
        self._next_key = 0

    def _key(self) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        return key

    def _fresh(self, seen: set[Choices]) -> Ask:
        """A uniform sample, added to `seen` (samplers that avoid proposing a point twice)."""
        choices = self.space.sample(self.rng)
        seen.add(choices)
        return Ask(self._key(), choices)

    @abstractmethod
    def ask(self) -> Ask:
        """A new proposal (never blocks; a sampler without enough data samples at random)."""

    @abstractmethod
    def tell(self, ask: Ask, outcome: Outcome) -> None:
        """Learn from the outcome of an earlier `ask` (any order, each ask told at most once)."""

    def restore(self, history: History) -> None:
        """Rebuild the state from the finished trials of an interrupted run, in the order they
        finished, then switch to a random stream that depends on how much was replayed."""
        for ask, outcome in history:
            self.tell(ask, outcome)
        self._next_key = max([a.key + 1 for a, _ in history], default=self._next_key)
        self.rng = stream(self.seed, len(history))

    def close(self) -> None:
        """Release resources (storage connections); pending asks may be abandoned."""
        return None


def stream(seed: int, offset: int) -> random.Random:
    """A reproducible random stream for (seed, number of trials already told)."""
    return random.Random(f"effnas-sampler-{seed}-{offset}")
