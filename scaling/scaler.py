"""`effnas scale`: grow a baseline into B1..B7 (or any phi) and compare with the released family.

    effnas scale --phi 1..7 [--mode formula|official|flops-matched] [--from results/grid/<run>]

Coefficients come from a grid run's `coefficients.yaml` (`--from`) or, by default, the paper's
(alpha, beta, gamma) = (1.2, 1.1, 1.15) (EfficientNet §3.3); explicit `alpha= beta= gamma=`
overrides are a third source. The baseline is `--arch` when given, else the grid run's baseline,
else the official B0. Modes:

- formula: depth alpha^phi, width beta^phi, resolution gamma^phi x the baseline's resolution,
  rounded to the nearest multiple of `resolution_divisor` (default 8: the stride-2 stages then
  halve it evenly three times, so odd feature maps do not inflate MACs). Channels and repeats
  follow the official rounding (`search_spaces.rounding`).
- official: the released B1..B7 table (width, depth, resolution, dropout), applied to the
  baseline; on the official B0 it reproduces B1..B7 exactly.
- flops-matched: the same compound direction, but phi is nudged (+-1 in steps of 0.01) and the
  resolution rounded down or up so the counted MACs land closest to 2^phi x the baseline's
  (within 2%, then the smallest nudge).

Dropout rises linearly from 0.2 (B0) to 0.5 (B7) (paper §5.2), capped at 0.5 beyond; stochastic
depth (drop-connect) stays 0.2 (REFERENCE.md). Nothing is trained; the stage runs in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError
from foundation.units import parse_phi
from scaling.compound import PAPER_COEFFICIENTS, constraint_product, macs_of, round_resolution, scale_arch
from search_spaces.arch import Arch, ArchError
from search_spaces.arch_config import arch_from_cfg, arch_given

if TYPE_CHECKING:
    import pandas as pd

MODES = ("formula", "official", "flops-matched")
OFFICIAL_MAX_PHI = 7
DROPOUT_B0, DROPOUT_B7 = 0.2, 0.5  # paper §5.2: "linearly from 0.2 for B0 to 0.5 for B7"
DROP_PATH = 0.2  # tensorflow/tpu drop_connect_rate for every B-model
MACS_TOLERANCE = 0.25
MATCH_WITHIN = math.log(
    1.02
)  # flops-matched: within 2% counts as matched; then nearest phi wins  # acceptance: formula MACs within 25% of 2^phi x baseline


# -- inputs -----------------------------------------------------------------------------------

# a released model beside these coefficients: its shape, cost, and the phi each multiplier implies
_COMPARED = ("width", "depth", "resolution", "params", "macs", "phi_width", "phi_depth", "phi_resolution")
# what `effnas report` reads of this stage's run: table -> (required columns, of which numeric);
# extra columns are tolerated, so runs from before a column was added still read
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "models.csv": (
        ("phi", "name", "width", "depth", "resolution", "params", "macs", "macs_ratio"),
        ("phi", "width", "depth", "resolution", "params", "macs", "macs_ratio"),
    ),
    "official_comparison.csv": (("model", *_COMPARED), _COMPARED),
}


def dropout_for(phi: float) -> float:
    return round(min(DROPOUT_B7, DROPOUT_B0 + (DROPOUT_B7 - DROPOUT_B0) * phi / 7), 4)


def _given_coefficients(cfg: Any) -> tuple[float, float, float] | None:
    given = [cfg.get(k) for k in ("alpha", "beta", "gamma")]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise UserError("give all three of alpha, beta, gamma (or none: --from or the paper's)")
    return _checked_coefficients(*given, where="config")


def _checked_coefficients(alpha: Any, beta: Any, gamma: Any, where: str) -> tuple[float, float, float]:
    try:
        coeffs = (float(alpha), float(beta), float(gamma))
    except (TypeError, ValueError):
        raise UserError(
            f"{where}: alpha, beta, gamma must be numbers, got {alpha!r}, {beta!r}, {gamma!r}"
        ) from None
    if min(coeffs) < 1:
        raise UserError(f"{where}: alpha, beta, gamma must be >= 1 (paper eq. 3), got {coeffs}")
    return coeffs


def read_coefficients(run_dir: Path) -> dict[str, Any]:
    """A grid run's `coefficients.yaml`: {alpha, beta, gamma, baseline (Arch), ...}."""
    import yaml

    path = run_dir / "coefficients.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--from {run_dir}: cannot read coefficients.yaml: {exc}") from None
    if not isinstance(data, dict) or not {"alpha", "beta", "gamma"} <= set(data):
        raise UserError(f"--from {run_dir}: coefficients.yaml lacks alpha, beta, gamma")
    out = dict(data)
    out["coefficients"] = _checked_coefficients(data["alpha"], data["beta"], data["gamma"], str(path))
    if data.get("baseline") is not None:
        try:
            out["baseline"] = Arch.from_dict(data["baseline"])
        except ArchError as exc:
            raise UserError(f"{path}: baseline: {exc}") from None
    return out


