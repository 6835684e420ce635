"""The Python API (`import effnas`): architectures by name or file, their cost, models with a
train run's weights, any run directory as DataFrames, a stage run as the CLI runs it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_BLOCKS, make_arch

import effnas
from foundation.errors import UserError
from search_spaces.cost import count
from search_spaces.official import efficientnet_b0

TINY = make_arch(TINY_BLOCKS, "tiny", head=64)


def test_a_short_public_surface() -> None:
    assert effnas.__all__ == ["Run", "arch", "cost", "create_model", "load_run", "run"]


def test_arch_by_name_by_file_or_as_given(tmp_path: Path) -> None:
    assert effnas.arch("efficientnet_b0") == efficientnet_b0()
    assert effnas.arch("resnet50").name == "resnet50"
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.to_yaml())
    assert effnas.arch(path).blocks == TINY.blocks and effnas.arch(TINY) is TINY
    with pytest.raises(UserError, match="unknown architecture 'efficientnet_b9'"):
        effnas.arch("efficientnet_b9")
    with pytest.raises(UserError, match="arch file"):
        effnas.arch(tmp_path / "missing.yaml")


def test_cost_is_the_cost_model() -> None:
    c = count(efficientnet_b0(), resolution=160, num_classes=10)
    assert effnas.cost("efficientnet_b0", resolution=160, num_classes=10) == {
        "macs": c.macs,
        "params": c.params,
        "activations": c.activations,
    }
    assert effnas.cost("efficientnet_b0")["macs"] == 385_814_752  # paper Table 1: 0.39B FLOPs


def test_run_a_stage_load_its_tables_and_build_its_trained_model(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.to_yaml())
    args = [str(path), "proxy.epochs=1", "proxy.batch_size=32", "proxy.compile=off", "run.threads=1"]
    run = effnas.run("train", [*args, f"run.dir={tmp_path / 'train'}"])
    assert run == tmp_path / "train" and (run / "model.pt").is_file()
    loaded = effnas.load_run(run)
    assert loaded.stage == "train" and loaded.manifest["status"] == "done"
    assert loaded.summary["val_accuracy"] == pytest.approx(
        loaded.tables["metrics.csv"]["val_accuracy"].iloc[-1]
    )
    pd.testing.assert_frame_equal(loaded.tables["metrics.csv"], pd.read_csv(run / "metrics.csv"))
    assert loaded.config["proxy"]["epochs"] == 1
    # the trained weights, with the run's class count and stem stride
    model = effnas.create_model(path, weights=run)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert not model.training and model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)  # digits: 10 classes
    with pytest.raises(UserError, match="do not fit"):
        effnas.create_model("efficientnet_b0", weights=run / "model.pt")
    assert effnas.create_model(TINY, num_classes=7)(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_bad_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not an effnas run directory"):
        effnas.load_run(tmp_path)
    with pytest.raises(UserError, match="not a valid command"):
        effnas.run("grid", ["--no-such-flag"])
    with pytest.raises(UserError):
        effnas.run("grid", ["--phi", "0", f"run.dir={tmp_path / 'g'}"])
    assert not (tmp_path / "g").exists()  # refused before a run directory was made


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # its run lands in ./results/scale/<timestamp>
    exec(compile(code, "README.md", "exec"), {})
    (run,) = (tmp_path / "results" / "scale").iterdir()
    assert effnas.load_run(run).tables["models.csv"]["phi"].tolist() == [1, 2, 3]
