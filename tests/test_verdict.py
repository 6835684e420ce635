"""Verdicts (foundation/verdict.py): the interval against a case worked by hand, the null (two
identical arms are a tie in at least 95% of simulated studies), the power to see a real gap,
fewer than 3 seeds, records without per-image results, and the per-image records themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from foundation import per_image
from foundation.verdict import METHOD, METHOD_BINOMIAL, Scores, arm_interval, compare, describe, evaluation


def test_a_case_worked_by_hand() -> None:
    # 3 seeds x 4 images each; arm A gets 3, 2, 3 right; arm B 1, 2, 1
    a = Scores.of([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1]])
    b = Scores.of([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    # accuracies A: .75 .5 .75 (mean 2/3), B: .25 .5 .25 (mean 1/3); margin 1/3
    # seed variances (ddof=1): A: ((1/12)^2 * 2 + (1/6)^2) / 2 = 1/48; B the same
    # per-image seed means A: 1, 2/3, 2/3, 1/3; B: 2/3, 1/3, 1/3, 0 -> d = 1/3 on every image: var 0
    v = 1 / 48 / 3 + 1 / 48 / 3 + 0.0
    df = v**2 / ((1 / 144) ** 2 / 2 + (1 / 144) ** 2 / 2)  # = 4
    assert df == pytest.approx(4.0)
    half = stats.t.ppf(0.975, 4) * math.sqrt(v)  # 2.776 * 0.1179 = 0.3273
    got = compare(a, b)
    assert got["margin"] == pytest.approx(1 / 3, abs=1e-6)
    assert got["low"] == pytest.approx(1 / 3 - half, abs=1e-6) and got["high"] == pytest.approx(
        1 / 3 + half, abs=1e-6
    )
    assert got["df"] == pytest.approx(4.0) and got["se_images"] == 0.0
    assert got["call"] == "wins" and got["method"] == METHOD  # 0.006 > 0: just excludes zero
    assert got["seeds"] == [3, 3] and got["images"] == 4
    # swapped: the same interval mirrored, "loses"
    back = compare(b, a)
    assert back["call"] == "loses" and back["low"] == pytest.approx(-got["high"], abs=1e-6)


def test_an_image_term_by_hand_and_the_binomial_fallback() -> None:
    a = Scores.of([[1, 1, 0, 0]] * 3)  # no seed spread at all: only the images speak
    b = Scores.of([[1, 0, 1, 0]] * 3)
    got = compare(a, b)
    # d = 0, 1, -1, 0: var (ddof=1) = 2/3, over 4 images: 1/6; df = 3 (the image term alone)
    assert got["margin"] == 0.0 and got["se_images"] == pytest.approx(math.sqrt(1 / 6), abs=1e-6)
    assert got["high"] == pytest.approx(stats.t.ppf(0.975, 3) * math.sqrt(1 / 6), abs=1e-6)
    assert got["call"] == "tie"
    # the same accuracies without per-image records: binomial, unpaired: 2 * .5 * .5 / 4
    plain = compare(Scores((0.5,) * 3, 4), Scores((0.5,) * 3, 4))
    assert plain["method"] == METHOD_BINOMIAL and plain["se_images"] == pytest.approx(
        math.sqrt(0.125), abs=1e-6
    )
    with pytest.raises(ValueError, match="different evaluation sets"):
        compare(Scores((0.5,), 4), Scores((0.5,), 5))


def _study(rng: np.random.Generator, seeds: int, images: int, gap: float = 0.0) -> tuple[Scores, Scores]:
    """Two arms scored on the same images: each image has its own difficulty, each seed shifts
    the model's log-odds (seed noise), arm A's log-odds are raised by `gap`."""
    difficulty = rng.normal(0.0, 1.5, images)

    def arm(shift: float) -> Scores:
        logit = difficulty[None, :] + shift + rng.normal(0.0, 0.08, (seeds, 1))
        return Scores.of(rng.random((seeds, images)) < 1 / (1 + np.exp(-logit)))

    return arm(gap), arm(0.0)


@pytest.mark.parametrize("seeds", [3, 5])
def test_two_identical_arms_are_a_tie_in_at_least_95_percent_of_simulated_studies(seeds: int) -> None:
    rng = np.random.default_rng(seeds)
    calls = [compare(*_study(rng, seeds, 1000))["call"] for _ in range(400)]
    assert set(calls) <= {"tie", "wins", "loses"}
    assert calls.count("tie") / len(calls) >= 0.95


def test_a_real_gap_is_seen() -> None:
    rng = np.random.default_rng(7)
    # +0.4 log-odds is about 7 points of accuracy here: 3 seeds on 2,000 images see it in about
    # 92% of studies (a 4.6-point gap: 71%; that is the price of t with 4 degrees of freedom)
    calls = [compare(*_study(rng, 3, 2000, gap=0.4))["call"] for _ in range(50)]
    assert calls.count("wins") >= 40 and "loses" not in calls


def test_under_three_seeds_no_spread_is_printed_and_no_winner_named() -> None:
    rng = np.random.default_rng(1)
    for seeds in (1, 2):
        for gap in (0.0, 1.0):
            a, b = _study(rng, seeds, 1000, gap)
            got = compare(a, b)
            assert got["low"] is None and got["high"] is None and got["se_seeds"] is None
            assert got["call"] in ("tie", "not estimable") and "not estimable" in got["note"]
            assert "not estimable" in describe(got)
    # a huge gap is still not a win with one seed; a margin inside the images' error is a tie
    assert (
        compare(Scores.of([[1] * 90 + [0] * 10]), Scores.of([[1] * 10 + [0] * 90]))["call"] == "not estimable"
    )
    assert compare(Scores.of([[1, 0] * 50]), Scores.of([[0, 1] * 50]))["call"] == "tie"


def test_arm_interval_and_the_evaluation_summary() -> None:
    arm = Scores.of([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    iv = arm_interval(arm)
    assert iv["mean"] == pytest.approx(0.75) and iv["low"] < 0.75 < iv["high"]
    assert arm_interval(Scores((0.5, 0.6), 100))["low"] is None  # two seeds: no interval
    ev = evaluation([arm, arm], "test")
    assert ev["images"] == 4 and ev["split"] == "test" and ev["seed_spread"] == "estimable"
    # 10,000 images at 50%: two arms, unpaired: 1.96 * sqrt(2 * .25 / 10000) = 0.0139
    big = evaluation([Scores((0.5,) * 3, 10_000)], "test")
    assert (
        big["resolvable_difference"] == pytest.approx(0.0139, abs=2e-4) and big["method"] == METHOD_BINOMIAL
    )


def test_per_image_records_round_trip_and_refuse_garbage(tmp_path) -> None:
    bits = np.random.default_rng(0).random(10_001) < 0.4
    text = per_image.encode(bits)
    assert np.array_equal(per_image.decode(text), bits) and len(text) < 1700
    per_image.save(tmp_path, "compound@2x/2ep/seed0", text)
    assert np.array_equal(per_image.load(tmp_path, "compound@2x/2ep/seed0"), bits)
    assert per_image.load(tmp_path, "nothing") is None
    for bad in ("", "12", "abc:AAAA", "100:AAAA"):
        with pytest.raises(ValueError):
            per_image.decode(bad)
    got = per_image.scores(tmp_path, [("compound@2x/2ep/seed0", float(bits.mean()))], 10_001)
    assert got.correct is not None and got.accuracies == (pytest.approx(float(bits.mean())),)
    plain = per_image.scores(tmp_path, [("missing", 0.5)], 10_001)  # no record: accuracies alone
    assert plain.correct is None and plain.images == 10_001
