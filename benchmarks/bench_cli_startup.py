"""End-to-end wall time of two `effnas` CLI commands in fresh subprocesses, per checkout of the repo.

Measures, for each checkout (`--checkout NAME=PATH`, repeatable), the wall-clock time from spawning
`python -m effnas ...` to its exit, for

    python -m effnas describe arch=efficientnet_b7
    python -m effnas scale --phi 1..7 run.root=<tmp>

How: each run is a fresh subprocess of `--python` (default: this interpreter) with
PYTHONPATH=<checkout root>, its cwd a new temp directory outside every checkout (the scale run
writes its run directory there too). Runs are interleaved round-robin over (checkout, command)
pairs, the order rotated each round, so every checkout sees the same machine noise. Before the
timed runs, each pair runs once untimed through a small runpy wrapper that reports, even when the
CLI raises SystemExit, whether `torch` ended up in sys.modules and where `effnas` (and every other
non-library top-level module) was imported from; a module from outside the checkout (say, the
editable install's fallback to another tree) stops the benchmark. That run is also the warm-up.

Bytecode: by default the children get a private PYTHONPYCACHEPREFIX (and no
PYTHONDONTWRITEBYTECODE), so every checkout starts from the same cold cache, the warm-up fills it
and the timed runs read it, without writing into any checkout; `--pycache inherit` keeps the
environment's settings instead.

Prints the load average (`uptime`) at start and end, the exact command line, the machine, and a
table: median, min and max seconds over `--runs` runs, whether torch was imported, the exit codes.
Exits 1, with the stderr tail of the failed runs, if any run exited non-zero.

Usage: python benchmarks/bench_cli_startup.py [--checkout before=/tmp/effnas_before ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (label, effnas arguments); "{tmp}" becomes the run's temp directory.
COMMANDS: list[tuple[str, list[str]]] = [
    ("describe b7", ["describe", "arch=efficientnet_b7"]),
    ("scale 1..7", ["scale", "--phi", "1..7", "run.root={tmp}"]),
]

# Runs `python -m effnas ARGS` via runpy, then writes a JSON report to REPORT_PATH whatever the
# exit (SystemExit included), and exits with the CLI's own status. Invoked as
# `python -c PROBE REPORT_PATH ARGS...`.
PROBE = r"""
import json, runpy, sys, sysconfig
from pathlib import Path
report_path, sys.argv = sys.argv[1], ["effnas", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("effnas", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
finally:
    lib = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                       *sysconfig.get_paths().values())}
    project = {}
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if "." in name or name.startswith("__") or not file:
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(p) for p in lib):
            project[name] = str(path)
    effnas = sys.modules.get("effnas")
    with open(report_path, "w") as f:
        json.dump({"torch": "torch" in sys.modules, "effnas_file": getattr(effnas, "__file__", None),
                   "project_modules": project}, f)
sys.exit(code)
"""


@dataclass
class Pair:
    checkout: str
    root: Path
    label: str
    args: list[str]
    times: list[float] = field(default_factory=list)
    rcs: list[int] = field(default_factory=list)
    torch: bool | None = None
    failures: list[str] = field(default_factory=list)  # stderr tails of failed runs


def parse_checkout(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    root = Path(path).expanduser().resolve()
    if not (root / "effnas" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{root} is not an effnas checkout (no effnas/__init__.py)")
    return name, root


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def sh(cmd: Sequence[str], cwd: Path | None = None) -> str:
    """A helper command's stdout, stripped; '?' if it is missing or fails."""
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip()


def load() -> str:
    text = sh(["uptime"])
    if text == "?":
        text = "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return text


