"""Zero-cost proxies (naswot, synflow) and the search's pre-ranking option."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import expect_usage_error, space_config

from nas.driver import Search
from nas.reward import RewardFn
from nas.samplers import make_sampler
from search_spaces.builder import build_model
from search_spaces.mnasnet import MnasNetSpace
from search_spaces.official import official
from training.trials import run_inline
from training.zero_cost import naswot, score, synflow


@pytest.fixture(scope="module")
def space() -> MnasNetSpace:
    return MnasNetSpace.from_config(space_config())


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_scores_are_finite_and_reproducible_for_a_seed() -> None:
    arch = official("efficientnet_b0")
    for proxy in ("naswot", "synflow"):
        a = score(arch, proxy, images(), num_classes=10, stem_stride=1, seed=0)
        b = score(arch, proxy, images(), num_classes=10, stem_stride=1, seed=0)
        assert math.isfinite(a) and a == b


def test_naswot_sees_identical_images_as_inseparable() -> None:
    model = build_model(official("efficientnet_b0"), num_classes=10, stem_stride=1)
    distinct = naswot(model, images())
    same = naswot(model, images(1).repeat(8, 1, 1, 1))  # K is all-equal: rank 1, det ~ 0
    assert math.isfinite(distinct) and (same == float("-inf") or same < distinct - 20)


def test_synflow_needs_no_data_and_grows_with_the_network() -> None:
    torch.manual_seed(0)
    small = synflow(
        build_model(official("efficientnet_b0").scaled(width=0.5), num_classes=10), (1, 3, 16, 16)
    )
    torch.manual_seed(0)
    big = synflow(build_model(official("efficientnet_b0").scaled(width=2.0), num_classes=10), (1, 3, 16, 16))
    assert big > small  # more (positive) paths from input to output


def test_preranked_search_trains_the_best_scored_of_k_proposals(space: MnasNetSpace) -> None:
    def by_sum(rows: list[tuple[int, ...]]) -> list[float]:
        return [float(sum(r)) for r in rows]

    search = Search(
        space,
        make_sampler("random", space, 7),
        RewardFn(400e6, -0.07, -0.07),
        trials=4,
        reject_above=None,
        out=io.StringIO(),
        prerank=by_sum,
        prerank_candidates=5,
    )
    run_inline(search, lambda config: {"status": "ok", "accuracy": 0.5, "seconds": 0.0})
    twin = make_sampler("random", space, 7)  # the same stream: the candidates the search saw
    for row in search.rows:
        candidates = [twin.ask().choices for _ in range(5)]
        chosen = tuple(int(c) for c in row["choices"].split())
        assert chosen == max(candidates, key=sum)
        assert row["zero_cost"] == float(sum(chosen))


def test_prerank_through_the_cli_records_scores(tmp_path: Path) -> None:
    from effnas.cli import main

    args = ["search", "--trials", "2", "--sampler", "random", "prerank=synflow", "prerank_candidates=3"]
    args += ["ray.enabled=false"]
    tiny = ["proxy.images=64", "proxy.batch_size=16", "proxy.resolution=8", "data.max_train=200"]
    assert main([*args, *tiny, "run.threads=1", f"run.dir={tmp_path / 'r'}"]) == 0
    trials = pd.read_csv(tmp_path / "r" / "trials.csv")
    assert trials.zero_cost.notna().all() and len(trials[trials.status == "ok"]) == 2


def test_bad_prerank_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["search", f"run.dir={tmp_path / 'never'}"]
    assert "unknown prerank proxy" in expect_usage_error([*base, "prerank=snip"], capsys)
    assert "needs sampler=random" in expect_usage_error([*base, "prerank=naswot", "--sampler", "tpe"], capsys)
    assert "prerank_candidates" in expect_usage_error(
        [*base, "prerank=naswot", "prerank_candidates=0", "--sampler", "random"], capsys
    )
    assert not (tmp_path / "never").exists()
