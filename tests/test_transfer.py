"""The transfer chain of docs/transfer.md end to end, without a download: torchvision's
efficientnet_b0 layout filled by the weight fixture's numpy rule -> `effnas convert` -> `effnas
train --init` on CIFAR-10's classes 5-9 (a slice of the real ImageFolder tree; 1000 classes become
5) -> `effnas export --weights` (ONNX) -> onnxruntime's logits against PyTorch's on real test
photographs. benchmarks/transfer.py runs the same chain (`convert_check`) as its first step."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from effnas.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_convert import FIXTURES, fill

FIXTURE = "tv_efficientnet_b0"
TARGET = [5, 6, 7, 8, 9]  # dog, frog, horse, ship, truck
RELATIVE_TOLERANCE = 1e-4  # of the largest |logit|, as tests/test_convert.py holds the fixtures


def write_fixture_weights(path: Path) -> Path:
    """The fixture's state_dict (torchvision's key layout) filled by its README's rule, as a .pth."""
    import torch

    state, _ = fill(json.loads((FIXTURES / f"{FIXTURE}.json").read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def onnx_vs_torch(arch_file: Path, train_run: Path, onnx_file: Path, images: np.ndarray) -> dict[str, float]:
    """The train run's weights (of `arch_file`) in PyTorch and its ONNX export in onnxruntime (one thread) on the
    same uint8 NCHW images (scaled to [0, 1], standardised per channel): the largest |difference|
    of the logits, the largest |logit|, and the share of images whose top class agrees."""
    import torch

    import effnas
    from deploy.export import onnx_session

    x = images.astype(np.float32) / 255.0
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
    model = effnas.create_model(arch_file, weights=train_run)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
    session = onnx_session(onnx_file, 1)
    got = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    return {
        "max_abs_diff": float(np.abs(got - ref).max()),
        "max_abs_logit": float(np.abs(ref).max()),
        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "images": len(x),
    }


@pytest.fixture
def cifar_slice(cifar10_root: Path, tmp_path: Path) -> Path:
    """8 training and 4 test photographs per class, copied from the real ImageFolder tree."""
    for split, n in (("train", 8), ("test", 4)):
        for c in sorted(p.name for p in (cifar10_root / split).iterdir()):
            (tmp_path / "c10" / split / c).mkdir(parents=True)
            for f in sorted((cifar10_root / split / c).iterdir())[:n]:
                shutil.copy(f, tmp_path / "c10" / split / c / f.name)
    return tmp_path / "c10"


@pytest.mark.slow
def test_converted_checkpoint_fine_tunes_and_exports(
    cifar_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if not (FIXTURES / f"{FIXTURE}.json").is_file():
        pytest.skip(f"{FIXTURES} (the weight fixtures) is not available")
    pth = write_fixture_weights(tmp_path / "tv_b0.pth")
    conv, ft, exp = tmp_path / "conv", tmp_path / "ft", tmp_path / "exp"
    assert main(["convert", str(pth), "--model", "torchvision:efficientnet_b0", f"run.dir={conv}"]) == 0
    data = ["data=cifar10", f"data.root={cifar_slice}", f"data.classes=[{','.join(map(str, TARGET))}]"]
    tiny = ["proxy=default", "proxy.images=16", "proxy.batch_size=8", "proxy.bn_calibration=16"]
    args = ["train", str(conv / "arch.yaml"), "--init", str(conv), *data, "data.val_fraction=0.25"]
    assert main([*args, *tiny, "proxy.compile=off", "data.use_test=true", f"run.dir={ft}"]) == 0
    assert "--init has 1000 classes, this run 5: the classifier is new" in capsys.readouterr().err
    summary = json.loads((ft / "summary.json").read_text())
    manifest = json.loads((ft / "manifest.json").read_text())
    assert manifest["dataset"]["classes"] == ["dog", "frog", "horse", "ship", "truck"]
    assert manifest["dataset"]["test"] == 20 and summary["test_accuracy"] is not None
    assert manifest["init"]["classifier_replaced"] is True
    # export's own check (random inputs) holds an absolute tolerance, 1e-4 by default; this
    # untrained fill gives logits up to ~200 on them, where float32's rounding alone passes 1e-4,
    # so the check here is relative, as for the fixtures
    assert main(["export", "--weights", str(ft), "checks=1", "tolerance=1", f"run.dir={exp}"]) == 0
    exported = json.loads((exp / "summary.json").read_text())
    assert exported["num_classes"] == 5 and exported["check"] == "ok"
    assert exported["max_abs_diff"] <= RELATIVE_TOLERANCE * exported["max_abs_output"], exported

    from training.data import load_dataset
    from training.data.config import DataConfig

    cfg = DataConfig(name="cifar10", root=str(cifar_slice), classes=list(TARGET))
    test = load_dataset(cfg).test
    assert test is not None
    check = onnx_vs_torch(conv / "arch.yaml", ft, exp / "model.onnx", test.x)
    assert check["images"] == 20 and check["max_abs_logit"] > 0
    assert check["max_abs_diff"] <= RELATIVE_TOLERANCE * check["max_abs_logit"], check
    assert check["top1_agreement"] == 1.0
