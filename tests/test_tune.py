"""The shared Ray plumbing on a real local Ray runtime: one proxy trial end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from effnas.config import compose
from effnas.tune import absolute_paths, max_concurrent, run_trial
from search_spaces.official import efficientnet_b0


def _tiny_arch() -> dict:
    return efficientnet_b0().scaled(width=0.25, depth=0.25).to_dict()


def _cfg():
    return compose(
        "train", ["proxy.epochs=1", "proxy.batch_size=64", "proxy.resolution=16", "proxy.compile=off"]
    )


def test_run_trial_outside_ray_returns_a_plain_result() -> None:
    cfg = _cfg()
    data = absolute_paths(cfg.data)
    proxy = OmegaConf.to_container(cfg.proxy)
    reports: list[dict] = []
    result = run_trial({"arch": _tiny_arch()}, data, proxy, seed=0, device="cpu", report=reports.append)
    assert result["status"] == "ok" and 0.0 <= result["accuracy"] <= 1.0
    assert reports and "val_accuracy" in reports[-1]
    bad = run_trial({"arch": {"blocks": ["r1_k3_zz"]}}, data, proxy, seed=0, device="cpu")
    assert bad["status"] == "failed" and "zz" in bad["error"]


def test_absolute_paths_resolves_relative_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = absolute_paths({"name": "cifar10", "root": "data/c10", "cache_dir": None})
    assert plain["root"] == str(tmp_path / "data" / "c10") and plain["cache_dir"] is None


def test_max_concurrent_from_resources() -> None:
    ray_cfg = OmegaConf.create({"max_concurrent": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0})
    assert max_concurrent(ray_cfg, {"CPU": 2.0}) == 2
    ray_cfg.max_concurrent = 1
    assert max_concurrent(ray_cfg, {"CPU": 8.0}) == 1


def test_trainable_runs_as_a_ray_tune_trial(tmp_path: Path) -> None:
    from ray import tune

    from effnas.tune import make_trainable, ray_session, trial_resources

    cfg = _cfg()
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
    with ray_session(ray_cfg) as resources:
        assert resources["CPU"] == 2.0
        trainable = tune.with_resources(
            make_trainable(cfg.data, cfg.proxy, seed=0, device="cpu"), trial_resources(ray_cfg)
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"arch": tune.grid_search([_tiny_arch()])},
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="t", verbose=0),
        )
        results = tuner.fit()
    import ray

    assert not ray.is_initialized()
    assert len(results) == 1 and results.errors == []
    final = results[0].metrics
    assert final["status"] == "ok" and final["done"] is True and 0.0 <= final["accuracy"] <= 1.0


def test_unreachable_cluster_is_one_clear_error() -> None:
    from effnas.errors import UserError
    from effnas.tune import ray_session

    ray_cfg = OmegaConf.create({"address": "127.0.0.1:1", "num_cpus": 1, "object_store_mb": 100})
    with pytest.raises(UserError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"), ray_session(ray_cfg):
        pass
