"""`effnas train train.workers=N`: data-parallel training on a real local Ray Train runtime (2 CPU
workers, no dashboard, shut down after each run).

- 2 workers x 16 images and 1 process x 32 images (in micro-batches of 16, so BN normalises over
  the same 16-image groups) end with the same weights within float tolerance;
- a worker killed with SIGKILL mid-run: the worker group restarts from the last epoch's
  checkpoint and the run finishes, losing at most one epoch;
- a killed driver: `--resume` continues from the last checkpoint Ray Train recorded;
- bad settings (no workers, more workers than Ray's CPUs, SyncBatchNorm on CPU) fail in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_BLOCKS, expect_usage_error, write_arch

from effnas.cli import main

RAY = ["ray.num_cpus=2", "ray.object_store_mb=100", "ray.cpus_per_trial=1"]
# digits (no crop/flip), no dropout: every difference between the runs is the distribution's
COMMON = ["proxy=digits", "proxy.compile=off", "proxy.lr=0.4", "run.threads=1", "run.device=cpu"]


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    return Path(write_arch(tmp_path, TINY_BLOCKS, "tiny", head=64, dropout=0.0))


# -- bad settings: one line, exit 2, before Ray starts ------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.workers=0"], "train.workers must be >= 1"),
        (["train.workers=3", "ray.num_cpus=2"], "needs 3 CPUs, but the local Ray runtime has 2"),
        (["train.workers=2", "train.sync_bn=true", "run.device=cpu"], "train.sync_bn=true needs CUDA"),
        (["train.workers=2", "ray.enabled=false"], "ray.enabled=false"),
        (["train.workers=2", "train.freeze_epochs=1"], "fine-tuning"),
    ],
)
def test_bad_worker_settings_are_one_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = expect_usage_error(["train", *overrides, f"run.root={tmp_path}"], capsys)
    assert message in line, line
    assert not any(tmp_path.rglob("summary.json"))


def test_one_worker_is_the_single_process_path(arch_file: Path, tmp_path: Path) -> None:
    """train.workers=1 (the default) never reaches Ray: no ray/ folder, no data-parallel keys."""
    run = tmp_path / "one"
    args = ["train", str(arch_file), *COMMON, "proxy.images=64", "proxy.batch_size=32", f"run.dir={run}"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "workers" not in summary and not (run / "ray").exists()


# -- on Ray Train ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_of_16_match_one_process_of_32(arch_file: Path, tmp_path: Path) -> None:
    budget = ["proxy.images=128", "proxy.report_every=0", "proxy.warmup_epochs=0"]  # 4 steps of 32
    two, one = tmp_path / "two", tmp_path / "one"
    workers = [*RAY, "train.workers=2", "proxy.batch_size=16"]
    assert main(["train", str(arch_file), *COMMON, *budget, *workers, f"run.dir={two}"]) == 0
    single = ["proxy.batch_size=32", "proxy.micro_batch=16"]  # BN over the same 16-image groups
    assert main(["train", str(arch_file), *COMMON, *budget, *single, f"run.dir={one}"]) == 0
    a = torch.load(two / "model.pt", weights_only=True)
    b = torch.load(one / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    diffs = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()}
    worst = max(diffs, key=diffs.get)
    print(f"largest difference: {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] < 1e-4, (worst, diffs[worst])
    # the weights moved: proxy.init zeroes the classifier, four steps made it non-zero
    assert float(b["classifier.weight"].abs().max()) > 1e-4
    s2, s1 = (json.loads((r / "summary.json").read_text()) for r in (two, one))
    assert s2["steps"] == s1["steps"] == 4 and s2["global_batch"] == 32 and s2["workers"] == 2
    assert s2["val_accuracy"] == pytest.approx(s1["val_accuracy"], abs=1 / s1["val_images"] + 1e-9)


def _effnas(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "effnas", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its Ray processes: one group, killed with it if the test fails
    )


def _descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process under `pid` (Linux /proc)."""
    parents, titles = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            titles[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in out:
                out[child] = titles.get(child, "")
                todo.append(child)
    return out


def _rows(run: Path) -> int:
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def _wait_for_rows(proc: subprocess.Popen, run: Path, rows: int, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while _rows(run) < rows:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < end, "no epoch finished in time"
        time.sleep(0.5)


def _finish(proc: subprocess.Popen, timeout: float = 1200) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return out


# digits: 1,222 training images / (2 x 16) -> 38 steps an epoch; 4 epochs, a row and a checkpoint each
RUN4 = [*COMMON, *RAY, "train.workers=2", "proxy.batch_size=16", "proxy.epochs=4", "proxy.report_every=1"]


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_last_epoch_and_the_run_finishes(
    arch_file: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = _effnas("train", str(arch_file), *RUN4, "ray.max_failures=1", f"run.dir={run}")
    _wait_for_rows(proc, run, 2)  # two epochs done: the first one's checkpoint is surely recorded
    seen = _rows(run)
    workers = [pid for pid, title in _descendants(proc.pid).items() if "RayTrainWorker" in title]
    assert workers, _descendants(proc.pid)
    os.kill(workers[-1], signal.SIGKILL)
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 4.0
    (restart,) = summary["restarts"]  # one restart, from an epoch end no more than one epoch back
    assert restart % 38 == 0 and restart >= (seen - 1) * 38, (restart, seen)
    assert "continue at step" in out
    epochs = [float(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_last_checkpoint(arch_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _effnas("train", str(arch_file), *RUN4, f"run.dir={run}")
    _wait_for_rows(proc, run, 2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray runtime, as a lost machine would
    proc.communicate()
    resumed = _effnas("train", "--resume", str(run))
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 4.0
    (restart,) = summary["restarts"]
    assert restart >= 38 and restart % 38 == 0, restart
