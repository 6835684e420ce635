"""`effnas search` end to end on a real Ray runtime: local (2 CPUs), joined to a `ray start`
head on 127.0.0.1, and resumed after `kill -9` of the driver. Tiny proxy (8 px, 64 images)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ctrl_c_reaches

from effnas.cli import main
from nas.records import read_trials
from training.trial_log import open_storage

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "proxy.resolution=8",
    "proxy.images=64",
    "proxy.batch_size=32",
    "proxy.compile=off",
    "data.max_train=300",
    "run.threads=1",
]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_local_ray_search_writes_the_whole_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna
    import ray

    from search_spaces.arch import Arch

    run = tmp_path / "run"
    argv = ["search", "--target-flops", "400M", "--trials", "4", "--sampler", "tpe", f"run.dir={run}"]
    argv += [*TINY, "ray.num_cpus=2", "asha=true", "proxy.report_every=0.25", "proxy.images=256"]
    assert main(argv) == 0
    assert not ray.is_initialized()  # the local runtime it started is shut down
    err = capsys.readouterr().err
    assert "2 at a time" in err and "CPU 2" in err and "288 choices" in err

    rows = read_trials(run / "trials.csv")
    assert sum(r["status"] in ("ok", "stopped", "failed") for r in rows) == 4
    for row in rows:
        if row["status"] == "ok":
            assert 0 <= row["accuracy"] <= 1 and row["seconds"] > 0 and row["reward"] > 0
    summary = _summary(run)
    for key in (
        "best_reward",
        "best_accuracy",
        "best_macs",
        "trials_done",
        "trials_failed",
        "trials_rejected",
    ):
        assert key in summary
    assert summary["status"] == "done" and summary["stop_reason"] == "trials" and summary["wall_seconds"] > 0
    best = Arch.from_yaml((run / "best_arch.yaml").read_text())
    assert best.meta["reward"] == pytest.approx(summary["best_reward"], abs=1e-6)
    assert (run / "pareto.csv").is_file()
    assert (run / "reward_over_trials.png").stat().st_size > 1000
    assert (run / "accuracy_vs_macs.png").stat().st_size > 1000
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["dataset"]["fingerprint"]) == 64 and manifest["space"]["size"] == 288**7
    study = optuna.load_study(
        study_name=manifest["study"]["name"], storage=open_storage(str(run / "study.log"))
    )
    assert len(study.trials) == len(rows)  # rejected samples are in the study too (told reward 0)
    assert main(["describe", str(run / "best_arch.yaml")]) == 0
    assert "stage7" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_joins_a_ray_head_started_with_ray_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    # Ray 2.60 secures a `ray start` head with the user's token (~/.ray/auth_token) but a driver
    # joining it only sends one in token mode. (Ray caches the token per process, so the test
    # uses the user's, as the head does, rather than a private one.)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    # a short private temp dir: no other Ray user on this machine finds (or joins) this head,
    # and unix socket paths stay under their length limit
    temp_dir = tempfile.mkdtemp(prefix="effnas-rh-", dir="/tmp")
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("ray start --head did not open its port")
        run = tmp_path / "run"
        argv = ["search", "--trials", "2", "--sampler", "evolution", f"run.dir={run}", *TINY]
        assert main([*argv, f"ray.address=127.0.0.1:{port}"]) == 0
        err = capsys.readouterr().err
        assert "CPU 1" in err and "1 at a time" in err  # the head's one CPU, not this machine's two
        assert _summary(run)["trials_done"] + _summary(run)["trials_failed"] == 2
    finally:
        _stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process we started and everything in its process group (its Ray children)."""
    # `ray start --block` outlives a SIGTERM of its children (it counts that as graceful): a
    # short grace period, then SIGKILL to the whole group
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_resume_after_kill_9_loses_no_finished_trial(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["search", "--trials", "6", "--sampler", "tpe", f"run.dir={run}", *TINY, "ray.num_cpus=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "effnas", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        before: list[dict] = []
        while time.time() < deadline and driver.poll() is None:
            if (run / "trials.csv").is_file():
                before = read_trials(run / "trials.csv")
                if sum(r["status"] in ("ok", "failed") for r in before) >= 2:
                    break
            time.sleep(0.2)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        driver.kill()  # kill -9 of the driver, mid-search
        driver.wait(timeout=30)
        before = read_trials(run / "trials.csv")  # what survived on disk
    finally:
        _stop_group(driver)  # Ray processes die with their driver; make sure of it
    trained_before = sum(r["status"] in ("ok", "failed") for r in before)
    assert 2 <= trained_before < 6
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running"  # it never got to say otherwise

    assert main(["search", "--resume", str(run)]) == 0
    after = read_trials(run / "trials.csv")
    assert after[: len(before)] == before  # every finished trial kept, unchanged, not re-run
    assert sum(r["status"] in ("ok", "failed") for r in after) == 6
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids))
    assert {r["arch"] for r in before if r["status"] != "rejected"}.isdisjoint(
        r["arch"] for r in after[len(before) :]
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and len(manifest["resumed"]) == 1
    summary = _summary(run)
    assert summary["trials_done"] + summary["trials_failed"] == 6


@pytest.mark.slow
def test_ctrl_c_ends_as_interrupted_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["search", "--trials", "5", "--sampler", "controller", f"run.dir={run}", *TINY, "ray.num_cpus=2"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "effnas", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ctrl_c_reaches,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            if (run / "trials.csv").is_file() and len(read_trials(run / "trials.csv")) >= 1:
                break
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
        _, err = driver.communicate(timeout=120)
    finally:
        _stop_group(driver)
    assert driver.returncode == 130, err[-2000:]
    assert "interrupted; finished work is kept" in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    before = read_trials(run / "trials.csv")
    assert main(["search", "--resume", str(run)]) == 0
    after = read_trials(run / "trials.csv")
    assert after[: len(before)] == before
    assert sum(r["status"] in ("ok", "failed") for r in after) == 5
