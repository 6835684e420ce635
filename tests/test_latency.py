"""`effnas latency` on tiny architectures: the run directory contract, the compare table, a
latency table built and read back, the predictor's parts, and bad input (no timings asserted:
those are measured by the stage's own runs, not by tests)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from conftest import expect_usage_error, space_config

from effnas.cli import main
from search_spaces.latency import LatencyTable, TableError, parts, space_parts
from search_spaces.mnasnet import MnasNetSpace
from search_spaces.official import efficientnet_b0

TINY = ["runs=3", "warmup=1", "resolution=32"]


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(efficientnet_b0().scaled(width=0.25, depth=0.25, resolution=32, name="tiny").to_yaml())
    return path


def test_one_model_writes_the_run_directory_contract(tmp_path: Path, tiny_yaml: Path) -> None:
    assert main(["latency", str(tiny_yaml), *TINY, f"run.dir={tmp_path / 'run'}"]) == 0
    run = tmp_path / "run"
    rows = pd.read_csv(run / "latency.csv")
    assert list(rows["model"]) == ["tiny"] and rows["runs"].item() == 3 and rows["median_ms"].item() > 0
    assert rows["p25_ms"].item() <= rows["median_ms"].item() <= rows["p75_ms"].item()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["median_ms"] == rows["median_ms"].item()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["latency_setup"]["threads"] == 1 and manifest["latency_setup"]["batch"] == 1
    assert manifest["machine"]["cpus"] >= 1 and "torch" in manifest["machine"]


def test_compare_prints_a_table_with_the_users_accuracy(
    tmp_path: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    half = tmp_path / "half.yaml"
    half.write_text(efficientnet_b0().scaled(width=0.5, depth=0.25, resolution=32, name="half").to_yaml())
    args = ["latency", "--compare", str(tiny_yaml), str(half), "--accuracy", f"{tiny_yaml}=70.5", *TINY]
    assert main([*args, f"run.dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "70.5" in out and "x slowest" in out
    rows = pd.read_csv(tmp_path / "run" / "latency.csv")
    assert list(rows["arch"]) == ["tiny", "half"] and rows["macs"].iloc[1] > rows["macs"].iloc[0]


def test_table_covers_every_architecture_of_the_space() -> None:
    space = MnasNetSpace.from_config(space_config())
    keys = {p.key for p in space_parts(space)}
    rng = random.Random(0)
    for _ in range(100):
        arch = space.decode(space.sample(rng))
        assert {p.key for p in parts(arch)} <= keys


def test_small_space_table_round_trip_and_prediction(tmp_path: Path) -> None:
    """A space of one choice per decision but two filter widths: build, save, load, predict."""
    space_args = [
        "space.ops=[mbconv3]",
        "space.kernels=[3]",
        "space.se=[0.0]",
        "space.skip=[true]",
        "space.filters=[0.25,0.5]",
        "space.repeats=[-1]",
    ]
    run = tmp_path / "run"
    args = ["latency", "--build-table", *space_args, "table_runs=2", "runs=2", "warmup=1"]
    assert main([*args, "calibrate=1", "evaluate=3", f"run.dir={run}"]) == 0
    table = LatencyTable.load(run / "latency_table.json")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parts"] == len(table.ms) > 0 and summary["checked"] == 3
    assert -1.0 < summary["mean_signed_error"] < 10.0 and 0.0 <= summary["within_10pct"] <= 1.0
    assert len(pd.read_csv(run / "predictor.csv")) == 3 and (run / "predicted_vs_measured.png").is_file()
    # the table predicts any architecture of that space, and refuses one it does not cover
    space = MnasNetSpace.from_config(
        space_config(ops=["mbconv3"], kernels=[3], se=[0.0], skip=[True], filters=[0.25, 0.5], repeats=[-1])
    )
    arch = space.decode(space.sample(random.Random(1)))
    expected = table.overhead_ms + table.scale * sum(table.ms[p.key] for p in parts(arch))
    assert table.predict(arch) == pytest.approx(expected)
    with pytest.raises(TableError, match="lacks"):
        table.predict(efficientnet_b0())


def test_a_table_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text('{"ms": {}}')
    with pytest.raises(TableError, match="not an effnas latency table"):
        LatencyTable.load(bad)
    with pytest.raises(TableError, match="does not exist"):
        LatencyTable.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0"], "must be >= 1"),
        (["--runtime", "tvm"], "invalid choice: 'tvm'"),
        (["--batch", "-1"], "must be >= 1"),
        (["--compare", "efficientnet_b9"], "unknown arch 'efficientnet_b9'"),
        (["--table", "/nonexistent/table.json"], "latency table /nonexistent/table.json does not exist"),
        (["--accuracy", "b0=high"], "expected NAME=NUMBER"),
        (["--build-table", "--compare", "efficientnet_b0"], "not both"),
        (["--build-table", "resolution=32"], "drop resolution=32"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = expect_usage_error(["latency", *args, f"run.root={tmp_path}"], capsys)
    assert message in line
    assert not any(tmp_path.iterdir())


def test_cuda_without_cuda_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = expect_usage_error(["latency", "--device", "cuda", f"run.root={tmp_path}"], capsys)
    assert "CUDA is not available" in line


SMALL_SPACE = [
    "space.ops=[mbconv3]",
    "space.kernels=[3]",
    "space.se=[0.0]",
    "space.skip=[true]",
    "space.filters=[0.25,0.5]",
    "space.repeats=[-1]",
]
TINY_SEARCH = ["proxy.resolution=8", "proxy.images=64", "proxy.batch_size=32", "proxy.compile=off"]
TINY_SEARCH += ["data.max_train=300", "run.threads=1", "ray.enabled=false", *SMALL_SPACE]


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency table of the small space at the search's deployment resolution (224 px)."""
    run = tmp_path_factory.mktemp("table") / "run"
    args = ["latency", "--build-table", *SMALL_SPACE, "table_runs=1", "runs=1", "warmup=0"]
    assert main([*args, "calibrate=1", "evaluate=0", f"run.dir={run}"]) == 0
    return run / "latency_table.json"