def validate(cfg: Any) -> None:
    """Cheap checks before a run directory exists: phi, mode, coefficients, --from, --arch."""
    from foundation.runfiles import upstream_run

    phis = parse_phi(cfg.phi)
    if cfg.mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.mode == "official" and max(phis) > OFFICIAL_MAX_PHI:
        raise UserError(f"--mode official has B1..B7 only; got phi {max(phis)}")
    if cfg.resolution_divisor < 1:
        raise UserError(f"resolution_divisor must be >= 1, got {cfg.resolution_divisor}")
    given = _given_coefficients(cfg)
    if cfg.upstream:
        if given is not None:
            raise UserError("give coefficients either with --from or as alpha/beta/gamma, not both")
        read_coefficients(upstream_run(cfg.upstream, "grid", "coefficients.yaml"))
    if arch_given(cfg):
        arch_from_cfg(cfg.arch)


def resolve_inputs(cfg: Any) -> tuple[Arch, tuple[float, float, float], dict[str, Any]]:
    """(baseline, (alpha, beta, gamma), provenance) from --from / --arch / config / defaults."""
    from foundation.runfiles import upstream_run
    from search_spaces.official import efficientnet_b0

    provenance: dict[str, Any] = {}
    record = None
    if cfg.upstream:
        run_dir = upstream_run(cfg.upstream, "grid", "coefficients.yaml")
        record = read_coefficients(run_dir)
        coeffs = record["coefficients"]
        provenance["coefficients"] = {"source": "grid run", "path": str(run_dir.resolve())}
    elif (given := _given_coefficients(cfg)) is not None:
        coeffs = given
        provenance["coefficients"] = {"source": "config (alpha, beta, gamma)", "path": None}
    else:
        coeffs = PAPER_COEFFICIENTS
        provenance["coefficients"] = {"source": "paper, EfficientNet §3.3", "path": None}
    if arch_given(cfg):
        baseline = arch_from_cfg(cfg.arch)
        provenance["baseline"] = {"source": "--arch", "name": baseline.name}
    elif record is not None and isinstance(record.get("baseline"), Arch):
        baseline = record["baseline"]
        provenance["baseline"] = {"source": "grid run", "name": baseline.name}
    else:
        baseline = efficientnet_b0()
        provenance["baseline"] = {"source": "official efficientnet_b0 (paper Table 1)", "name": baseline.name}
    return baseline, coeffs, provenance


# -- the three modes -----------------------------------------------------------------------------
def scale_formula(
    baseline: Arch, coeffs: Sequence[float], phi: int, divisor: int = 8
) -> tuple[Arch, dict[str, Any]]:
    arch = scale_arch(baseline, *coeffs, phi, resolution_divisor=divisor, dropout=dropout_for(phi))
    return arch, {"phi_used": float(phi)}


def scale_official(baseline: Arch, phi: int) -> tuple[Arch, dict[str, Any]]:
    """The released table's row B{phi}, applied to `baseline` (exact B{phi} on the official B0)."""
    from search_spaces.official import OFFICIAL_TABLE

    width, depth, res, dropout = OFFICIAL_TABLE[f"efficientnet_b{phi}"]
    resolution = res if baseline.resolution == 224 else round_resolution(baseline.resolution * res / 224)
    arch = baseline.scaled(
        width=round(baseline.width * width, 6),
        depth=round(baseline.depth * depth, 6),
        resolution=resolution,
        dropout=dropout,
    )
    return arch, {"phi_used": None}


