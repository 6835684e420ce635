"""The whole method from files alone, on tiny budgets (issue 6 acceptance):

    effnas search -> effnas grid --from <search run> -> effnas scale --from <grid run>
    -> effnas train <scale run>/b1.yaml

Each stage reads only the previous run directory and records it as upstream in its manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from effnas.cli import main
from search_spaces.arch import Arch

TINY_PROXY = [
    "proxy.images=32",
    "proxy.batch_size=16",
    "proxy.resolution=8",
    "proxy.compile=off",
    "run.threads=1",
]


def _upstream(run: Path) -> dict[str, str]:
    """{upstream run path: its stage} from a run's manifest (published defaults left out)."""
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    return {u["path"]: u["stage"] for u in manifest["upstream"] if u["path"]}


# slow (87 s on the 2-core CI machine): the default suite keeps the 20-minute CI budget; the same
# search -> grid -> scale -> train chain through files runs by default in tests/test_pipeline.py
@pytest.mark.slow
def test_search_grid_scale_train_from_files_alone(tmp_path: Path) -> None:
    search, grid, scale, train = (tmp_path / n for n in ("search", "grid", "scale", "train"))

    assert main(["search", "--trials", "2", "ray.num_cpus=2", *TINY_PROXY, f"run.dir={search}"]) == 0
    best = Arch.from_yaml((search / "best_arch.yaml").read_text())

    grid_args = ["max_candidates=2", "include_baseline=false", "ray.num_cpus=2", *TINY_PROXY]
    assert main(["grid", "--phi", "1", "--from", str(search), *grid_args, f"run.dir={grid}"]) == 0
    coeffs = yaml.safe_load((grid / "coefficients.yaml").read_text())
    assert Arch.from_dict(coeffs["baseline"]) == best  # the grid scaled the searched baseline
    assert _upstream(grid) == {str(search.resolve()): "search"}
    trials = pd.read_csv(grid / "trials.csv")
    assert ((trials["product"] - 2).abs() <= 0.1).all() and set(trials["status"]) == {"ok"}

    assert main(["scale", "--from", str(grid), "--phi", "1..2", f"run.dir={scale}"]) == 0
    b1 = Arch.from_yaml((scale / "b1.yaml").read_text())
    assert b1.stages == best.stages  # the searched blocks, grown
    assert b1.depth == pytest.approx(best.depth * coeffs["alpha"])
    assert b1.width == pytest.approx(best.width * coeffs["beta"])
    assert _upstream(scale) == {str(grid.resolve()): "grid"}

    assert main(["train", str(scale / "b1.yaml"), *TINY_PROXY, "save_weights=false", f"run.dir={train}"]) == 0
    summary = json.loads((train / "summary.json").read_text())
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    assert _upstream(train) == {str(scale.resolve()): "scale"}
