"""MnasNet's own method, small: a learned policy over the choices trained by policy gradient.

MnasNet §4.2 trains an RNN controller with PPO. Here the policy is factorized, one independent
softmax per decision (the choices of the factorized space are independent per stage anyway),
trained by REINFORCE (Williams 1992) with an exponential moving-average reward baseline:

    logits_d += lr * A * (onehot(choice_d) - softmax(logits_d))      for every decision d
    A = (R - baseline) / running std of (R - baseline),  clipped to [-3, 3]

The normalisation makes the step size independent of the reward's scale (rewards of a proxy
search differ in the second decimal). A rejected sample (over the MACs filter) gets a fixed
advantage of -1 and does not move the baseline; a failed one is ignored. An optional entropy
bonus keeps the policy from collapsing early.
"""

from __future__ import annotations

import math
from typing import Any

from nas.samplers.base import Ask, Outcome, Sampler
from search_spaces.mnasnet import MnasNetSpace

ADVANTAGE_CLIP = 3.0


class ControllerSampler(Sampler):
    name = "controller"

    def __init__(
        self,
        space: MnasNetSpace,
        seed: int = 0,
        lr: float = 0.1,
        baseline_decay: float = 0.9,
        entropy: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__(space, seed)
        if not lr > 0 or not 0.0 <= baseline_decay < 1.0 or entropy < 0:
            raise ValueError(
                f"controller needs lr > 0, 0 <= baseline_decay < 1 and entropy >= 0, "
                f"got lr={lr} baseline_decay={baseline_decay} entropy={entropy}"
            )
        self.lr, self.decay, self.entropy = float(lr), float(baseline_decay), float(entropy)
        self.logits: list[list[float]] = [[0.0] * n for n in space.sizes]
        self.baseline: float | None = None
        self.variance: float | None = None
        self.updates = 0

    def probabilities(self) -> list[list[float]]:
        return [_softmax(row) for row in self.logits]

    def ask(self) -> Ask:
        choices = tuple(self.rng.choices(range(len(p)), weights=p)[0] for p in self.probabilities())
        return Ask(self._key(), choices)

    def tell(self, ask: Ask, outcome: Outcome) -> None:
        if outcome.status == "failed":
            return
        if outcome.status == "rejected":
            advantage = -1.0
        else:
            r = float(outcome.reward)  # type: ignore[arg-type]
            if self.baseline is None:
                self.baseline = r  # the first reward only sets the baseline
                return
            diff = r - self.baseline
            self.baseline = self.decay * self.baseline + (1 - self.decay) * r
            self.variance = (
                diff * diff
                if self.variance is None
                else self.decay * self.variance + (1 - self.decay) * diff * diff
            )
            advantage = diff / (math.sqrt(self.variance) + 1e-8)
            advantage = max(-ADVANTAGE_CLIP, min(ADVANTAGE_CLIP, advantage))
        self._step(ask.choices, advantage)

    def _step(self, choices: tuple[int, ...], advantage: float) -> None:
        for row, choice in zip(self.logits, choices):
            p = _softmax(row)
            entropy = -sum(q * math.log(q) for q in p if q > 0)
            for i, q in enumerate(p):
                grad = advantage * ((1.0 if i == choice else 0.0) - q)
                if self.entropy:
                    # d(entropy)/d(logit_i) = -q_i (log q_i + H)
                    grad += self.entropy * (-q * (math.log(q) + entropy) if q > 0 else 0.0)
                row[i] += self.lr * grad
        self.updates += 1


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exp = [math.exp(v - top) for v in row]
    total = sum(exp)
    return [e / total for e in exp]
