"""`effnas dashboard RUN_DIR`: the run's Optuna study served by optuna-dashboard, seen in a real
headless browser (Chromium driven by Selenium), and its bad input (one line, exit 2).

The browser test skips, saying why, where no Chromium and chromedriver can be found (Debian:
`apt-get install chromium chromium-driver`; .ci/run installs them)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ctrl_c_reaches, expect_usage_error, needs

from effnas.cli import main
from training.trial_log import open_storage

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial search (trials scored by a stand-in for the proxy trainer)."""
    import training.trials

    def fake_trial(config: dict, setup: Any, report: Any = None, cpus: int = 1) -> dict:
        acc = 0.5 + 0.01 * len(config["arch"]["blocks"][0])
        return {"status": "ok", "accuracy": acc, "seconds": 0.1, "epochs": 1.0}

    run = tmp_path_factory.mktemp("dashboard") / "search"
    real, training.trials.run_trial = training.trials.run_trial, fake_trial
    try:
        argv = ["search", "--trials", "3", "reject_above=null", "ray.enabled=false", "data.max_train=300"]
        assert main([*argv, f"run.dir={run}"]) == 0
    finally:
        training.trials.run_trial = real
    return run


def browser() -> Any:
    """A headless Chromium under Selenium, or a skip saying what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        needs("selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    binary = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        needs("no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


def start_dashboard(run: Path, port: int) -> tuple[subprocess.Popen, str, list[str]]:
    """`effnas dashboard RUN --port PORT` in a child process, its output read by a thread (a pipe
    nobody reads fills and blocks the server); (process, URL it printed, its output so far)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "effnas", "dashboard", str(run), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ctrl_c_reaches,
    )
    seen: list[str] = []
    printed = threading.Event()

    def read() -> None:
        for line in server.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "(Ctrl-C to stop)" in line:
                printed.set()
        printed.set()  # the process ended without printing it

    threading.Thread(target=read, daemon=True).start()
    printed.wait(120)
    url = next((line.split()[1] for line in seen if "(Ctrl-C to stop)" in line), "")
    return server, url, seen


def stop(server: subprocess.Popen, seen: list[str]) -> int:
    """Ctrl-C, then the exit code; a server still running 30 s later is killed and fails the test."""
    server.send_signal(signal.SIGINT)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail("the dashboard did not stop within 30 s of Ctrl-C:\n" + "".join(seen)[-3000:])


def test_the_dashboard_shows_the_run_study_in_a_browser(search_run: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser()
    name = json.loads((search_run / "manifest.json").read_text())["study"]["name"]
    port = free_port()
    server, url, seen = start_dashboard(search_run, port)
    try:
        journal = open_storage(str(search_run / "study.log"))  # the run's own study: its id there
        study_id = journal.get_study_id_from_name(name)
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/{study_id}", seen
        assert f"study {name} (3 trials)" in "".join(seen)

        def body_shows(text: str) -> Any:
            return lambda d: text in d.find_element(By.TAG_NAME, "body").text

        page.get(url)  # the study's page: its name as the heading
        WebDriverWait(page, 60).until(body_shows(name))
        page.get(f"{url}/trials")  # its trial list: the count the run recorded
        WebDriverWait(page, 60).until(body_shows("3 Trials"))
        assert "Trial 2" in page.find_element(By.TAG_NAME, "body").text
    finally:
        page.quit()
        code = stop(server, seen)  # Ctrl-C: the server stops, the command ends normally
    assert code == 0


def test_ctrl_c_stops_the_dashboard_while_it_serves_requests(search_run: Path) -> None:
    """A Ctrl-C that lands while a page is being served must stop the command: optuna-dashboard's
    own server (wsgiref) swallowed it then and served on (3 of 3 runs hung like this)."""
    server, url, seen = start_dashboard(search_run, free_port())
    try:
        assert url, seen
        api = url.replace("/dashboard/studies/", "/api/studies/") + "?after=0"
        served, busy = [0], threading.Event()

        def hammer() -> None:
            while server.poll() is None:
                try:
                    urllib.request.urlopen(api, timeout=5).read()
                    served[0] += 1
                    busy.set()
                except OSError:
                    time.sleep(0.05)

        threading.Thread(target=hammer, daemon=True).start()
        assert busy.wait(60), seen
        time.sleep(1.0)  # requests now arrive back to back
    finally:
        code = stop(server, seen)
    assert served[0] > 1 and code == 0, (served, seen)
    assert "dashboard: stopped" in "".join(seen)


def test_bad_input_is_one_line_exit_2(
    search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "give one run directory" in expect_usage_error(["dashboard"], capsys)
    assert "no such directory" in expect_usage_error(["dashboard", str(tmp_path / "nope")], capsys)
    assert "not an effnas run directory" in expect_usage_error(["dashboard", str(tmp_path)], capsys)
    scale = tmp_path / "scale-run"
    scale.mkdir()
    (scale / "manifest.json").write_text(json.dumps({"stage": "scale"}))
    assert "this scale run has no Optuna study" in expect_usage_error(["dashboard", str(scale)], capsys)
    corrupt = {"sqlite:///{}": "is not an SQLite database", "{}": "is not an Optuna journal"}
    for kind, (storage, why) in enumerate(corrupt.items()):  # a study file that is not one
        run = tmp_path / f"corrupt-{kind}"
        run.mkdir()
        (run / "garbage").write_bytes(b"not a study at all\n")
        recorded = {"storage": storage.format(run / "garbage"), "name": "s"}
        (run / "manifest.json").write_text(json.dumps({"stage": "search", "study": recorded}))
        err = expect_usage_error(["dashboard", str(run)], capsys)
        assert why in err
    empty = tmp_path / "corrupt-0" / "garbage"  # an empty SQLite file: refused, not given tables
    empty.write_bytes(b"")
    assert "is not an SQLite database" in expect_usage_error(["dashboard", str(empty.parent)], capsys)
    assert empty.stat().st_size == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = expect_usage_error(["dashboard", str(search_run), "--port", str(port)], capsys)
        assert f"cannot listen on 127.0.0.1:{port}" in err
