"""`effnas pipeline`: search -> grid -> scale -> train in one run directory, linked through the
children's manifests; kill -9 during the grid and `--resume` finishes the chain without training
any finished search or grid trial again; how overrides reach each stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import expect_usage_error

from effnas.cli import main
from effnas.pipeline import state_of

REPO = Path(__file__).resolve().parents[1]
TINY = [  # shared: every stage with a proxy and Ray settings gets them
    "proxy.images=32",
    "proxy.batch_size=16",
    "proxy.resolution=8",
    "proxy.compile=off",
    "proxy.bn_calibration=32",
    "ray.enabled=false",
    "run.threads=1",
]
ARGS = [
    "pipeline",
    "--phi",
    "1..2",
    "--train",
    "b0,b1",
    *TINY,
    "search.trials=2",
    "grid.max_candidates=4",
    "grid.include_baseline=false",
    "train.save_weights=false",
]


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _upstream(run: Path) -> set[tuple[str, str]]:
    return {(u["stage"], u["path"]) for u in _manifest(run)["upstream"] if u["path"]}


def _grid_rows(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "grid" / "trials.csv").set_index("id")


def _kill_during_grid(run: Path, log: Path) -> None:
    """Start the pipeline in a process of its own and kill -9 it once the grid has finished a
    trial but not all of them."""
    cmd = [sys.executable, "-m", "effnas", *ARGS, f"run.dir={run}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 300  # start-up alone can take a minute on a loaded 2-core machine
        try:
            while time.time() < deadline and proc.poll() is None:
                try:
                    status = set(_grid_rows(run)["status"])
                except (FileNotFoundError, pd.errors.EmptyDataError, KeyError):
                    status = set()
                if "ok" in status and "pending" in status:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, f"the pipeline ended before it could be killed:\n{log.read_text()}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_kill_during_grid_then_resume_finishes_the_chain_and_retrains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "pipe"
    _kill_during_grid(run, tmp_path / "killed.log")
    assert _manifest(run)["status"] == "running" and _manifest(run / "grid")["status"] == "running"
    assert (
        state_of(run / "search", "search", True) == "done"
        and state_of(run / "grid", "grid", True) == "resumable"
    )
    search_trials = (run / "search" / "trials.csv").read_bytes()
    grid_before = _grid_rows(run)
    done_before = grid_before[grid_before["status"] == "ok"]
    assert 1 <= len(done_before) < len(grid_before)

    assert main(["pipeline", "--resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "search (done already, skipped)" in err and f"effnas grid --resume {run / 'grid'}" in err
    assert f"resuming: {len(done_before)} done" in out + err
    # no search trial ran again (its trials.csv is the very file), no finished grid trial either
    assert (run / "search" / "trials.csv").read_bytes() == search_trials
    grid_after = _grid_rows(run)
    assert set(grid_after["status"]) == {"ok"}
    pd.testing.assert_frame_equal(grid_after.loc[done_before.index], done_before)

    # the chain: one run directory per stage, each naming its upstream run
    assert _manifest(run)["status"] == "done"
    assert [(c["name"], c["status"]) for c in _manifest(run)["children"]] == [
        (n, "done") for n in ("search", "grid", "scale", "train_b0", "train_b1")
    ]
    assert _upstream(run / "grid") == {("search", str((run / "search").resolve()))}
    assert ("grid", str((run / "grid").resolve())) in _upstream(run / "scale")
    assert _upstream(run / "train_b0") == {("search", str((run / "search").resolve()))}
    assert _upstream(run / "train_b1") == {("scale", str((run / "scale").resolve()))}
    coeffs = yaml.safe_load((run / "grid" / "coefficients.yaml").read_text())
    b1 = yaml.safe_load((run / "scale" / "b1.yaml").read_text())
    assert b1["width"] == pytest.approx(coeffs["beta"]) and b1["depth"] == pytest.approx(coeffs["alpha"])
    # overrides reached their stages: shared (proxy, ray) to search and grid, the grid's proxy to train
    search_cfg = yaml.safe_load((run / "search" / ".hydra" / "config.yaml").read_text())
    grid_cfg = yaml.safe_load((run / "grid" / ".hydra" / "config.yaml").read_text())
    train_cfg = yaml.safe_load((run / "train_b1" / ".hydra" / "config.yaml").read_text())
    assert search_cfg["trials"] == 2 and search_cfg["proxy"]["images"] == 32
    assert not search_cfg["ray"]["enabled"] and grid_cfg["max_candidates"] == 4
    assert train_cfg["proxy"] == grid_cfg["proxy"] and train_cfg["data"] == grid_cfg["data"]
    assert train_cfg["save_weights"] is False and not (run / "train_b1" / "model.pt").exists()
    # the summary ends with the table, one row per child with its headline
    summary = json.loads((run / "summary.json").read_text())
    assert [r["name"] for r in summary["children"]] == ["search", "grid", "scale", "train_b0", "train_b1"]
    table = (run / "pipeline.md").read_text()
    assert "| stage" in table and "val acc" in table and "alpha=" in table and "best reward" in table
    # B1 against B0, paired over the validation images: one seed each, so never a win
    b1 = summary["verdicts"]["train_b1"]
    assert b1["against"] == "train_b0" and b1["call"] in ("tie", "not estimable") and b1["low"] is None
    assert b1["images"] == json.loads((run / "train_b0" / "summary.json").read_text())["val_images"]
    assert "vs train_b0: " in table and "seed spread not estimable" in table
    for plot in ("search/accuracy_vs_macs.png", "grid/accuracy_vs_coefficients.png", "scale/models.png"):
        assert (run / plot).is_file()

    # a finished pipeline resumed again skips every stage and trains nothing
    trains = {n: (run / n / "summary.json").read_bytes() for n in ("train_b0", "train_b1")}
    assert main(["pipeline", "--resume", str(run)]) == 0
    assert capsys.readouterr().err.count("done already, skipped") == 5
    assert {n: (run / n / "summary.json").read_bytes() for n in trains} == trains

    # an unfinished train run continues with train's own --resume, in place (nothing kept aside);
    # a stage without a resume of its own would be kept aside as <name>.partial-N and started again
    for path in (run, run / "train_b1"):
        manifest = _manifest(path)
        (path / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    (run / "train_b1" / "summary.json").unlink()
    assert state_of(run / "train_b1", "train", False) == "partial"
    assert state_of(run / "train_b1", "train", True) == "resumable"
    assert main(["pipeline", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.count("done already, skipped") == 4 and "resuming: effnas train --resume" in err
    assert _manifest(run / "train_b1")["status"] == "done" and (run / "train_b1" / "summary.json").is_file()
    assert not (run / "train_b1.partial-1").exists()
    assert _manifest(run / "train_b1")["status"] == "done" and _manifest(run)["status"] == "done"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "b9"], "--train b9: phi 9 is not among --phi 1..7"),
        (["--train", "x1"], "--train 'x1': expected b0"),
        (["--train", "b1,b1"], "a model is listed twice"),
        (["--phi", "0..2"], "phi must be >= 1"),
        (["search.trials=0"], "pipeline, search: --trials must be >= 1"),
        (["search.trails=3"], "pipeline, search: Could not override 'trails'"),
        (["grid.upstream=/tmp"], "grid.upstream: the pipeline sets this"),
        (["train.arch=efficientnet_b1"], "train.arch: the pipeline sets this"),
        (["proxy.optimizer=adam"], "pipeline, search: proxy.optimizer must be one of sgd, rmsprop"),
        (["ray.cpus_per_trial=0"], "pipeline, search: ray.cpus_per_trial must be > 0"),
        (["serch.trials=3"], "Key 'serch' not in 'PipelineConfig'"),
        (["data=nope"], "Could not find 'data/nope'"),
        (["scale.mode=magic"], "pipeline, scale:"),
    ],
)
def test_bad_pipeline_input_fails_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = expect_usage_error(["pipeline", *args, f"run.root={tmp_path}"], capsys)
    assert message in line
    assert not any(tmp_path.iterdir())  # no run directory: every stage was checked first
