"""Compound scaling (paper §3.3, eq. 3) as pure functions, and the constrained coefficient grid.

    depth d = alpha^phi,  width w = beta^phi,  resolution r = gamma^phi
    s.t. alpha * beta^2 * gamma^2 ~ 2,  alpha, beta, gamma >= 1

so the MACs of a scaled network grow about 2^phi (MACs go with d * w^2 * r^2). `scale_arch`
applies one (alpha, beta, gamma, phi) to a baseline and returns a new `Arch`; the baseline is
never changed. `enumerate_candidates` lists the grid the `effnas grid` stage trains: every point
of a regular grid that satisfies the constraint, each once, with an id made of its coefficients
(so a resumed run and a parallel worker see the same ids; Optuna's GridSampler repeats points
under parallel workers, DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from foundation.errors import UserError
from search_spaces.arch import Arch
from search_spaces.official import PAPER_COEFFICIENTS  # the grid's reference point (product 1.92)


def constraint_product(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta^2 * gamma^2: the MACs multiplier of one unit of phi (paper eq. 3)."""
    return alpha * beta**2 * gamma**2


def axis(step: float, upper: float) -> tuple[float, ...]:
    """1, 1 + step, ... up to `upper`, each value computed as round(1 + i*step, 10) rather than
    by repeated addition, so 1.15 is 1.15 and not 1.1500000000000001 (the paper's point must be
    found exactly on a 0.05 grid)."""
    if step <= 0:
        raise UserError(f"grid step must be > 0, got {step}")
    if upper < 1:
        raise UserError(f"coefficient bounds must be >= 1 (alpha, beta, gamma >= 1), got {upper}")
    values, i = [], 0
    while (v := round(1 + i * step, 10)) <= upper + 1e-9:
        values.append(v)
        i += 1
    return tuple(values)


@dataclass(frozen=True)
class Candidate:
    """One grid point. `id` is built from the coefficients, so it is the same in every run."""

    alpha: float
    beta: float
    gamma: float

    @property
    def id(self) -> str:
        return f"a{self.alpha:g}_b{self.beta:g}_g{self.gamma:g}"

    @property
    def product(self) -> float:
        return constraint_product(self.alpha, self.beta, self.gamma)


def enumerate_candidates(
    step: float,
    max_alpha: float,
    max_beta: float,
    max_gamma: float,
    target: float = 2.0,
    tol: float = 0.1,
) -> list[Candidate]:
    """Every (alpha, beta, gamma) >= 1 on the grid with |alpha*beta^2*gamma^2 - target| <= tol,
    in a fixed order (alpha, then beta, then gamma ascending). No candidate is a UserError."""
    if tol < 0:
        raise UserError(f"tol must be >= 0, got {tol}")
    if target < 1:
        raise UserError(f"target product must be >= 1 (alpha, beta, gamma >= 1), got {target}")
    found = [
        Candidate(a, b, g)
        for a in axis(step, max_alpha)
        for b in axis(step, max_beta)
        for g in axis(step, max_gamma)
        if abs(constraint_product(a, b, g) - target) <= tol + 1e-12
    ]
    if not found:
        raise UserError(
            f"no (alpha, beta, gamma) on step {step:g} up to ({max_alpha:g}, {max_beta:g}, "
            f"{max_gamma:g}) has |alpha*beta^2*gamma^2 - {target:g}| <= {tol:g}; "
            "widen tol or the bounds, or use a finer step"
        )
    return found


def spread_subset(
    candidates: Sequence[Candidate], k: int, keep: tuple[float, float, float] | None = PAPER_COEFFICIENTS
) -> list[Candidate]:
    """`k` candidates spread over the constraint surface, in grid order (k <= 0: all).

    Greedy farthest-point sampling in (alpha, beta, gamma): start from `keep` when it is on the
    grid (else the point nearest the surface's middle), then repeatedly add the candidate
    farthest from everything chosen; ties go to grid order. Deterministic, so the subset and
    its ids are the same in every run.
    """
    if k <= 0 or k >= len(candidates):
        return list(candidates)
    points = [(c.alpha, c.beta, c.gamma) for c in candidates]
    if keep is not None and tuple(keep) in points:
        first = points.index(tuple(keep))
    else:
        middle = [sum(p[i] for p in points) / len(points) for i in range(3)]
        first = min(range(len(points)), key=lambda i: math.dist(points[i], middle))
    chosen = [first]
    nearest = [math.dist(p, points[first]) for p in points]
    while len(chosen) < k:
        nxt = max(range(len(points)), key=lambda i: (nearest[i], -i))
        chosen.append(nxt)
        nearest = [min(d, math.dist(p, points[nxt])) for d, p in zip(nearest, points)]
    return [candidates[i] for i in sorted(chosen)]


def round_resolution(value: float, divisor: int = 1) -> int:
    """`value` to the nearest multiple of `divisor` (at least one divisor, at least 8 pixels)."""
    if divisor < 1:
        raise UserError(f"resolution divisor must be >= 1, got {divisor}")
    return max(8, divisor, round(value / divisor) * divisor)


def scale_arch(
    baseline: Arch,
    alpha: float,
    beta: float,
    gamma: float,
    phi: float,
    *,
    base_resolution: int | None = None,
    resolution_divisor: int = 1,
    **changes: object,
) -> Arch:
    """`baseline` grown by compound coefficient `phi`: depth x alpha^phi, width x beta^phi,
    resolution round(gamma^phi x base_resolution) to a multiple of `resolution_divisor`.

    `base_resolution` defaults to the baseline's own (its deployment resolution); the grid
    passes the proxy's. Multipliers compose with the baseline's own width and depth. They are
    stored to 6 decimals so YAML stays readable (1.331, not 1.3310000000000004); channel and
    repeat rounding (`search_spaces.rounding`) happens where the arch is built or counted. Other
    fields (name, dropout, ...) may be replaced through `changes`.
    """
    base = baseline.resolution if base_resolution is None else base_resolution
    return baseline.scaled(
        depth=round(baseline.depth * alpha**phi, 6),
        width=round(baseline.width * beta**phi, 6),
        resolution=round_resolution(base * gamma**phi, resolution_divisor),
        **changes,
    )


_MACS: dict[tuple, int] = {}


def macs_of(arch: Arch) -> int:
    """MACs of `arch` (deployment resolution, 1000 classes), counted once per concrete network:
    solving a multiplier for a MACs level tries hundreds of values, and most round to channels
    and repeats already counted."""
    from search_spaces.cost import count
    from search_spaces.rounding import resolve_stages

    key = (resolve_stages(arch), arch.resolution)
    if key not in _MACS:
        _MACS[key] = count(arch).macs
    return _MACS[key]
