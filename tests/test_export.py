"""`effnas export` end to end through the CLI: ONNX and TorchScript round trips within tolerance,
weights from a real (tiny) train run, a failed check as a result, and bad input as one line."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BLOCKS, expect_usage_error, session_cache, write_arch

from deploy.export import export_onnx_module, load_torchscript, onnx_session
from effnas.cli import main
from search_spaces.arch import Arch
from search_spaces.builder import build_model

# B0's blocks (SE, SiLU, depthwise 3x3 and 5x5) at a quarter of its width and depth, 32 px
TINY_B0 = ["arch=efficientnet_b0", "arch.width=0.25", "arch.depth=0.25", "arch.resolution=32"]
ONE_THREAD = ["run.threads=1"]


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    return Path(write_arch(tmp_path, TINY_BLOCKS, "tiny", head=64, resolution=32))


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny `effnas train` run on digits (10 classes, proxy 32 px, stem stride 1), shared."""
    root = tmp_path_factory.mktemp("train")
    arch = write_arch(root, TINY_BLOCKS, "tiny", head=64)
    args = ["train", arch, "proxy.images=64", "proxy.batch_size=32", "proxy.compile=off"]
    with session_cache(tmp_path_factory):  # the session's data cache, never ~/.cache
        assert main([*args, *ONE_THREAD, f"run.root={root / 'runs'}"]) == 0
    (run,) = (root / "runs" / "train").iterdir()
    yield run


def only_run(root: Path) -> Path:
    (run,) = (root / "export").iterdir()
    return run


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_onnx_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    assert main(["export", *TINY_B0, *ONE_THREAD, f"run.root={root}"]) == 0
    run = only_run(root)
    assert {p.name for p in run.iterdir()} == {".hydra", "manifest.json", "summary.json", "model.onnx"}
    checks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check ")]
    assert len(checks) == 6 and "batch 1" in checks[0] and "batch 2" in checks[-1], checks

    summary = summary_of(run)
    assert summary["status"] == "done" and summary["check"] == "ok"
    assert summary["format"] == "onnx" and summary["file"] == "model.onnx" and summary["opset"] == 18
    assert summary["bytes"] == (run / "model.onnx").stat().st_size
    assert summary["max_abs_diff"] <= 1e-4 and summary["checked_inputs"] == 6
    assert summary["max_abs_output"] > 1e-2  # BN calibrated: the check compares real numbers
    assert summary["num_classes"] == 1000 and summary["resolution"] == 32 and summary["stem_stride"] == 2
    assert summary["weights"].startswith("random init") and summary["weights_run"] is None
    assert summary["runtime"] == "onnxruntime" and summary["onnxruntime"] and summary["torch"]
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"

    session = onnx_session(run / "model.onnx", threads=1)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    (logits,) = session.run(None, {"input": np.zeros((3, 3, 32, 32), np.float32)})  # any batch
    assert logits.shape == (3, 1000)


def test_torchscript_round_trip(tmp_path: Path, arch_file: Path) -> None:
    root = tmp_path / "runs"
    assert main(["export", str(arch_file), "--format", "torchscript", *ONE_THREAD, f"run.root={root}"]) == 0
    run = only_run(root)
    assert {p.name for p in run.iterdir()} == {".hydra", "manifest.json", "summary.json", "model.ts"}
    summary = summary_of(run)
    assert summary["check"] == "ok" and summary["max_abs_diff"] <= 1e-4 and summary["arch"] == "tiny"
    assert summary["format"] == "torchscript" and summary["opset"] is None
    assert summary["runtime"] == "torchscript" and summary["exporter"] == "torch.jit.script"
    with torch.no_grad():
        assert load_torchscript(run / "model.ts")(torch.zeros(3, 3, 32, 32)).shape == (3, 1000)


