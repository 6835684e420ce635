"""`effnas train --init`: fine-tuning from another run's weights, through the CLI on digits.

The init reproduces its source exactly before training (every tensor, and the same validation
accuracy); another class count gets a new classifier, said in one line; a frozen body (and frozen
BN statistics) does not move during the frozen epochs and does after; `train.body_lr_scale=0`
keeps the body where it was; `--resume` of an interrupted fine-tune continues its checkpoint (not
--init's weights) and ends with the bits of an uninterrupted run, even after the source is gone;
bad sources are one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_BLOCKS, expect_usage_error, write_arch

from effnas.cli import main
from models.train import CHECKPOINT, read_checkpoint

# digits: 1,222 training images -> 38 steps of 32 per epoch
FAST = ["proxy.batch_size=32", "proxy.lr=0.4", "proxy.compile=off", "run.threads=1"]
HEAD = ("classifier.weight", "classifier.bias")


def tiny_arch(tmp: Path, name: str = "tiny", head: int = 64) -> Path:
    return Path(write_arch(tmp, TINY_BLOCKS, name, head=head))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch train run: the weights every fine-tune here starts from."""
    tmp = tmp_path_factory.mktemp("source")
    run = tmp / "src"
    assert main(["train", str(tiny_arch(tmp)), "proxy.epochs=1", *FAST, f"run.dir={run}"]) == 0
    return run


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    return tiny_arch(tmp_path)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def checkpoint_weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / CHECKPOINT)["model"]


def body(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k not in HEAD}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The keys whose tensors differ."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_init_reproduces_the_source_run_before_training(source: Path) -> None:
    """Loaded into a fresh trainer, the weights are the source's, bit for bit, and score the
    source's validation accuracy on the same images."""
    from omegaconf import OmegaConf

    from models import finetune
    from search_spaces.arch_config import arch_from_cfg
    from training.data import load_dataset
    from training.proxy import ProxyTrainer

    cfg = OmegaConf.load(source / ".hydra" / "config.yaml")
    arch = arch_from_cfg(cfg.arch)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the source trained
    try:
        trainer = ProxyTrainer(arch, cfg.proxy, load_dataset(cfg.data), seed=99)
        fresh = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        init = finetune.init_source(str(source))
        assert init.run == source and init.stage == "train" and init.arch == arch
        facts = finetune.apply_init(trainer.model, init, arch, "zero_residual")
        assert facts["classifier_replaced"] is False
        loaded = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
        src = weights(source / "model.pt")
        assert same(loaded, src) == []
        assert len(same(fresh, src)) > len(src) // 2  # it was another model before
        accuracy, _, _ = trainer.score(trainer.val_x, trainer.val_y)
        trainer.close()
    finally:
        torch.set_num_threads(before)
    assert accuracy == json.loads((source / "summary.json").read_text())["val_accuracy"]


def test_another_class_count_replaces_the_classifier(
    tmp_path: Path, arch_file: Path, capsys: pytest.CaptureFixture
) -> None:
    twelve = tmp_path / "twelve"
    args = ["train", str(arch_file), "proxy.epochs=1", "proxy.num_classes=12", *FAST]
    assert main([*args, f"run.dir={twelve}", "save_weights=true"]) == 0
    capsys.readouterr()
    run = tmp_path / "ft"
    assert (
        main(["train", str(arch_file), "--init", str(twelve), "proxy.epochs=1", *FAST, f"run.dir={run}"]) == 0
    )
    err = capsys.readouterr().err
    assert "--init has 12 classes, this run 10: the classifier is new" in err
    assert weights(run / "model.pt")["classifier.weight"].shape == (10, 64)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["init"]["classifier_replaced"] is True and manifest["init"]["init_classes"] == 12
    assert [u["path"] for u in manifest["upstream"]] == [str(twelve.resolve())]
    assert json.loads((run / "summary.json").read_text())["init"] == str(twelve)


