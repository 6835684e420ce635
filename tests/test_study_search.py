"""`effnas study search`: the searched architecture vs random ones of its MACs vs the base, on
digits with tiny budgets: MACs matching, the search's reward, ranks, the run end to end in this
process and on a real local Ray runtime, `--resume`, and bad input."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import expect_usage_error, session_cache, space_config

from effnas.cli import main
from foundation.errors import UserError
from foundation.verdict import METHOD_BINOMIAL, Scores, compare
from nas.search_study import Objective, exponents, figure, rank, sample_matched, summarize
from search_spaces.arch import Arch
from search_spaces.cost import count
from search_spaces.mnasnet import MnasNetSpace
from search_spaces.official import efficientnet_b0

# trials of a few steps: 8 px, 300 training images; the search trained each trial on 32 images,
# the study trains on 0.25 epochs (75 images), longer as the study asks
TINY = ["proxy.batch_size=16", "proxy.resolution=8", "proxy.compile=off", "data.max_train=300"]
TINY += ["run.threads=1"]
STUDY = [*TINY, "proxy.images=null", "--budgets", "0.25"]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One finished `effnas search` of two tiny trials, shared (read only) by the tests."""
    run = tmp_path_factory.mktemp("search") / "run"
    # random: two uniform draws, whatever the default sampler (the narrowed-space test below
    # needs a searched arch whose MACs that space can reach)
    args = ["search", "--trials", "2", "--sampler", "random", *TINY, "proxy.images=32", "ray.enabled=false"]
    args.append(f"run.dir={run}")
    with session_cache(tmp_path_factory):  # the session's data cache, never ~/.cache
        assert main(args) == 0
    assert (run / "best_arch.yaml").is_file()
    yield run


def default_space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


# -- pieces -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("macs", [2.5e8, 4e8, 7e8])
def test_the_reward_is_the_searchs_own(kind: str, macs: float) -> None:
    from nas.reward import exponents as nas_exponents
    from nas.reward import reward

    mine = Objective(4e8, *exponents(kind, -0.07))
    assert mine(0.8, macs) == pytest.approx(reward(0.8, macs, 4e8, nas_exponents(kind, -0.07)))


def test_random_archs_match_the_searched_macs_within_5_percent() -> None:
    space = default_space()
    b0 = efficientnet_b0()
    target = count(b0).macs
    archs, record = sample_matched(space, target, 5, 0.05, random.Random(0), 20000, exclude=(b0.blocks,))
    assert len(archs) == 5 and len({tuple(a.blocks) for a in archs}) == 5
    errors = [abs(count(a).macs / target - 1) for a in archs]
    assert max(errors) <= 0.05 and record["tolerance_reached"] == pytest.approx(max(errors), abs=1e-5)
    assert all(a.blocks != b0.blocks for a in archs)
    # every one is a point of the space (its choices decode back to it)
    assert all(space.decode(space.encode(a)).blocks == a.blocks for a in archs)
    again, _ = sample_matched(space, target, 5, 0.05, random.Random(0), 20000, exclude=(b0.blocks,))
    assert [a.blocks for a in again] == [a.blocks for a in archs]


def test_too_few_matches_is_a_clear_error_with_the_closest_miss() -> None:
    space = default_space()
    with pytest.raises(UserError, match=r"none of 3 .* within 0% .* in 50 draws \(closest miss"):
        sample_matched(space, count(efficientnet_b0()).macs, 3, 1e-9, random.Random(0), 50)


