"""`effnas scale`: phi parsing, the three modes, outputs, provenance and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import expect_usage_error as _error

from effnas.cli import main
from foundation.errors import UserError
from foundation.units import parse_phi
from scaling.scaler import dropout_for, implied_phi
from search_spaces.arch import Arch
from search_spaces.cost import count
from search_spaces.official import OFFICIAL_PARAMS, efficientnet_b0


def _run(args: list[str], tmp_path: Path) -> Path:
    """Run `effnas scale ...` into a fresh run dir under tmp_path; return the run dir."""
    run_dir = tmp_path / f"scale{len(list(tmp_path.glob('scale*')))}"
    assert main(["scale", *args, f"run.dir={run_dir}"]) == 0
    return run_dir


@pytest.mark.parametrize(
    "text, phis",
    [("3", [3]), ("1..7", [1, 2, 3, 4, 5, 6, 7]), ("1,3,5", [1, 3, 5]), ("5,1..2", [1, 2, 5]), (4, [4])],
)
def test_parse_phi(text: str, phis: list[int]) -> None:
    assert parse_phi(text) == phis


@pytest.mark.parametrize("text", ["0", "8..1", "x", "1.5", "", "1,1", "-1..2", "1..", "1,,3"])
def test_parse_phi_rejects(text: str) -> None:
    with pytest.raises(UserError):
        parse_phi(text)


def test_dropout_rises_linearly_from_b0_to_b7() -> None:
    assert dropout_for(0) == 0.2 and dropout_for(7) == 0.5 and dropout_for(9) == 0.5
    assert dropout_for(3.5) == pytest.approx(0.35)


def test_implied_phi() -> None:
    assert implied_phi(1.1, 1.1) == pytest.approx(1.0)
    assert implied_phi(1.0, 1.1) == 0.0
    assert implied_phi(1.3, 1.0) is None  # a coefficient of 1 implies nothing


def test_formula_default_writes_the_family_within_25pct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run([], tmp_path)
    out = capsys.readouterr().out
    models = pd.read_csv(run / "models.csv")
    assert list(models["phi"]) == list(range(1, 8))
    b0_macs = count(efficientnet_b0()).macs
    ratio = models["macs"] / (2 ** models["phi"] * b0_macs)
    assert ratio.round(4).tolist() == models["macs_ratio"].tolist()
    assert ((ratio - 1).abs() <= 0.25).all()
    assert "all within 25%" in out
    for phi in range(1, 8):
        arch = Arch.from_yaml((run / f"b{phi}.yaml").read_text())
        row = models[models["phi"] == phi].iloc[0]
        assert arch.width == pytest.approx(1.1**phi, abs=1e-5)
        assert arch.depth == pytest.approx(1.2**phi, abs=1e-5)
        assert arch.resolution % 8 == 0 and abs(arch.resolution - 224 * 1.15**phi) <= 4
        assert arch.dropout == pytest.approx(0.2 + 0.3 * phi / 7, abs=1e-4) == row["dropout"]
        assert arch.drop_path == 0.2
        assert count(arch).params == row["params"] and count(arch).macs == row["macs"]
    # provenance: the paper's coefficients and the official B0, said so in the manifest
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["upstream"] == [{"stage": "paper", "path": None, "what": "paper, EfficientNet §3.3"}]
    assert manifest["baseline"]["name"] == "efficientnet_b0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["macs_within_25pct"] is True and summary["alpha"] == 1.2
    assert (run / "models.png").stat().st_size > 1000
    # the comparison with the released table, and the B2-not-B1 statement
    comparison = pd.read_csv(run / "official_comparison.csv")
    b2 = comparison[comparison["model"] == "b2"].iloc[0]
    assert (b2["phi_width"], b2["phi_depth"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert comparison[comparison["model"] == "b1"].iloc[0]["phi_width"] == 0.0
    assert "B1 (width 1, depth 1.1, resolution 240) is not phi = 1" in out
    assert "closest to phi = 1 under these coefficients is B2" in out


def test_official_mode_reproduces_b1_to_b7_exactly(tmp_path: Path) -> None:
    run = _run(["--mode", "official"], tmp_path)
    models = pd.read_csv(run / "models.csv")
    for _, row in models.iterrows():
        assert row["name"] == f"efficientnet_b{row['phi']}"
        assert row["params"] == OFFICIAL_PARAMS[row["name"]]
    assert json.loads((run / "summary.json").read_text())["official_params_exact"] is True
    b4 = Arch.from_yaml((run / "b4.yaml").read_text())
    assert (b4.width, b4.depth, b4.resolution, b4.dropout) == (1.4, 1.8, 380, 0.4)


def test_flops_matched_lands_near_two_to_the_phi(tmp_path: Path) -> None:
    run = _run(["--mode", "flops-matched", "--phi", "1,4,7"], tmp_path)
    models = pd.read_csv(run / "models.csv")
    assert list(models["phi"]) == [1, 4, 7]
    assert ((models["macs_ratio"] - 1).abs() <= 0.03).all()
    assert sorted(p.name for p in run.glob("b*.yaml")) == ["b1.yaml", "b4.yaml", "b7.yaml"]


def test_outputs_are_buildable_by_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(["--phi", "2"], tmp_path)
    capsys.readouterr()
    assert main(["describe", str(run / "b2.yaml"), "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    row = pd.read_csv(run / "models.csv").iloc[0]
    assert (totals["params"], totals["macs"], totals["resolution"]) == (row["params"], row["macs"], 296)


def _fake_grid_run(
    path: Path, baseline: Arch, alpha: float = 1.3, beta: float = 1.05, gamma: float = 1.2
) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"stage": "grid", "status": "done"}))
    (path / "coefficients.yaml").write_text(
        yaml.safe_dump({"alpha": alpha, "beta": beta, "gamma": gamma, "baseline": baseline.to_dict()})
    )
    return path


def test_from_a_grid_run_uses_its_coefficients_and_baseline(tmp_path: Path) -> None:
    small = efficientnet_b0().scaled(name="mybase", resolution=192)
    grid = _fake_grid_run(tmp_path / "grid", small)
    run = _run(["--from", str(grid), "--phi", "1"], tmp_path)
    arch = Arch.from_yaml((run / "b1.yaml").read_text())
    assert (arch.depth, arch.width, arch.resolution) == (1.3, 1.05, 232)  # 192 x 1.2 = 230.4 -> 232
    assert arch.name == "mybase-b1-formula" and arch.meta["alpha"] == 1.3
    manifest = json.loads((run / "manifest.json").read_text())
    assert {u["path"] for u in manifest["upstream"]} == {str(grid.resolve())}
    assert manifest["baseline"] == {"source": "grid run", "name": "mybase"}
    # --arch replaces the grid run's baseline, the coefficients stay
    run2 = _run(["--from", str(grid), "--phi", "1", "--arch", "efficientnet_b0"], tmp_path)
    arch2 = Arch.from_yaml((run2 / "b1.yaml").read_text())
    assert arch2.name == "efficientnet_b0-b1-formula" and arch2.depth == 1.3


def test_explicit_coefficients(tmp_path: Path) -> None:
    run = _run(["--phi", "1", "alpha=1.4", "beta=1.1", "gamma=1.1"], tmp_path)
    arch = Arch.from_yaml((run / "b1.yaml").read_text())
    assert (arch.depth, arch.width) == (1.4, 1.1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["upstream"][0]["stage"] == "config"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--phi", "0"], "phi must be >= 1"),
        (["--phi", "8..1"], "runs backwards"),
        (["--phi", "x"], "expected an integer"),
        (["--mode", "official", "--phi", "8"], "B1..B7 only"),
        (["--mode", "magic"], "mode must be one of"),
        (["alpha=1.2"], "give all three"),
        (["alpha=0.9", "beta=1.1", "gamma=1.1"], "must be >= 1"),
        (["--from", "/nonexistent/grid/run"], "no such directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error(["scale", *args, f"run.root={tmp_path}"], capsys)
    assert words in line
    assert not (tmp_path / "scale").exists()  # rejected before a run directory is made


def test_from_a_wrong_stage_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scale_run = _run(["--phi", "1"], tmp_path)
    capsys.readouterr()
    line = _error(["scale", "--from", str(scale_run), f"run.root={tmp_path}"], capsys)
    assert "a scale run, expected a grid run" in line
    half = tmp_path / "half"
    half.mkdir()
    (half / "manifest.json").write_text(json.dumps({"stage": "grid"}))
    line = _error(["scale", "--from", str(half), f"run.root={tmp_path}"], capsys)
    assert "no coefficients.yaml" in line
    grid = _fake_grid_run(tmp_path / "grid2", efficientnet_b0())
    line = _error(["scale", "--from", str(grid), "alpha=1.2", "beta=1.1", "gamma=1.1"], capsys)
    assert "not both" in line
