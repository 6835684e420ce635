"""The compound-scaling functions and the constrained (alpha, beta, gamma) grid."""

from __future__ import annotations

import pytest

from foundation.errors import UserError
from scaling.compound import (
    PAPER_COEFFICIENTS,
    Candidate,
    axis,
    constraint_product,
    enumerate_candidates,
    round_resolution,
    scale_arch,
    spread_subset,
)
from search_spaces.official import efficientnet_b0


def test_axis_values_are_exact_decimals() -> None:
    values = axis(0.05, 1.5)
    assert values[0] == 1.0 and values[-1] == 1.5 and len(values) == 11
    assert 1.15 in values and 1.1 in values  # not 1.1500000000000001
    assert axis(0.1, 1.0) == (1.0,)


def test_paper_point_is_on_the_default_grid_and_not_on_a_coarse_one() -> None:
    fine = enumerate_candidates(0.05, 2.0, 1.5, 1.5, target=2.0, tol=0.1)
    assert PAPER_COEFFICIENTS in {(c.alpha, c.beta, c.gamma) for c in fine}
    coarse = enumerate_candidates(0.1, 2.0, 1.5, 1.5, target=2.0, tol=0.1)
    assert PAPER_COEFFICIENTS not in {(c.alpha, c.beta, c.gamma) for c in coarse}
    # REFERENCE.md: the NNI grid (step 0.1, up to 2.0/1.5/1.5 -> 396 points) keeps 20 or 21.
    assert len(coarse) in (20, 21)


def test_every_candidate_satisfies_the_constraint_once_with_stable_ids() -> None:
    cands = enumerate_candidates(0.05, 2.0, 1.5, 1.5, target=2.0, tol=0.1)
    assert all(abs(c.product - 2.0) <= 0.1 + 1e-12 for c in cands)
    assert all(min(c.alpha, c.beta, c.gamma) >= 1 for c in cands)
    ids = [c.id for c in cands]
    assert len(set(ids)) == len(ids)
    assert ids == [c.id for c in enumerate_candidates(0.05, 2.0, 1.5, 1.5, target=2.0, tol=0.1)]
    assert "a1.2_b1.1_g1.15" in ids
    # a tighter tolerance keeps a subset, with the same ids
    tight = {c.id for c in enumerate_candidates(0.05, 2.0, 1.5, 1.5, target=2.0, tol=0.05)}
    assert tight < set(ids)


def test_constraint_product() -> None:
    assert constraint_product(*PAPER_COEFFICIENTS) == pytest.approx(1.9203, abs=1e-4)
    assert constraint_product(2.0, 1.0, 1.0) == 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tol=0.0001, max_alpha=1.9), "no (alpha, beta, gamma)"),
        (dict(tol=-1.0), "tol must be >= 0"),
        (dict(max_alpha=1.0, max_beta=1.0, max_gamma=1.0), "no (alpha, beta, gamma)"),
        (dict(max_alpha=0.9), "bounds must be >= 1"),
        (dict(step=0.0), "step must be > 0"),
    ],
)
def test_grids_that_cannot_work_are_user_errors(kwargs: dict, message: str) -> None:
    args = dict(step=0.05, max_alpha=2.0, max_beta=1.5, max_gamma=1.5, target=2.0, tol=0.1) | kwargs
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        enumerate_candidates(**args)


def test_round_resolution() -> None:
    assert round_resolution(257.6) == 258
    assert round_resolution(257.6, 8) == 256
    assert round_resolution(3.0, 1) == 8
    with pytest.raises(UserError):
        round_resolution(224, 0)


def test_scale_arch_is_pure_and_follows_eq3() -> None:
    b0 = efficientnet_b0()
    a, b, g = PAPER_COEFFICIENTS
    s = scale_arch(b0, a, b, g, 2, base_resolution=32)
    assert (s.depth, s.width, s.resolution) == (pytest.approx(1.44), pytest.approx(1.21), 42)
    assert (b0.depth, b0.width, b0.resolution) == (1.0, 1.0, 224)  # baseline untouched
    assert s.stages == b0.stages
    s224 = scale_arch(b0, a, b, g, 1, resolution_divisor=8, name="x")
    assert s224.resolution == 256 and s224.name == "x"
    # multipliers compose with the baseline's own
    again = scale_arch(s224, a, b, g, 1)
    assert again.width == pytest.approx(1.21) and again.depth == pytest.approx(1.44)


def test_spread_subset_keeps_the_paper_point_and_covers_the_surface() -> None:
    every = enumerate_candidates(0.05, 2.0, 1.5, 1.5, target=2.0, tol=0.1)
    subset = spread_subset(every, 16)
    assert len(subset) == len({c.id for c in subset}) == 16
    assert subset == spread_subset(every, 16)  # deterministic
    assert [c.id for c in subset] == [c.id for c in every if c in subset]  # grid order
    assert PAPER_COEFFICIENTS in {(c.alpha, c.beta, c.gamma) for c in subset}
    # the corners of the surface (all depth / all width / all resolution) are reached
    ids = {c.id for c in subset}
    assert {"a2_b1_g1", "a1_b1.4_g1", "a1_b1_g1.4"} <= ids
    assert spread_subset(every, 0) == every and spread_subset(every, 500) == every
    assert spread_subset(every, 1) == [Candidate(*PAPER_COEFFICIENTS)]
