"""`effnas convert` against the real libraries without them (../shared/fixtures/weights: layouts,
a numpy fill rule and the logits torchvision / timm computed), the round trip of every model it
accepts, TF "SAME" padding, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, expect_usage_error, needs

from effnas.cli import main

FIXTURES = REPO.parent / "shared" / "fixtures" / "weights"
CASES = {  # fixture -> --model
    "tv_efficientnet_b0": "torchvision:efficientnet_b0",
    "tv_mobilenet_v2": "torchvision:mobilenet_v2",
    "tv_resnet50": "torchvision:resnet50",
    "timm_efficientnet_b0": "timm:efficientnet_b0",
    "timm_tf_efficientnet_b0": "timm:tf_efficientnet_b0",
}


def fill(fixture: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The fixture's state_dict and input, by its README's rule."""
    rng = np.random.default_rng(fixture["seed"])
    state = {}
    for key, shape, _ in fixture["state_dict"]:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        a = rng.standard_normal(shape)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "running_var":
            v = 0.5 + 0.5 * np.abs(a)
        elif leaf == "running_mean":
            v = 0.1 * a
        elif leaf == "weight" and len(shape) == 1:
            v = 1 + 0.1 * a
        elif leaf == "bias":
            v = 0.1 * a
        else:
            v = a * np.sqrt(1 / np.prod(shape[1:]))
        state[key] = torch.from_numpy(np.asarray(v, dtype=np.float32))
    r = fixture["resolution"]
    return state, torch.from_numpy(rng.standard_normal((2, 3, r, r)).astype(np.float32))


def load_run(run: Path, input_size: int | None = None) -> torch.nn.Module:
    from search_spaces.arch import Arch
    from search_spaces.builder import build_model

    arch = Arch.from_yaml((run / "arch.yaml").read_text())
    state = torch.load(run / "model.pt", weights_only=True)
    with torch.device("meta"):  # no init: the weights replace it
        model = build_model(arch, num_classes=state["classifier.weight"].shape[0], input_size=input_size)
    model.load_state_dict(state, assign=True)
    return model.eval()