def test_latency_aware_search_rewards_predicted_latency(tmp_path: Path, small_table: Path) -> None:
    table = LatencyTable.load(small_table)
    run = tmp_path / "search"
    # T far above any latency here: the test must not depend on this machine's speed
    args = ["search", "--target-latency", "1s", "--latency-table", str(small_table), "--trials", "2"]
    assert main([*args, *TINY_SEARCH, f"run.dir={run}"]) == 0
    rows = pd.read_csv(run / "trials.csv")
    assert rows["latency_ms"].notna().all()
    space = MnasNetSpace.from_config(
        space_config(ops=["mbconv3"], kernels=[3], se=[0.0], skip=[True], filters=[0.25, 0.5], repeats=[-1])
    )
    for row in rows.itertuples():
        arch = space.decode(tuple(int(c) for c in row.choices.split()))
        assert row.latency_ms == pytest.approx(table.predict(arch), abs=1e-3)
        if row.status == "ok":  # MnasNet's ACC x (LAT/T)^w, the latency being the table's
            assert row.reward == pytest.approx(row.accuracy * (row.latency_ms / 1000.0) ** -0.07, rel=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["target_latency_ms"] == 1000.0 and summary["target_macs"] is None
    assert summary["best_latency_ms"] is not None and (run / "accuracy_vs_macs.png").is_file()


def test_a_flops_search_with_a_table_records_predicted_latency(tmp_path: Path, small_table: Path) -> None:
    run = tmp_path / "search"
    args = ["search", "--target-flops", "400M", "--latency-table", str(small_table), "--trials", "1"]
    assert main([*args, *TINY_SEARCH, f"run.dir={run}"]) == 0
    assert pd.read_csv(run / "trials.csv")["latency_ms"].notna().all()
    assert (run / "accuracy_vs_latency.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-flops", "400M", "--target-latency", "15ms"], "cannot be given together"),
        (["--target-latency", "15ms"], "needs a latency table"),
        (["--target-latency", "15ms", "--latency-table", "/nonexistent.json"], "does not exist"),
        (["--target-latency", "fast"], "bad latency 'fast'"),
        (["target_latency=15ms", "latency_table=x.json"], "not both"),
    ],
)
def test_bad_latency_targets_are_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in expect_usage_error(["search", *args, f"run.root={tmp_path}"], capsys)
    assert not any(tmp_path.iterdir())


def test_a_table_of_another_space_is_refused(
    tmp_path: Path, small_table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", "--target-latency", "5ms", "--latency-table", str(small_table), f"run.root={tmp_path}"]
    assert "lacks" in expect_usage_error(args, capsys)  # the default space is far larger


def test_arch_names_resolve_like_hydra_composes_them() -> None:
    """efficientnet_b1.yaml extends efficientnet_b0 through its defaults list."""
    from deploy.latency import resolve_arch
    from search_spaces.official import official

    assert resolve_arch("efficientnet_b1") == official("efficientnet_b1")
    assert resolve_arch("resnet152").name == "resnet152"


def test_calibration_fits_overhead_and_scale_and_shrugs_off_one_outlier() -> None:
    from deploy.latency import calibrate

    sums = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    measured = [2.0 + 1.25 * x for x in sums]
    measured[3] += 40.0  # one run a neighbour disturbed
    scale, overhead = calibrate(sums, measured)
    assert scale == pytest.approx(1.25, rel=0.02) and overhead == pytest.approx(2.0, abs=0.5)
    assert calibrate([10.0], [13.0]) == (1.0, 3.0)
