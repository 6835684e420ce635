"""The sampler contract: every search strategy passes the same suite (join by adding a name).

Optuna samplers run on a real SQLite storage in the test's directory.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest
from conftest import space_config

from nas.samplers import SAMPLERS, Ask, Outcome, make_sampler
from search_spaces.mnasnet import MnasNetSpace

LEARNERS = [s for s in SAMPLERS if s != "random"]


@pytest.fixture(scope="module")
def space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


@pytest.fixture(scope="module")
def small_space() -> MnasNetSpace:
    """Fewer choices per decision: a learner's gain shows within a few dozen trials."""
    return MnasNetSpace.from_config(space_config(ops=["ds", "mbconv6"]))


def build(name: str, space: MnasNetSpace, tmp_path: Path | None, seed: int = 0, history=(), tag: str = "a"):
    """A sampler; the Optuna ones on an SQLite file in `tmp_path` (in memory when None)."""
    return make_sampler(
        name,
        space,
        seed,
        storage=None if tmp_path is None else f"sqlite:///{tmp_path / f'study-{tag}.db'}",
        study_name=f"test-{tag}",
        history=history,
        population=8,
        sample_size=3,
        n_startup=6,
        lr=0.3,
    )


def synthetic(choices: tuple[int, ...]) -> float:
    """A fixed 'accuracy' landscape: the more decisions at index 0, the better."""
    return sum(c == 0 for c in choices) / len(choices)


def outcome(choices: tuple[int, ...], status: str = "ok") -> Outcome:
    acc = synthetic(choices)
    macs = 100_000_000 + 10_000_000 * sum(choices)
    if status in ("failed", "rejected"):
        return Outcome(status, None, macs, None)
    return Outcome(status, acc, macs, acc)


@pytest.mark.parametrize("name", SAMPLERS)
def test_asks_are_valid_choice_vectors(name: str, space: MnasNetSpace, tmp_path: Path) -> None:
    sampler = build(name, space, tmp_path)
    keys = set()
    for _ in range(12):
        ask = sampler.ask()
        space.check(ask.choices)
        assert ask.key not in keys
        keys.add(ask.key)
        sampler.tell(ask, outcome(ask.choices))
    sampler.close()


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_proposals_other_seed_others(name: str, space: MnasNetSpace) -> None:
    def run(seed: int, tag: str) -> list[tuple[int, ...]]:
        sampler = build(name, space, None, seed=seed, tag=tag)
        out = []
        for _ in range(12):
            ask = sampler.ask()
            out.append(ask.choices)
            sampler.tell(ask, outcome(ask.choices))
        sampler.close()
        return out

    assert run(0, "x") == run(0, "y")
    assert run(0, "z") != run(1, "w")


@pytest.mark.parametrize("name", SAMPLERS)
def test_interleaved_asks_and_every_outcome_kind(name: str, space: MnasNetSpace) -> None:
    """Several trials in flight, told out of order, with every status a trial can end in."""
    sampler = build(name, space, None)
    for _ in range(4):
        asks = [sampler.ask() for _ in range(4)]
        statuses = ["ok", "failed", "rejected", "stopped"]
        for ask, status in zip(reversed(asks), statuses):
            sampler.tell(ask, outcome(ask.choices, status))
    space.check(sampler.ask().choices)
    sampler.close()


@pytest.mark.parametrize("name", SAMPLERS)
def test_restore_continues_without_repeating_the_start(
    name: str, space: MnasNetSpace, tmp_path: Path
) -> None:
    first = build(name, space, tmp_path, tag="first")
    history = []
    for _ in range(6):
        ask = first.ask()
        history.append((ask, outcome(ask.choices)))
        first.tell(*history[-1])
    first.close()
    fresh = build(name, space, tmp_path, tag="fresh")
    fresh_asks = [fresh.ask().choices for _ in range(6)]
    fresh.close()
    # the interrupted run's own storage (the Optuna ones reload their study from it)
    resumed = build(name, space, tmp_path, tag="first", history=history)
    ask = resumed.ask()
    space.check(ask.choices)
    assert ask.key not in {a.key for a, _ in history}
    assert ask.choices not in fresh_asks
    resumed.close()


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_study_lives_in_sqlite_and_resume_repairs_it(
    name: str, space: MnasNetSpace, tmp_path: Path
) -> None:
    import optuna
    from optuna.trial import TrialState

    sampler = build(name, space, tmp_path, tag="db")
    told = []
    for _ in range(3):
        ask = sampler.ask()
        told.append((ask, outcome(ask.choices)))
        sampler.tell(*told[-1])
    recorded_not_told = sampler.ask()  # killed after trials.csv got it, before the tell
    sampler.ask()  # killed while training
    sampler.close()
    history = [*told, (recorded_not_told, outcome(recorded_not_told.choices))]
    resumed = build(name, space, tmp_path, tag="db", history=history)
    resumed.close()
    study = optuna.load_study(study_name="test-db", storage=f"sqlite:///{tmp_path / 'study-db.db'}")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 4 + [TrialState.FAIL]
    assert study.trials[3].params == dict(zip([d.name for d in space.dims], recorded_not_told.choices))
    if name == "nsga2":
        assert study.trials[0].values[1] == outcome(told[0][0].choices).macs


def test_restore_into_an_empty_storage_adds_the_history(space: MnasNetSpace, tmp_path: Path) -> None:
    history = []
    rng = random.Random(0)
    for key in range(4):
        choices = space.sample(rng)
        history.append((Ask(key, choices), outcome(choices, "failed" if key == 2 else "ok")))
    sampler = build("tpe", space, tmp_path, tag="empty", history=history)
    assert len(sampler.study.trials) == 4
    assert sampler.study.trials[2].state.name == "FAIL"
    sampler.close()


