"""Verdicts: is one arm's accuracy above another's by more than the measurements can tell?

An arm (a method at a level and budget, a grid point, an architecture) is trained with S seeds and
each seed is scored on the same N evaluation images. Its accuracy has two sources of error, and a
verdict must carry both (Bouthillier et al. 2021, "Accounting for Variance in Machine Learning
Benchmarks", MLSys: the test-set sampling and the training seed are the two largest sources):
- the seed: retraining moves the accuracy (the spread of the per-seed accuracies);
- the evaluation set: N images are a sample of the distribution; a model at 45% on 1,000 images
  is known to +-1.6 points (binomial), whatever the seeds say.

The comparison of arms A and B (`compare`), on per-image records (`Scores.correct`):

    margin   = mean accuracy of A - mean accuracy of B        (means over seeds)
    V_seeds  = s_A^2 / S_A + s_B^2 / S_B                      (s: sample std over seeds, ddof=1)
    V_images = var_i(d_i) / N,  d_i = (A's seed-mean correctness - B's) on image i
    interval = margin -+ t(level, df) * sqrt(V_seeds + V_images)
    df       = Welch-Satterthwaite: (V_seeds + V_images)^2 / sum(v_k^2 / df_k), df_k = S_k - 1, N - 1

V_images is the paired test over the shared images (Dietterich 1998, "Approximate Statistical
Tests for Comparing Supervised Classification Learning Algorithms"): both arms see the same
images, so an image both get right or both get wrong says nothing about the difference; it equals
the variance a bootstrap over the evaluation images would give for the paired difference, without
the resampling noise. The two terms overlap by the seed x image interaction (var_gamma / (S N)),
so the interval is conservative by that much, never narrower than the data allow. Records without
per-image results (runs from before this module) fall back to the binomial variance of each arm,
p(1 - p) / N, unpaired: wider again, since two models' errors on the same images are positively
correlated.

The call: `wins` when the interval lies above zero, `loses` below it, `tie` when it holds zero. With
fewer than `MIN_SEEDS` seeds on a side the seed spread is not estimable (two seeds give a standard
deviation with one degree of freedom: t = 12.7 for 95%): no interval is printed; the margin is
still called a `tie` when the evaluation set alone cannot separate the arms (adding the seed
spread only widens the interval), and `not estimable` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
MIN_SEEDS = 3  # fewer: the seed spread is not estimable
METHOD = (
    "paired over evaluation images + seeds: margin -+ t_df * sqrt(s_A^2/S_A + s_B^2/S_B + var_i(d_i)/N), "
    "Welch-Satterthwaite df (foundation/verdict.py)"
)
METHOD_BINOMIAL = (
    "unpaired binomial + seeds: margin -+ t_df * sqrt(s_A^2/S_A + s_B^2/S_B + p_A(1-p_A)/N + p_B(1-p_B)/N), "
    "no per-image records (foundation/verdict.py)"
)
CALLS = ("wins", "loses", "tie", "not estimable")


@dataclass(frozen=True)
class Scores:
    """One arm's evaluation: per-seed accuracies on `images` evaluation images, and where they
    were recorded, the per-image correctness (`correct`: seeds x images, bool, the same images in
    the same order for every arm compared)."""

    accuracies: tuple[float, ...]
    images: int
    correct: np.ndarray | None = None

    @classmethod
    def of(cls, correct: Sequence[np.ndarray]) -> Scores:
        """From per-seed correctness vectors (one per seed, the same length)."""
        rows = np.asarray([np.asarray(c, dtype=bool) for c in correct])
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
            raise ValueError(f"need one correctness vector per seed, got shape {rows.shape}")
        return cls(tuple(float(a) for a in rows.mean(axis=1)), int(rows.shape[1]), rows)

    @property
    def seeds(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def seed_var(self) -> float | None:
        """Sample variance of the per-seed accuracies (ddof=1); None under two seeds."""
        return float(np.var(self.accuracies, ddof=1)) if self.seeds > 1 else None


def t_quantile(level: float, df: float) -> float:
    """Two-sided Student-t quantile: P(|T| <= q) = level."""
    from scipy import stats

    return (
        float(stats.t.ppf(0.5 + level / 2, df))
        if math.isfinite(df)
        else float(stats.norm.ppf(0.5 + level / 2))
    )


def _welch_df(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance estimates (value, its df)."""
    total = sum(v for v, _ in parts)
    denominator = sum(v * v / df for v, df in parts if v > 0 and df > 0)
    return total * total / denominator if denominator > 0 else math.inf


