"""`effnas train` checkpoints and `--resume`: a run killed with SIGKILL mid-epoch and resumed ends
with the very bits of an uninterrupted run (CPU, one process each, the same thread count); a
finished run, a run another process holds and a checkpoint of another arch are refused in one
line (exit 2) with the run directory left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_BLOCKS, expect_usage_error, session_cache, write_arch

from effnas.cli import main
from effnas.rundir import RunLock
from models.train import CHECKPOINT, read_checkpoint

# digits: 1,222 training images -> 38 steps of 32 per epoch, 2 epochs; a checkpoint every ~0.2 s
FAST = ["proxy.epochs=2", "proxy.batch_size=32", "proxy.lr=0.4", "proxy.compile=off"]


def write_tiny_arch(folder: Path) -> Path:
    # dropout and stochastic depth on: the resumed run must draw the same masks
    return Path(write_arch(folder, TINY_BLOCKS, "tiny", head=64, dropout=0.2))


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    return write_tiny_arch(tmp_path)


def effnas(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "effnas", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def finish(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=1800)  # seconds when quiet; a loaded 2-core CI is slower
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave the child training after the test
        proc.communicate()
        raise
    assert proc.returncode == 0, out
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".effnas.lock"
    }


# the paper recipe's parts that hold state or draw random numbers: the EMA of the weights (in the
# checkpoint, evaluated, exported), the random-resized crop and RandAugment (kornia, seeded from
# the checkpointed data generator)
RECIPE = [
    "proxy.ema_decay=0.9",
    "proxy.crop=random_resized",
    "proxy.augment_policy=randaugment",
]


# lanes: two threads; on a loaded 2-core machine they run far slower than one thread (slow)
@pytest.mark.parametrize(
    ("threads", "recipe"),
    # CI runs the recipe variant: the same one-thread loop with the recipe's state on top (EMA,
    # crops, RandAugment); the plain one and two lanes with -m slow (the suite's 20 minutes)
    [pytest.param(1, [], marks=pytest.mark.slow), (1, RECIPE), pytest.param(2, [], marks=pytest.mark.slow)],
    ids=["in-turn", "in-turn-recipe", "lanes"],
)
def test_kill_9_mid_epoch_then_resume_is_bit_identical(
    tmp_path: Path, arch_file: Path, threads: int, recipe: list[str]
) -> None:
    args = [str(arch_file), *FAST, f"run.threads={threads}", "proxy.micro_batch=16", *recipe]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # one thread: the uninterrupted run trains beside the one to be killed (a core each; paired,
    # 35 s vs 57 s one after the other); two threads (lanes) would contend, so it trains first
    whole_proc = effnas("train", *args, f"run.dir={whole}")
    if threads > 1:
        finish(whole_proc)
    try:
        proc = effnas("train", *args, "train.checkpoint_minutes=0.003", f"run.dir={killed}")
        steps_per_epoch, total = 38, 76
        step = 0
        deadline = time.monotonic() + 1800
        # kill once a checkpoint inside the second epoch is on disk: after an evaluation (BN
        # recalibrated) and mid-epoch (the data position is a step within a permutation)
        while time.monotonic() < deadline and proc.poll() is None:
            if (killed / CHECKPOINT).is_file():
                step = read_checkpoint(killed / CHECKPOINT)["step"]
                if step > steps_per_epoch and step % steps_per_epoch:
                    break
            time.sleep(0.02)
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()
            pytest.fail("the run ended (or took too long) before it could be killed mid-epoch")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        step = read_checkpoint(killed / CHECKPOINT)["step"]  # the last one written before the kill
        assert 0 < step < total and not (killed / "model.pt").exists()

        out = finish(effnas("train", "--resume", str(killed)))
        assert f"resuming at step {step} of {total}" in out
        if threads == 1:
            finish(whole_proc)
    finally:
        if whole_proc.poll() is None:  # never leave it training after a failed test
            whole_proc.kill()
            whole_proc.communicate()

    a, b = weights(whole), weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-identical, BN statistics included
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    for key in ("val_accuracy", "val_loss", "steps", "epochs"):
        assert sa[key] == sb[key], key
    metrics = [(whole / "metrics.csv").read_text(), (killed / "metrics.csv").read_text()]
    drop = [[line.rsplit(",", 1)[0] for line in m.splitlines()] for m in metrics]  # images/s differs
    assert drop[0] == drop[1]
    assert (whole / "per_image").is_dir() and tree_hash(whole / "per_image") == tree_hash(
        killed / "per_image"
    )
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "done" and len(manifest["resumed"]) == 1
    assert sb["weights"] == ("ema" if recipe else "raw")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run with its checkpoint, trained once for the module (7 s)."""
    folder = tmp_path_factory.mktemp("trained")
    run = folder / "run"
    arch = write_tiny_arch(folder)
    args = [str(arch), "proxy.epochs=2", "proxy.batch_size=32", "proxy.compile=off", "run.threads=1"]
    with session_cache(tmp_path_factory):  # the session's data cache, never ~/.cache
        assert main(["train", *args, f"run.dir={run}"]) == 0
    assert (run / CHECKPOINT).is_file()
    return run


