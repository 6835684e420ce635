"""ROAD, "Remove And Debias" (Rong, Leemann, Borisov, Kasneci, Kasneci 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML, §4): a faithfulness score whose
removed pixels are not blanked but imputed from their neighbours, so the perturbed image stays
close to the data and the score measures the map, not the model's reaction to a blank patch.

- `impute` is the paper's noisy linear imputation (§4.2, their reference code's
  `NoisyLinearImputer`): every removed pixel takes the weighted mean of its 8 neighbours (weight
  1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside the image do not count),
  removed neighbours included, which makes one sparse linear system per image solved for all its
  removed pixels at once (scipy.sparse.linalg.spsolve, the channels as right-hand sides); then
  Gaussian noise of standard deviation `noise` (the paper's 0.01, in the normalised input's
  units) is added to the imputed pixels only. A component of removed pixels always touches a kept
  one unless every pixel is removed, so the system is regular below 100% removal; the fractions
  stop at 90% as in the paper.
- `road_curves` removes, for each fraction, the most relevant pixels first (MoRF: a faithful map
  makes the probability fall fast) and the least relevant first (LeRF: it should hardly move);
  each curve's score is its mean probability over the fractions, and `gain` = LeRF - MoRF, the
  paper's combined view (> 0: the map ranks pixels by what the model uses).

A pure rule on arrays: no model here beyond the `predict` callable; models/cam.py calls it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # removal percentages of the paper's plots
NOISE = 0.01  # the paper's imputation noise (its code's default)
# (row offset, column offset, weight): the paper's neighbourhood
NEIGHBOURS = tuple(
    (dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


def impute(image: np.ndarray, removed: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`image` (C, H, W) with the pixels where `removed` (H, W, bool) is True replaced by the
    noisy linear imputation of their neighbours. A copy; the kept pixels are unchanged."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    out = np.array(image, dtype=np.float64, copy=True)
    ys, xs = np.nonzero(removed)
    n = len(ys)
    if n == 0:
        return out.astype(image.dtype)
    if n == h * w:
        raise ValueError("ROAD cannot impute an image with every pixel removed: nothing to impute from")
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    rhs = np.zeros((n, c))
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        p, qy, qx = np.flatnonzero(inside), ny[inside], nx[inside]
        diag[p] += weight
        q = index[qy, qx]
        unknown = q >= 0
        rows.append(p[unknown])
        cols.append(q[unknown])
        vals.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown
        rhs[p[known]] += weight * image[:, qy[known], qx[known]].T
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    solved = np.asarray(spsolve(a, rhs)).reshape(n, c)
    out[:, ys, xs] = solved.T + noise * rng.standard_normal((c, n))
    return out.astype(image.dtype)


def road_curves(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    order: np.ndarray,
    target: np.ndarray,
    seed: int,
    fractions: tuple[float, ...] = FRACTIONS,
    noise: float = NOISE,
) -> dict[str, np.ndarray]:
    """MoRF and LeRF curves of N images (N, C, H, W) ranked by `order` (N, H*W: each image's
    pixels most relevant first). `predict` maps a batch to class probabilities (B, classes);
    `target` (N,) is the class whose probability is followed. -> {"morf", "lerf"}: (N, len(fractions))
    probabilities, and "morf_score", "lerf_score", "gain" (N,) as in the module docstring."""
    n, _, h, w = images.shape
    pixels = h * w
    rng = np.random.default_rng(seed)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None].repeat(n, 0), axis=1)
    out: dict[str, np.ndarray] = {}
    for name, first in (("morf", True), ("lerf", False)):
        batch = []
        for i in range(n):
            for f in fractions:
                k = round(f * pixels)
                removed = (rank[i] < k) if first else (rank[i] >= pixels - k)
                batch.append(impute(images[i], removed.reshape(h, w), noise, rng))
        probs = predict(np.stack(batch))
        out[name] = probs[np.arange(len(batch)), np.repeat(target, len(fractions))].reshape(n, len(fractions))
    out["morf_score"] = out["morf"].mean(1)
    out["lerf_score"] = out["lerf"].mean(1)
    out["gain"] = out["lerf_score"] - out["morf_score"]
    return out
