"""The run's Optuna study on a real PostgreSQL server (`storage=postgresql+psycopg://...`): a real
tiny search records every trial there, is killed with SIGKILL mid-run and resumed without a
duplicate; a second search shares the database under its own study name. The killed driver
trains for real; the resume and the second search score trials with a stand-in for the proxy
trainer (what is under test is the record, and that keeps the module cheap).

The server is started once for the module, on 127.0.0.1 at a free port, in a temporary directory,
as an unprivileged user when the tests run as root (PostgreSQL refuses to run as root); the tests
skip, saying why, where no PostgreSQL server binaries can be found (in CI, `CI=true`, they fail
instead: `.ci/run` installs PostgreSQL)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import needs

from effnas.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "proxy.resolution=8",
    "proxy.images=64",
    "proxy.batch_size=32",
    "proxy.compile=off",
    "data.max_train=300",
    "run.threads=1",
    "ray.enabled=false",
    "reject_above=null",
]


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this module; yields a SQLAlchemy URL of an empty database."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        needs("no PostgreSQL server binaries (initdb, pg_ctl) found; apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        needs("no PostgreSQL driver: pip install 'psycopg[binary]'")
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="effnas-pg-"))
    if os.geteuid() == 0:  # the server refuses root: run it as nobody, in a directory nobody owns
        if shutil.which("runuser") is None:
            needs("running as root without runuser: cannot start PostgreSQL unprivileged")
        shutil.chown(home, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = home / "data"

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout}{done.stderr}")

    run(initdb, "-D", str(data), "-A", "trust", "-U", "effnas", "--no-sync")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(home / "server.log"), "-w", "start")
    try:
        # the password is not checked (trust), but the URL carries one: the manifest must not
        yield f"postgresql+psycopg://effnas:secret@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _study(run: Path, url: str) -> tuple[str, list]:
    import optuna

    recorded = json.loads((run / "manifest.json").read_text())["study"]
    assert recorded["storage"] == url.replace(":secret@", ":***@")  # no password in the manifest
    study = optuna.load_study(study_name=recorded["name"], storage=url)
    return recorded["name"], study.trials


def fake_trial(config: dict, setup: Any, report: Any = None, cpus: int = 1) -> dict:
    acc = 0.5 + 0.01 * len(config["arch"]["blocks"][0])
    return {"status": "ok", "accuracy": acc, "loss": 1.0, "seconds": 0.25, "epochs": 1.0}


def _keys(trials: list) -> Counter:
    return Counter(t.user_attrs.get("effnas_key") for t in trials)


def test_search_on_postgresql_killed_and_resumed_and_a_second_search_beside_it(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "search"
    argv = ["search", "--trials", "4", *TINY, f"storage={postgres}", f"run.dir={run}"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "effnas", *argv], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if (run / "trials.csv").is_file() and len(pd.read_csv(run / "trials.csv")) >= 1:
                break
            time.sleep(0.1)
        assert driver.poll() is None, driver.stderr.read().decode()  # type: ignore[union-attr]
        driver.send_signal(signal.SIGKILL)  # no handler, no cleanup: whatever was written stays
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = pd.read_csv(run / "trials.csv")
    assert 1 <= len(before) < 4
    monkeypatch.setattr("training.trials.run_trial", fake_trial)
    assert main(["search", "--resume", str(run)]) == 0
    rows = pd.read_csv(run / "trials.csv")
    assert len(rows) == 4 and list(rows["id"][: len(before)]) == list(before["id"])
    name, trials = _study(run, postgres)
    keyed = [t for t in trials if "effnas_key" in t.user_attrs]
    assert _keys(keyed) == Counter(str(i) for i in rows["id"])  # every row once
    # a SIGKILL between the sampler's ask and the row leaves one asked trial that no row names:
    # the resume fails it (OptunaSampler.restore) rather than leaving it running
    orphans = [t for t in trials if "effnas_key" not in t.user_attrs]
    assert len(orphans) <= 1 and all(t.state.name == "FAIL" for t in orphans), orphans
    for t, r in zip(sorted(keyed, key=lambda t: int(t.user_attrs["effnas_key"])), rows.itertuples()):
        assert t.user_attrs["arch"] == r.arch and t.user_attrs["macs"] == r.macs
        if r.status == "ok":
            assert t.state.name == "COMPLETE" and t.values[0] == pytest.approx(r.reward)

    other = tmp_path / "other"
    argv = ["search", "--trials", "2", "--sampler", "tpe", *TINY, f"storage={postgres}", f"run.dir={other}"]
    assert main(argv) == 0
    other_name, other_trials = _study(other, postgres)
    assert other_name != name
    assert _keys(other_trials) == Counter(str(i) for i in pd.read_csv(other / "trials.csv")["id"])
    assert len(_study(run, postgres)[1]) == len(trials)  # the first run's study is untouched

    # `effnas dashboard` finds the study; the manifest's URL lacks the password, so it asks for it
    from omegaconf import OmegaConf

    from effnas.views.dashboard import locate
    from foundation.errors import UserError

    cfg = OmegaConf.create({"runs": [str(run)], "storage": None})
    with pytest.raises(UserError, match="recorded without its password; give it: storage=URL"):
        locate(cfg)
    found = locate(OmegaConf.merge(cfg, {"storage": postgres}))
    assert found.name == name and found.trials == 4