def scale_flops_matched(
    baseline: Arch, coeffs: Sequence[float], phi: int, divisor: int = 8, base_macs: int | None = None
) -> tuple[Arch, dict[str, Any]]:
    """The compound-scaled arch whose MACs are closest (in log ratio) to 2^phi x baseline:
    phi' in phi +- 1 (step 0.01) and the resolution one divisor either side of the formula's.
    Every choice within 2% of the target counts as a match; among matches (or ties) the phi'
    nearest phi wins, so the model stays as close to the formula as the target allows."""
    target = 2**phi * (base_macs if base_macs is not None else macs_of(baseline))
    best: tuple[float, float, Arch] | None = None
    for k in range(-100, 101):
        p = phi + k / 100
        if p < 0:
            continue
        arch = scale_arch(baseline, *coeffs, p, resolution_divisor=divisor, dropout=dropout_for(phi))
        for res in (arch.resolution - divisor, arch.resolution, arch.resolution + divisor):
            if res < 8:
                continue
            candidate = arch.scaled(resolution=res)
            err = max(abs(math.log(macs_of(candidate) / target)), MATCH_WITHIN)
            key = (round(err, 12), abs(p - phi))
            if best is None or key < best[:2]:
                best = (*key, candidate)
    assert best is not None  # phi >= 1, so k = 0 always yields a candidate
    arch = best[2]
    p_used = math.log(arch.depth / baseline.depth) / math.log(coeffs[0]) if coeffs[0] > 1 else None
    return arch, {"phi_used": round(p_used, 2) if p_used is not None else None}


def scale_family(
    baseline: Arch, coeffs: Sequence[float], phis: Sequence[int], mode: str, divisor: int = 8
) -> list[tuple[int, Arch, dict[str, Any]]]:
    """[(phi, named arch, extra columns)] of `mode` for each phi."""
    from search_spaces.official import efficientnet_b0

    official_b0 = mode == "official" and baseline == efficientnet_b0()
    base_macs = macs_of(baseline)
    out = []
    for phi in phis:
        if mode == "formula":
            arch, extra = scale_formula(baseline, coeffs, phi, divisor)
        elif mode == "official":
            arch, extra = scale_official(baseline, phi)
        elif mode == "flops-matched":
            arch, extra = scale_flops_matched(baseline, coeffs, phi, divisor, base_macs)
        else:
            raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        name = f"efficientnet_b{phi}" if official_b0 else f"{baseline.name}-b{phi}-{mode}"
        meta = {
            "stage": "scale",
            "mode": mode,
            "phi": phi,
            "alpha": coeffs[0],
            "beta": coeffs[1],
            "gamma": coeffs[2],
            "baseline": baseline.name,
        }
        out.append((phi, arch.scaled(name=name, drop_path=DROP_PATH, meta=meta), extra))
    return out


def model_rows(baseline: Arch, family: Sequence[tuple[int, Arch, dict[str, Any]]], mode: str) -> list[dict]:
    from search_spaces.cost import count

    base_macs = count(baseline).macs
    rows = []
    for phi, arch, extra in family:
        cost = count(arch)
        rows.append(
            {
                "mode": mode,
                "phi": phi,
                "name": arch.name,
                "width": arch.width,
                "depth": arch.depth,
                "resolution": arch.resolution,
                "dropout": arch.dropout,
                "drop_path": arch.drop_path,
                "params": cost.params,
                "macs": cost.macs,
                "activations": cost.activations,
                "target_macs": 2**phi * base_macs,
                "macs_ratio": round(cost.macs / (2**phi * base_macs), 4),
                **extra,
            }
        )
    return rows


# -- comparison with the released family ---------------------------------------------------------
def implied_phi(multiplier: float, coefficient: float) -> float | None:
    """The phi at which coefficient^phi = multiplier (None when the coefficient is 1)."""
    if coefficient <= 1:
        return None
    return math.log(multiplier) / math.log(coefficient)


def official_comparison(coeffs: Sequence[float], ours: Sequence[dict]) -> list[dict]:
    """B1..B7 as released, the phi each dimension implies under `coeffs`, and our model beside."""
    from search_spaces.cost import count
    from search_spaces.official import OFFICIAL_TABLE, official

    alpha, beta, gamma = coeffs
    ours_by_phi = {r["phi"]: r for r in ours}
    rows = []
    for phi in range(1, OFFICIAL_MAX_PHI + 1):
        name = f"efficientnet_b{phi}"
        width, depth, res, _ = OFFICIAL_TABLE[name]
        cost = count(official(name))
        mine = ours_by_phi.get(phi, {})
        rows.append(
            {
                "model": f"b{phi}",
                "width": width,
                "depth": depth,
                "resolution": res,
                "params": cost.params,
                "macs": cost.macs,
                "phi_width": implied_phi(width, beta),
                "phi_depth": implied_phi(depth, alpha),
                "phi_resolution": implied_phi(res / 224, gamma),
                "ours_phi": phi if mine else None,
                "ours_params": mine.get("params"),
                "ours_macs": mine.get("macs"),
            }
        )
    return rows


