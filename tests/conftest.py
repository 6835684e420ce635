"""Shared pytest fixtures: repo paths, and isolation of the data cache per test session."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from search_spaces.arch import Arch

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(scope="session", autouse=True)
def _small_torch() -> None:
    # Two cores: tests use one intra-op thread each so pytest-level runs stay predictable.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoded-array cache shared within one test session, never the user's ~/.cache.
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path_factory.getbasetemp() / "effnas-cache"))


@contextmanager
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`_data_cache` for a module-scoped fixture (which cannot use the function-scoped one)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFNAS_CACHE", str(tmp_path_factory.getbasetemp() / "effnas-cache"))
        yield


def space_config(**changes: object) -> dict:
    """conf/space/mnasnet.yaml (the space's defaults, kept only there) with `changes`."""
    import yaml

    from effnas.config import CONF_DIR

    return {**yaml.safe_load((CONF_DIR / "space" / "mnasnet.yaml").read_text()), **changes}


# A baseline far smaller than B0 (three stages, 5 blocks against B0's 16), for the tests that train
# many scaled arms and check what a stage does with them, not B0 itself.
SMALL_BLOCKS = ("r1_k3_s11_e1_i16_o16_se0.25", "r2_k3_s22_e3_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25")
# Two stages, for the tests that train one network end to end on digits in seconds.
TINY_BLOCKS = ("r1_k3_s11_e1_i16_o16_se0.25", "r1_k3_s22_e3_i16_o24_se0.25")


def make_arch(
    blocks: tuple[str, ...] = SMALL_BLOCKS,
    name: str = "small",
    *,
    stem: int = 16,
    head: int = 128,
    **fields: Any,
) -> Arch:
    """The Arch of `blocks` (stage strings), stem 16 and head 128 unless given; `fields` (resolution,
    dropout, drop_path, ...) as Arch takes them. The defaults: the SMALL_BLOCKS architecture."""
    from search_spaces.arch import Arch, decode_stage

    return Arch(stages=tuple(decode_stage(b) for b in blocks), name=name, stem=stem, head=head, **fields)


def write_arch(
    folder: Path, blocks: tuple[str, ...] = SMALL_BLOCKS, name: str = "small", **fields: Any
) -> str:
    """`folder`/NAME.yaml, `make_arch(blocks, name, **fields)`; its path, for `--arch` or `effnas train`."""
    path = folder / f"{name}.yaml"
    path.write_text(make_arch(blocks, name, **fields).to_yaml())
    return str(path)


def write_small_arch(folder: Path) -> str:
    """`folder`/small.yaml, the SMALL_BLOCKS architecture; its path, for `--arch`."""
    return write_arch(folder)


def ctrl_c_reaches() -> None:
    """`preexec_fn` for a child a test will Ctrl-C: SIGINT at its default, as a terminal's
    foreground command has it. A test session started in the background (`cmd &` in a script,
    as CI runners and nohup do) inherits SIGINT ignored, and Python then never turns it into
    KeyboardInterrupt: the child would not see the test's Ctrl-C at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cifar10_root() -> Path:
    if not (CIFAR10 / "train").is_dir():
        pytest.skip("../shared/datasets/cifar10 is not available")
    return CIFAR10


def expect_usage_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `effnas ARGS` in-process; assert exit code 2 and one `effnas: error:` line; return it."""
    from effnas.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.match(r"effnas( \w+)?: error: ", err[0]) and "Traceback" not in err[0]
    return err[0]


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray starts its worker processes at nice 15 (the raylet's `worker_niceness`). While both cores
# are busy at nice 0 (a training run, a pip install, a second pytest process) such a trial gets a
# few percent of a core: a Ray Tune test that takes 15 s alone sat 6 minutes in its trial's first
# `import torch` beside a second pytest process running two threads. The tests check what effnas
# does with its trials, not Ray's priorities, so their Ray workers (and those of the effnas
# processes they start) run at nice 0, like everything else in the suite.
os.environ.setdefault("RAY_worker_niceness", "0")


def needs(what: str) -> None:
    """A test that needs something the machine lacks (a PostgreSQL server, a browser): a skip that
    says what is missing, except in CI (`CI=true`), where `.ci/run` installs it and a skip would
    hide a path that never ran: there it fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {what}", pytrace=False)
    pytest.skip(what)
