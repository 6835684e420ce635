"""`effnas dashboard RUN_DIR`: a run's Optuna study in the browser, served by optuna-dashboard.

    effnas dashboard results/search/<run> [--port 8080] [--host 127.0.0.1]

Every search, grid and study run records its trials in an Optuna study (`training.trial_log`);
manifest.json names it and its storage (the journal study.log in the run directory, or the `storage=` URL).
This serves that storage with optuna-dashboard, prints the study's URL and serves until Ctrl-C.
A storage several runs share shows all of them; the URL opens this run's. A manifest keeps a
storage URL without its password: give it again with `storage=URL`.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundation.errors import UserError


@dataclass
class DashboardConfig:
    """Schema of `conf/dashboard.yaml`."""

    runs: list[str] = MISSING  # the run directory (the positional argument)
    host: str = MISSING  # the address to listen on; 127.0.0.1: this machine only
    port: int = MISSING
    storage: Optional[str] = MISSING  # the study's storage URL, when the manifest's lacks its password


@dataclass(frozen=True)
class Located:
    """A run's study: where it is and what it holds."""

    run: Path
    storage: str
    name: str
    study_id: int
    trials: int


def locate(cfg: Any) -> Located:
    """The run directory's study, or a UserError saying why there is none."""
    import optuna

    from foundation.runfiles import read_json, stage_of
    from training.trial_log import check_sqlite, open_journal

    if len(cfg.runs) != 1:
        raise UserError(f"give one run directory (effnas dashboard RUN_DIR), got {len(cfg.runs)}")
    run = Path(cfg.runs[0])
    if not run.is_dir():
        raise UserError(f"{run}: no such directory")
    stage = stage_of(run)
    if stage is None:
        raise UserError(f"{run}: not an effnas run directory (no manifest.json with a stage)")
    study = read_json(run / "manifest.json").get("study")
    if not study or not study.get("name"):
        raise UserError(
            f"{run}: this {stage} run has no Optuna study (only search, grid and study runs have one)"
        )
    storage = cfg.storage or study["storage"]
    if ":***@" in storage:
        raise UserError(
            f"{run}: its study's storage {storage} is recorded without its password; give it: storage=URL"
        )
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise UserError(f"{run}: its study's database {storage.removeprefix('sqlite:///')} does not exist")
    if storage.startswith("sqlite:///"):
        check_sqlite(storage.removeprefix("sqlite:///"), empty_ok=False)  # not to create tables in it
    if "://" not in storage and not Path(storage).is_file():
        raise UserError(f"{run}: its study's journal {storage} does not exist")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        opened = open_journal(storage) if "://" not in storage else optuna.storages.get_storage(storage)
        study_id = opened.get_study_id_from_name(study["name"])
        trials = opened.get_n_trials(study_id)
    except UserError:
        raise
    except KeyError:
        raise UserError(f"{run}: study {study['name']!r} is not in {storage}") from None
    except Exception as exc:  # the storage's own errors: server down, bad URL, no driver
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{run}: storage {storage}: {line}") from None
    return Located(run, storage, study["name"], study_id, trials)


def check_port(host: str, port: int) -> None:
    """A UserError unless `host:port` can be listened on now."""
    if not 0 < int(port) < 65536:
        raise UserError(f"--port must be within 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # as the server will (wsgiref): a port whose last connections linger in TIME_WAIT is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def validate(cfg: Any) -> None:
    locate(cfg)
    check_port(str(cfg.host), int(cfg.port))


def serve(app: Any, host: str, port: int) -> Any:
    """A started threaded WSGI server for `app` on host:port; an OSError if it cannot listen.

    Why not `optuna_dashboard.run_server`: it serves with wsgiref in the main thread, and
    wsgiref's handler catches every exception a request raises, KeyboardInterrupt too, so a
    Ctrl-C that lands while a page is being served is swallowed and the server runs on (seen in
    CI; 3 of 3 local runs hung with requests arriving every few ms). Here requests run in daemon
    threads and the main thread only waits, so Ctrl-C always reaches it."""
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a request still running does not keep the command alive
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no access log; errors still print
            pass

    server = make_server(host, port, app, server_class=Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
    return server


def run(cfg: Any, rundir: Any = None) -> dict[str, Any]:
    """Serve until Ctrl-C; returns what was served."""
    import threading

    import optuna_dashboard

    found = locate(cfg)
    host, port = str(cfg.host), int(cfg.port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/dashboard/studies/{found.study_id}"
    # a URL or the journal's path, as optuna-dashboard's own command takes them (it opens a
    # journal file itself); locate() has checked that the journal replays
    app = optuna_dashboard.wsgi(found.storage)
    try:
        server = serve(app, host, port)
    except OSError as exc:  # the port was taken between the check and the bind
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"dashboard: study {found.name} ({found.trials} trials) of {found.run}", flush=True)
    print(f"dashboard: {url}  (Ctrl-C to stop)", flush=True)
    # Until Ctrl-C, in a timed wait: the kernel may deliver SIGINT to any thread, and when it lands
    # on a serving thread, Python only sets a flag the main thread runs at its next bytecode; an
    # untimed wait sleeps through it (test_ctrl_c_stops_the_dashboard_while_it_serves_requests,
    # requests arriving back to back: 1 of 10 runs hung with the untimed wait, 0 of 20 with this).
    # Waking twice a second runs the handler within half a second.
    idle = threading.Event()
    try:
        while not idle.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("dashboard: stopped", file=sys.stderr)
    finally:
        server.shutdown()  # the serving loop notices within its 0.5 s poll
        server.server_close()
    return {"url": url, "study": found.name, "trials": found.trials}