@pytest.fixture
def interrupted(trained: Path, tmp_path: Path) -> Path:
    """A copy of `trained` for one test to change (the tests below unfinish, lock, resume it)."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_a_finished_run_refuses_to_resume(interrupted: Path, capsys: pytest.CaptureFixture) -> None:
    before = tree_hash(interrupted)
    err = expect_usage_error(["train", "--resume", str(interrupted)], capsys)
    assert "the run finished" in err and "start a new run" in err
    assert tree_hash(interrupted) == before


def unfinish(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "crashed"}))
    (run / "summary.json").unlink()
    (run / "model.pt").unlink()


def test_a_running_run_refuses_to_resume(interrupted: Path, capsys: pytest.CaptureFixture) -> None:
    unfinish(interrupted)
    lock = RunLock.acquire(interrupted)  # as the process still training it holds it
    try:
        before = tree_hash(interrupted)
        err = expect_usage_error(["train", "--resume", str(interrupted)], capsys)
        assert "in use by another effnas process" in err
        assert tree_hash(interrupted) == before
    finally:
        lock.release()


def test_resume_with_another_arch_is_refused(interrupted: Path, capsys: pytest.CaptureFixture) -> None:
    unfinish(interrupted)
    config = interrupted / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("_o24_", "_o32_"))  # the recorded arch, changed
    before = tree_hash(interrupted)
    err = expect_usage_error(["train", "--resume", str(interrupted)], capsys)
    assert "its checkpoint is of arch 'tiny'" in err and "o32" in err
    assert tree_hash(interrupted) == before


def test_resume_continues_a_crashed_run(interrupted: Path, tmp_path: Path) -> None:
    """A run that died after its last checkpoint (here: the one at the end of epoch 1) resumes
    and ends as the uninterrupted run did."""
    whole = weights(interrupted)
    unfinish(interrupted)
    assert read_checkpoint(interrupted / CHECKPOINT)["step"] == 38  # the last epoch end before the end
    assert main(["train", "--resume", str(interrupted)]) == 0
    again = weights(interrupted)
    assert all(torch.equal(whole[k], again[k]) for k in whole)


def test_bad_checkpoint_interval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = expect_usage_error(["train", "train.checkpoint_minutes=0", f"run.root={tmp_path}"], capsys)
    assert "train.checkpoint_minutes must be > 0" in err
    assert not (tmp_path / "train").exists()


def test_a_copy_of_a_run_still_resumes(interrupted: Path, tmp_path: Path) -> None:
    """The checkpoint names no path: a run directory moved elsewhere resumes where it is."""
    unfinish(interrupted)
    moved = Path(shutil.move(str(interrupted), tmp_path / "moved"))
    assert main(["train", "--resume", str(moved)]) == 0
    assert json.loads((moved / "summary.json").read_text())["status"] == "done"


def test_resume_refuses_a_setting_that_changes_the_run(
    interrupted: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--resume RUN key=value` was silently dropped; now a key that changes what the run computes
    is refused with the recorded value, and a repeat of the recorded value is accepted."""
    unfinish(interrupted)
    before = tree_hash(interrupted)
    err = expect_usage_error(["train", "--resume", str(interrupted), "proxy.epochs=3"], capsys)
    assert "'proxy.epochs=3' would change it (recorded: 2.0)" in err
    err = expect_usage_error(["train", "--resume", str(interrupted), "proxy.no_such_key=1"], capsys)
    assert "'proxy.no_such_key'" in err and "not in 'ProxyConfig'" in err
    assert tree_hash(interrupted) == before


def test_resume_applies_the_environment_keys(interrupted: Path) -> None:
    from effnas.lifecycle import resumed_config

    unfinish(interrupted)
    cfg = resumed_config("train", interrupted, ["run.threads=2", "run.device=cpu", "proxy.epochs=2"])
    assert (cfg.run.threads, cfg.run.device, cfg.proxy.epochs) == (2, "cpu", 2)
    assert main(["train", "--resume", str(interrupted), "run.threads=1", "proxy.epochs=2"]) == 0
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "done"
