"""The trial contract and the one Ray adapter on a real local Ray runtime: one proxy trial end to
end, in this process and as a Ray Tune trial driven through a `TrialSource`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from effnas.config import compose
from search_spaces.official import efficientnet_b0
from training.trials import Scheduling, TrialSetup, absolute_paths, inline_executor, run_trial


def _tiny_arch() -> dict:
    return efficientnet_b0().scaled(width=0.25, depth=0.25).to_dict()


def _setup() -> TrialSetup:
    cfg = compose(
        "train",
        [
            "proxy.epochs=1",
            "proxy.batch_size=64",
            "proxy.resolution=16",
            "proxy.compile=off",
            "run.device=cpu",
        ],
    )
    return TrialSetup.of(cfg)


class _Two:
    """A minimal TrialSource: two trials, one bad arch; records what came back."""

    name = "two"

    def __init__(self) -> None:
        self.todo = [("good", _tiny_arch()), ("bad", {"blocks": ["r1_k3_zz"]})]
        self.pending: dict[str, str] = {}
        self.done: dict[str, Any] = {}

    @property
    def remaining(self) -> int:
        return len(self.todo)

    def propose(self, trial_id: str) -> dict[str, Any] | None:
        if not self.todo:
            return None
        name, arch = self.todo.pop(0)
        self.pending[trial_id] = name
        return {"name": name, "arch": arch}

    def complete(self, trial_id: str, result: Any, error: Any = False) -> None:
        self.done[self.pending.pop(trial_id)] = (dict(result or {}), error)


def test_run_trial_outside_ray_returns_a_plain_result() -> None:
    setup = _setup()
    reports: list[dict] = []
    result = run_trial({"arch": _tiny_arch()}, setup, report=reports.append)
    assert result["status"] == "ok" and 0.0 <= result["accuracy"] <= 1.0
    assert reports and "val_accuracy" in reports[-1]
    bad = run_trial({"arch": {"blocks": ["r1_k3_zz"]}}, setup)
    assert bad["status"] == "failed" and "zz" in bad["error"]


def test_inline_executor_drives_a_source_and_adds_the_metrics() -> None:
    setup = TrialSetup(
        **{**_setup().__dict__, "metrics": lambda config, m: {"twice": 2 * (m["accuracy"] or 0)}}
    )
    source = _Two()
    inline_executor(source, setup, Scheduling())
    good, _ = source.done["good"]
    assert good["status"] == "ok" and good["twice"] == pytest.approx(2 * good["accuracy"])
    assert source.done["bad"][0]["status"] == "failed" and source.remaining == 0


def test_absolute_paths_resolves_relative_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = absolute_paths({"name": "cifar10", "root": "data/c10", "cache_dir": None})
    assert plain["root"] == str(tmp_path / "data" / "c10") and plain["cache_dir"] is None


def test_max_concurrent_from_resources() -> None:
    from adapters.raytune import max_concurrent

    ray_cfg = OmegaConf.create({"max_concurrent": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0})
    assert max_concurrent(ray_cfg, {"CPU": 2.0}) == 2
    ray_cfg.max_concurrent = 1
    assert max_concurrent(ray_cfg, {"CPU": 8.0}) == 1


def test_a_source_runs_as_ray_tune_trials(tmp_path: Path) -> None:
    import ray

    from adapters import raytune

    ray_cfg = OmegaConf.create(
        {
            "address": None,
            "num_cpus": 2,
            "object_store_mb": 128,
            "cpus_per_trial": 1.0,
            "gpus_per_trial": 0.0,
            "max_concurrent": 0,
        }
    )
    source = _Two()
    raytune.run(source, _setup(), Scheduling(), ray_cfg, tmp_path / "ray")
    assert not ray.is_initialized()  # the local runtime it started is shut down
    good, error = source.done["good"]
    assert error is False and good["status"] == "ok" and good["done"] is True
    assert 0.0 <= good["accuracy"] <= 1.0
    assert source.done["bad"][0]["status"] == "failed" and (tmp_path / "ray" / "two0").is_dir()


def test_unreachable_cluster_is_one_clear_error() -> None:
    from adapters.raytune import ray_session
    from foundation.errors import UserError

    ray_cfg = OmegaConf.create({"address": "127.0.0.1:1", "num_cpus": 1, "object_store_mb": 100})
    with pytest.raises(UserError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"), ray_session(ray_cfg):
        pass
