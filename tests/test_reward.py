"""The reward: MnasNet's two-sided ACC x (MACs/T)^w, soft and hard."""

from __future__ import annotations

import pickle

import pytest

from nas.reward import RewardFn, exponents, reward

T = 400_000_000


def test_at_the_target_the_reward_is_the_accuracy() -> None:
    assert reward(0.8, T, T) == pytest.approx(0.8)
    assert reward(0.8, T, T, (0.0, -1.0)) == pytest.approx(0.8)


def test_soft_constraint_values() -> None:
    # EfficientNet §4: w = -0.07 on both sides
    assert reward(0.8, 2 * T, T, -0.07) == pytest.approx(0.8 * 2**-0.07)  # 0.76211
    assert reward(0.8, T / 2, T, -0.07) == pytest.approx(0.8 * 0.5**-0.07)  # 0.8397
    assert reward(0.8, 2 * T, T, -0.07) == pytest.approx(0.76211, abs=1e-5)


def test_hard_constraint_values() -> None:
    a, b = exponents("hard")
    assert (a, b) == (0.0, -1.0)
    assert reward(0.7, T / 4, T, (a, b)) == pytest.approx(0.7)  # below T: accuracy alone
    assert reward(0.7, 2 * T, T, (a, b)) == pytest.approx(0.35)  # above: halved per doubling


def test_reward_grows_with_accuracy_and_shrinks_with_macs() -> None:
    fn = RewardFn.from_config(type("C", (), {"kind": "soft", "w": -0.07})(), T)
    assert fn(0.9, 3e8) > fn(0.8, 3e8)
    assert fn(0.8, 3e8) > fn(0.8, 5e8)


def test_named_kinds_and_errors() -> None:
    assert exponents("soft", -0.1) == (-0.1, -0.1)
    with pytest.raises(ValueError, match="unknown reward kind"):
        exponents("medium")
    with pytest.raises(ValueError, match="macs > 0"):
        reward(0.5, 0, T)
    with pytest.raises(ValueError, match="target > 0"):
        reward(0.5, T, 0)


def test_bound_reward_is_picklable_for_ray_workers() -> None:
    fn = RewardFn(T, -0.07, -0.07)
    again = pickle.loads(pickle.dumps(fn))
    assert again(0.8, 2 * T) == fn(0.8, 2 * T)
    assert "4e+08" in repr(fn)