def phi_one_note(comparison: Sequence[dict]) -> list[str]:
    """Plain words on which released model is the phi = 1 point (REFERENCE.md: B2, not B1)."""

    def distance(row: dict) -> float:
        phis = [row[k] for k in ("phi_width", "phi_depth", "phi_resolution") if row[k] is not None]
        return sum((p - 1) ** 2 for p in phis) if phis else math.inf

    b1 = comparison[0]
    closest = min(comparison, key=distance)
    fmt = ", ".join(
        "-" if b1[k] is None else f"{b1[k]:.2f}" for k in ("phi_width", "phi_depth", "phi_resolution")
    )
    return [
        f"note: the released B1 (width {b1['width']:g}, depth {b1['depth']:g}, resolution "
        f"{b1['resolution']}) is not phi = 1: it implies phi (width, depth, resolution) = ({fmt}), "
        "scaling only depth and resolution.",
        f"note: the released model closest to phi = 1 under these coefficients is "
        f"{closest['model'].upper()} (width {closest['width']:g}, depth {closest['depth']:g}, "
        f"resolution {closest['resolution']}); the released table is not alpha^phi, beta^phi, "
        "gamma^phi for one integer phi.",
    ]


# -- plot -------------------------------------------------------------------------------------------
def plot_families(rundir: Any, baseline: Arch, by_mode: dict[str, list[dict]]) -> None:
    from foundation import figures
    from search_spaces.cost import count

    base = count(baseline)
    fig, (ax_macs, ax_params) = figures.axes(2, 4.2, 3.4)
    for mode, rows in by_mode.items():
        if not rows:
            continue
        phis = [0] + [r["phi"] for r in rows]
        ax_macs.plot(phis, [base.macs / 1e9] + [r["macs"] / 1e9 for r in rows], marker="o", label=mode)
        ax_params.plot(phis, [base.params / 1e6] + [r["params"] / 1e6 for r in rows], marker="o", label=mode)
    phis = sorted({r["phi"] for rows in by_mode.values() for r in rows} | {0})
    ax_macs.plot(phis, [2**p * base.macs / 1e9 for p in phis], "k--", lw=1, label="2^phi x baseline")
    ax_macs.set(yscale="log", xlabel="phi", ylabel="MACs (G, conv+linear)", title="MACs vs phi")
    ax_params.set(xlabel="phi", ylabel="params (M, 1000 classes)", title="params vs phi")
    for ax in (ax_macs, ax_params):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    rundir.save_figure("models.png", fig)
    figures.close(fig)


def official_activations(models: Sequence[str]) -> list[int]:
    """Activations of the released B-models (the cost model on the official table; no torch)."""
    from search_spaces.cost import count
    from search_spaces.official import official

    return [count(official(f"efficientnet_{m}")).activations for m in models]