def test_weights_of_a_train_run(tmp_path: Path, train_run: Path) -> None:
    """No arch given: the run's own arch, its 10 classes, 32 px and stem stride 1; the exported
    model computes what the trained weights compute."""
    root = tmp_path / "runs"
    assert main(["export", "--weights", str(train_run), *ONE_THREAD, f"run.root={root}"]) == 0
    run = only_run(root)
    summary = summary_of(run)
    assert summary["check"] == "ok" and summary["max_abs_diff"] <= 1e-4 and summary["arch"] == "tiny"
    assert (summary["num_classes"], summary["resolution"], summary["stem_stride"]) == (10, 32, 1)
    assert summary["weights"] == str((train_run / "model.pt").resolve())
    assert summary["weights_run"] == str(train_run.resolve())
    upstream = json.loads((run / "manifest.json").read_text())["upstream"]
    assert [(u["stage"], u["path"]) for u in upstream] == [("train", str(train_run.resolve()))]

    arch = Arch.from_yaml((train_run.parent.parent.parent / "tiny.yaml").read_text())
    trained = build_model(arch, num_classes=10, stem_stride=1).eval()
    trained.load_state_dict(torch.load(train_run / "model.pt", weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x).numpy()
    (got,) = onnx_session(run / "model.onnx", threads=1).run(None, {"input": x.numpy()})
    assert np.abs(got - expected).max() <= 1e-4


def test_a_failed_check_is_a_recorded_result(
    tmp_path: Path, arch_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deploy.export

    real = deploy.export.exported_runner

    def off_by_a_little(fmt: str, path: Path, threads: int) -> tuple:
        run, name = real(fmt, path, threads)
        return (lambda x: run(x) + 1e-3), name

    monkeypatch.setattr(deploy.export, "exported_runner", off_by_a_little)
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(arch_file), "--format", "torchscript", *ONE_THREAD, f"run.root={root}"])
    assert exc.value.code != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("effnas: error: export check failed") and "> tolerance 0.0001" in last
    run = only_run(root)
    summary = summary_of(run)
    assert summary["status"] == "failed" and summary["check"] == "failed"
    assert summary["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    assert (run / "model.ts").is_file()  # kept for a look


def test_export_onnx_module_takes_a_batch_of_one_and_keeps_the_batch_free(tmp_path: Path) -> None:
    """The helper the latency stage calls on parts of a network (example at batch 1)."""
    part = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1, groups=8), torch.nn.SiLU()).eval()
    export_onnx_module(part, torch.randn(1, 8, 12, 12), tmp_path / "part.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["part.onnx"]  # no temp file left
    x = torch.randn(3, 8, 12, 12)
    (got,) = onnx_session(tmp_path / "part.onnx", threads=1).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(got - part(x).numpy()).max() <= 1e-5


def _bad_inputs(tmp_path: Path, train_run: Path) -> dict[str, tuple[list[str], str]]:
    other = tmp_path / "search_run"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"stage": "search"}))
    no_weights = tmp_path / "no_weights_run"
    shutil.copytree(train_run, no_weights)
    (no_weights / "model.pt").unlink()
    (tmp_path / "notes.pt").write_text("not weights")
    return {
        "format flag": (["--arch", "efficientnet_b0", "--format", "keras"], "invalid choice: 'keras'"),
        "format key": (["arch=efficientnet_b0", "format=keras"], "format must be one of onnx, torchscript"),
        "opset": (["arch=efficientnet_b0", "opset=17"], "opset must be >= 18"),
        "tolerance": (["arch=efficientnet_b0", "tolerance=-1"], "tolerance must be >= 0"),
        "no arch": ([], "no architecture: give --arch NAME"),
        "missing weights": (["arch=efficientnet_b0", "--weights", str(tmp_path / "nope.pt")], "no such file"),
        "another stage's run": (["--weights", str(other)], "a search run, expected a train run"),
        "a run without model.pt": (["--weights", str(no_weights)], "the train run has no model.pt"),
        "not a state_dict": (
            ["arch=efficientnet_b0", "--weights", str(tmp_path / "notes.pt")],
            "not a state_dict",
        ),
        "weights of another arch": (
            ["--arch", "efficientnet_b0", "--weights", str(train_run)],
            "do not fit efficientnet_b0 (10 classes): ",
        ),
        "weights with other classes": (
            ["--weights", str(train_run), "--num-classes", "5"],
            "do not fit tiny (5 classes): 2 of 52 keys mismatch (2 shapes, 0 missing, 0 unexpected); "
            "first: classifier.weight is [10, 64] in the weights, [5, 64] in the model",
        ),
    }


BAD = [
    "format flag",
    "format key",
    "opset",
    "tolerance",
    "no arch",
    "missing weights",
    "another stage's run",
    "a run without model.pt",
    "not a state_dict",
    "weights of another arch",
    "weights with other classes",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, train_run: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, message = _bad_inputs(tmp_path, train_run)[case]
    root = tmp_path / "runs"
    line = expect_usage_error(["export", *args, f"run.root={root}"], capsys)
    assert message in line, line
    if case == "weights of another arch":
        assert re.search(r"\d+ of \d+ keys mismatch \(\d+ shapes, \d+ missing, 0 unexpected\)", line), line
    assert not root.exists()