def git_state(root: Path) -> str:
    head = sh(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    status = sh(
        ["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]
    )
    if head == "?":
        return "not a git checkout"
    changed = len(status.splitlines()) if status != "?" else "?"
    return f"HEAD {head}, {changed} modified tracked file(s)" if changed else f"HEAD {head}, clean"


def child_env(root: Path, pycache: str, prefix: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    if pycache == "private":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def fresh_dir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="run-", dir=base))


def effnas_args(pair: Pair, tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in pair.args]


def probe(pair: Pair, python: str, env: dict[str, str], base: Path) -> dict[str, object]:
    """One untimed run through PROBE: torch imported?, where the project modules came from."""
    tmp = fresh_dir(base)
    report = tmp / "probe.json"
    cmd = [python, "-c", PROBE, str(report), *effnas_args(pair, tmp)]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        pair.failures.append(f"(probe run, rc {proc.returncode})\n{tail(proc.stderr)}")
    if not report.is_file():
        sys.exit(
            f"error: probe of {pair.checkout} / {pair.label} wrote no report; stderr:\n{tail(proc.stderr)}"
        )
    info = json.loads(report.read_text())
    pair.torch = bool(info["torch"])
    return info


def timed_run(pair: Pair, python: str, env: dict[str, str], base: Path) -> None:
    tmp = fresh_dir(base)
    cmd = [python, "-m", "effnas", *effnas_args(pair, tmp)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, errors="replace")
    elapsed = time.perf_counter() - t0
    pair.times.append(elapsed)
    pair.rcs.append(proc.returncode)
    if proc.returncode != 0:
        pair.failures.append(f"(timed run {len(pair.times)}, rc {proc.returncode})\n{tail(proc.stderr)}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--checkout",
        action="append",
        type=parse_checkout,
        metavar="NAME=PATH",
        help=f"a checkout to time (repeatable; default current={REPO})",
    )
    ap.add_argument("--runs", type=positive_int, default=5, help="timed runs per checkout and command")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the runs (default: this one)")
    ap.add_argument(
        "--pycache",
        choices=("private", "inherit"),
        default="private",
        help="private: a fresh PYTHONPYCACHEPREFIX shared by all runs (default); inherit: the environment's",
    )
    args = ap.parse_args()
    checkouts: list[tuple[str, Path]] = args.checkout or [("current", REPO)]
    names = [n for n, _ in checkouts]
    if len(set(names)) != len(names):
        ap.error(f"checkout names must differ: {names}")

    base = Path(tempfile.mkdtemp(prefix="effnas-bench-startup-"))
    for name, root in checkouts:
        if base.is_relative_to(root):
            ap.error(f"temp dir {base} is inside checkout {name}={root}; set TMPDIR elsewhere")
    prefix = base / "pycache"

    print(f"# load at start: {load()}")
    print(f"$ {shlex.join(sys.orig_argv)}")
    child_python = sh([args.python, "-c", "import sys; print(sys.version.split()[0], sys.executable)"])
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"# machine: {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", nproc {sh(['nproc'])} (cpu_count {os.cpu_count()}, affinity {affinity}),"
        f" {platform.system()} {platform.release()}"
    )
    print(f"# python of the runs: {args.python} -> {child_python}")
    print(f"# runner python: {platform.python_version()} {sys.executable}")
    if args.pycache == "private":
        print(f"# bytecode: private PYTHONPYCACHEPREFIX={prefix} (cold at start, filled by the probe runs)")
    else:
        print(
            "# bytecode: inherited (PYTHONDONTWRITEBYTECODE="
            f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r},"
            f" PYTHONPYCACHEPREFIX={os.environ.get('PYTHONPYCACHEPREFIX', '')!r})"
        )
    print(f"# temp dirs (cwd and run.root of each run) under {base}")
    print(f"# {args.runs} timed runs per checkout x command, round-robin, order rotated each round")

    pairs = [Pair(name, root, label, cmd) for name, root in checkouts for label, cmd in COMMANDS]
    envs = {name: child_env(root, args.pycache, prefix) for name, root in checkouts}
    try:
        wrong: list[str] = []
        for name, root in checkouts:
            print(f"# checkout {name}: {root} ({git_state(root)}), PYTHONPATH={root}")
            for i, pair in enumerate(p for p in pairs if p.checkout == name):
                info = probe(pair, args.python, envs[name], base)
                modules: dict[str, str] = info["project_modules"]  # type: ignore[assignment]
                if i == 0:
                    print(f"#   effnas.__file__ = {info['effnas_file']}")
                    print(f"#   project modules: {', '.join(sorted(modules))}")
                effnas_file = info["effnas_file"]
                if not effnas_file or not Path(str(effnas_file)).is_relative_to(root):
                    wrong.append(f"{name} / {pair.label}: effnas from {effnas_file}, not under {root}")
                for mod, path in sorted(modules.items()):
                    if not Path(path).is_relative_to(root):
                        wrong.append(f"{name} / {pair.label}: {mod} from {path}, not under {root}")
        if wrong:
            print("error: modules imported from outside their checkout:", *wrong, sep="\n  ", file=sys.stderr)
            return 2

        for r in range(args.runs):
            k = r % len(pairs)
            for pair in pairs[k:] + pairs[:k]:
                timed_run(pair, args.python, envs[pair.checkout], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    w = max(10, *(len(n) + 2 for n in names))
    header = (
        f"{'checkout':<{w}}{'command':<14}{'median s':>10}{'min s':>9}{'max s':>9}  {'torch imported':<16}rc"
    )
    print()
    print(header)
    print("-" * len(header))
    for pair in pairs:
        rcs = ",".join(str(rc) for rc in sorted(set(pair.rcs)))
        print(
            f"{pair.checkout:<{w}}{pair.label:<14}{statistics.median(pair.times):>10.3f}{min(pair.times):>9.3f}"
            f"{max(pair.times):>9.3f}  {'yes' if pair.torch else 'no':<16}{rcs}"
        )
    print()
    for pair in pairs:
        print(f"# {pair.checkout} / {pair.label} runs (s): " + " ".join(f"{t:.3f}" for t in pair.times))
    print(f"# load at end: {load()}")

    failed = [p for p in pairs if p.failures]
    sys.stdout.flush()
    for pair in failed:
        print(
            f"\nFAILED: {pair.checkout} / {pair.label}: {len(pair.failures)} failed run(s)", file=sys.stderr
        )
        for text in pair.failures[:2]:
            print(text, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
