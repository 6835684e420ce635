"""`effnas report` over a tiny real chain (search -> grid -> scale -> train, as in test_chain.py)
and a tiny real study run (as in test_study.py): one report.md whose image links resolve, a section per stage, every
table followed by the run directory it came from; bad inputs exit 2 with one line and write nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import expect_usage_error, session_cache, write_small_arch

from effnas.cli import main

TINY_PROXY = [
    "proxy.images=32",
    "proxy.batch_size=16",
    "proxy.resolution=8",
    "proxy.compile=off",
    "run.threads=1",
]
STUDY = ["data.max_train=300", "seeds=1", "budgets=[1]", "methods=[baseline,depth,width,resolution,compound]"]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """search -> grid -> scale -> train on tiny budgets, and a scaling study at two MACs levels (so
    each single dimension has a Figure 3 curve), every trial in this process."""
    root = tmp_path_factory.mktemp("chain")
    runs = {n: root / n for n in ("search", "grid", "scale", "train", "study")}
    with session_cache(tmp_path_factory):  # the session's data cache, never ~/.cache
        no_ray = ["ray.enabled=false", *TINY_PROXY]
        assert main(["search", "--trials", "2", *no_ray, f"run.dir={runs['search']}"]) == 0
        grid = ["grid", "--phi", "1", "--from", str(runs["search"]), "max_candidates=1", *no_ray]
        assert main([*grid, f"run.dir={runs['grid']}"]) == 0
        assert main(["scale", "--from", str(runs["grid"]), "--phi", "1..2", f"run.dir={runs['scale']}"]) == 0
        train = ["train", str(runs["scale"] / "b1.yaml"), *TINY_PROXY, "save_weights=false"]
        assert main([*train, f"run.dir={runs['train']}"]) == 0
        # conftest's small baseline, not the default B0 (test_study.py checks that default)
        study = ["study", "scaling", "--flops", "2x,3x", "--arch", write_small_arch(root), *STUDY, *no_ray]
        assert main([*study, f"run.dir={runs['study']}"]) == 0
    return runs


def only_run(root: Path) -> Path:
    (run,) = (root / "report").iterdir()
    return run


def test_report_over_every_stage(chain: dict[str, Path], tmp_path: Path) -> None:
    runs = list(chain.values())
    out = tmp_path / "out"
    assert main(["report", "--runs", *map(str, runs), "--title", "Tiny chain", f"run.root={out}"]) == 0
    report_dir = only_run(out)
    text = (report_dir / "report.md").read_text()

    assert text.startswith("# Tiny chain\n")
    assert text.count("\n## ") == 5
    for heading in ("## Search", "## Grid", "## Scale", "## Study", "## Train"):
        assert f"\n{heading}\n" in text, heading
    images = IMAGE.findall(text)
    assert len(images) >= 6  # search front, grid, scale family, Figure 8, Figure 3, train curves
    for name in images:
        assert "/" not in name and (report_dir / name).is_file(), name
    assert "study1_figure8.png" in images and "study1_figure3.png" in images

    # every table but the inputs one is followed by the line naming its run directory
    lines = text.splitlines()
    blocks = [i for i, ln in enumerate(lines) if ln.startswith("|") and not lines[i - 1].startswith("|")]
    assert len(blocks) >= 7
    named = set()
    for start in blocks[1:]:
        end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
        after = next(ln for ln in lines[end:] if ln.strip())
        assert after.startswith("*Source: `"), after
        named |= {str(r) for r in runs if f"`{r}`" in after}
        assert "data: " in after and "proxy budget: " in after
    assert named == {str(r) for r in runs}

    assert "**winner**, paper (1.2, 1.1, 1.15)" in text  # max_candidates=1 trains the paper's point
    # the study's own leader and compound's margin over the best single dimension, from summary.json
    summary = json.loads((chain["study"] / "summary.json").read_text())
    for level in ("2x", "3x"):
        entry = summary["budgets"]["1 epochs"][level]
        assert "| 1 " in text and f"| {level} " in text
        assert f"{entry['leader']} (" in text
        assert f"(vs {entry['compound_vs_best_single']['other']})" in text
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert {u["path"] for u in manifest["upstream"]} == {str(r.resolve()) for r in runs}
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["sections"] == ["Search", "Grid", "Scale", "Study", "Train"]


def test_optional_columns_latency_seeds_and_verdict(chain: dict[str, Path], tmp_path: Path) -> None:
    """A search with predicted latency drawn against it too; a grid with seeds and a verdict."""
    import yaml

    search = Path(shutil.copytree(chain["search"], tmp_path / "search"))
    trials = pd.read_csv(search / "trials.csv")
    trials["latency_ms"] = trials["macs"] / 1e8
    trials.to_csv(search / "trials.csv", index=False)

    grid = Path(shutil.copytree(chain["grid"], tmp_path / "grid"))
    trials = pd.read_csv(grid / "trials.csv")
    if "seed" not in trials.columns:
        trials["seed"] = 0
    second = trials.assign(seed=trials["seed"] + 1, accuracy=trials["accuracy"] * 0.99)
    pd.concat([trials, second]).to_csv(grid / "trials.csv", index=False)
    coeffs = yaml.safe_load((grid / "coefficients.yaml").read_text())
    coeffs["verdict"] = {
        "baseline": {
            "id": "baseline",
            "mean": 0.5,
            "std": 0.01,
            "n": 2,
            "margin": 0.1,
            "spread": 0.02,
            "call": "wins",
        },
        "paper": None,
        "runner_up": None,
    }
    (grid / "coefficients.yaml").write_text(yaml.safe_dump(coeffs))

    out = tmp_path / "out"
    assert main(["report", "--runs", str(search), str(grid), f"run.root={out}"]) == 0
    report_dir = only_run(out)
    text = (report_dir / "report.md").read_text()
    assert "search1_accuracy_vs_latency.png" in IMAGE.findall(text)
    assert (report_dir / "search1_accuracy_vs_latency.png").is_file()
    assert re.search(r"^\|.*\blatency_ms\b", text, re.M)
    assert re.search(r"^\|.*\bseeds\b.*\bmean\b.*\bstd\b", text, re.M)
    assert "wins" in text and "not trained, or the winner itself" in text
    assert "## Scale" not in text and "## Train" not in text  # sections only for the runs given


@pytest.mark.parametrize("case", ["missing", "not_a_run", "corrupt_trials", "other_stage", "none"])
def test_bad_input_exits_2_and_writes_nothing(
    case: str, chain: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    if case == "not_a_run":
        bad.mkdir()
        (bad / "notes.txt").write_text("hello")
    elif case == "corrupt_trials":
        shutil.copytree(chain["search"], bad)
        (bad / "trials.csv").write_bytes(b"\x00\xff garbage\n\x01,\x02\n")
    elif case == "other_stage":
        shutil.copytree(chain["search"], bad)
        manifest = json.loads((bad / "manifest.json").read_text())
        (bad / "manifest.json").write_text(json.dumps(manifest | {"stage": "pipeline"}))
    out = tmp_path / "out"
    runs = [] if case == "none" else ["--runs", str(chain["grid"]), str(bad)]
    line = expect_usage_error(["report", *runs, f"run.root={out}"], capsys)
    expected = {
        "missing": f"run directory {bad} does not exist",
        "not_a_run": f"{bad}: not an effnas run directory",
        "corrupt_trials": f"{bad / 'trials.csv'}: ",
        "other_stage": f"{bad}: a pipeline run; effnas report reads search, grid, scale, study, train, latency runs",
        "none": "no run directories given",
    }[case]
    assert expected in line
    assert not out.exists()
