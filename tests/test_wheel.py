"""A built wheel runs on its own: built from a copy of the checkout, installed into a fresh venv
that reuses this venv's dependencies but not its editable effnas, then `effnas describe` and a
tiny `effnas train` run from a directory outside the repo (the configs ship as `effnas/conf`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from test_layers import FOLDERS as PACKAGES  # every folder of code must ship

REPO = Path(__file__).resolve().parents[1]
# The tiny architecture of tests/test_train.py, as `effnas train` reads it from a file.
TINY_ARCH = """\
name: tiny
blocks:
- r1_k3_s11_e1_i16_o16_se0.25
- r1_k3_s22_e3_i16_o24_se0.25
stem: 16
head: 64
"""


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _setuptools_ok() -> bool:
    """This venv's setuptools can build the wheel (SPDX `project.license`: setuptools >= 77)."""
    try:
        return int(version("setuptools").split(".")[0]) >= 77
    except (PackageNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        EFFNAS_CACHE=str(tmp_path_factory.mktemp("cache")),
        RAY_USAGE_STATS_ENABLED="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> tuple[Path, Path]:
    """(the wheel, the copy of the checkout it was built from)."""
    # A copy: building in the checkout would leave build/ and *.egg-info there, and a stale
    # build/lib could slip removed modules into the wheel.
    src = tmp_path_factory.mktemp("src") / "effnas"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    # This venv's setuptools when it is new enough (offline, ~1 s); else pip's build isolation
    # fetches one from the package index.
    build = ["--no-build-isolation"] if _setuptools_ok() else []
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *build, "-w", out, src], out, env)
    log = proc.stdout + proc.stderr
    for text in ("deprecated", "By 2027", "Warning:", "would be ignored"):
        assert text not in log, f"the wheel build warns ({text!r}):\n{log}"
    (whl,) = out.glob("effnas-*.whl")
    return whl, src


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: tuple[Path, Path], env: dict[str, str]) -> Path:
    """A fresh venv holding the wheel; the dependencies (and pip) come from this venv's site-packages."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", root], root, env)
    python = root / "bin" / "python"
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root, env
        ).stdout.strip()
    )
    # Plain directory lines: the parent's own .pth files (the editable effnas finder) are not read.
    parent = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "_effnas_parent.pth").write_text("".join(f"{p}\n" for p in parent))
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel[0]], root, env)
    return root


def test_wheel_holds_the_code_the_configs_and_the_kernels(wheel: tuple[Path, Path]) -> None:
    whl, src = wheel
    names = set(zipfile.ZipFile(whl).namelist())
    confs = {f"effnas/conf/{p.relative_to(src / 'conf')}" for p in (src / "conf").rglob("*.yaml")}
    assert confs and confs <= names, sorted(confs - names)
    assert "effnas/conf/train.yaml" in names and "effnas/conf/arch/efficientnet_b0.yaml" in names
    kernels = {f"training/kernels/{p.name}" for p in (src / "training" / "kernels").glob("*.c")}
    assert kernels and kernels <= names
    # Every module of the checkout: pyproject.toml lists the packages by hand.
    modules = {str(p.relative_to(src)) for pkg in PACKAGES for p in (src / pkg).rglob("*.py")}
    assert modules <= names, f"missing from pyproject.toml's packages: {sorted(modules - names)}"
    assert not any(n.startswith(("conf/", "tests/")) for n in names)


def test_installed_wheel_runs_from_anywhere(
    venv: Path, env: dict[str, str], tmp_path: Path, wheel: tuple[Path, Path]
) -> None:
    bin_ = venv / "bin"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    probe = "import effnas, effnas.config as c; print(effnas.__file__); print(c.CONF_DIR)"
    file, conf = _run([bin_ / "python", "-c", probe], elsewhere, env).stdout.split()
    site = venv.resolve() / "lib"
    assert Path(file).resolve().is_relative_to(site), f"effnas imported from {file}, not the new venv"
    assert Path(conf) == Path(file).resolve().parent / "conf", conf
    assert REPO not in Path(conf).parents and wheel[1] not in Path(conf).parents

    out = _run([bin_ / "effnas", "describe", "arch=efficientnet_b0"], elsewhere, env).stdout
    assert "params 5,288,548" in out, out

    (elsewhere / "tiny.yaml").write_text(TINY_ARCH)
    root = tmp_path / "runs"
    args = ["train", "tiny.yaml", "proxy.images=64", "proxy.batch_size=32", "proxy.compile=off"]
    args += ["proxy.bn_calibration=0", "save_weights=false", "run.threads=1", f"run.root={root}"]
    _run([bin_ / "effnas", *args], elsewhere, env)
    (run,) = (root / "train").iterdir()
    assert {"manifest.json", "summary.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "summary.json").read_text())["status"] == "done"

    # the stages in the `deploy` package and their conf/ files ship too: a latency run from the wheel
    _run(
        [bin_ / "effnas", "latency", "tiny.yaml", "runs=1", "warmup=0", "resolution=32", f"run.root={root}"],
        elsewhere,
        env,
    )
    (run,) = (root / "latency").iterdir()
    assert {"manifest.json", "summary.json", "latency.csv"} <= {p.name for p in run.iterdir()}
