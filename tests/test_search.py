"""The search driver without Ray (budget, rejection, failures, records, resume of the record) and
the search stage's bad-input handling through `effnas.cli.main`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import expect_usage_error as _fails
from conftest import space_config

from effnas.rundir import RunDir
from nas.driver import Search
from nas.records import best_of, history_of, pareto_front, read_trials
from nas.reward import RewardFn
from nas.samplers import make_sampler
from nas.stage import write_outputs, write_trials
from search_spaces.mnasnet import MnasNetSpace
from training.trials import run_inline

T = 400_000_000


@pytest.fixture(scope="module")
def space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


def fake_evaluate(config: dict) -> dict:
    """A stand-in for the proxy: accuracy from the block list, failures for 'conv' first stages."""
    blocks = config["arch"]["blocks"]
    if blocks[0].startswith("conv"):
        return {"status": "failed", "error": "ValueError: diverged", "accuracy": None, "seconds": 0.1}
    acc = 0.5 + 0.4 * sum("se0.25" in b for b in blocks) / len(blocks)
    return {"status": "ok", "accuracy": acc, "loss": 1.0, "seconds": 0.2, "epochs": 1.0, "proxy_macs": 1}


def make_search(space: MnasNetSpace, rows=(), sampler: str = "random", **kw) -> Search:
    saved: list[list[dict]] = []
    search = Search(
        space,
        make_sampler(sampler, space, kw.pop("seed", 0), history=history_of(rows)),
        RewardFn(T, -0.07, -0.07),
        rows,
        save=lambda rows: saved.append([dict(r) for r in rows]),
        out=io.StringIO(),
        **{"trials": 8, **kw},
    )
    search.saved = saved  # type: ignore[attr-defined]
    return search


def test_budget_counts_trained_trials_and_rejections_do_not(space: MnasNetSpace) -> None:
    search = make_search(space, trials=8, reject_above=1.0)  # reject everything over T itself
    run_inline(search, fake_evaluate)
    statuses = [r["status"] for r in search.rows]
    assert sum(s in ("ok", "failed") for s in statuses) == 8
    assert "rejected" in statuses  # about half of the space is over 400M
    for row in search.rows:
        if row["status"] == "rejected":
            assert row["macs"] > T and row["accuracy"] is None and row["reward"] is None
        else:
            assert row["macs"] <= T
    assert search.stop_reason == "trials"
    assert [r["id"] for r in search.rows] == list(range(len(search.rows)))
    assert len(search.saved) == len(search.rows)  # trials.csv rewritten after every trial


def test_failed_trials_are_recorded_and_the_search_goes_on(space: MnasNetSpace) -> None:
    search = make_search(space, trials=12, reject_above=None)
    run_inline(search, fake_evaluate)
    failed = [r for r in search.rows if r["status"] == "failed"]
    ok = [r for r in search.rows if r["status"] == "ok"]
    assert failed and ok and len(search.rows) == 12
    assert all(r["error"] == "ValueError: diverged" and r["reward"] is None for r in failed)
    for r in ok:
        assert r["reward"] == pytest.approx(r["accuracy"] * (r["macs"] / T) ** -0.07)
    out = search.out.getvalue()
    assert "FAILED: ValueError: diverged" in out and "| best " in out and "12/12" in out


def test_crash_and_early_stop_results(space: MnasNetSpace) -> None:
    search = make_search(space, trials=3, reject_above=None)
    for tid in ("a", "b", "c"):
        assert search.propose(tid) is not None
    assert search.propose("d") is None and search.stop_reason == "trials"
    search.complete("a", None, error=True)
    search.complete("b", {"val_accuracy": 0.6, "epoch": 1.0, "time_total_s": 3.0})  # ASHA stopped it
    search.complete("c", {"status": "ok", "accuracy": 0.7, "seconds": 4.0})
    search.complete("zzz", {"status": "ok"})  # unknown trials are ignored
    by_status = {r["status"]: r for r in search.rows}
    assert by_status["failed"]["error"].startswith("trial crashed")
    assert by_status["stopped"]["accuracy"] == 0.6 and by_status["stopped"]["seconds"] == 3.0
    assert best_of(search.rows) is by_status["ok"]  # stopped trials are not candidates for B0


def test_time_budget_stops_new_trials(space: MnasNetSpace) -> None:
    search = make_search(space, trials=100, time_budget=1e-9)
    assert search.propose("a") is None and search.stop_reason == "time"
    resumed = make_search(space, trials=100, time_budget=60.0, elapsed_before=61.0)
    assert resumed.propose("a") is None and resumed.stop_reason == "time"


def test_endless_rejection_stops(space: MnasNetSpace, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.driver

    monkeypatch.setattr(nas.driver, "MAX_REJECTED_IN_A_ROW", 5)
    search = make_search(space, trials=3, reject_above=1e-6)
    assert search.propose("a") is None
    assert search.stop_reason == "rejections" and len(search.rows) == 5
    assert "5 proposals in a row" in search.out.getvalue()


def test_pareto_front_and_best() -> None:
    rows = [
        {"id": 0, "status": "ok", "accuracy": 0.80, "macs": 300, "reward": 0.84},
        {"id": 1, "status": "ok", "accuracy": 0.85, "macs": 500, "reward": 0.83},
        {"id": 2, "status": "ok", "accuracy": 0.79, "macs": 400, "reward": 0.80},  # dominated by 0
        {"id": 3, "status": "ok", "accuracy": 0.80, "macs": 350, "reward": 0.84},  # tie, more MACs
        {"id": 4, "status": "failed", "accuracy": None, "macs": 100, "reward": None},
        {"id": 5, "status": "stopped", "accuracy": 0.99, "macs": 100, "reward": 0.99},
    ]
    assert [r["id"] for r in pareto_front(rows)] == [0, 1]
    assert best_of(rows)["id"] == 0
    assert best_of(rows[4:]) is None


def test_records_round_trip_and_resume_keeps_every_finished_trial(
    space: MnasNetSpace, tmp_path: Path
) -> None:
    from effnas.config import compose

    cfg = compose("search", ["trials=6", f"run.root={tmp_path}"])
    run = RunDir.create(tmp_path, "search")
    search = make_search(space, trials=4, reject_above=1.0)
    run_inline(search, fake_evaluate)
    write_trials(run, search.rows)
    rows = read_trials(run.file("trials.csv"))
    assert [(r["id"], r["status"], r["reward"], r["choices"]) for r in rows] == [
        (r["id"], r["status"], r["reward"], r["choices"]) for r in search.rows
    ]
    resumed = make_search(space, rows, trials=6, reject_above=1.0, seed=0)
    assert resumed.trained == 4 and resumed.remaining == 2
    run_inline(resumed, fake_evaluate)
    assert resumed.rows[: len(rows)] == rows  # nothing finished is lost or re-run
    assert resumed.trained == 6
    new_ids = [r["id"] for r in resumed.rows[len(rows) :]]
    assert min(new_ids) > max(r["id"] for r in rows)
    old_archs = {r["arch"] for r in rows if r["status"] != "rejected"}
    assert not old_archs & {r["arch"] for r in resumed.rows[len(rows) :]}

    summary = write_outputs(cfg, run, space, resumed.rows, T, resumed.reward_fn)
    assert summary["trials_done"] + summary["trials_failed"] == 6
    assert summary["trials_rejected"] == sum(r["status"] == "rejected" for r in resumed.rows)
    from search_spaces.arch import Arch

    best = Arch.from_yaml(run.file("best_arch.yaml").read_text())
    assert best.blocks == summary["best_blocks"]
    assert best.meta["reward"] == pytest.approx(summary["best_reward"], abs=1e-6)
    for name in ("pareto.csv", "reward_over_trials.png", "accuracy_vs_macs.png"):
        assert run.file(name).stat().st_size > 0


# -- bad input through the CLI: one line on stderr, exit code 2 -------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-flops", "400X"], "bad FLOP count '400X'"),
        (["--trials", "0"], "must be >= 1, got 0"),
        (["trials=0"], "--trials must be >= 1, got 0"),
        (["--sampler", "bayes"], "sampler/bayes"),
        (["sampler.name=bayes"], "unknown sampler 'bayes'"),
        (["space.kernels=[]"], "space.kernels is empty"),
        (["space.ops=[conv,sepconv]"], "unknown conv op 'sepconv'"),
        (["reward.kind=medium"], "unknown reward.kind 'medium'"),
        (["reject_above=0"], "reject_above must be > 0"),
        (["--time-budget", "soon"], "bad duration 'soon'"),
        (["sampler=evolution", "sampler.population=1"], "sampler.population must be >= 2"),
    ],
)
def test_bad_search_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails(["search", *argv, f"run.root={tmp_path}"], capsys)
    assert message in err
    assert not (tmp_path / "search").exists()  # validation runs before a run directory exists


def test_space_yaml_with_an_empty_choice_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's space file in conf/space/ with an empty list is refused before anything runs."""
    import effnas.config

    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(effnas.config.CONF_DIR, conf)
    (conf / "space" / "tiny.yaml").write_text("defaults: [mnasnet, _self_]\nse: []\n")
    (conf / "space" / "partial.yaml").write_text("name: mnasnet\nbase: efficientnet_b0\nse: [0.0]\n")
    monkeypatch.setattr(effnas.config, "CONF_DIR", conf)
    err = _fails(["search", "space=tiny", f"run.root={tmp_path}"], capsys)
    assert "space.se is empty" in err
    err = _fails(["search", "space=partial", f"run.root={tmp_path}"], capsys)
    assert "lacks ops, kernels, skip, filters, repeats" in err and "defaults: [mnasnet, _self_]" in err


def test_resume_on_a_directory_that_is_not_a_search_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no such directory" in _fails(["search", "--resume", str(tmp_path / "nope")], capsys)
    assert "not an effnas run directory" in _fails(["search", "--resume", str(tmp_path)], capsys)
    other = tmp_path / "grid-run"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"stage": "grid"}))
    assert "a grid run, expected a search run" in _fails(["search", "--resume", str(other)], capsys)
