"""`effnas train` end to end through the CLI: run directory contents, weights that load back,
`effnas rerun` matching exactly on CPU, a slice of real CIFAR-10, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_BLOCKS, expect_usage_error, write_arch

from effnas.cli import main
from search_spaces.arch import Arch
from search_spaces.builder import build_model

FAST = ["proxy.batch_size=32", "proxy.lr=0.4", "proxy.compile=off", "run.threads=1"]


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    return Path(write_arch(tmp_path, TINY_BLOCKS, "tiny", head=64))


def only_run(root: Path) -> Path:
    (run,) = (root / "train").iterdir()
    return run


def test_train_digits_end_to_end(tmp_path: Path, arch_file: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "runs"
    args = ["train", str(arch_file), "proxy.epochs=2", "proxy.report_every=0.5", "data.use_test=true"]
    assert main([*args, *FAST, f"run.root={root}"]) == 0
    run = only_run(root)
    assert {".hydra", "manifest.json", "summary.json", "metrics.csv", "model.pt"} <= {
        p.name for p in run.iterdir()
    }
    assert (run / ".hydra" / "config.yaml").is_file()
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "img/s" in err and "ETA" in err

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["arch"] == "tiny"
    assert 0.2 < summary["val_accuracy"] <= 1.0  # chance is 0.1
    assert summary["test_accuracy"] is not None
    assert summary["epochs"] == pytest.approx(2.0) and summary["params"] > 0 and summary["macs"] > 0
    assert summary["lanes"] == 1  # run.threads=1: the micro-batches in turn

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [float(r["epoch"]) for r in rows] == [0.5, 1.0, 1.5, 2.0]
    assert float(rows[-1]["val_accuracy"]) == summary["val_accuracy"]

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "digits"
    assert manifest["dataset"]["fingerprint"] == summary["dataset_fingerprint"]
    assert manifest["device"] == "cpu" and manifest["status"] == "done"

    model = build_model(Arch.from_yaml(arch_file.read_text()), num_classes=10, stem_stride=1)
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))  # a plain state_dict


@pytest.mark.parametrize("threads", [1, 2], ids=["in-turn", "lanes"])
def test_rerun_of_a_train_run_matches(
    tmp_path: Path, arch_file: Path, capsys: pytest.CaptureFixture, threads: int
) -> None:
    root = tmp_path / "runs"
    # 2 threads and two 16-image micro-batches: the micro-batches train side by side
    fast = [*FAST[:-1], f"run.threads={threads}", "proxy.micro_batch=16"]
    before = torch.get_num_threads()
    try:
        code = main(
            ["train", str(arch_file), "proxy.images=256", "save_weights=false", *fast, f"run.root={root}"]
        )
        assert code == 0
        run = only_run(root)
        assert json.loads((run / "summary.json").read_text())["lanes"] == threads
        capsys.readouterr()
        assert main(["rerun", str(run), f"run.root={tmp_path / 'again'}"]) == 0
    finally:
        torch.set_num_threads(before)
    assert not (run / "model.pt").exists()
    out = capsys.readouterr().out
    assert "MATCH" in out and "DIFFERENT" not in out, out
    rerun = only_run(tmp_path / "again")
    assert json.loads((rerun / "rerun.json").read_text())["match"] is True


def test_train_on_a_slice_of_cifar10(tmp_path: Path, arch_file: Path, cifar10_root: Path) -> None:
    root = tmp_path / "runs"
    args = ["train", str(arch_file), "data=cifar10", f"data.root={cifar10_root}", "data.max_train=512"]
    args += ["data.val_fraction=0.02", "proxy.epochs=1", *FAST, f"run.root={root}"]
    assert main(args) == 0
    run = only_run(root)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "cifar10" and summary["steps"] == 512 // 32
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["train"] == 512 and manifest["dataset"]["val"] == 1000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("proxy.optimizer=adam", "proxy.optimizer must be one of"),
        ("proxy.schedule=steps", "proxy.schedule must be one of"),
        ("proxy.epochs=0", "proxy.epochs must be > 0"),
        ("proxy.stem_stride=3", "proxy.stem_stride must be 1 or 2"),
    ],
)
def test_bad_proxy_values_fail_before_a_run_directory(
    tmp_path: Path, override: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", override, f"run.root={tmp_path}"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "train").exists()


def test_diverging_training_is_a_clear_error(tmp_path: Path, arch_file: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", str(arch_file), "proxy.lr=1e6", "proxy.epochs=1", *FAST[2:], f"run.root={tmp_path}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "training failed" in err and "became" in err
    manifest = json.loads((only_run(tmp_path) / "manifest.json").read_text())
    assert manifest["status"] == "failed"


def test_with_the_ema_on_model_pt_is_the_evaluated_ema(tmp_path: Path, arch_file: Path) -> None:
    """proxy.ema_decay: the same training, but the EMA's weights are what is scored (the summary's
    val_loss is model.pt's) and what model.pt holds (not the raw weights)."""
    from omegaconf import OmegaConf

    from training.data import load_dataset
    from training.proxy import ProxyTrainer

    common = [str(arch_file), "proxy.epochs=1", "proxy.bn_calibration=0", *FAST]
    runs = {name: tmp_path / name for name in ("raw", "ema")}
    assert main(["train", *common, f"run.dir={runs['raw']}"]) == 0
    assert main(["train", *common, "proxy.ema_decay=0.9", f"run.dir={runs['ema']}"]) == 0
    summary = {n: json.loads((r / "summary.json").read_text()) for n, r in runs.items()}
    assert (summary["raw"]["weights"], summary["ema"]["weights"]) == ("raw", "ema")
    assert summary["ema"]["ema_decay"] == 0.9 and summary["raw"]["ema_decay"] is None
    weights = {n: torch.load(r / "model.pt", weights_only=True) for n, r in runs.items()}
    assert weights["raw"].keys() == weights["ema"].keys()
    assert not torch.equal(weights["raw"]["classifier.weight"], weights["ema"]["classifier.weight"])
    # the EMA run also scores its trained weights, which are the raw run's (the EMA and its scoring
    # draw no random numbers): the same accuracy, in the summary and in every metrics row
    assert summary["ema"]["raw_val_accuracy"] == summary["raw"]["val_accuracy"]
    assert summary["raw"]["raw_val_accuracy"] is None
    rows = {n: pd.read_csv(r / "metrics.csv") for n, r in runs.items()}
    assert rows["ema"]["raw_val_accuracy"].tolist() == rows["raw"]["val_accuracy"].tolist()
    assert "raw_val_accuracy" not in rows["raw"].columns
    assert main(["report", str(runs["raw"]), str(runs["ema"]), f"run.dir={tmp_path / 'report'}"]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "raw_test_accuracy" in text and "| ema " in text  # the report says which weights it scored

    cfg = OmegaConf.load(runs["raw"] / ".hydra" / "config.yaml")  # the runs' data and proxy
    trainer = ProxyTrainer(Arch.from_yaml(arch_file.read_text()), cfg.proxy, load_dataset(cfg.data))
    for name in ("raw", "ema"):
        trainer.model.load_state_dict(weights[name])
        _, loss, _ = trainer.score(trainer.val_x, trainer.val_y)
        assert loss == pytest.approx(summary[name]["val_loss"], rel=1e-6), name


def test_bf16_trains_on_a_cpu_that_has_it_and_is_refused_on_one_that_does_not(
    tmp_path: Path, arch_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """train.precision=bf16: autocast on this CPU where it computes bf16 natively (the C kernels
    and lanes off: they are fp32), refused in one line where it does not. Never skipped."""
    from training.proxy import cpu_has_bf16

    common = ["train", str(arch_file), "proxy.epochs=1", *FAST]
    if not cpu_has_bf16():
        err = expect_usage_error([*common, "train.precision=bf16", f"run.dir={tmp_path / 'b'}"], capsys)
        assert "no native bfloat16" in err and not (tmp_path / "b").exists()
        return
    runs = {p: tmp_path / p for p in ("fp32", "bf16")}
    for p, run in runs.items():
        assert main([*common, f"train.precision={p}", f"run.dir={run}"]) == 0
    s = {p: json.loads((r / "summary.json").read_text()) for p, r in runs.items()}
    assert (s["fp32"]["precision"], s["bf16"]["precision"]) == ("fp32", "bf16")
    assert s["bf16"]["cpu_kernels"] == 0 and s["bf16"]["lanes"] == 1
    # it learns: the zero-initialised head starts at exactly ln 10 = 2.303
    assert s["bf16"]["val_loss"] < 2.28 and s["fp32"]["val_loss"] < 2.28
    w = {p: torch.load(r / "model.pt", weights_only=True) for p, r in runs.items()}
    assert w["bf16"]["classifier.weight"].dtype == torch.float32  # fp32 master weights
    assert not torch.equal(w["fp32"]["classifier.weight"], w["bf16"]["classifier.weight"])