def compare(a: Scores, b: Scores, level: float = LEVEL, min_seeds: int = MIN_SEEDS) -> dict[str, Any]:
    """A's accuracy minus B's, with its interval and the call (module docstring). Both arms must
    have been scored on the same number of images; paired when both carry per-image records."""
    if a.images != b.images:
        raise ValueError(f"arms scored on different evaluation sets: {a.images} vs {b.images} images")
    n = a.images
    margin = a.mean - b.mean
    paired = a.correct is not None and b.correct is not None
    if paired:
        d = a.correct.mean(axis=0) - b.correct.mean(axis=0)  # type: ignore[union-attr]
        v_images = float(np.var(d, ddof=1)) / n if n > 1 else 0.0
    else:
        v_images = (a.mean * (1 - a.mean) + b.mean * (1 - b.mean)) / n
    images_half = t_quantile(level, n - 1) * math.sqrt(v_images)
    out: dict[str, Any] = {
        "margin": round(margin, 6),
        "low": None,
        "high": None,
        "call": None,
        "level": level,
        "seeds": [a.seeds, b.seeds],
        "images": n,
        "method": METHOD if paired else METHOD_BINOMIAL,
        "se_seeds": None,
        "se_images": round(math.sqrt(v_images), 6),
        "df": None,
        # the smallest margin this evaluation set could resolve with noise-free seeds
        "resolvable": round(images_half, 6),
    }
    if min(a.seeds, b.seeds) < min_seeds:
        within = abs(margin) <= images_half
        out["call"] = "tie" if within else "not estimable"
        out["note"] = (
            f"seed spread not estimable with {min(a.seeds, b.seeds)} seed(s) (need {min_seeds}); "
            + (
                "the evaluation set alone cannot separate them"
                if within
                else "the margin exceeds the evaluation set's own error, but seed noise is unmeasured"
            )
        )
        return out
    v_a, v_b = a.seed_var / a.seeds, b.seed_var / b.seeds  # type: ignore[operator]
    total = v_a + v_b + v_images
    df = _welch_df([(v_a, a.seeds - 1), (v_b, b.seeds - 1), (v_images, n - 1)])
    half = t_quantile(level, df) * math.sqrt(total)
    low, high = margin - half, margin + half
    out.update(
        low=round(low, 6),
        high=round(high, 6),
        call="wins" if low > 0 else ("loses" if high < 0 else "tie"),
        se_seeds=round(math.sqrt(v_a + v_b), 6),
        df=round(df, 2),
    )
    return out


def arm_interval(s: Scores, level: float = LEVEL, min_seeds: int = MIN_SEEDS) -> dict[str, Any]:
    """One arm's mean accuracy with its interval (seed spread + the evaluation set's binomial error
    of the seed-mean, for plots and tables); `low`/`high` None when the seed spread is not
    estimable, with `images_half` still the evaluation set's own half-width."""
    n = s.images
    if s.correct is not None:
        v_images = float(np.var(s.correct.mean(axis=0), ddof=1)) / n if n > 1 else 0.0
    else:
        v_images = s.mean * (1 - s.mean) / n
    out: dict[str, Any] = {
        "mean": round(s.mean, 6),
        "low": None,
        "high": None,
        "seeds": s.seeds,
        "images": n,
        "std_seeds": None if s.seed_var is None else round(math.sqrt(s.seed_var), 6),
        "images_half": round(t_quantile(level, n - 1) * math.sqrt(v_images), 6),
    }
    if s.seeds < min_seeds:
        return out
    v_seed = s.seed_var / s.seeds  # type: ignore[operator]
    df = _welch_df([(v_seed, s.seeds - 1), (v_images, n - 1)])
    half = t_quantile(level, df) * math.sqrt(v_seed + v_images)
    out.update(low=round(s.mean - half, 6), high=round(s.mean + half, 6))
    return out


def describe(v: Mapping[str, Any]) -> str:
    """One line for a console or a table: the margin, its interval or why none, the call."""
    if v.get("low") is None:
        spread = f"seed spread not estimable (seeds {v['seeds'][0]}/{v['seeds'][1]})"
        return f"{v['margin']:+.4f} ({spread}; eval set alone +-{v['resolvable']:.4f}) -> {v['call']}"
    pct = round(100 * float(v.get("level", LEVEL)))
    return f"{v['margin']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}] ({pct}%) -> {v['call']}"


def evaluation(scores: Sequence[Scores], split: str, level: float = LEVEL) -> dict[str, Any]:
    """What a summary says about its evaluation set: the split, its images, the seeds per arm, the
    method and the resolvable difference (the largest evaluation-set half-width among the arms'
    pairwise margins would need per-image pairs; this is the per-arm worst case: two arms with the
    worst-case binomial error, unpaired, so pairing only does better)."""
    images = {s.images for s in scores}
    if len(images) > 1:
        raise ValueError(f"arms scored on different evaluation sets: {sorted(images)} images")
    n = images.pop() if images else 0
    worst = max((s.mean * (1 - s.mean) for s in scores), default=0.25)
    return {
        "split": split,
        "images": n,
        "seeds": sorted({s.seeds for s in scores}),
        "level": level,
        "method": METHOD if all(s.correct is not None for s in scores) else METHOD_BINOMIAL,
        "resolvable_difference": round(t_quantile(level, max(n - 1, 1)) * math.sqrt(2 * worst / n), 6)
        if n
        else None,
        "seed_spread": "estimable"
        if scores and min(s.seeds for s in scores) >= MIN_SEEDS
        else "not estimable",
    }