@pytest.mark.parametrize("name", LEARNERS)
def test_learners_improve_on_a_fixed_landscape(name: str, small_space: MnasNetSpace) -> None:
    """After 60 trials a learner proposes better points than it did at the start (random's
    mean is about 0.44 on this landscape; every learner must beat its own first 15 proposals)."""
    sampler = build(name, small_space, None, seed=3)
    scores = []
    for _ in range(75):
        ask = sampler.ask()
        scores.append(synthetic(ask.choices))
        sampler.tell(ask, outcome(ask.choices))
    sampler.close()
    early, late = statistics.mean(scores[:15]), statistics.mean(scores[-15:])
    assert late > early + 0.05, (early, late)


def test_random_does_not_learn(small_space: MnasNetSpace) -> None:
    sampler = build("random", small_space, None, seed=3)
    scores = []
    for _ in range(75):
        ask = sampler.ask()
        scores.append(synthetic(ask.choices))
        sampler.tell(ask, outcome(ask.choices))
    expected = statistics.mean(1 / n for n in small_space.sizes)  # P(index 0) per decision
    assert abs(statistics.mean(scores) - expected) < 0.05


def test_unknown_sampler_and_bad_options(space: MnasNetSpace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sampler 'bayes'"):
        make_sampler("bayes", space)
    with pytest.raises(ValueError, match="population >= 2"):
        make_sampler("evolution", space, population=1)
    with pytest.raises(ValueError, match="lr > 0"):
        make_sampler("controller", space, lr=0)


def test_outcome_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="unknown outcome status"):
        Outcome("done", 0.5, 1, 0.5)
    with pytest.raises(ValueError, match="needs accuracy and reward"):
        Outcome("ok", None, 1, None)
    assert Outcome("rejected", None, 5, None).value == 0.0
    assert Outcome("failed", None, 5, None).value is None


def test_evolution_mutates_one_decision_of_a_tournament_winner(space: MnasNetSpace) -> None:
    sampler = make_sampler("evolution", space, 0, population=4, sample_size=4)
    members = []
    for _ in range(4):
        ask = sampler.ask()
        members.append(ask.choices)
        sampler.tell(ask, outcome(ask.choices))
    best = max(members, key=synthetic)
    child = sampler.ask().choices  # tournament of the whole population: the best is the parent
    assert sum(a != b for a, b in zip(child, best)) == 1


def test_controller_moves_probability_towards_rewarded_choices(space: MnasNetSpace) -> None:
    sampler = make_sampler("controller", space, 0, lr=0.5)
    good = tuple(0 for _ in space.sizes)
    bad = tuple(n - 1 for n in space.sizes)
    sampler.tell(Ask(0, good), Outcome("ok", 0.5, 1, 0.5))  # sets the baseline
    for i in range(10):
        sampler.tell(Ask(1 + 2 * i, good), Outcome("ok", 0.9, 1, 0.9))
        sampler.tell(Ask(2 + 2 * i, bad), Outcome("ok", 0.1, 1, 0.1))
    probs = sampler.probabilities()
    assert all(p[0] > 1.0 / len(p) > p[-1] for p in probs)


def test_local_search_climbs_from_the_best_start_and_moves_to_a_better_neighbour(
    space: MnasNetSpace,
) -> None:
    sampler = make_sampler("local", space, 0, n_init=4)
    start = []
    for _ in range(4):
        ask = sampler.ask()
        start.append(ask.choices)
        sampler.tell(ask, outcome(ask.choices))
    best = max(start, key=synthetic)
    ask = sampler.ask()
    assert sum(a != b for a, b in zip(ask.choices, best)) == 1  # a neighbour of the best start
    better = tuple(0 if i == 0 else c for i, c in enumerate(best))
    if better == best:
        better = tuple(0 if i == 1 else c for i, c in enumerate(best))
    sampler.tell(ask, Outcome("ok", 0.99, 1, 0.99))  # the neighbour wins: climb from it
    nxt = sampler.ask().choices
    assert sum(a != b for a, b in zip(nxt, ask.choices)) == 1


def test_local_search_restarts_at_a_local_optimum() -> None:
    tiny = MnasNetSpace.from_config(
        space_config(ops=["ds"], kernels=[3], se=[0.0], skip=[True], filters=[1.0], repeats=[0, 1])
    )
    sampler = make_sampler("local", tiny, 0, n_init=1)
    first = sampler.ask()
    sampler.tell(first, Outcome("ok", 0.9, 1, 0.9))
    for _ in range(7):  # its 7 neighbours (one repeats choice each), all worse
        ask = sampler.ask()
        assert sum(a != b for a, b in zip(ask.choices, first.choices)) == 1
        sampler.tell(ask, Outcome("ok", 0.1, 1, 0.1))
    assert sampler.incumbent is not None
    sampler.ask()  # every neighbour told and none better: a restart
    assert sampler.incumbent is None


def test_bananas_refits_per_batch_and_avoids_rejected_macs(space: MnasNetSpace) -> None:
    from search_spaces.cost import count

    sampler = make_sampler("bananas", space, 0, n_init=6, batch=3, candidates=40, trees=20)
    for _ in range(6):
        ask = sampler.ask()
        macs = count(space.decode(ask.choices)).macs
        sampler.tell(ask, outcome(ask.choices) if macs < 4e8 else Outcome("rejected", None, macs, None))
    limit = sampler.reject_macs
    for _ in range(9):
        ask = sampler.ask()
        assert count(space.decode(ask.choices)).macs < limit
        sampler.tell(ask, outcome(ask.choices))
    assert sampler.fits == 3