def test_new_classifier_at_the_same_class_count(
    source: Path, arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """train.new_classifier=true: another task with as many classes (CIFAR-10's 0-4 -> 5-9) gets
    the new model's own classifier, not the source's, and says so; the body is the source's."""
    tiny = ["proxy.images=32", "proxy.bn_calibration=32", "train.body_lr_scale=0", *FAST]
    runs = {}
    for new in (False, True):
        runs[new] = tmp_path / f"new{new}"
        args = ["train", str(arch_file), "--init", str(source), f"train.new_classifier={str(new).lower()}"]
        assert main([*args, *tiny, "proxy.lr=1e-9", f"run.dir={runs[new]}"]) == 0  # a step moves nothing
    err = capsys.readouterr().err
    assert err.count("--init's classifier (10 classes) is not kept, the classifier is new") == 1
    src, kept, new = (weights(r / "model.pt") for r in (source, runs[False], runs[True]))
    params = [k for k in body(src) if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(src[k], new[k]) and torch.equal(src[k], kept[k]) for k in params)
    assert torch.allclose(src["classifier.weight"], kept["classifier.weight"], atol=1e-6)
    assert (src["classifier.weight"] - new["classifier.weight"]).abs().max() > 1e-3
    manifest = json.loads((runs[True] / "manifest.json").read_text())
    assert manifest["init"]["classifier_replaced"] is True and manifest["init"]["init_classes"] == 10


@pytest.mark.parametrize("freeze,threads", [("body", 2), ("bn", 1)], ids=["body-lanes", "bn-in-turn"])
def test_frozen_epochs_keep_the_body(
    source: Path, arch_file: Path, tmp_path: Path, freeze: str, threads: int
) -> None:
    """After the frozen first epoch (the checkpoint at its end) the frozen part is the source's
    exactly and the rest has moved; after the second epoch the body has moved too."""
    run = tmp_path / "ft"
    # 2 threads: two lanes. lr 0.1: with BN on its running statistics this net diverged at 0.4
    fast = [*FAST[:-1], "proxy.lr=0.1", f"run.threads={threads}", "proxy.micro_batch=16"]
    args = ["--init", str(source), "proxy.epochs=2", "train.freeze_epochs=1", f"train.freeze={freeze}"]
    assert main(["train", str(arch_file), *args, *fast, f"run.dir={run}"]) == 0
    if threads == 2:
        assert json.loads((run / "summary.json").read_text())["lanes"] == 2
    src, frozen, final = weights(source / "model.pt"), checkpoint_weights(run), weights(run / "model.pt")
    assert read_checkpoint(run / CHECKPOINT)["step"] == 38  # the end of the frozen epoch
    stats = [k for k in src if k.endswith(("running_mean", "running_var"))]
    changed = same(src, frozen)
    assert not set(stats) & set(changed)  # BN statistics: as loaded
    assert set(HEAD) <= set(changed)  # the classifier trained
    if freeze == "body":
        assert same(body(src), body(frozen)) == []
    else:  # BN statistics only: convolutions trained
        assert any(k.endswith("0.weight") and k.startswith("blocks.") for k in changed)
    assert len(same(body(src), body(final))) > len(body(src)) // 2  # unfrozen: the body moved


def test_body_lr_scale_zero_keeps_the_body_weights(source: Path, arch_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "ft"
    args = ["--init", str(source), "proxy.epochs=1", "train.body_lr_scale=0"]
    assert main(["train", str(arch_file), *args, *FAST, f"run.dir={run}"]) == 0
    src, final = weights(source / "model.pt"), weights(run / "model.pt")
    params = [k for k in src if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert same({k: src[k] for k in params}, {k: final[k] for k in params}) == list(HEAD)


def test_resume_of_a_fine_tune_continues_its_checkpoint(
    source: Path, arch_file: Path, tmp_path: Path
) -> None:
    """Stopped inside the frozen epochs (checkpoint at epoch 1 of 2, frozen until 1.5) and
    resumed after its --init source was deleted: the same bits as the uninterrupted run."""
    copy = Path(shutil.copytree(source, tmp_path / "src"))
    run = tmp_path / "ft"
    args = ["--init", str(copy), "proxy.epochs=2", "train.freeze_epochs=1.5", "train.body_lr_scale=0.3"]
    assert main(["train", str(arch_file), *args, *FAST, f"run.dir={run}"]) == 0
    whole = weights(run / "model.pt")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "crashed"}))
    (run / "summary.json").unlink()
    (run / "model.pt").unlink()
    shutil.rmtree(copy)
    assert main(["train", "--resume", str(run)]) == 0
    assert same(whole, weights(run / "model.pt")) == []
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["upstream"]) == 1  # recorded once, by the first start


