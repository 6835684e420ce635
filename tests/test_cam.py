"""`effnas cam` on tiny digits runs through the CLI: the grid is a real PNG, the predictions are
the ones the run's own evaluation recorded, image files give what the same validation images
give, CAM and Grad-CAM agree where they must (every arch family effnas builds), the deletion /
insertion curves start and end where their definition says, and bad input is one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BLOCKS, expect_usage_error, write_arch

from effnas.cli import main
from foundation import per_image

FAST = ["proxy.batch_size=32", "proxy.lr=0.4", "proxy.compile=off", "run.threads=1", "proxy.epochs=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two finished digits runs of two tiny archs (a "B0" and a wider "B1")."""
    tmp = tmp_path_factory.mktemp("cam")
    out = []
    for name, head in (("tiny", 64), ("wide", 96)):
        run = tmp / name
        assert main(["train", write_arch(tmp, TINY_BLOCKS, name, head=head), *FAST, f"run.dir={run}"]) == 0
        out.append(run)
    return out


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def picked(run: Path, n: int, seed: int = 0) -> np.ndarray:
    """The validation indices `--data n` draws (models.cam.run_maps's rule)."""
    val = json.loads((run / "manifest.json").read_text())["dataset"]["val"]
    return np.sort(np.random.default_rng(seed).choice(val, n, replace=False))


