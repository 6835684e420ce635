"""`effnas grid`: the plan, the trial record, the winner on the mean over seeds, the verdict,
resume, bad input, and a real Ray run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import expect_usage_error as _error

from effnas.cli import main
from effnas.rundir import RunDir
from foundation import per_image
from foundation.verdict import Scores, compare
from scaling.compound import Candidate, enumerate_candidates
from scaling.grid import (
    COLUMNS,
    GridTrials,
    compare_points,
    pick_winner,
    plan,
    point_scores,
    point_stats,
    record_key,
    verdict_line,
    verdicts,
)
from search_spaces.arch import Arch
from search_spaces.cost import count
from search_spaces.official import efficientnet_b0

TINY = ["proxy.images=32", "proxy.batch_size=16", "proxy.resolution=8", "proxy.compile=off"]


def test_plan_scales_the_baseline_by_eq3() -> None:
    b0 = efficientnet_b0()
    cands = enumerate_candidates(0.05, 2.0, 1.5, 1.5, 2.0, 0.1)
    rows = plan(b0, cands, phi=1.0, proxy_resolution=32, target=2.0, include_baseline=True)
    assert len(rows) == len(cands) + 1
    base, *points = rows
    assert (base["id"], base["kind"], base["macs_ratio"], base["resolution"]) == (
        "baseline",
        "baseline",
        1.0,
        32,
    )
    assert all(abs(r["product"] - 2.0) <= 0.1 + 1e-9 for r in points)
    paper = next(r for r in points if r["id"] == "a1.2_b1.1_g1.15")
    assert (paper["depth"], paper["width"], paper["resolution"], paper["deploy_resolution"]) == (
        1.2,
        1.1,
        37,
        256,
    )
    assert paper["macs"] == count(Arch.from_dict(paper["_arch"])).macs
    assert paper["macs_ratio"] == pytest.approx(paper["macs"] / count(b0).macs, abs=1e-4)
    assert paper["nominal_ratio"] == 2.0
    assert all(r["status"] == "pending" for r in rows)
    # phi scales the exponents: at phi = 2 the same point is depth 1.44, width 1.21
    two = plan(b0, [Candidate(1.2, 1.1, 1.15)], phi=2.0, proxy_resolution=32, include_baseline=False)
    assert (two[0]["depth"], two[0]["width"], two[0]["resolution"], two[0]["nominal_ratio"]) == (
        1.44,
        1.21,
        42,
        4.0,
    )
    # one row per (point, seed), seeds inner; the point's columns are the same for every seed
    seeded = plan(b0, [Candidate(1.2, 1.1, 1.15)], phi=1.0, proxy_resolution=32, seeds=(7, 8))
    assert [(r["id"], r["seed"]) for r in seeded] == [
        ("baseline", 7),
        ("baseline", 8),
        ("a1.2_b1.1_g1.15", 7),
        ("a1.2_b1.1_g1.15", 8),
    ]
    assert seeded[2]["macs"] == seeded[3]["macs"] == paper["macs"]


def test_grid_trials_propose_in_plan_order_and_record_every_end(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path, "grid")
    rows = plan(efficientnet_b0(), [Candidate(1.2, 1.1, 1.15), Candidate(2.0, 1.0, 1.0)], 1.0, 16)
    out = io.StringIO()
    trials = GridTrials(rows, rundir, out=out)
    trials.save()
    assert set(pd.read_csv(tmp_path / "trials.csv")["status"]) == {"pending"}
    configs = [trials.propose(f"t{i}") for i in range(4)]
    assert [c["id"] for c in configs[:3]] == ["baseline", "a1.2_b1.1_g1.15", "a2_b1_g1"]
    assert configs[3] is None and trials.remaining == 0
    assert configs[2]["resolution"] == rows[2]["resolution"] and configs[2]["arch"]["depth"] == 2.0
    assert {c["seed"] for c in configs[:3]} == {0} and configs[0]["name"] == "baseline"
    trials.complete("t2", {"status": "ok", "accuracy": 0.5, "loss": 1.2, "seconds": 3.21, "epochs": 2.0})
    trials.complete("t0", {"status": "failed", "accuracy": None, "error": "diverged at step 3"})
    trials.complete("t1", {}, error="RuntimeError: worker died")
    trials.complete("t1", {"status": "ok", "accuracy": 0.9})  # a second report of an ended trial: ignored
    frame = pd.read_csv(tmp_path / "trials.csv").set_index("id")
    assert list(frame.reset_index().columns) == list(COLUMNS)
    assert frame.loc["a2_b1_g1", "status"] == "ok" and frame.loc["a2_b1_g1", "accuracy"] == 0.5
    assert frame.loc["baseline", "status"] == "failed" and "diverged" in frame.loc["baseline", "error"]
    assert frame.loc["a1.2_b1.1_g1.15", "error"] == "RuntimeError: worker died"
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[1/3] a2_b1_g1") and "acc 0.5000" in lines[0]
    assert "FAILED" in lines[2]


def test_grid_without_ray_records_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Ray-free path (`ray.enabled=false`): the same stage, trials in this process."""
    run = tmp_path / "grid"
    # one thread: two (lanes, the default on 2 cores) took 187 s beside a training run, 14 s quiet
    tiny = [*TINY, "max_candidates=1", "ray.enabled=false", "run.threads=1", f"run.dir={run}"]
    assert main(["grid", "--phi", "1", *tiny]) == 0
    captured = capsys.readouterr()
    assert "Ray" not in captured.err
    trials = pd.read_csv(run / "trials.csv")
    assert list(trials["id"]) == ["baseline", "a1.2_b1.1_g1.15"] and set(trials["status"]) == {"ok"}
    assert not (run / "ray").exists()
    trials.loc[trials["id"] == "baseline", ["status", "accuracy"]] = ["pending", None]
    # a trials.csv from before the seed column: every row is the run's seed
    (run / "trials.csv").write_text(trials.drop(columns="seed").to_csv(index=False))
    assert main(["grid", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "resuming: 1 done" in out and "[1/1] baseline" in out and "] a1.2" not in out
    assert len(json.loads((run / "manifest.json").read_text())["upstream"]) == 1  # not recorded twice


def test_winner_is_the_best_candidate_never_the_reference_row() -> None:
    rows = [
        {"id": "baseline", "kind": "baseline", "status": "ok", "accuracy": 0.99, "macs": 1},
        {"id": "x", "kind": "candidate", "status": "ok", "accuracy": 0.8, "macs": 300},
        {"id": "y", "kind": "candidate", "status": "ok", "accuracy": 0.8, "macs": 200},
        {"id": "z", "kind": "candidate", "status": "failed", "accuracy": None, "macs": 100},
    ]
    assert pick_winner(rows)["id"] == "y"  # tie on accuracy -> fewer MACs
    assert pick_winner(rows[:1] + rows[3:]) is None


def _trial(pid: str, seed: int, acc: float | None, macs: int = 100, kind: str = "candidate") -> dict:
    status = "failed" if acc is None else "ok"
    return {"id": pid, "seed": seed, "kind": kind, "status": status, "accuracy": acc, "macs": macs}


def test_winner_is_the_best_mean_of_candidates_with_every_seed() -> None:
    rows = [
        *(_trial("baseline", s, 1.0, macs=1, kind="baseline") for s in (0, 1)),
        _trial("c", 0, 1.0),  # the best single run, but its second seed failed
        _trial("c", 1, None),
        *(_trial("a", s, acc, macs=300) for s, acc in ((0, 0.5), (1, 1.0))),  # mean 0.75
        *(_trial("b", s, 0.75, macs=200) for s in (0, 1)),  # mean 0.75, fewer MACs
        *(_trial("d", s, 0.75, macs=200) for s in (0, 1)),  # same as b, later in the grid
        *(_trial("e", s, acc) for s, acc in ((0, 0.625), (1, 0.75))),
    ]
    winner = pick_winner(rows)
    assert (winner["id"], winner["mean"], winner["std"], winner["n"]) == ("b", 0.75, 0.0, 2)
    points = {p["id"]: p for p in point_stats(rows)}
    assert (points["c"]["n"], points["c"]["complete"]) == (1, False)
    assert points["a"]["std"] == pytest.approx(0.5 / 2**0.5)  # sample std (ddof=1)
    assert pick_winner([r for r in rows if r["id"] in ("baseline", "c")]) is None
    # the runner-up is ranked by the same rule; c (a failed seed) is never compared as one
    scores = {
        pid: Scores(tuple(r["accuracy"] for r in rows if r["id"] == pid and r["status"] == "ok"), 64)
        for pid in points
    }
    assert verdicts(list(points.values()), winner, scores)["runner_up"]["id"] == "d"


def test_the_winners_margins_carry_the_interval_of_effnas_verdict(tmp_path: Path) -> None:
    """compare_points is foundation.verdict.compare on the points' per-image records, plus the other
    point's mean, std and seeds; under 3 seeds it prints no spread and names no winner."""
    rng = np.random.default_rng(0)
    hits = {pid: rng.random((3, 400)) < p for pid, p in (("w", 0.9), ("x", 0.6), ("y", 0.89))}
    rows = []
    for pid, bits in hits.items():
        for seed in range(3):
            row = {
                "id": pid,
                "seed": seed,
                "kind": "candidate",
                "status": "ok",
                "accuracy": bits[seed].mean(),
                "macs": 1,
            }
            per_image.save(tmp_path, record_key(row), per_image.encode(bits[seed]))
            rows.append(row)
    scores = point_scores(rows, tmp_path, 400)
    assert all(s.correct is not None for s in scores.values())
    points = {p["id"]: p for p in point_stats(rows)}
    far, near = (
        compare_points(points["w"], points["x"], scores),
        compare_points(points["w"], points["y"], scores),
    )
    assert far == {
        "id": "x",
        "mean": pytest.approx(points["x"]["mean"]),
        "std": pytest.approx(points["x"]["std"]),
        "n": 3,
        **compare(Scores.of(hits["w"]), Scores.of(hits["x"])),
    }
    assert (
        far["call"] == "wins" and far["low"] > 0 and near["call"] == "tie" and near["low"] < 0 < near["high"]
    )
    assert "-> wins" in verdict_line("runner_up", far, "w") and "[" in verdict_line("runner_up", far, "w")
    # two seeds: the same margin, no interval, no win
    two = [r for r in rows if r["seed"] < 2]
    v = compare_points(points["w"], points["x"], point_scores(two, tmp_path, 400))
    assert (
        v["low"] is None
        and v["call"] == "not estimable"
        and "not estimable" in verdict_line("baseline", v, "w")
    )


# slow (44 s): seeds end to end; the verdict against the seed spread is checked by the test above
@pytest.mark.slow
def test_grid_with_seeds_records_each_seed_and_resumes_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "grid"
    tiny = [*TINY, "seeds=2", "run.seed=5", "max_candidates=1", "ray.enabled=false", f"run.dir={run}"]
    assert main(["grid", "--phi", "1", *tiny]) == 0
    out = capsys.readouterr().out
    trials = pd.read_csv(run / "trials.csv")
    assert list(zip(trials["id"], trials["seed"])) == [
        ("baseline", 5),
        ("baseline", 6),
        ("a1.2_b1.1_g1.15", 5),
        ("a1.2_b1.1_g1.15", 6),
    ]
    assert set(trials["status"]) == {"ok"}
    coeffs = yaml.safe_load((run / "coefficients.yaml").read_text())
    paper = trials[trials["id"] == "a1.2_b1.1_g1.15"]["accuracy"]
    assert coeffs["id"] == "a1.2_b1.1_g1.15" and coeffs["seeds"] == [5, 6]
    assert coeffs["accuracy"] == pytest.approx(paper.mean())
    assert coeffs["accuracy_std"] == pytest.approx(paper.std(ddof=1), abs=1e-9)
    base = coeffs["verdict"]["baseline"]
    base_acc = trials[trials["id"] == "baseline"]["accuracy"]
    assert base["n"] == 2 and base["mean"] == pytest.approx(base_acc.mean(), abs=1e-6)
    assert base["margin"] == pytest.approx(paper.mean() - base_acc.mean(), abs=1e-6)
    assert base["call"] in ("tie", "not estimable") and base["low"] is None  # 2 seeds: no spread
    assert coeffs["verdict"]["paper"] is None and coeffs["verdict"]["runner_up"] is None  # winner, alone
    assert json.loads((run / "summary.json").read_text())["verdict"] == coeffs["verdict"]
    assert (
        "vs unscaled baseline" in out
        and f"-> {base['call']}" in out
        and "paper's point: it is the winner" in out
    )
    assert out.count("] baseline seed") == 2 and out.count("] a1.2_b1.1_g1.15 seed") == 2

    # --resume trains only the (id, seed) whose result is gone
    trials.loc[(trials["id"] == "baseline") & (trials["seed"] == 6), ["status", "accuracy"]] = [
        "pending",
        None,
    ]
    (run / "trials.csv").write_text(trials.to_csv(index=False))
    assert main(["grid", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert (
        "resuming: 3 done" in out
        and "[1/1] baseline seed 6" in out
        and sum(line.startswith("[") for line in out.splitlines()) == 1
    )
    again = pd.read_csv(run / "trials.csv")
    assert set(again["status"]) == {"ok"} and len(again) == 4
    kept = again["seed"].eq(5) | again["id"].ne("baseline")
    assert again[kept]["accuracy"].tolist() == trials[kept]["accuracy"].tolist()


@pytest.mark.parametrize(
    "args, words",
    [
        (["tol=0.0001", "max_alpha=1.9"], "no (alpha, beta, gamma)"),
        (["max_alpha=1.0", "max_beta=1.0", "max_gamma=1.0"], "widen tol"),
        (["--phi", "0"], "--phi must be > 0"),
        (["--phi", "x"], "phi"),
        (["step=0"], "step must be > 0"),
        (["seeds=0"], "seeds must be >= 1"),
        (["--from", "/nonexistent/search/run"], "no such directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error(["grid", *args, f"run.root={tmp_path}"], capsys)
    assert words in line
    assert not (tmp_path / "grid").exists()


def test_from_must_be_a_finished_search_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "--phi", "1", f"run.dir={tmp_path / 'scale'}"]) == 0
    capsys.readouterr()
    line = _error(["grid", "--from", str(tmp_path / "scale"), f"run.root={tmp_path}"], capsys)
    assert "a scale run, expected a search run" in line
    search = tmp_path / "search"
    search.mkdir()
    (search / "manifest.json").write_text(json.dumps({"stage": "search"}))
    line = _error(["grid", "--from", str(search), f"run.root={tmp_path}"], capsys)
    assert "no best_arch.yaml" in line
    (search / "best_arch.yaml").write_text(efficientnet_b0().to_yaml())
    line = _error(["grid", "--from", str(search), "--arch", "efficientnet_b1"], capsys)
    assert "not both" in line


def test_grid_on_ray_records_and_feeds_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real local Ray runtime (2 CPUs, shut down after) on a tiny proxy budget."""
    import ray

    run = tmp_path / "grid"
    tiny = [*TINY, "max_candidates=2", "ray.num_cpus=2", f"run.dir={run}"]
    assert main(["grid", "--phi", "1", *tiny]) == 0
    assert not ray.is_initialized()
    out = capsys.readouterr().out
    trials = pd.read_csv(run / "trials.csv")
    assert list(trials["id"]) == ["baseline", "a1.2_b1.1_g1.15", "a2_b1_g1"]  # the paper point is kept
    assert set(trials["status"]) == {"ok"}
    assert ((trials[trials["kind"] == "candidate"]["product"] - 2).abs() <= 0.1).all()
    assert trials["accuracy"].between(0, 1).all()
    assert out.count("] a") + out.count("] baseline") == 3  # one progress line per trial
    coeffs = yaml.safe_load((run / "coefficients.yaml").read_text())
    winner = trials[trials["id"] == coeffs["id"]].iloc[0]
    assert (coeffs["alpha"], coeffs["beta"], coeffs["gamma"]) == (
        winner["alpha"],
        winner["beta"],
        winner["gamma"],
    )
    assert coeffs["accuracy"] == winner["accuracy"] == trials[trials["kind"] == "candidate"]["accuracy"].max()
    assert Arch.from_dict(coeffs["baseline"]) == efficientnet_b0()
    assert coeffs["proxy"]["images"] == 32
    summary = json.loads((run / "summary.json").read_text())
    assert summary["constraint_holds"] and summary["ok"] == 3 and summary["grid_points"] == 109
    assert (run / "accuracy_vs_macs.png").is_file() and (run / "accuracy_vs_coefficients.png").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["upstream"][0]["stage"] == "official" and manifest["dataset"]["name"] == "digits"

    # --resume under Ray: tests/test_faults.py's kill -9 on the Ray executor (the resume starts
    # Ray anew and trains exactly what had not finished); without Ray: the test above

    # scale reads the winner and the baseline from the grid run alone
    assert main(["scale", "--from", str(run), "--phi", "1", f"run.dir={tmp_path / 'scale'}"]) == 0
    b1 = Arch.from_yaml((tmp_path / "scale" / "b1.yaml").read_text())
    assert b1.depth == pytest.approx(coeffs["alpha"]) and b1.width == pytest.approx(coeffs["beta"])
    manifest = json.loads((tmp_path / "scale" / "manifest.json").read_text())
    assert str(run.resolve()) in {u["path"] for u in manifest["upstream"]}