def test_ranks_and_margins(tmp_path: Path) -> None:
    acc = {
        "searched": [0.80, 0.82, 0.81],
        "random1": [0.70, 0.72, 0.71],
        "random2": [0.79, 0.85, 0.82],
        "base": [0.87, 0.87, 0.87],
    }
    macs = {"searched": 400e6, "random1": 410e6, "random2": 390e6, "base": 1600e6}
    objective = Objective(400e6, -0.07, -0.07)
    rows = [
        {
            "arch": label,
            "role": "random" if label.startswith("random") else label,
            "name": label,
            "budget": 4.0,
            "seed": seed,
            "macs": macs[label],
            "macs_ratio": macs[label] / 400e6,
            "accuracy": a,
            "reward": objective(a, macs[label]),
            "status": "ok",
        }
        for label, accs in acc.items()
        for seed, a in enumerate(accs)
    ]
    for r in rows:
        r["id"] = f"{r['arch']}/4ep/seed{r['seed']}"
    # no per-image records in tmp_path: the binomial error of 1,000 images, unpaired
    summary = summarize(rows, tmp_path, 1000, "test")
    assert summary["evaluation"]["images"] == 1000 and summary["evaluation"]["method"] == METHOD_BINOMIAL
    entry = summary["budgets"]["4 epochs"]
    assert entry["accuracy_ranking"] == ["base", "random2", "searched", "random1"]
    # base is the most accurate but has 4x the MACs: the reward puts it behind the searched one
    assert entry["reward_ranking"][:2] == ["random2", "searched"]
    assert entry["searched_rank"] == {"accuracy": 3, "reward": 2, "of": 4}
    vs = entry["vs_best_random"]
    assert vs["id"] == "random2" and vs["margin"] == pytest.approx(0.81 - 0.82)
    assert vs["call"] == "tie" and vs["low"] < vs["margin"] < vs["high"]
    assert vs == {"id": "random2", "mean": 0.82, "std": pytest.approx(0.03), "n": 3} | compare(
        Scores((0.80, 0.82, 0.81), 1000), Scores((0.79, 0.85, 0.82), 1000)
    )
    assert entry["vs_base"]["margin"] == pytest.approx(-0.06) and entry["vs_base"]["call"] == "loses"
    assert entry["archs"]["searched"]["low"] < 0.81 < entry["archs"]["searched"]["high"]
    assert "vs_base" not in summarize(rows)["budgets"]["4 epochs"]  # no evaluation set: nothing judged
    assert rank({"a": 1.0, "b": 1.0, "c": 0.5}, "b") == 1  # ties share the better rank

    # the figure's bars are these intervals, not the seed std
    fig = figure(summary)
    (ax,) = fig.axes
    bars = {c.get_label(): c for c in ax.containers}
    (segment,) = bars["searched"].lines[2][0].get_segments()
    arch = entry["archs"]["searched"]
    assert [y for _, y in segment] == pytest.approx([arch["low"], arch["high"]])
    assert "95% interval" in ax.get_title()
    one_seed = summarize([r for r in rows if r["seed"] == 0], tmp_path, 1000, "test")
    (ax,) = figure(one_seed).axes
    assert "eval-set error only" in ax.get_title()


def test_the_search_study_defaults_to_a_longer_budget_than_the_search() -> None:
    from effnas.config import compose

    search = compose("search")
    study = compose("study", ["kind=search"])
    assert min(study.budgets) > float(search.proxy.epochs)
    assert list(compose("study", ["kind=scaling"]).budgets) == [4.0]  # the scaling study's, unchanged


