"""One Optuna study for every run (`training.trial_log`): every sampler, the grid and the study
record each finished trial once, with its parameters, state, value and attributes; a run killed
between its table and its study, then resumed, ends with each trial in the study exactly once;
several runs share one storage under distinct study names.

Training is replaced by a stand-in (`training.trials.run_trial`, accuracy from the block list): what
is under test is the record, and every other part (Hydra, the CLI, the stages, Optuna, SQLite) is
the real one. tests/test_postgres.py runs real trials against a real PostgreSQL server."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from conftest import expect_usage_error, space_config

from effnas.cli import main
from foundation.errors import UserError
from training.trial_log import KEY_ATTR, Choice, Entry, Range, TrialLog, open_storage

T = 400_000_000
TINY = ["ray.enabled=false", "run.threads=1", "data.max_train=300"]


def fake_trial(config: dict, setup: Any, report: Any = None, cpus: int = 1) -> dict:
    """Stands in for the proxy trainer: a failure for a regular-conv first stage, else an
    accuracy that grows with the number of SE blocks."""
    blocks = config["arch"]["blocks"]
    if blocks[0].startswith("conv"):
        return {"status": "failed", "error": "ValueError: diverged", "accuracy": None, "seconds": 0.1}
    acc = 0.5 + 0.4 * sum("se0.25" in b for b in blocks) / len(blocks)
    return {"status": "ok", "accuracy": acc, "loss": 1.0, "seconds": 0.2, "epochs": 1.0, "proxy_macs": 1}


@pytest.fixture(autouse=True)
def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.trials

    monkeypatch.setattr(training.trials, "run_trial", fake_trial)


def load(run: Path) -> optuna.Study:
    study = json.loads((run / "manifest.json").read_text())["study"]
    return optuna.load_study(study_name=study["name"], storage=open_storage(study["storage"]))


def study_storage(run: Path) -> str:
    return json.loads((run / "manifest.json").read_text())["study"]["storage"]


def keyed(study: optuna.Study) -> Counter:
    return Counter(str(t.user_attrs[KEY_ATTR]) for t in study.trials if KEY_ATTR in t.user_attrs)


def interrupt_sync_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """A kill in the window between a trial's row on disk and its record in the study: the
    `call`-th sync raises before recording anything."""
    calls = {"n": 0}
    real = TrialLog.sync

    def sync(self: TrialLog, entries: Any) -> int:
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(self, entries)

    monkeypatch.setattr(TrialLog, "sync", sync)


# -- the log itself -------------------------------------------------------------------------------
def test_the_log_maps_statuses_to_states_and_records_each_key_once(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from effnas.rundir import RunDir

    run = RunDir.create(tmp_path, "search")
    cfg = OmegaConf.create({"storage": None, "study_name": None})
    space = {"op": Choice(range(4)), "alpha": Range(1.0, 2.0)}
    log = TrialLog.open(run, cfg, "search", space)
    entries = [
        Entry("0", "ok", {"op": 1, "alpha": 1.2}, 0.7, {"macs": 3, "arch": "a", "error": None}),
        Entry("1", "failed", {"op": 2, "alpha": 1.0}, None, {"error": "ValueError: diverged"}),
        Entry("2", "stopped", {"op": 0, "alpha": 2.0}, 0.4),
        Entry("3", "rejected", {"op": 3, "alpha": 1.5}, None),
        Entry("4", "pending", {"op": 3, "alpha": 1.5}, None),
    ]
    assert log.sync(entries) == 4 and log.sync(entries) == 0
    study = load(run.path)
    by_key = {t.user_attrs[KEY_ATTR]: t for t in study.trials}
    assert set(by_key) == {"0", "1", "2", "3"}
    assert by_key["0"].state.name == "COMPLETE" and by_key["0"].values == [0.7]
    assert by_key["0"].params == {"op": 1, "alpha": 1.2} and by_key["0"].user_attrs["macs"] == 3
    assert by_key["1"].state.name == "FAIL" and by_key["1"].user_attrs["error"] == "ValueError: diverged"
    assert by_key["2"].state.name == "PRUNED" and by_key["2"].intermediate_values == {0: 0.4}
    assert by_key["3"].state.name == "PRUNED" and by_key["3"].user_attrs["status"] == "rejected"
    # the same run opened again (a resume) knows what its study holds
    again = TrialLog.open(run, cfg, "search", space)
    assert again.sync([*entries, Entry("4", "ok", {"op": 3, "alpha": 1.5}, 0.9)]) == 1
    assert len(load(run.path).trials) == 5 and run.manifest["study"]["name"] == study.study_name
    # another run may not write into it (an explicit study_name, a database both use)
    other = RunDir.create(tmp_path, "search")
    named = OmegaConf.create({"storage": study_storage(run.path), "study_name": study.study_name})
    with pytest.raises(UserError, match=f"already holds the trials of run {run.path.resolve()}"):
        TrialLog.open(other, named, "search", space)


def test_every_sampler_records_every_trial_in_the_run_study(tmp_path: Path) -> None:
    """The stage's wiring (nas.stage) for every registered sampler: samplers that keep no study
    get theirs written by the log; tpe/nsga2 ask and tell through it and are only annotated."""
    from omegaconf import OmegaConf

    from effnas.rundir import RunDir
    from nas.driver import Search
    from nas.reward import RewardFn
    from nas.samplers import SAMPLERS, make_sampler
    from nas.stage import trial_entries
    from search_spaces.mnasnet import MnasNetSpace
    from training.trial_log import study_of
    from training.trials import run_inline

    space = MnasNetSpace.from_config(space_config())
    storage = f"sqlite:///{tmp_path / 'all.db'}"  # every sampler's run in one database
    for name in SAMPLERS:
        run = RunDir.create(tmp_path, name)
        cfg = OmegaConf.create({"storage": storage, "study_name": None})
        _, study_name = study_of(run, cfg, "search")
        options = {"population": 2, "sample_size": 1} if name in ("evolution", "nsga2") else {}
        sampler = make_sampler(name, space, 0, storage=storage, study_name=study_name, **options)
        dims = {d.name: Choice(range(len(d.values))) for d in space.dims}
        log = TrialLog.open(run, cfg, "search", dims, study=getattr(sampler, "study", None))
        search = Search(
            space,
            sampler,
            RewardFn(T, -0.07, -0.07),
            trials=2,  # the states of rejected and stopped trials: the test above
            reject_above=None,
            save=lambda rows, log=log: log.sync(trial_entries(rows, space)),
            out=io.StringIO(),
        )
        run_inline(search, lambda config: fake_trial(config, None))
        sampler.close()
        study = optuna.load_study(study_name=study_name, storage=storage)
        rows = {str(r["id"]): r for r in search.rows}
        assert keyed(study) == Counter(list(rows)), name  # every row once, nothing else keyed
        assert len(study.trials) == len(rows), name
        for t in study.trials:
            row = rows[t.user_attrs[KEY_ATTR]]
            assert t.user_attrs["arch"] == row["arch"] and t.user_attrs["macs"] == row["macs"], name
            assert [t.params[d.name] for d in space.dims] == [int(c) for c in row["choices"].split()], name
            if row["status"] == "ok":
                assert t.state.name == "COMPLETE" and t.values[0] == pytest.approx(
                    row["reward"] if name != "nsga2" else row["accuracy"]
                ), name
            if row["status"] == "failed":
                assert t.state.name == "FAIL" and t.user_attrs["error"] == "ValueError: diverged", name
    names = optuna.get_all_study_names(storage)
    assert len(names) == len(SAMPLERS) == len(set(names))


# -- the stages through the CLI: a kill between the table and the study, then --resume -----------
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_search_killed_between_record_and_study_resumes_without_duplicates(
    sampler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "search"
    interrupt_sync_at(monkeypatch, 3)  # 1: the resume catch-up, 2: the first trial, 3: the second
    argv = ["search", "--trials", "3", "--sampler", sampler, "reject_above=null", *TINY, f"run.dir={run}"]
    if sampler == "random":  # a database given by URL, which other runs' studies share
        argv.append(f"storage=sqlite:///{tmp_path / 'shared.db'}")
    with pytest.raises(SystemExit):
        main(argv)
    rows = pd.read_csv(run / "trials.csv")
    assert len(rows) == 2 and len(keyed(load(run))) == 1  # the second row is in the table only
    monkeypatch.undo()
    monkeypatch.setattr("training.trials.run_trial", fake_trial)
    assert main(["search", "--resume", str(run)]) == 0
    rows = pd.read_csv(run / "trials.csv")
    assert len(rows) == 3
    study = load(run)
    # each row exactly once, nothing else. tpe asks and tells through the study: the trial killed
    # between its row and its annotation is still running there on resume, and is annotated
    # before the sampler closes it (the same trial, no copy)
    assert keyed(study) == Counter(str(i) for i in rows["id"]) and len(study.trials) == 3
    by_row = {int(t.user_attrs[KEY_ATTR]): t for t in study.trials}
    if sampler == "random":
        assert not (run / "study.log").exists()
    else:
        assert all(by_row[int(r.id)].number == int(r.sampler_key) for r in rows.itertuples())
        assert all(t.user_attrs["arch"] == r.arch for r in rows.itertuples() for t in [by_row[int(r.id)]])
    for r in rows.itertuples():
        t = by_row[int(r.id)]
        assert t.state.name == ("COMPLETE" if r.status == "ok" else "FAIL")
        if r.status == "ok":
            assert t.values[0] == pytest.approx(r.reward)
    if sampler == "random":  # and the study of this search (`effnas study search`) has its own
        follow = tmp_path / "study-search"
        argv = ["study", "search", "--from", str(run), "--random", "1", "seeds=1", "budgets=[1]", *TINY]
        assert main([*argv, f"run.dir={follow}"]) == 0
        rows = pd.read_csv(follow / "study.csv")
        trials = load(follow).trials
        assert keyed(load(follow)) == Counter(rows["id"]) and len(trials) == 3
        assert {t.params["role"] for t in trials} == {"searched", "random", "base"}


def test_grid_and_study_record_each_trial_once_across_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = tmp_path / "grid"
    interrupt_sync_at(monkeypatch, 3)  # 1: the start, 2: the baseline, 3: the paper's point
    with pytest.raises(SystemExit):
        main(["grid", "--phi", "1", "max_candidates=2", "proxy.epochs=1", *TINY, f"run.dir={grid}"])
    assert set(pd.read_csv(grid / "trials.csv")["status"]) == {"ok", "pending"}
    monkeypatch.undo()
    monkeypatch.setattr("training.trials.run_trial", fake_trial)
    assert main(["grid", "--resume", str(grid)]) == 0
    rows = pd.read_csv(grid / "trials.csv")
    study = load(grid)
    assert keyed(study) == Counter(f"{r.id}/seed{r.seed}" for r in rows.itertuples())
    assert len(study.trials) == len(rows) == 3
    by_id = {t.user_attrs["id"]: t for t in study.trials}
    paper = by_id["a1.2_b1.1_g1.15"]
    assert paper.params == {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}
    assert paper.values[0] == pytest.approx(rows.set_index("id").loc["a1.2_b1.1_g1.15", "accuracy"])
    assert paper.user_attrs["macs"] == int(rows.set_index("id").loc["a1.2_b1.1_g1.15", "macs"])

    study_run = tmp_path / "study"
    args = ["study", "scaling", "--flops", "2x", "--methods", "baseline,width", "seeds=1", "budgets=[1]"]
    assert main([*args, *TINY, f"run.dir={study_run}"]) == 0
    rows = pd.read_csv(study_run / "study.csv")
    trials = load(study_run).trials
    assert keyed(load(study_run)) == Counter(rows["id"]) and len(trials) == 2
    width = next(t for t in trials if t.params["method"] == "width")
    assert width.params["width"] > 1 and width.user_attrs["macs_ratio"] == pytest.approx(
        float(rows.set_index("method").loc["width", "macs_ratio"])
    )


def test_a_storage_that_is_no_url_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = expect_usage_error(["search", "storage=study.db", f"run.root={tmp_path}"], capsys)
    assert "storage must be a database URL" in err and not (tmp_path / "search").exists()


def test_an_unreachable_storage_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg", reason="no PostgreSQL driver (pip install 'psycopg[binary]')")
    url = "postgresql://effnas:secret@127.0.0.1:1/effnas"  # port 1: nothing listens
    err = expect_usage_error(["search", f"storage={url}", *TINY, f"run.dir={tmp_path / 'r'}"], capsys)
    assert "storage postgresql://effnas:***@127.0.0.1:1/effnas" in err and "secret" not in err
    assert not (tmp_path / "r").exists()  # found before the run directory is made
