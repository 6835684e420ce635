"""The paper's other baselines (MobileNetV1/V2, ResNet-50/101/152): exact counts, the cost model
against fvcore, tiny builds that train, the width/depth rules, and the stages that read them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from effnas.cli import main
from effnas.config import compose
from search_spaces.arch import Arch, decode_stage, encode_stage
from search_spaces.builder import build_model, fvcore_count
from search_spaces.cost import count
from search_spaces.official import BASELINE_MACS, BASELINE_PARAMS, BASELINES, baseline
from search_spaces.plan import layer_plan
from search_spaces.rounding import resolve_stages

NAMES = list(BASELINES)


@pytest.mark.parametrize("name", NAMES)
def test_exact_params_and_macs_at_224_and_1000_classes(name: str) -> None:
    cost = count(baseline(name))
    assert cost.params == BASELINE_PARAMS[name]
    assert cost.macs == pytest.approx(BASELINE_MACS[name], rel=0.005)
    assert cost.macs == cost.by_op["conv"] + cost.by_op["linear"]


@pytest.mark.parametrize("name", NAMES)
def test_counter_equals_fvcore_per_operator(name: str) -> None:
    # 64 px: fvcore traces ResNet-152 at 224 px in seconds on this CPU; the structure is the same
    arch = baseline(name)
    params, by_op = fvcore_count(arch, resolution=64)
    cost = count(arch, resolution=64)
    assert params == cost.params == BASELINE_PARAMS[name]
    assert by_op == cost.by_op  # max pool: neither counts it (fvcore has no handle for it)


@pytest.mark.parametrize("name", NAMES)
def test_arch_config_is_the_baseline(name: str) -> None:
    cfg = compose("describe", [f"arch={name}"])
    assert Arch.from_dict(OmegaConf.to_container(cfg.arch)) == baseline(name)


@pytest.mark.parametrize("name", NAMES)
def test_block_strings_round_trip(name: str) -> None:
    arch = baseline(name)
    for text in arch.blocks:
        assert encode_stage(decode_stage(text)) == text
    assert Arch.from_yaml(arch.to_yaml()) == arch


@pytest.mark.parametrize("name", NAMES)
def test_builds_tiny_and_trains_one_step(name: str) -> None:
    arch = baseline(name).scaled(width=0.25)
    model = build_model(arch, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == count(arch, num_classes=10).params
    torch.manual_seed(0)
    model.train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_activations_are_the_conv_outputs_of_the_built_model(name: str) -> None:
    arch = baseline(name)
    model = build_model(arch).eval()
    seen: list[int] = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.numel()))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    cost = count(arch, resolution=64)
    assert sum(seen) == cost.activations == sum(s.activations for s in cost.stages)


# -- how width and depth apply (docs/baselines.md) ----------------------------------------------
def test_mobilenet_v2_last_conv_only_grows() -> None:
    v2 = baseline("mobilenet_v2")
    assert resolve_stages(v2.scaled(width=0.5))[2] == 1280  # torchvision: 1280 * max(1, width)
    assert resolve_stages(v2.scaled(width=1.4))[2] == 1792
    stem, stages, _ = resolve_stages(v2.scaled(width=0.5))
    assert stem == 16 and [s.out_ch for s in stages] == [8, 16, 16, 32, 48, 80, 160]


def test_resnet_width_scales_every_channel_and_depth_every_stage() -> None:
    stem, layers, head = layer_plan(baseline("resnet50").scaled(width=2.0))
    assert (stem, head) == (128, 0)
    inner_outer = sorted({(la.mid, la.out_ch) for la in layers})
    assert inner_outer == [(128, 512), (256, 1024), (512, 2048), (1024, 4096)]
    # inner = scaled output / 4, rounded to 8: at width 1.1, 256 -> 280 channels, 70 -> 72 inner
    _, layers, _ = layer_plan(baseline("resnet50").scaled(width=1.1))
    assert (layers[0].out_ch, layers[0].mid) == (280, 72)
    _, stages, _ = resolve_stages(baseline("resnet50").scaled(depth=4.0))
    assert [s.repeats for s in stages] == [12, 16, 24, 12]


def test_mobilenet_v1_grows_deeper_without_residuals() -> None:
    arch = baseline("mobilenet_v1").scaled(depth=1.4, width=0.25)
    assert [s.repeats for s in resolve_stages(arch)[1]] == [2, 3, 3, 9, 3]
    model = build_model(arch, num_classes=10)
    assert not any(getattr(m, "use_residual", False) for m in model.modules())


def test_resnet_shortcuts_project_only_where_shapes_change() -> None:
    model = build_model(baseline("resnet50"))
    projections = [b for b in model.blocks if isinstance(b.shortcut, torch.nn.Sequential)]
    assert len(projections) == 4 and len(model.blocks) == 16
    assert isinstance(model.stem_pool, torch.nn.MaxPool2d) and isinstance(model.head, torch.nn.Identity)


# -- the stages ----------------------------------------------------------------------------------
def test_describe_prints_activations_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "arch=resnet50", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cost = count(baseline("resnet50"))
    assert doc["totals"]["params"] == 25_557_032 and doc["totals"]["activations"] == cost.activations
    assert [r["op"] for r in doc["stages"]] == ["conv+maxpool", "bneck", "bneck", "bneck", "bneck", "fc"]
    assert sum(r["activations"] for r in doc["stages"]) == cost.activations
    assert main(["describe", "arch=mobilenet_v1"]) == 0
    out = capsys.readouterr().out
    assert "params 4,231,976" in out and "activations 5,042,688" in out and "dsa" in out


def test_scale_grows_resnet50(tmp_path: Path) -> None:
    run = tmp_path / "scale"
    assert main(["scale", "--arch", "resnet50", "--phi", "1..2", f"run.dir={run}"]) == 0
    models = pd.read_csv(run / "models.csv")
    assert list(models["phi"]) == [1, 2]
    for _, row in models.iterrows():
        arch = Arch.from_yaml((run / f"b{row['phi']}.yaml").read_text())
        assert arch.stages == baseline("resnet50").stages and arch.stem_pool and arch.act == "relu"
        phi = row["phi"]
        assert (arch.width, arch.depth) == (pytest.approx(1.1**phi), pytest.approx(1.2**phi))
        cost = count(arch)
        assert (cost.params, cost.macs, cost.activations) == (row["params"], row["macs"], row["activations"])


def test_grid_plan_prices_a_resnet_baseline_with_activations() -> None:
    from scaling.compound import Candidate
    from scaling.grid import COLUMNS, plan

    base = baseline("resnet50")
    rows = plan(base, [Candidate(1.2, 1.1, 1.15)], phi=1.0, proxy_resolution=32)
    assert "activations" in COLUMNS and [r["id"] for r in rows] == ["baseline", "a1.2_b1.1_g1.15"]
    for row in rows:
        cost = count(Arch.from_dict(row["_arch"]))
        assert (row["macs"], row["activations"]) == (cost.macs, cost.activations)
    assert rows[0]["activations"] == count(base).activations
