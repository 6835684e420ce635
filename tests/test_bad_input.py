"""Bad input everywhere: every command and config group, fed a wrong value, a missing file or a
corrupt input file, fails with one line on stderr and exit code 2, no traceback, and leaves every
run directory it was given exactly as it was (hashed before and after).

The upstream runs are real: one tiny pipeline (search with its Optuna study, grid, scale, a
trained B1 with its weights) built once for the module; each case corrupts a copy of it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import expect_usage_error

from effnas.cli import main

TINY = [
    "proxy.images=32",
    "proxy.batch_size=16",
    "proxy.resolution=8",
    "proxy.compile=off",
    "proxy.bn_calibration=32",
    "ray.enabled=false",
    "run.threads=1",
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("upstream") / "pipe"
    args = ["pipeline", "--phi", "1..2", "--train", "b1", *TINY, "search.trials=1", "search.sampler=tpe"]
    assert main([*args, "grid.max_candidates=1", "grid.include_baseline=false", f"run.dir={run}"]) == 0
    return run


@pytest.fixture
def runs(upstream: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline run (search/, grid/, scale/, train_b1/) to corrupt."""
    return Path(shutil.copytree(upstream, tmp_path / "pipe"))


def tree_hash(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (a run's lock file comes and goes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".effnas.lock"
    }


# -- corruptions ------------------------------------------------------------------------------------
def truncate(path: Path, keep: float = 0.6) -> None:
    """Cut a file mid-line, as a copy interrupted half-way would."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def bad_block(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace("_k3_", "_k3x_", 1).replace("_k5_", "_k5x_", 1))


def garbage(path: Path) -> None:
    path.write_bytes(b"alpha: [1.2\n\x00\x01 not: yaml: at all\n")


def unfinish(run: Path) -> None:
    """Mark a finished run interrupted so that --resume reads its records."""
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))


def unlink(path: Path) -> None:
    path.unlink()


def own_study(run: Path) -> None:
    """Point a copied run's manifest at its own study.log (the copy's still names the original)."""
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    manifest["study"]["storage"] = str(run / "study.log")
    (run / "manifest.json").write_text(json.dumps(manifest))


def predictor_file(path: Path, space: dict[str, object], runtime: str) -> None:
    """A latency predictor file (as `effnas latency --fit-predictor` saves one) of `space` and
    `runtime`, its regressor fitted on made-up rows: what is refused is where it was measured."""
    import numpy as np
    from conftest import space_config

    from search_spaces.latency import LatencyTable
    from search_spaces.latency_predictor import LatencyPredictor, make
    from search_spaces.mnasnet import MnasNetSpace

    s = MnasNetSpace.from_config(space_config(**space))
    x = np.array([[float(i)] + [0.0] * 16 for i in range(1, 9)])
    LatencyPredictor(
        model=make("table").fit(x, np.arange(2.0, 10.0)),
        kind="table",
        table=LatencyTable({}),
        stages=7,
        space_fingerprint=s.fingerprint(),
        space_description=s.describe(),
        runtime=runtime,
        threads=1,
        batch=1,
        kw={"num_classes": 1000, "stem_stride": None},
        machine={},
        rows=8,
        setup={"bn": "calibrated"},
    ).save(path)


def small_space_predictor(path: Path) -> None:
    predictor_file(path, {"filters": [0.25, 0.5]}, "torch")


def onnxruntime_predictor(path: Path) -> None:
    predictor_file(path, {}, "onnxruntime")


# name -> (arguments, "{r}" standing for the copy of the pipeline run; a piece of the expected
# message; the corruptions done first, each (function, path relative to the copy))
CASES: dict[str, tuple[list[str], str, list[tuple[Callable[[Path], None], str]]]] = {
    # search
    "search/wrong value": (["search", "--target-flops", "400X"], "bad FLOP count", []),
    "search/missing latency table": (["search", "--latency-table", "{r}/none.json"], "none.json", []),
    "search/corrupt latency predictor": (
        ["search", "--target-latency", "15ms", "--latency-predictor", "{r}/scale/models.csv"],
        "not a readable latency predictor",
        [],
    ),
    "search/latency predictor of another space": (
        ["search", "--target-latency", "15ms", "--latency-predictor", "{r}/p.pkl"],
        "another search space",
        [(small_space_predictor, "p.pkl")],
    ),
    "search/latency predictor of another runtime": (
        ["search", "--target-latency", "15ms@torch", "--latency-predictor", "{r}/p.pkl"],
        "measured on onnxruntime, not torch",
        [(onnxruntime_predictor, "p.pkl")],
    ),
    "search/target latency on an unknown runtime": (
        ["search", "--target-latency", "15ms@tvm", "--latency-predictor", "{r}/p.pkl"],
        "unknown runtime 'tvm'",
        [(onnxruntime_predictor, "p.pkl")],
    ),
    "search/resume truncated trials.csv": (
        ["search", "--resume", "{r}/search"],
        "trials.csv: truncated",
        [(unfinish, "search"), (truncate, "search/trials.csv")],
    ),
    "search/resume with a corrupt study journal": (
        ["search", "--resume", "{r}/search"],
        "study.log is not an Optuna journal",
        [(unfinish, "search"), (garbage, "search/study.log")],
    ),
    "search/the study database of another run": (
        ["search", "storage=sqlite:///{r}/grid/study.db"],
        "the study database of another run (grid run",
        [],
    ),
    "search/resume a grid run": (["search", "--resume", "{r}/grid"], "a grid run", []),
    # grid
    "grid/wrong value": (["grid", "--phi", "0"], "--phi must be > 0", []),
    "grid/from a search run with a bad best_arch.yaml": (
        ["grid", "--from", "{r}/search"],
        "best_arch.yaml",
        [(bad_block, "search/best_arch.yaml")],
    ),
    "grid/from a scale run": (["grid", "--from", "{r}/scale"], "a scale run", []),
    "grid/resume truncated trials.csv": (
        ["grid", "--resume", "{r}/grid"],
        "trials.csv: truncated",
        [(unfinish, "grid"), (truncate, "grid/trials.csv")],
    ),
    "grid/the study database of another run": (
        ["grid", "storage=sqlite:///{r}/search/study.db"],
        "the study database of another run (search run",
        [],
    ),
    "grid/arch file with a bad block": (
        ["grid", "--arch", "{r}/scale/b1.yaml"],
        "b1.yaml",
        [(bad_block, "scale/b1.yaml")],
    ),
    # scale
    "scale/wrong value": (["scale", "--phi", "1..x"], "--phi '1..x'", []),
    "scale/garbage coefficients.yaml": (
        ["scale", "--from", "{r}/grid"],
        "coefficients.yaml",
        [(garbage, "grid/coefficients.yaml")],
    ),
    "scale/missing coefficients.yaml": (
        ["scale", "--from", "{r}/grid"],
        "coefficients.yaml",
        [(unlink, "grid/coefficients.yaml")],
    ),
    "scale/bad mode": (["scale", "--mode", "magic"], "magic", []),
    # train
    "train/arch file with a bad block": (
        ["train", "{r}/scale/b1.yaml"],
        "b1.yaml",
        [(bad_block, "scale/b1.yaml")],
    ),
    "train/missing arch file": (["train", "{r}/scale/b9.yaml"], "does not exist", []),
    "train/missing data root": (
        ["train", "data=cifar10", "data.root={r}/no-cifar"],
        "no-cifar does not exist",
        [],
    ),
    "train/wrong value": (["train", "data.val_fraction=2"], "val_fraction", []),
    "train/no workers": (["train", "train.workers=0"], "train.workers must be >= 1", []),
    "train/new classifier without --init": (
        ["train", "train.new_classifier=true"],
        "train.new_classifier=true replaces --init's classifier",
        [],
    ),
    "train/fp16 on CPU": (["train", "train.precision=fp16"], "train.precision=fp16 needs a CUDA device", []),
    "train/unknown precision": (
        ["train", "train.precision=fp8"],
        "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'",
        [],
    ),
    "train/more workers than Ray's CPUs": (
        ["train", "train.workers=3", "ray.num_cpus=2"],
        "needs 3 CPUs, but the local Ray runtime has 2",
        [],
    ),
    # study
    "study/garbage coefficients.yaml": (
        ["study", "scaling", "--from", "{r}/grid"],
        "coefficients.yaml",
        [(garbage, "grid/coefficients.yaml")],
    ),
    "study/wrong method": (["study", "scaling", "--methods", "sideways"], "sideways", []),
    "study/resume a search run": (["study", "scaling", "--resume", "{r}/search"], "a search run", []),
    # latency
    "latency/unknown model": (["latency", "--compare", "efficientnet_b9"], "efficientnet_b9", []),
    "latency/corrupt table": (
        ["latency", "--table", "{r}/scale/models.csv"],
        "models.csv",
        [(truncate, "scale/models.csv")],
    ),
    "latency/wrong value": (["latency", "--runs", "0"], "must be >= 1", []),
    "latency/fit-predictor on too few": (["latency", "--fit-predictor", "19"], "needs N >= 20", []),
    "latency/corrupt predictor": (
        ["latency", "--predictor", "{r}/p.pkl"],
        "p.pkl",
        [(onnxruntime_predictor, "p.pkl"), (truncate, "p.pkl")],
    ),
    "latency/predictor of another runtime": (
        ["latency", "--predictor", "{r}/p.pkl", "--runtime", "torch"],
        "measured on onnxruntime, not torch",
        [(onnxruntime_predictor, "p.pkl")],
    ),
    # export
    "export/truncated weights": (
        ["export", "{r}/scale/b1.yaml", "--weights", "{r}/train_b1"],
        "model.pt",
        [(truncate, "train_b1/model.pt")],
    ),
    "export/weights of another arch": (
        ["export", "{r}/scale/b2.yaml", "--weights", "{r}/train_b1"],
        "b2",
        [],
    ),
    "export/missing weights": (["export", "--weights", "{r}/none.pt"], "none.pt", []),
    # convert
    "convert/a state_dict of another model": (
        ["convert", "{r}/train_b1/model.pt", "--model", "torchvision:efficientnet_b1"],
        "missing key features.0.0.weight",
        [],
    ),
    "convert/unknown model": (
        ["convert", "{r}/train_b1/model.pt", "--model", "torchvision:efficientnet_b9"],
        "efficientnet_b9",
        [],
    ),
    "convert/truncated weights": (
        ["convert", "{r}/train_b1/model.pt", "--to", "timm", "--model", "efficientnet_b1"],
        "model.pt",
        [(truncate, "train_b1/model.pt")],
    ),
    # train --init (fine-tuning)
    "train/init of a run of another arch": (
        ["train", "{r}/scale/b2.yaml", "--init", "{r}/train_b1"],
        "differs from the one trained here",
        [],
    ),
    "train/init with truncated weights": (
        ["train", "{r}/scale/b1.yaml", "--init", "{r}/train_b1"],
        "model.pt",
        [(truncate, "train_b1/model.pt")],
    ),
    # cam
    "cam/not a train run": (["cam", "{r}/scale"], "a scale run; cam needs a train run", []),
    "cam/a run without weights": (
        ["cam", "{r}/train_b1"],
        "has no model.pt",
        [(unlink, "train_b1/model.pt")],
    ),
    "cam/truncated weights": (["cam", "{r}/train_b1"], "model.pt", [(truncate, "train_b1/model.pt")]),
    "cam/wrong value": (["cam", "{r}/train_b1", "--data", "0"], "must be >= 1", []),
    # report
    "report/missing run": (["report", "{r}/nope"], "nope", []),
    "report/not a run": (["report", "{r}/grid/.hydra"], "not an effnas run", []),
    "report/truncated trials.csv": (
        ["report", "{r}/search"],
        "trials.csv: truncated",
        [(truncate, "search/trials.csv")],
    ),
    "report/garbage coefficients.yaml": (
        ["report", "{r}/grid"],
        "coefficients.yaml",
        [(garbage, "grid/coefficients.yaml")],
    ),
    # describe
    "describe/arch file with a bad block": (
        ["describe", "{r}/scale/b1.yaml"],
        "b1.yaml",
        [(bad_block, "scale/b1.yaml")],
    ),
    "describe/wrong format": (["describe", "--format", "xml"], "xml", []),
    # rerun
    "rerun/no recorded config": (
        ["rerun", "{r}/train_b1"],
        "config.yaml",
        [(unlink, "train_b1/.hydra/config.yaml")],
    ),
    "rerun/garbage recorded config": (
        ["rerun", "{r}/train_b1"],
        "config.yaml",
        [(garbage, "train_b1/.hydra/config.yaml")],
    ),
    "rerun/truncated summary": (
        ["rerun", "{r}/train_b1"],
        "summary.json",
        [(truncate, "train_b1/summary.json")],
    ),
    # pipeline
    "pipeline/wrong value": (["pipeline", "--train", "b9"], "--train b9", []),
    "pipeline/resume a search run": (["pipeline", "--resume", "{r}/search"], "a search run", []),
    "pipeline/resume with a truncated grid trials.csv": (
        ["pipeline", "--resume", "{r}"],
        "trials.csv: truncated",
        [(unfinish, "."), (unfinish, "grid"), (truncate, "grid/trials.csv")],
    ),
    "pipeline/resume with a garbage recorded config": (
        ["pipeline", "--resume", "{r}"],
        "config.yaml",
        [(unfinish, "."), (garbage, ".hydra/config.yaml")],
    ),
    # dashboard
    # (--port 0 is refused after the study is located: a case that fails to fail never serves)
    "dashboard/a run without a study": (["dashboard", "{r}/scale", "--port", "0"], "has no Optuna study", []),
    "dashboard/corrupt study journal": (
        ["dashboard", "{r}/search", "--port", "0"],
        "study.log is not an Optuna journal",
        [(own_study, "search"), (garbage, "search/study.log")],
    ),
    # surrogate
    "surrogate/not a search run": (["surrogate", "fit", "{r}/scale"], "not a search run", []),
    "surrogate/truncated trials.csv": (
        ["surrogate", "fit", "{r}/search"],
        "trials.csv",
        [(truncate, "search/trials.csv")],
    ),
    # config groups
    "group arch/unknown": (["describe", "arch=efficientnet_b9"], "arch/efficientnet_b9", []),
    "group arch/wrong value": (["describe", "arch.width=-1"], "width", []),
    "group data/unknown": (["train", "data=nope"], "data/nope", []),
    "group data/wrong value": (["search", "data.max_train=0"], "max_train", []),
    "group data/class index out of range": (
        ["train", "data.classes=[0,10]"],
        "class index 10 is out of range: digits has 10 classes",
        [],
    ),
    "group data/empty class subset": (["train", "data.classes=[]"], "data.classes is empty", []),
    "group proxy/unknown": (["grid", "proxy=nope"], "proxy/nope", []),
    "group proxy/wrong value": (["train", "proxy.lr=-1"], "lr", []),
    "group sampler/unknown": (["search", "sampler=nope"], "sampler/nope", []),
    "group sampler/wrong value": (["search", "sampler.lr=abc"], "sampler.lr", []),
    "group space/unknown": (["search", "space=nope"], "space/nope", []),
    "group space/wrong value": (["search", "space.kernels=[4]"], "kernel", []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, message, corruptions = CASES[case]
    for corrupt, where in corruptions:
        corrupt(runs / where)
    before = tree_hash(runs)
    new = tmp_path / "new"
    line = expect_usage_error([*(a.replace("{r}", str(runs)) for a in args), f"run.root={new}"], capsys)
    assert message in line, line
    assert tree_hash(runs) == before  # nothing given was changed
    assert not new.exists() or not any(new.rglob("summary.json"))  # no run finished


def test_every_command_and_group_has_cases() -> None:
    from effnas.registry import STAGES

    commands = {c.split("/")[0] for c in CASES}
    assert {*STAGES, "rerun"} <= commands
    assert {f"group {g}" for g in ("arch", "data", "proxy", "sampler", "space")} <= commands
