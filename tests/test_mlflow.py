"""`mlflow.enabled=true`: every trial of a run (its architecture or multipliers, accuracy, reward,
MACs, seconds) as a nested MLflow run under one run per effnas run, the run's files as its
artifacts; a resumed run continues the same MLflow run without logging a trial twice.

MLflow is optional (`pip install 'effnas[mlflow]'`): the tests skip, saying why, without it.
Training is replaced by a stand-in (`training.trials.run_trial`); MLflow's file store is real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import expect_usage_error

from effnas.cli import main
from training.trial_log import TrialLog

pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'effnas[mlflow]')")

TINY = ["ray.enabled=false", "run.threads=1", "data.max_train=300", "reject_above=null"]


def fake_trial(config: dict, setup: Any, report: Any = None, cpus: int = 1) -> dict:
    acc = 0.5 + 0.01 * len(config["arch"]["blocks"][0])
    return {"status": "ok", "accuracy": acc, "loss": 1.0, "seconds": 0.25, "epochs": 1.0}


@pytest.fixture(autouse=True)
def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.trials

    monkeypatch.setattr(training.trials, "run_trial", fake_trial)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this


def test_a_search_logs_every_trial_and_its_files_and_resumes_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    run = tmp_path / "search"
    calls = {"n": 0}
    real = TrialLog.sync

    def sync(self: TrialLog, entries: Any) -> int:  # killed between the third row and its record
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, entries)

    monkeypatch.setattr(TrialLog, "sync", sync)
    argv = ["search", "--trials", "3", *TINY, "mlflow.enabled=true", f"mlflow.tracking_uri={uri}"]
    with pytest.raises(SystemExit):
        main([*argv, f"run.dir={run}"])
    monkeypatch.setattr(TrialLog, "sync", real)
    assert main(["search", "--resume", str(run)]) == 0

    recorded = json.loads((run / "manifest.json").read_text())["mlflow"]
    assert recorded["experiment"] == "effnas-search" and recorded["tracking_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(recorded["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["trials"] == "3"
    assert (
        parent.data.tags["optuna.study"] == json.loads((run / "manifest.json").read_text())["study"]["name"]
    )
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "trials.csv",
        "best_arch.yaml",
        "pareto.csv",
        "reward_over_trials.png",
        "accuracy_vs_macs.png",
    } <= files
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    rows = pd.read_csv(run / "trials.csv").set_index("id")
    assert sorted(int(c.data.tags["effnas_key"]) for c in children) == sorted(rows.index)  # each once
    for child in children:
        row = rows.loc[int(child.data.tags["effnas_key"])]
        assert child.data.params["arch"] == row["arch"]
        assert child.data.params["s1_op"] in ("0", "1", "2", "3")  # the choice vector
        metrics = child.data.metrics
        assert metrics["accuracy"] == pytest.approx(row["accuracy"]) and metrics["reward"] == pytest.approx(
            row["reward"]
        )
        assert metrics["macs"] == row["macs"] and metrics["seconds"] == pytest.approx(0.25)


def test_a_grid_logs_its_candidates_multipliers(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    run = tmp_path / "grid"
    argv = ["grid", "--phi", "1", "max_candidates=1", "proxy.epochs=1", *TINY[:3], "mlflow.enabled=true"]
    assert main([*argv, f"mlflow.tracking_uri={uri}", "mlflow.experiment=mine", f"run.dir={run}"]) == 0
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(json.loads((run / "manifest.json").read_text())["mlflow"]["run_id"])
    assert {"trials.csv", "coefficients.yaml", "accuracy_vs_coefficients.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    paper = next(c for c in children if c.data.tags["effnas_key"] == "a1.2_b1.1_g1.15/seed0")
    assert (paper.data.params["alpha"], paper.data.params["beta"], paper.data.params["gamma"]) == (
        "1.2",
        "1.1",
        "1.15",
    )
    assert len(children) == 2 and paper.data.metrics["macs_ratio"] > 1


def test_a_file_store_without_mlflow_s_consent_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    argv = ["search", "mlflow.enabled=true", f"mlflow.tracking_uri=file://{tmp_path}", f"run.root={tmp_path}"]
    assert "MLFLOW_ALLOW_FILE_STORE=true" in expect_usage_error(argv, capsys)
    assert not (tmp_path / "search").exists()
