"""`effnas study scaling`: solving each method for a MACs level, the study end to end on digits
with a tiny budget (in this process, and one run on a real local Ray runtime), `--resume`, and
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import expect_usage_error, write_small_arch

from effnas.cli import main
from foundation.errors import UserError
from scaling.compound import PAPER_COEFFICIENTS, macs_of
from scaling.study import COLUMNS, METHODS, TABLES, parse_levels, solve, summarize
from search_spaces.arch import Arch
from search_spaces.official import efficientnet_b0

TINY = ["proxy.images=32", "proxy.batch_size=16", "proxy.resolution=8", "proxy.compile=off"]
TINY += ["data.max_train=300", "run.threads=1", "seeds=1", "budgets=[1]"]


@pytest.fixture(scope="module")
def small_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """conftest's small baseline for the tests that train studies: a B0 arm at the TINY budget
    took ~3.5 s, mostly its forward and backward passes (profiled). The default baseline (B0) is
    studied by the slow end-to-end test below; test_the_baseline_is_... checks it is the default."""
    return write_small_arch(tmp_path_factory.mktemp("arch"))


def test_levels_parse_and_refuse_what_is_not_a_level() -> None:
    assert parse_levels("2x") == [2.0] and parse_levels("4x, 2") == [2.0, 4.0]
    for bad in ("0.5x", "1x", "twice", "2x,2x"):
        with pytest.raises(UserError):
            parse_levels(bad)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "baseline"])
@pytest.mark.parametrize("level", [2.0, 4.0])
def test_every_method_lands_within_5_percent_of_the_level_on_b0(method: str, level: float) -> None:
    arm = solve(efficientnet_b0(), method, level, PAPER_COEFFICIENTS)
    assert arm.on_level and abs(arm.macs_ratio / level - 1) <= 0.05
    assert macs_of(arm.arch) == arm.macs
    d, w, r = arm.arch.depth, arm.arch.width, arm.arch.resolution
    if method == "depth":
        assert w == 1.0 and r == 224 and d > 1
    elif method == "width":
        assert d == 1.0 and r == 224 and w > 1
    elif method == "resolution":
        assert d == 1.0 and w == 1.0 and r > 224 and r % 8 == 0
    else:  # compound and dwr grow all three (dwr's resolution exponent is small: it may round to 224)
        assert d > 1 and w > 1 and r >= 224


def test_a_level_out_of_reach_is_flagged_not_faked() -> None:
    arm = solve(efficientnet_b0(), "width", 64.0, PAPER_COEFFICIENTS, max_mult=2.0)  # w <= 2: ~4x at most
    assert not arm.on_level and arm.macs_ratio < 8


def test_a_dimension_that_does_not_move_macs_is_refused() -> None:
    frozen = Arch.from_dict({**efficientnet_b0().to_dict(), "name": "frozen"})
    with pytest.raises(UserError, match="cannot be scaled by depth"):
        solve(frozen, "depth", 2.0, PAPER_COEFFICIENTS, max_mult=1.001)


def test_summary_means_winner_and_compound_margin() -> None:
    rows = []
    for method, accs in {
        "baseline": [0.5, 0.52],
        "depth": [0.6, 0.62],
        "width": [0.615, 0.615],
        "compound": [0.7, 0.72],
    }.items():
        for seed, acc in enumerate(accs):
            level = 1.0 if method == "baseline" else 2.0
            rows.append(
                {
                    "method": method,
                    "level": level,
                    "budget": 5.0,
                    "seed": seed,
                    "accuracy": acc,
                    "status": "ok",
                    "macs_ratio": level,
                    "on_level": True,
                }
            )
    entry = summarize(rows)["budgets"]["5 epochs"]["2x"]
    # no evaluation set given: nothing to judge the margins with, so no winner is named
    assert entry["leader"] == "compound" and entry["winner"] is None and entry["best_single"] == "width"
    assert "winner_call" not in entry and "compound_vs_best_single" not in entry
    assert entry["compound_margin"] == pytest.approx(0.71 - 0.615)
    assert entry["methods"]["depth"]["mean"] == pytest.approx(0.61) and entry["methods"]["depth"]["n"] == 2


def test_a_lone_scaled_method_leads_but_does_not_win() -> None:
    """One scaled arm (`--methods baseline,width`) has no runner-up to beat: it is the leader,
    never the winner, whatever its accuracy against the baseline."""
    rows = [
        {
            "method": m,
            "level": lv,
            "budget": 8.0,
            "seed": s,
            "accuracy": a,
            "status": "ok",
            "macs_ratio": lv,
            "on_level": True,
        }
        for m, lv, accs in (("baseline", 1.0, [0.6, 0.61, 0.62]), ("width", 2.0, [0.5, 0.51, 0.52]))
        for s, a in enumerate(accs)
    ]
    entry = summarize(rows)["budgets"]["8 epochs"]["2x"]
    assert entry["leader"] == "width" and entry["winner"] is None


# slow (40-73 s): the study end to end runs by default on Ray (test_study_on_a_real_local_ray_runtime)
# and its resume after kill -9 in tests/test_faults.py; this one adds the in-process executor
@pytest.mark.slow
def test_study_end_to_end_without_ray_and_resume_reruns_nothing_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "study"
    assert main(["study", "scaling", "--flops", "2x", *TINY, "ray.enabled=false", f"run.dir={run}"]) == 0
    rows = pd.read_csv(run / "study.csv")
    # conf/study.yaml's default arms: every method but compound_paper (asked for by name), one seed each
    assert sorted(rows["method"]) == sorted(set(METHODS) - {"compound_paper"}) and set(rows["status"]) == {
        "ok"
    }
    # every column the stage declares is written, and the report's required ones are among them
    assert set(COLUMNS) <= set(rows.columns) and set(TABLES["study.csv"][0]) <= set(COLUMNS)
    scaled = rows[rows["method"] != "baseline"]
    assert ((scaled["macs_ratio"] / 2 - 1).abs() <= 0.05).all() and scaled["on_level"].all()
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["budgets"]["1 epochs"]["2x"]["leader"] in METHODS and (run / "accuracy_vs_macs.png").is_file()
    )
    # an interruption: two rows not finished; --resume trains exactly those
    rows.loc[rows["method"].isin(["width", "dwr"]), ["status", "accuracy"]] = ["pending", None]
    (run / "study.csv").write_text(rows.to_csv(index=False))
    capsys.readouterr()
    assert main(["study", "scaling", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] width@2x" in out and "[2/2] dwr@2x" in out and "depth@2x" not in out.split("[1/2]")[1]
    again = pd.read_csv(run / "study.csv")
    assert set(again["status"]) == {"ok"}
    kept = again.set_index("id").loc[rows[rows["status"] == "ok"]["id"], "accuracy"]
    assert (kept.values == rows[rows["status"] == "ok"]["accuracy"].values).all()


def test_the_baseline_is_arch_else_from_else_the_official_b0(tmp_path: Path, small_arch: str) -> None:
    """Where the baseline comes from, without training it: the tests that train studies give a
    small `--arch`; unset, it is the paper's B0 with the paper's coefficients."""
    from effnas.lifecycle import compose_config
    from scaling.study import resolve_inputs

    overrides = ["kind=scaling", f"run.root={tmp_path}"]
    baseline, coeffs, source = resolve_inputs(compose_config("study", overrides))
    assert baseline == efficientnet_b0() and tuple(coeffs) == tuple(PAPER_COEFFICIENTS)
    assert source["baseline"] == "official efficientnet_b0 (paper Table 1)"
    baseline, _, source = resolve_inputs(compose_config("study", overrides, Path(small_arch)))
    assert baseline.name == "small" and source["baseline"] == "--arch"


def test_a_sweep_trains_one_dimension_at_each_multiplier(tmp_path: Path, small_arch: str) -> None:
    run = tmp_path / "sweep"
    args = ["study", "scaling", "--sweep", "width", "--multipliers", "1,1.5", "--arch", small_arch]
    args += [*TINY, "ray.enabled=false"]
    assert main([*args, f"run.dir={run}"]) == 0
    rows = pd.read_csv(run / "study.csv")
    assert list(rows["multiplier"]) == [1.0, 1.5] and list(rows["width"]) == [1.0, 1.5]
    assert (run / "accuracy_vs_multiplier.png").is_file()


def test_three_seeds_judged_on_the_test_split_with_intervals(
    tmp_path: Path, small_arch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every trial leaves its per-image record of the test split; the summary pairs the arms over
    those images, gives each arm an interval and calls the leader against the runner-up."""
    from foundation import per_image
    from foundation.verdict import METHOD, Scores, compare

    run = tmp_path / "study"
    args = ["study", "scaling", "--flops", "2x", "--methods", "baseline,width,compound", "--arch", small_arch]
    args += [*TINY, "seeds=3"]
    assert main([*args, "ray.enabled=false", f"run.dir={run}"]) == 0
    rows = pd.read_csv(run / "study.csv")
    assert len(rows) == 9 and set(rows["status"]) == {"ok"} and rows["val_accuracy"].notna().all()
    summary = json.loads((run / "summary.json").read_text())
    ev = summary["evaluation"]
    assert ev["split"] == "test" and ev["images"] == 359 and ev["seeds"] == [3] and ev["method"] == METHOD
    records = {r.id: per_image.load(run, r.id) for r in rows.itertuples()}
    assert all(v is not None and v.size == 359 for v in records.values())
    for r in rows.itertuples():  # the table's accuracy is the record's
        assert r.accuracy == pytest.approx(records[r.id].mean())
    entry = summary["budgets"]["1 epochs"]["2x"]
    for m in ("baseline", "width", "compound"):
        arm = entry["methods"][m]
        assert arm["low"] <= arm["mean"] <= arm["high"]

    # the stage's verdict is the one the records give
    def arm(m: str) -> Scores:
        return Scores.of([records[i] for i in rows[rows["method"] == m]["id"]])

    leader, other = entry["leader"], entry["vs_runner_up"]["other"]
    assert entry["vs_runner_up"]["call"] == compare(arm(leader), arm(other))["call"] == entry["winner_call"]
    assert entry["winner"] == (leader if entry["winner_call"] == "wins" else None)
    v = entry["compound_vs_best_single"]
    assert v["other"] == "width" and v["low"] <= v["margin"] <= v["high"]
    assert set(entry["vs_baseline"]) == {"width", "compound"}
    out = capsys.readouterr().out
    assert "judged on 359 test images" in out and "compound vs best single (width)" in out