def test_bad_init_sources_are_one_line(
    source: Path, arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "runs"

    def error(*args: str) -> str:
        return expect_usage_error(["train", *args, *FAST, f"run.root={root}"], capsys)

    line = error(str(arch_file), "--init", str(tmp_path / "none"))
    assert f"--init {tmp_path / 'none'}: no such file" in line
    other = tiny_arch(tmp_path, "wider", head=80)
    line = error(str(other), "--init", str(source))
    assert "differs from the one trained here ('wider') in head: 64 there, 80 here" in line
    line = error(str(other), "--init", str(source / "model.pt"))  # the file inside the run: same facts
    assert "in head" in line
    loose = tmp_path / "loose.pt"
    shutil.copy(source / "model.pt", loose)
    line = error(str(other), "--init", str(loose))  # a bare file: its first key of another shape
    assert "head.0.weight has shape [64, 24, 1, 1], wider needs [80, 24, 1, 1]" in line
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    assert "not a safetensors file" in error(str(arch_file), "--init", str(garbage))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not an effnas run directory" in error(str(arch_file), "--init", str(plain))
    assert "train.freeze must be one of body, bn" in error(str(arch_file), "train.freeze=all")
    assert "train.body_lr_scale must be >= 0" in error(str(arch_file), "train.body_lr_scale=-1")
    assert not root.exists() or not any(root.rglob("summary.json"))


def test_init_from_a_converted_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """timm's tf_efficientnet_b0 layout (the fixture's numpy fill, no download) -> effnas convert
    -> train its arch.yaml (TF "SAME" padding, BN eps 1e-3) --init the convert run: 1000 classes
    become 10, and with the body frozen for the whole (2-step) run it ends as converted."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_convert import FIXTURES, fill

    state, _ = fill(json.loads((FIXTURES / "timm_tf_efficientnet_b0.json").read_text()))
    torch.save(state, tmp_path / "tf_b0.pth")
    conv, run = tmp_path / "conv", tmp_path / "ft"
    assert (
        main(
            ["convert", str(tmp_path / "tf_b0.pth"), "--model", "timm:tf_efficientnet_b0", f"run.dir={conv}"]
        )
        == 0
    )
    capsys.readouterr()
    tiny = ["proxy.images=64", "proxy.bn_calibration=64", "train.freeze_epochs=1", *FAST]
    assert main(["train", str(conv / "arch.yaml"), "--init", str(conv), *tiny, f"run.dir={run}"]) == 0
    assert "--init has 1000 classes, this run 10: the classifier is new" in capsys.readouterr().err
    converted, final = weights(conv / "model.pt"), weights(run / "model.pt")
    assert same(body(converted), body(final)) == []
    assert final["classifier.weight"].shape == (10, 1280)
    manifest = json.loads((run / "manifest.json").read_text())
    assert [(u["stage"], u["path"], u["what"]) for u in manifest["upstream"]] == [
        ("convert", str(conv.resolve()), "arch file arch.yaml"),
        ("convert", str(conv.resolve()), "--init weights model.pt"),
    ]