def test_cam_grid_of_two_runs_from_the_validation_split(runs: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "cam"
    n = 5
    assert main(["cam", *map(str, runs), "--data", str(n), "run.threads=1", f"run.dir={out}"]) == 0
    with Image.open(out / "cam.png") as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"))
    # cells of 1.7 x 1.9 inches: 5 columns (the image, 2 runs x 2 methods) by n = 5 rows
    assert 0.75 < pixels.shape[1] / pixels.shape[0] < 1.05
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # maps in colour, not a blank page
    table = rows(out / "faithfulness.csv")
    assert [(r["label"], r["method"]) for r in table] == [
        ("tiny", "cam"),
        ("tiny", "gradcam"),
        ("wide", "cam"),
        ("wide", "gradcam"),
    ]
    for r in table:
        assert 0 <= float(r["deletion_auc"]) <= 1 and 0 <= float(r["insertion_auc"]) <= 1
        assert int(r["images"]) == n
        # ROAD (the default): two mean probabilities and their difference with an interval
        morf, lerf, gain = float(r["road_morf"]), float(r["road_lerf"]), float(r["road_gain"])
        assert (
            0 <= morf <= 1 and 0 <= lerf <= 1 and gain == pytest.approx(lerf - morf, abs=1e-6)
        )  # float32 means
        assert float(r["road_gain_low"]) <= gain <= float(r["road_gain_high"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["images"] == n
    for entry in summary["runs"]:
        assert entry["cam_gradcam_max_difference"] < 1e-4  # a pooled linear head: the same map
    manifest = json.loads((out / "manifest.json").read_text())
    assert [u["path"] for u in manifest["upstream"]] == [str(r.resolve()) for r in runs]
    # the predictions are those of the run's own final evaluation (its per-image record)
    images = rows(out / "images.csv")
    for run in runs:
        correct = per_image.load(run, "val")[picked(run, n)]
        mine = [r for r in images if r["run"] == run.name and r["method"] == "cam"]
        assert [r["predicted"] == r["true"] for r in mine] == list(correct)


def test_image_files_give_what_the_validation_images_give(runs: list[Path], tmp_path: Path) -> None:
    """The same images written as PNG files in folders named by their class: the same truth,
    predictions and probabilities as `--data`."""
    from omegaconf import OmegaConf
    from PIL import Image

    from training.data import load_dataset

    n = 3
    data = load_dataset(OmegaConf.load(runs[0] / ".hydra" / "config.yaml").data)
    files = []
    for k, i in enumerate(picked(runs[0], n)):
        folder = tmp_path / "images" / data.classes[int(data.val.y[i])]
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / f"{k}.png")
        Image.fromarray(data.val.x[i].transpose(1, 2, 0)).save(files[-1])
    by_data, by_file = tmp_path / "a", tmp_path / "b"
    assert main(["cam", str(runs[0]), "--data", str(n), "run.threads=1", f"run.dir={by_data}"]) == 0
    assert main(["cam", str(runs[0]), *map(str, files), "run.threads=1", f"run.dir={by_file}"]) == 0
    keys = ("true", "predicted", "probability", "deletion_auc", "insertion_auc")
    a, b = rows(by_data / "images.csv"), rows(by_file / "images.csv")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert b[0]["image"] == str(files[0])


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v1", "resnet50"])
def test_cam_equals_gradcam_under_a_pooled_linear_head(name: str) -> None:
    """Grad-CAM = ReLU(CAM) / (h w) for any arch effnas builds (head conv or none)."""
    from models.cam import class_maps
    from search_spaces.builder import build_model
    from search_spaces.official import baseline, official

    arch = official(name) if name.startswith("efficientnet") else baseline(name)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, stem_stride=1).eval()
    x = torch.randn(3, 3, 32, 32)
    out = class_maps(model, x)
    torch.testing.assert_close(out["logits"], model(x).detach())
    h, w = out["cam"].shape[-2:]
    expected = torch.relu(out["cam"]) / (h * w)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(out["gradcam"], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_deletion_and_insertion_curves_end_where_defined() -> None:
    """Deletion starts at the intact image and ends at the all-mean image; insertion starts at
    the blurred copy and ends at the intact image; the order decides what happens between."""
    from models.cam import area, blurred, curves
    from search_spaces.builder import build_model
    from search_spaces.official import official

    torch.manual_seed(0)
    model = build_model(official("efficientnet_b0"), num_classes=5, stem_stride=1).eval()
    x = torch.randn(2, 3, 16, 16)
    target = torch.tensor([1, 3])
    order = torch.stack([torch.randperm(256) for _ in range(2)])
    c = curves(model, x, order, target, steps=4)
    with torch.no_grad():
        p = lambda z: torch.softmax(model(z), 1)[torch.arange(2), target]  # noqa: E731
        torch.testing.assert_close(c["deletion"][:, 0], p(x))
        torch.testing.assert_close(c["deletion"][:, -1], p(torch.zeros_like(x)))
        torch.testing.assert_close(c["insertion"][:, 0], p(blurred(x, 2.0)))
        torch.testing.assert_close(c["insertion"][:, -1], p(x))
        # a quarter in: exactly the first 64 pixels of the order are the mean colour
        half = x.clone().flatten(2)
        for i in range(2):
            half[i, :, order[i, :64]] = 0
        torch.testing.assert_close(c["deletion"][:, 1], p(half.view_as(x)))
    assert area(torch.ones(1, 5)).item() == pytest.approx(1.0)
    assert area(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(0.25)


def test_bad_cam_input_is_one_line(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    root = tmp_path / "out"

    def error(*args: str) -> str:
        return expect_usage_error(["cam", *args, f"run.root={root}"], capsys)

    run = str(runs[0])
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not an effnas run directory" in error(str(plain))
    assert "no such file or directory" in error(run, str(tmp_path / "none.png"))
    assert "give at least one train run" in error()
    no_weights = Path(shutil.copytree(runs[0], tmp_path / "no_weights"))
    (no_weights / "model.pt").unlink()
    assert "has no model.pt" in error(str(no_weights))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    assert "not an image file Pillow can read" in error(run, str(garbage))
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(gray)
    assert "mode L (1 channel(s))" in error(run, str(gray))
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(big)
    assert "40x40 pixels; the runs' images are 32x32" in error(run, str(big))
    assert "--data: must be >= 1, got 0" in error(run, "--data", "0")
    assert "--data must be >= 1" in error(run, "sample=0")
    assert "the validation split has" in error(run, "--data", "100000")
    assert "methods must be" in error(run, "--methods", "saliency")
    assert not root.exists() or not any(root.rglob("summary.json"))


# -- ROAD (models/road.py) -------------------------------------------------------------------------
def test_road_imputation_by_hand_and_on_a_plane() -> None:
    """One removed pixel among constant neighbours takes their value; a removed block inside a
    linear ramp is filled with the ramp exactly (the symmetric stencil's mean of a plane is the
    plane), so the imputation is linear, not a blank; kept pixels never move; the noise lands on
    the removed pixels only."""
    from models.road import impute

    rng = np.random.default_rng(0)
    img = np.full((1, 3, 3), 5.0)
    img[0, 1, 1] = -100.0
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    assert impute(img, removed, 0.0, rng)[0, 1, 1] == pytest.approx(5.0)

    yy, xx = np.mgrid[0:12, 0:12]
    plane = np.stack([0.3 * yy - 0.2 * xx + 1.0, 0.05 * xx, -0.1 * yy]).astype(np.float64)
    hole = np.zeros((12, 12), bool)
    hole[3:9, 2:10] = True  # interior: every removed pixel has all 8 neighbours in the image
    broken = plane.copy()
    broken[:, hole] = 0.0
    filled = impute(broken, hole, 0.0, rng)
    assert np.abs(filled - plane).max() < 1e-9
    noisy = impute(broken, hole, 0.01, np.random.default_rng(1))
    assert np.array_equal(noisy[:, ~hole], plane[:, ~hole])
    assert 0.005 < float((noisy - plane)[:, hole].std()) < 0.02
    with pytest.raises(ValueError, match="every pixel removed"):
        impute(plane, np.ones((12, 12), bool), 0.0, rng)


def test_road_gain_rewards_the_map_that_points_at_what_the_model_uses() -> None:
    """A model that reads only a bright square: the order that ranks the square first loses the
    class fast under MoRF and keeps it under LeRF (gain > 0); the reversed order scores the
    opposite, so the score tells the two maps apart rather than agreeing with any map."""
    from models.road import road_curves

    h = w = 16
    img = np.zeros((2, 3, h, w))
    img[:, :, 4:9, 5:10] = 1.0  # the square the model reads
    inside = np.zeros((h, w), bool)
    inside[4:9, 5:10] = True

    def predict(batch: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-20 * (batch[:, :, inside].mean((1, 2)) - 0.5)))
        return np.stack([p, 1 - p], 1)

    good = np.argsort(~inside.ravel(), kind="stable")[None].repeat(2, 0)  # the square first
    bad = good[:, ::-1].copy()
    target = np.zeros(2, dtype=np.int64)
    a = road_curves(predict, img, good, target, seed=0)
    b = road_curves(predict, img, bad, target, seed=0)
    assert a["morf"].shape == (2, 9)
    assert (a["gain"] > 0.5).all() and (b["gain"] < -0.5).all()
    assert np.allclose(a["gain"], a["lerf_score"] - a["morf_score"])