def test_study_on_a_real_local_ray_runtime(tmp_path: Path, small_arch: str) -> None:
    import ray

    run = tmp_path / "study"
    args = ["study", "scaling", "--flops", "2x", "--methods", "depth,compound", "--arch", small_arch]
    args += [*TINY, "ray.num_cpus=2"]
    assert main([*args, f"run.dir={run}"]) == 0
    assert not ray.is_initialized()
    assert set(pd.read_csv(run / "study.csv")["status"]) == {"ok"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flops", "0.5x"], "must be above 1x"),
        (["--methods", "depth,height"], "unknown scaling method 'height'"),
        (["--sweep", "height"], "--sweep must be one of"),
        (["--seeds", "0"], "must be >= 1"),
        (["--budgets", "0"], "--budgets must be epochs > 0"),
        (["--from", "/nonexistent/run"], "not an effnas run directory"),
        (["eval_split=train"], "eval_split must be one of auto, test, val, got 'train'"),
        (
            ["eval_split=test", "data.test_fraction=0", *TINY],
            "eval_split=test but dataset digits has no test split",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in expect_usage_error(["study", "scaling", *args, f"run.root={tmp_path}"], capsys)
    assert not any(tmp_path.iterdir())


def test_from_must_be_a_search_or_grid_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "--phi", "1", f"run.dir={tmp_path / 'scale'}"]) == 0
    capsys.readouterr()
    line = expect_usage_error(
        ["study", "scaling", "--from", str(tmp_path / "scale"), f"run.root={tmp_path}"], capsys
    )
    assert "a scale run; expected a search run or a grid run" in line