# -- the stage ----------------------------------------------------------------------------------
def test_study_search_end_to_end_without_ray_and_resume_retrains_nothing_finished(
    search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "study"
    args = ["study", "search", "--from", str(search_run), "--random", "2", "--seeds", "2", *STUDY]
    assert main([*args, "ray.enabled=false", f"run.dir={run}"]) == 0
    rows = pd.read_csv(run / "study.csv")
    assert list(dict.fromkeys(rows["arch"])) == ["searched", "random1", "random2", "base"]
    assert set(rows["status"]) == {"ok"} and len(rows) == 8 and set(rows["budget"]) == {0.25}
    best = Arch.from_yaml((search_run / "best_arch.yaml").read_text())
    searched = Arch.from_yaml((run / "archs" / "searched.yaml").read_text())
    assert searched.blocks == best.blocks
    assert Arch.from_yaml((run / "archs" / "base.yaml").read_text()).blocks == efficientnet_b0().blocks
    randoms = rows[rows["role"] == "random"]
    assert ((randoms["macs"] / count(best).macs - 1).abs() <= 0.05).all()
    assert set(rows[rows["arch"] == "base"]["macs"]) == {count(efficientnet_b0()).macs}
    # the reward is the search's own: its T and w
    target = json.loads((search_run / "manifest.json").read_text())["target"]["value"]
    expected = rows["accuracy"] * (rows["macs"] / target) ** -0.07
    assert (rows["reward"] - expected).abs().max() < 1e-5
    summary = json.loads((run / "summary.json").read_text())
    entry = summary["budgets"]["0.25 epochs"]
    means = rows.groupby("arch")["accuracy"].mean()
    assert entry["searched_rank"]["accuracy"] == 1 + int((means > means["searched"]).sum())
    rewards = rows.groupby("arch")["reward"].mean()
    assert entry["searched_rank"]["reward"] == 1 + int((rewards > rewards["searched"] + 1e-9).sum())
    best_random = means[["random1", "random2"]].idxmax()
    assert entry["vs_best_random"]["id"] == best_random
    assert entry["vs_best_random"]["call"] in ("tie", "not estimable")  # 2 seeds: no win either way
    assert entry["vs_best_random"]["low"] is None and summary["evaluation"]["split"] == "test"
    assert summary["same_data_as_search"] is True and summary["budget_vs_search"]["0.25 epochs"] > 1
    assert summary["sampling"]["tolerance_reached"] <= 0.05 and (run / "accuracy_vs_macs.png").is_file()

    # effnas report lays it out: the ranking table, the searched one's ranks and margins, a figure
    report = tmp_path / "report"
    assert main(["report", str(run), str(search_run), f"run.dir={report}"]) == 0
    text = (report / "report.md").read_text()
    assert "## Search against random search" in text and "## Search" in text
    rank = entry["searched_rank"]
    assert f"ranks **{rank['accuracy']} of 4** in accuracy and **{rank['reward']} of 4** in reward" in text
    assert f"vs the best random (`{best_random}`): margin {entry['vs_best_random']['margin']:+.4f}" in text
    assert "seed spread not estimable" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "| searched " in line]
    assert len(table_rows) == 1 and f"{means['searched']:.4f}" in table_rows[0]
    assert (report / "search_study1_accuracy_vs_macs.png").stat().st_size > 1000
    assert (
        "search_study1_accuracy_vs_macs.png" in json.loads((report / "summary.json").read_text())["figures"]
    )

    # nothing left: a resume trains nothing and changes nothing
    capsys.readouterr()
    assert main(["study", "search", "--resume", str(run)]) == 0
    assert "[1/" not in capsys.readouterr().out
    assert pd.read_csv(run / "study.csv")["accuracy"].equals(rows["accuracy"])
    # an interruption: two trials not finished; --resume trains exactly those, same archs
    rows.loc[rows["arch"] == "random2", ["status", "accuracy", "reward"]] = ["pending", None, None]
    (run / "study.csv").write_text(rows.to_csv(index=False))
    assert main(["study", "search", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] random2/0.25ep/seed0" in out and "[2/2] random2/0.25ep/seed1" in out and "[3/" not in out
    again = pd.read_csv(run / "study.csv")
    assert set(again["status"]) == {"ok"} and list(again["name"]) == list(rows["name"])
    done = rows["status"] == "ok"
    assert again.loc[done, "accuracy"].equals(rows.loc[done, "accuracy"])


def test_study_search_on_a_real_local_ray_runtime(search_run: Path, tmp_path: Path) -> None:
    import ray

    run = tmp_path / "study"
    args = ["study", "search", "--from", str(search_run), "--random", "1", "--seeds", "1", *STUDY]
    assert main([*args, "ray.num_cpus=2", f"run.dir={run}"]) == 0
    assert not ray.is_initialized()
    rows = pd.read_csv(run / "study.csv")
    assert list(rows["arch"]) == ["searched", "random1", "base"] and set(rows["status"]) == {"ok"}
    assert (
        json.loads((run / "summary.json").read_text())["budgets"]["0.25 epochs"]["searched_rank"]["of"] == 3
    )


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture
def no_best(search_run: Path, tmp_path: Path) -> Path:
    """A search run whose trials all failed: no best_arch.yaml."""
    run = tmp_path / "failed_search"
    shutil.copytree(search_run, run)
    (run / "best_arch.yaml").unlink()
    return run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--random", "0"], "argument --random: must be >= 1, got 0"),
        (["random=0"], "--random must be >= 1"),
        (["--arch", "efficientnet_b0"], "give --from, not --arch"),
        (["tolerance=0"], "tolerance must be in (0, 1)"),
        (["eval_split=all"], "eval_split must be one of auto, test, val, got 'all'"),
        (["eval_split=test", "data.test_fraction=0"], "eval_split=test but dataset digits has no test split"),
    ],
)
def test_bad_numbers_are_one_line_exit_2(
    extra: list[str], message: str, search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["study", "search", "--from", str(search_run), *extra, f"run.root={tmp_path}"]
    assert message in expect_usage_error(args, capsys)
    assert not any(tmp_path.iterdir())


def test_bad_upstream_is_one_line_exit_2(
    search_run: Path, no_best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    study = ["study", "search", f"run.root={root}"]
    assert "needs --from RUN_DIR" in expect_usage_error(study, capsys)
    line = expect_usage_error([*study, "--from", str(tmp_path / "nowhere")], capsys)
    assert "not an effnas run directory; effnas study search needs a search run" in line
    assert main(["scale", "--phi", "1", f"run.dir={tmp_path / 'scale'}"]) == 0
    capsys.readouterr()
    line = expect_usage_error([*study, "--from", str(tmp_path / "scale")], capsys)
    assert "a scale run; effnas study search needs a search run" in line
    line = expect_usage_error([*study, "--from", str(no_best)], capsys)
    assert "the search has no best architecture yet" in line
    line = expect_usage_error([*study, "--from", str(search_run), "tolerance=0.0001", "max_draws=20"], capsys)
    assert "random architectures of the search's space land within" in line
    assert not root.exists()


def test_the_random_archs_come_from_the_space_the_search_recorded(search_run: Path, tmp_path: Path) -> None:
    """A search over a narrowed space (every stage MBConv6, kernel 5): so are its random rivals."""
    from omegaconf import OmegaConf

    from effnas.config import compose
    from nas.search_study import candidates, read_search_run

    run = tmp_path / "narrow"
    shutil.copytree(search_run, run)
    recorded = OmegaConf.load(run / ".hydra" / "config.yaml")
    recorded.space.ops, recorded.space.kernels = ["mbconv6"], [5]
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(recorded))
    search = read_search_run(str(run))
    assert search.space.lists["ops"] == ("mbconv6",) and search.space.lists["kernels"] == (5,)
    cfg = compose("study", ["kind=search", "random=3", "tolerance=0.1", f"upstream={run}"])
    found, _ = candidates(cfg, search)
    assert [c.label for c in found] == ["searched", "random1", "random2", "random3", "base"]
    for c in found[1:4]:
        assert {(s.op, s.expand, s.kernel) for s in c.arch.stages} == {("mbconv", 6, 5)}


def test_a_latency_search_whose_table_is_gone_is_one_line_exit_2(
    search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "latency_search"
    shutil.copytree(search_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(target={"value": 15.0, "unit": "ms"}, latency_table=str(tmp_path / "gone.json"))
    (run / "manifest.json").write_text(json.dumps(manifest))
    line = expect_usage_error(
        ["study", "search", "--from", str(run), f"run.root={tmp_path / 'runs'}"], capsys
    )
    assert "the search's reward needs its latency table" in line and "gone.json does not exist" in line


def test_an_interrupted_study_summarises_what_finished_and_resumes_from_elsewhere(
    search_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after one of three trials: a summary marked incomplete; the resume, from another
    directory than the relative --from was given in, trains the other two on the same archs."""
    from omegaconf import open_dict

    from effnas import studies
    from effnas.config import compose
    from effnas.rundir import RunDir
    from training.trials import run_trial

    monkeypatch.chdir(search_run.parent)
    overrides = [*TINY, "proxy.images=null", "budgets=[0.25]", "random=1", "seeds=1"]
    cfg = compose("study", ["kind=search", *overrides, f"upstream={search_run.name}"])
    rundir = RunDir.create(tmp_path, "study")
    rundir.start_manifest(cfg, ["effnas", "study", "search"])
    trained: list[str] = []

    def first(n: int | None):
        def execute(source, setup, scheduling) -> None:  # after n trials: "Ctrl-C"
            while n is None or len(trained) < n:
                config = source.propose(f"t{len(trained)}")
                if config is None:
                    return
                trained.append(config["name"])
                source.complete(f"t{len(trained) - 1}", run_trial(config, setup))

        return execute

    with pytest.raises(KeyboardInterrupt):
        studies.run(cfg, rundir, first(1))
    summary = json.loads((rundir.path / "summary.json").read_text())
    assert summary["complete"] is False and summary["pending"] == 2
    assert summary["budgets"]["0.25 epochs"]["archs"]["searched"]["n"] == 1
    assert (rundir.path / "accuracy_vs_macs.png").is_file()
    archs = {p.name: p.read_text() for p in (rundir.path / "archs").iterdir()}

    monkeypatch.chdir(tmp_path)  # the relative --from does not resolve here
    with open_dict(cfg):
        cfg.resume = str(rundir.path)
    studies.validate(cfg)
    assert studies.run(cfg, rundir, first(None))["complete"] is True
    assert trained == ["searched_0.25ep_seed0", "random1_0.25ep_seed0", "base_0.25ep_seed0"]
    assert {p.name: p.read_text() for p in (rundir.path / "archs").iterdir()} == archs
    assert set(pd.read_csv(rundir.path / "study.csv")["status"]) == {"ok"}