def official_family(models: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """A scale run's official_comparison.csv beside its models.csv, joined on phi: the released
    B1..B7's params, MACs, activations and the phi each implies per dimension under the run's
    coefficients, with ours (`ours_*`) at the same phi."""
    comp = comparison.copy()
    if "activations" not in comp.columns:
        comp["activations"] = official_activations(list(comp["model"]))
    ours = models.set_index("phi")
    comp["ours_phi"] = [int(m.lstrip("b")) for m in comp["model"]]
    for column in ("params", "macs", "activations"):
        comp[f"ours_{column}"] = [
            ours[column].get(p, math.nan) if column in ours.columns else math.nan for p in comp["ours_phi"]
        ]
    comp["ours_macs / official"] = comp["ours_macs"] / comp["macs"]
    return comp


def plot_against_official(family: pd.DataFrame, mode: str) -> Any:
    """`official_family` as params, MACs and activations against phi (log), a panel each: the
    released B1..B7 and ours (`effnas report`'s figure of a scale run)."""
    from foundation import figures

    columns = [c for c in ("params", "macs", "activations") if family[f"ours_{c}"].notna().any()]
    fig, axes = figures.axes(len(columns), width=4.2, height=3.6)
    for ax, column in zip(axes, columns):
        family.plot(x="ours_phi", y=column, marker="s", logy=True, ax=ax, label="released B1..B7", color="k")
        family.plot(
            x="ours_phi",
            y=f"ours_{column}",
            marker="o",
            logy=True,
            ax=ax,
            label=f"ours ({mode})",
        )
        ax.set(xlabel="phi", ylabel=column, title=column)
        ax.grid(alpha=0.3, which="both")
    return fig


# -- the stage ------------------------------------------------------------------------------------
def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    from foundation import tables
    from search_spaces.official import OFFICIAL_PARAMS, efficientnet_b0

    phis = parse_phi(cfg.phi)
    baseline, coeffs, provenance = resolve_inputs(cfg)
    coeff_source = provenance["coefficients"]
    if coeff_source["path"]:
        rundir.record_upstream(coeff_source["path"], "grid", "coefficients (alpha, beta, gamma)")
    else:
        rundir.record_upstream(
            None, "paper" if "paper" in coeff_source["source"] else "config", coeff_source["source"]
        )
    if provenance["baseline"]["source"] == "grid run":
        rundir.record_upstream(coeff_source["path"], "grid", f"baseline arch {baseline.name}")
    rundir.record(
        baseline=provenance["baseline"],
        coefficients={**coeff_source, "alpha": coeffs[0], "beta": coeffs[1], "gamma": coeffs[2]},
    )

    divisor = int(cfg.resolution_divisor)
    by_mode: dict[str, list[dict]] = {}
    families = {}
    for mode in MODES:
        mode_phis = [p for p in phis if mode != "official" or p <= OFFICIAL_MAX_PHI]
        families[mode] = scale_family(baseline, coeffs, mode_phis, mode, divisor)
        by_mode[mode] = model_rows(baseline, families[mode], mode)
    rows = by_mode[cfg.mode]
    for phi, arch, _ in families[cfg.mode]:
        rundir.write_text(f"b{phi}.yaml", arch.to_yaml())
    rundir.write_csv("models.csv", rows)
    rundir.write_csv("models_all_modes.csv", [r for mode in MODES for r in by_mode[mode]])
    comparison = official_comparison(coeffs, rows)
    rundir.write_csv("official_comparison.csv", comparison)
    plot_families(rundir, baseline, by_mode)

    a, b, g = coeffs
    product = constraint_product(a, b, g)
    print(
        f"effnas scale: mode {cfg.mode}, baseline {baseline.name} ({provenance['baseline']['source']}), "
        f"alpha={a:g} beta={b:g} gamma={g:g} (alpha*beta^2*gamma^2 = {product:.4f}; "
        f"{coeff_source['source']})"
    )
    columns = [
        "phi",
        "name",
        "width",
        "depth",
        "resolution",
        "dropout",
        "params",
        "macs",
        "target_macs",
        "macs_ratio",
    ]
    if cfg.mode == "flops-matched":
        columns.append("phi_used")
    print(tables.format_table(rows, columns))
    ratios = [r["macs_ratio"] for r in rows]
    outside = [r for r in rows if abs(r["macs_ratio"] - 1) > MACS_TOLERANCE]
    verdict = (
        "all within 25%"
        if not outside
        else "NOT within 25%: " + ", ".join(f"phi {r['phi']} ({r['macs_ratio']:.3f})" for r in outside)
    )
    base_macs = tables.FORMATS["macs"](rows[0]["target_macs"] / 2 ** rows[0]["phi"])
    print(f"MACs / (2^phi x baseline {base_macs}): {min(ratios):.3f} .. {max(ratios):.3f}, {verdict}")
    print(
        "\nreleased B1..B7 vs these coefficients (phi implied per dimension: log(multiplier) / log(coefficient)):"
    )
    print(
        tables.format_table(
            comparison,
            ["model", *_COMPARED, "ours_params", "ours_macs"],
        )
    )
    notes = phi_one_note(comparison)
    for line in notes:
        print(line)
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "phis": phis,
        "alpha": a,
        "beta": b,
        "gamma": g,
        "product": round(product, 6),
        "coefficients_source": coeff_source,
        "baseline": provenance["baseline"],
        "resolution_divisor": divisor,
        "models": [
            {k: r[k] for k in ("phi", "name", "width", "depth", "resolution", "params", "macs", "macs_ratio")}
            for r in rows
        ],
        "macs_ratio_min": min(ratios),
        "macs_ratio_max": max(ratios),
        "macs_within_25pct": not outside,
        "notes": notes,
    }
    if cfg.mode == "official" and baseline == efficientnet_b0():
        summary["official_params_exact"] = all(r["params"] == OFFICIAL_PARAMS[r["name"]] for r in rows)
    print(
        f"wrote b{phis[0]}.yaml .. b{phis[-1]}.yaml, models.csv, official_comparison.csv, models.png in {rundir.path}"
    )
    return summary