def convert_fixture(name: str, tmp_path: Path) -> tuple[Path, torch.Tensor, np.ndarray]:
    """`effnas convert` of the fixture's state_dict: its run, the fixture's input and logits."""
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        needs(f"{path} (the weight fixtures)")
    fixture = json.loads(path.read_text())
    state, x = fill(fixture)
    assert [k for k, _, _ in fixture["state_dict"]] == list(state)
    # timm's files come as safetensors, torchvision's as .pth: both readers
    src = tmp_path / (f"{name}.safetensors" if name.startswith("timm") else f"{name}.pth")
    if src.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(src))
    else:
        torch.save(state, src)
    run = tmp_path / "run"
    assert main(["convert", str(src), "--model", CASES[name], f"run.dir={run}"]) == 0
    return run, x, np.asarray(fixture["logits"], dtype=np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_logits_torch(name: str, tmp_path: Path) -> None:
    run, x, ref = convert_fixture(name, tmp_path)
    scale = np.abs(ref).max()
    with torch.no_grad():
        got = load_run(run)(x).numpy()
        static = load_run(run, input_size=x.shape[-1])(x).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * scale
    assert np.abs(static - ref).max() <= 1e-4 * scale  # static "SAME" padding = dynamic


# Through ONNX (an `effnas export --weights` of the converted run, run by onnxruntime, 8-15 s each)
# for torchvision's layout and TF's "SAME" padding; the other three layouts with `-m slow`.
ONNX_CASES = ("tv_efficientnet_b0", "timm_tf_efficientnet_b0")


@pytest.mark.parametrize(
    "name", [n if n in ONNX_CASES else pytest.param(n, marks=pytest.mark.slow) for n in CASES]
)
def test_fixture_logits_through_onnx(name: str, tmp_path: Path) -> None:
    from deploy.export import onnx_session

    run, x, ref = convert_fixture(name, tmp_path)
    exp = tmp_path / "export"
    assert main(["export", "--weights", str(run), "checks=1", f"run.dir={exp}"]) == 0
    session = onnx_session(exp / "model.onnx", 1)
    onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(onnx - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tf_weights_need_same_padding_and_tf_eps(tmp_path: Path) -> None:
    """The control: tf_efficientnet_b0's weights in a symmetric-padded, eps 1e-5 model miss the
    logits by more than the tolerance, so the fixture test can tell them apart."""
    path = FIXTURES / "timm_tf_efficientnet_b0.json"
    if not path.is_file():
        needs(f"{path} (the weight fixtures)")
    fixture = json.loads(path.read_text())
    state, x = fill(fixture)
    torch.save(state, tmp_path / "w.pt")
    run = tmp_path / "run"
    assert main(["convert", str(tmp_path / "w.pt"), "--model", "timm:efficientnet_b0", f"run.dir={run}"]) == 0
    ref = np.asarray(fixture["logits"])
    with torch.no_grad():
        got = load_run(run)(x).numpy()
    assert np.abs(got - ref).max() > 1e-4 * np.abs(ref).max()


# -- every model: round trip, layout facts ----------------------------------------------------------
def all_models() -> list[str]:
    from models.convert import MODELS

    return [f"{lib}:{name}" for lib, names in MODELS.items() for name in names]


# (key, shape) each library holds, from torchvision's and timm's sources
KNOWN = {
    "torchvision:efficientnet_b3": ("features.8.0.weight", (1536, 384, 1, 1)),
    "torchvision:efficientnet_b7": ("features.7.3.block.3.1.running_var", (640,)),
    "timm:tf_efficientnet_b5": ("blocks.6.2.conv_pwl.weight", (512, 3072, 1, 1)),
    "timm:efficientnet_b1": ("blocks.0.1.se.conv_reduce.weight", (4, 16, 1, 1)),
    "torchvision:resnet101": ("layer3.22.conv3.weight", (1024, 256, 1, 1)),
    "torchvision:resnet152": ("layer2.7.bn2.running_mean", (128,)),
    "torchvision:mobilenet_v2": ("features.18.0.weight", (1280, 320, 1, 1)),
}


@pytest.mark.parametrize("model", all_models())
def test_layout_of_every_model(model: str) -> None:
    """Every model's key pairing, on the meta device (no weights, no files): one library key per
    effnas key, in effnas's order, the library's own parameter count, the known keys' shapes."""
    from models.convert import expected_shapes, key_pairs, library_arch
    from search_spaces.official import BASELINE_PARAMS, OFFICIAL_PARAMS

    library, name = model.split(":")
    arch = library_arch(library, name)
    shapes = expected_shapes(arch, 1000)
    pairs = key_pairs(arch, library, name)
    assert [ours for _, ours in pairs] == list(shapes)
    assert len({lib for lib, _ in pairs}) == len(pairs)
    lib_shapes = {lib: shapes[ours] for lib, ours in pairs}  # convert copies tensors, never reshapes
    params = sum(
        int(np.prod(s))
        for k, s in lib_shapes.items()
        if not k.endswith(("running_mean", "running_var", "tracked"))
    )
    assert params == {**OFFICIAL_PARAMS, **BASELINE_PARAMS}[name.removeprefix("tf_")]
    if model in KNOWN:
        key, shape = KNOWN[model]
        assert lib_shapes[key] == shape


# The files' round trip (three `effnas convert` runs, up to 1 GB written at B7) for each layout's
# smallest model and every model with a known key; the other 17 (the remaining B1..B7 of the three
# EfficientNet layouts) differ from these in repeats and widths only, which
# test_layout_of_every_model checks for each: they run with `-m slow` (~100 s of the default suite).
ROUND_TRIP = {
    "torchvision:efficientnet_b0",
    "torchvision:resnet50",
    "timm:efficientnet_b0",
    "timm:tf_efficientnet_b0",
    *KNOWN,
}


@pytest.mark.parametrize(
    "model", [m if m in ROUND_TRIP else pytest.param(m, marks=pytest.mark.slow) for m in all_models()]
)
def test_round_trip_is_bit_exact(model: str, tmp_path: Path) -> None:
    from models.convert import expected_shapes, key_pairs, library_arch
    from search_spaces.official import BASELINE_PARAMS, OFFICIAL_PARAMS

    library, name = model.split(":")
    arch = library_arch(library, name)
    # distinct values in every tensor, cheap to make at B7's size
    ours = {
        k: (torch.arange(int(np.prod(s)), dtype=torch.float32).reshape(s) * 1e-7 + i)
        if not k.endswith("num_batches_tracked")
        else torch.tensor(i, dtype=torch.int64)
        for i, (k, s) in enumerate(expected_shapes(arch, 1000).items())
    }
    torch.save(ours, tmp_path / "ours.pt")
    out = tmp_path / "out"
    assert (
        main(["convert", str(tmp_path / "ours.pt"), "--to", library, "--model", name, f"run.dir={out}"]) == 0
    )
    lib = torch.load(out / f"{name}.pt", weights_only=True)
    assert list(lib) == [lk for lk, _ in key_pairs(arch, library, name)]
    base = name.removeprefix("tf_")
    params = sum(
        v.numel() for k, v in lib.items() if not k.endswith(("running_mean", "running_var", "tracked"))
    )
    assert params == {**OFFICIAL_PARAMS, **BASELINE_PARAMS}[base]  # the library's own count
    if model in KNOWN:
        key, shape = KNOWN[model]
        assert tuple(lib[key].shape) == shape
    back = tmp_path / "back"
    assert main(["convert", str(out / f"{name}.pt"), "--model", model, f"run.dir={back}"]) == 0
    again = torch.load(back / "model.pt", weights_only=True)
    assert list(again) == list(ours)
    assert all(again[k].dtype == ours[k].dtype and torch.equal(again[k], ours[k]) for k in ours)
    # and out again from the run directory, bit-exact in the library's layout too
    out2 = tmp_path / "out2"
    assert main(["convert", str(back), "--to", library, "--model", name, f"run.dir={out2}"]) == 0
    lib2 = torch.load(out2 / f"{name}.pt", weights_only=True)
    assert all(torch.equal(lib2[k], lib[k]) for k in lib) and list(lib2) == list(lib)
    with torch.no_grad():  # the converted run builds and runs (tiny input; these values are no
        # trained network's, so its logits may overflow: the shape is the check)
        assert load_run(back)(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


# -- TF "SAME" padding, defaults unchanged ------------------------------------------------------------
@pytest.mark.parametrize("size", [7, 8, 15, 32])
def test_same_padding_matches_tf_formula(size: int) -> None:
    import torch.nn.functional as F

    from search_spaces.blocks import SameConv2d, same_padding

    for kernel in (3, 5):
        dynamic = SameConv2d(4, 4, kernel, 2, 4, None)
        static = SameConv2d(4, 4, kernel, 2, 4, size)
        static.load_state_dict(dynamic.state_dict())
        x = torch.randn(1, 4, size, size)
        out = -(-size // 2)  # TF: ceil(size / stride)
        assert dynamic(x).shape[-1] == out
        total = max((out - 1) * 2 + kernel - size, 0)
        before, after = same_padding(size, kernel, 2)
        assert (before, after) == (total // 2, total - total // 2)
        ref = F.conv2d(F.pad(x, [before, after, before, after]), dynamic.weight, stride=2, groups=4)
        assert torch.equal(dynamic(x), ref) and torch.equal(static(x), ref)


def test_default_archs_build_as_before() -> None:
    from torch import nn

    from search_spaces.builder import build_model
    from search_spaces.official import official

    arch = official("efficientnet_b0")
    assert "padding" not in arch.to_dict() and "bn_eps" not in arch.to_dict()
    model = build_model(arch)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert type(m) is nn.Conv2d and m.padding == (m.kernel_size[0] // 2,) * 2
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-3 and m.momentum == 0.01
    tf = arch.scaled(padding="same", bn_eps=1e-5)
    assert tf.to_dict()["padding"] == "same" and type(tf).from_dict(tf.to_dict()) == tf


# -- bad input ----------------------------------------------------------------------------------------
@pytest.fixture
def b0_file(tmp_path: Path) -> Path:
    from models.convert import expected_shapes, key_pairs, library_arch

    arch = library_arch("torchvision", "efficientnet_b0")
    shapes = expected_shapes(arch, 10)
    state = {lk: torch.zeros(shapes[ek]) for lk, ek in key_pairs(arch, "torchvision", "efficientnet_b0")}
    torch.save(state, tmp_path / "b0.pth")
    return tmp_path / "b0.pth"


def _edit(path: Path, change) -> Path:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


BAD = {
    "missing key": (
        lambda s: s.pop("features.3.1.block.2.fc1.bias"),
        "missing key features.3.1.block.2.fc1.bias",
    ),
    "shape differs": (
        lambda s: s.__setitem__("features.1.0.block.0.0.weight", torch.zeros(32, 1, 5, 5)),
        "features.1.0.block.0.0.weight has shape [32, 1, 5, 5]",
    ),
    "unexpected key": (lambda s: s.__setitem__("aux.weight", torch.zeros(1)), "unexpected key aux.weight"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_mismatch_is_one_line_naming_the_key(
    case: str, b0_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, message = BAD[case]
    _edit(b0_file, change)
    new = tmp_path / "new"
    line = expect_usage_error(
        ["convert", str(b0_file), "--model", "torchvision:efficientnet_b0", f"run.root={new}"], capsys
    )
    assert message in line, line
    assert not new.exists()


def test_other_bad_input(b0_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = f"run.root={tmp_path / 'new'}"
    # a state_dict of another model
    line = expect_usage_error(["convert", str(b0_file), "--model", "timm:efficientnet_b0", new], capsys)
    assert "missing key conv_stem.weight" in line
    line = expect_usage_error(
        ["convert", str(b0_file), "--model", "torchvision:efficientnet_b9", new], capsys
    )
    assert "efficientnet_b9" in line
    line = expect_usage_error(["convert", str(b0_file), "--model", "keras:efficientnet_b0", new], capsys)
    assert "keras" in line
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(b0_file.read_bytes()[:5000])
    line = expect_usage_error(
        ["convert", str(truncated), "--model", "torchvision:efficientnet_b0", new], capsys
    )
    assert "cut.pth" in line
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    line = expect_usage_error(["convert", str(cut), "--model", "torchvision:efficientnet_b0", new], capsys)
    assert "not a safetensors file" in line
    odd = tmp_path / "odd.pt"
    torch.save({"features.0.0.weight": [1, 2, 3]}, odd)
    line = expect_usage_error(["convert", str(odd), "--model", "torchvision:efficientnet_b0", new], capsys)
    assert "features.0.0.weight is a list" in line
    assert not (tmp_path / "new").exists()
