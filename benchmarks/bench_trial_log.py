"""What recording a trial in the run's Optuna study costs (`training.trial_log`): one search trial
(the 42 choices of the MnasNet space, 10 attributes) per sync, the whole table synced each time
as the search stage does, into the run's default journal (study.log), an SQLite database, and any
storage URLs given.

Usage: python benchmarks/bench_trial_log.py [--trials 40] [URL ...]   (journal and SQLite always)
       (e.g. postgresql+psycopg://user@127.0.0.1:5432/db)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time

import yaml
from omegaconf import OmegaConf

from effnas.config import CONF_DIR
from effnas.rundir import RunDir
from search_spaces.mnasnet import MnasNetSpace
from training.trial_log import Choice, Entry, TrialLog


def per_trial_ms(url: str | None, trials: int) -> float:
    space = MnasNetSpace.from_config(yaml.safe_load((CONF_DIR / "space" / "mnasnet.yaml").read_text()))
    run = RunDir.create(tempfile.mkdtemp(), "search")
    cfg = OmegaConf.create({"storage": url, "study_name": None})
    log = TrialLog.open(run, cfg, "search", {d.name: Choice(range(len(d.values))) for d in space.dims})
    rng = random.Random(0)
    attrs = {"arch": "r1_k3_s11_e1_i32_o16 " * 7, "macs": 4e8, "params": 5e6, "activations": 6e6}
    attrs |= {
        "latency_ms": None,
        "accuracy": 0.5,
        "reward": 0.5,
        "seconds": 10.0,
        "epochs": 1.0,
        "error": None,
    }
    entries = [
        Entry(str(i), "ok", {d.name: rng.randrange(len(d.values)) for d in space.dims}, 0.5, attrs)
        for i in range(trials)
    ]
    t0 = time.perf_counter()
    for i in range(trials):
        log.sync(entries[: i + 1])
    return (time.perf_counter() - t0) / trials * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("urls", nargs="*")
    args = parser.parse_args()
    print(f"$ python {' '.join(sys.argv)}")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'storage':<60} {'ms per trial':>12}")
    for url in [None, f"sqlite:///{tempfile.mkdtemp()}/study.db", *args.urls]:
        shown = "journal (study.log in the run dir: the default)" if url is None else url
        print(f"{shown:<60} {per_trial_ms(url, args.trials):>12.1f}")


if __name__ == "__main__":
    main()
