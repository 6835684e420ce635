"""The surrogate benchmark: fit, save, load, predict; a 300-trial search on it in seconds; bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import expect_usage_error, space_config

from nas.surrogate import Surrogate, SurrogateError, fit
from search_spaces.cost import count
from search_spaces.mnasnet import MnasNetSpace


def landscape(space: MnasNetSpace, choices: tuple[int, ...]) -> float:
    """A made-up accuracy: SE helps, big kernels help, more MACs help a little."""
    se = sum(c for d, c in zip(space.dims, choices) if d.field == "se")
    kernel = sum(c for d, c in zip(space.dims, choices) if d.field == "kernel")
    return 0.3 + 0.02 * se + 0.01 * kernel + 0.02 * np.log(count(space.decode(choices)).macs / 4e8)


def table(space: MnasNetSpace, n: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = [space.sample(rng) for _ in range(n)]
    return pd.DataFrame(
        {
            "choices": [" ".join(map(str, c)) for c in rows],
            "accuracy": [landscape(space, c) for c in rows],
            "space": space.fingerprint(),
        }
    )


@pytest.fixture(scope="module")
def space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


@pytest.fixture(scope="module")
def fitted_run(space: MnasNetSpace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`effnas surrogate fit` on a 60-row table, end to end through the CLI."""
    from effnas.cli import main

    root = tmp_path_factory.mktemp("surrogate")
    table(space, 60).to_csv(root / "table.csv", index=False)
    assert main(["surrogate", "fit", str(root / "table.csv"), "folds=3", f"run.dir={root / 'run'}"]) == 0
    return root / "run"


def test_round_trip_fit_save_load_predict(space: MnasNetSpace, tmp_path: Path) -> None:
    data = table(space, 60)
    choices = [tuple(int(c) for c in s.split()) for s in data["choices"]]
    surrogate, results = fit(space, choices, data["accuracy"].tolist(), model="auto", folds=3)
    assert {r.model for r in results} == {"gbr", "rf", "ridge", "knn"}
    assert surrogate.kind == max(results, key=lambda r: r.kendall).model
    assert surrogate.cv["kendall"] > 0.5  # the landscape is learnable from these features
    surrogate.save(tmp_path / "s.pkl")
    again = Surrogate.load(tmp_path / "s.pkl")
    held_out = [space.sample(random.Random(99)) for _ in range(5)]
    assert np.array_equal(surrogate.predict(space, held_out), again.predict(space, held_out))
    low, high = again.accuracy_range
    assert all(low <= p <= high for p in again.predict(space, held_out))


def test_fit_writes_its_files_and_a_search_of_300_trials_runs(fitted_run: Path, tmp_path: Path) -> None:
    from effnas.cli import main

    summary = json.loads((fitted_run / "summary.json").read_text())
    assert summary["rows"] == 60 and summary["model"] in ("gbr", "rf", "ridge", "knn")
    assert len(pd.read_csv(fitted_run / "cv.csv")) == 4
    assert (fitted_run / "predicted_vs_measured.png").stat().st_size > 0
    # the sampler is not under test here: random keeps 300 asks cheap (TPE's grow with the trials;
    # how fast a surrogate search runs is a benchmark's question, not a timed test's)
    args = [
        "search",
        "--trials",
        "300",
        "--sampler",
        "random",
        "evaluator=surrogate",
        f"evaluator.path={fitted_run}",
    ]
    assert main([*args, f"run.dir={tmp_path / 's'}"]) == 0
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    ok = trials[trials.status == "ok"]
    assert len(ok) == 300
    low, high = json.loads((fitted_run / "summary.json").read_text())["accuracy_range"]
    assert ok.accuracy.between(low, high).all()
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["evaluator"]["name"] == "surrogate" and manifest["dataset"] is None  # no data read
    # the same seed gives the same search; noise is seeded too
    assert main([*args, "evaluator.noise=0.01", f"run.dir={tmp_path / 'n1'}"]) == 0
    assert main([*args, "evaluator.noise=0.01", f"run.dir={tmp_path / 'n2'}"]) == 0
    a, b = (pd.read_csv(tmp_path / n / "trials.csv") for n in ("n1", "n2"))
    assert a.accuracy.equals(b.accuracy) and not a.accuracy.equals(trials.accuracy)
    assert a.arch.equals(trials.arch)  # the same seed: the same architectures, only the noise differs


def test_search_refuses_a_missing_corrupt_or_foreign_surrogate(
    fitted_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["search", "--trials", "3", "evaluator=surrogate", f"run.dir={tmp_path / 'never'}"]
    assert "not found" in expect_usage_error([*base, f"evaluator.path={tmp_path / 'none'}"], capsys)
    assert "needs evaluator.path" in expect_usage_error(base, capsys)
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04junk")
    assert "not a readable surrogate" in expect_usage_error(
        [*base, f"evaluator.path={tmp_path / 'bad.pkl'}"], capsys
    )
    err = expect_usage_error([*base, f"evaluator.path={fitted_run}", "space.ops=[ds,mbconv6]"], capsys)
    assert "another search space" in err
    assert "evaluator" in expect_usage_error(["search", "evaluator=unknown"], capsys)
    assert not (tmp_path / "never").exists()


def test_fit_refuses_bad_sources(
    space: MnasNetSpace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = ["surrogate", "fit", f"run.dir={tmp_path / 'never'}"]
    assert "no such file" in expect_usage_error([*run, str(tmp_path / "nothing.csv")], capsys)
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    assert "no column choices" in expect_usage_error([*run, str(tmp_path / "cols.csv")], capsys)
    other = MnasNetSpace.from_config(space_config(ops=["ds", "mbconv6"]))
    table(other, 30).to_csv(tmp_path / "other.csv", index=False)
    assert "another search space" in expect_usage_error([*run, str(tmp_path / "other.csv")], capsys)
    bad = table(space, 30)
    bad.loc[3, "choices"] = "1 2 3"
    bad.to_csv(tmp_path / "short.csv", index=False)
    assert "bad choices" in expect_usage_error([*run, str(tmp_path / "short.csv")], capsys)
    table(space, 30).to_csv(tmp_path / "ok.csv", index=False)
    assert "surrogate model" in expect_usage_error([*run, str(tmp_path / "ok.csv"), "model=svm"], capsys)
    assert "not a search run directory" in expect_usage_error([*run, str(tmp_path)], capsys)
    assert not (tmp_path / "never").exists()


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"format": "other"}))
    with pytest.raises(SurrogateError, match="not an effnas surrogate"):
        Surrogate.load(tmp_path / "x.pkl")