# slow (15-31 s): tests/test_study_search.py checks the same summarise-what-finished path by default
@pytest.mark.slow
def test_an_interrupted_study_still_summarises_what_finished(tmp_path: Path) -> None:
    """A long study stopped halfway leaves its table, plot and a summary marked incomplete."""
    from effnas.config import compose
    from effnas.rundir import RunDir
    from scaling import study
    from training.trials import run_trial

    overrides = [o for o in TINY if not o.startswith("budgets")] + [
        "budgets=[1,2]",
        "methods=[baseline,depth]",
    ]
    cfg = compose("study", ["kind=scaling", *overrides, f"run.root={tmp_path}"])
    rundir = RunDir.create(tmp_path, "study")

    def first_budget_only(source, setup, scheduling) -> None:  # then "Ctrl-C"
        for n in range(2):
            config = source.propose(f"t{n}")
            source.complete(f"t{n}", run_trial(config, setup))

    with pytest.raises(KeyboardInterrupt):
        study.run(cfg, rundir, first_budget_only)
    summary = json.loads((rundir.path / "summary.json").read_text())
    assert summary["complete"] is False and summary["pending"] == 2 and summary["status"] == "interrupted"
    assert summary["budgets"]["1 epochs"]["2x"]["methods"]["depth"]["n"] == 1
    assert (rundir.path / "accuracy_vs_macs.png").is_file()
