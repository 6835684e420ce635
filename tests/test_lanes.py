"""Micro-batches side by side on CPU threads (training/lanes.py): the same gradients as running
them in turn, reproducible bits, BN statistics and randomness handled per lane, and the
trainer's switch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from conftest import make_arch
from omegaconf import OmegaConf

from search_spaces.arch import Arch
from training import lanes
from training.data import load_dataset
from training.proxy import ProxyTrainer, evaluate
from training.proxy_config import load_proxy

BLOCKS = ("r1_k3_s11_e1_i16_o16_se0.25", "r2_k3_s22_e3_i16_o24_se0.25", "r1_k5_s22_e3_i24_o40_se0.25")


def arch(**changes: object) -> Arch:
    return make_arch(BLOCKS, "lanes", head=96, **changes)


def cfg(**overrides: object):
    return load_proxy(
        "default", **{"batch_size": 32, "micro_batch": 16, "lr": 0.4, "compile": "off", **overrides}
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_dataset(OmegaConf.create({"name": "digits", "image_size": 16, "val_fraction": 0.15}))


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_plan() -> None:
    assert lanes.plan(2, 128, 64) == 2
    assert lanes.plan(1, 128, 64) == 1  # one thread: in turn, as before
    assert lanes.plan(4, 128, 64) == 2  # no more lanes than micro-batches
    assert lanes.plan(2, 128, 128) == 1  # whole batch
    assert lanes.plan(3, 100, 32) == 3  # 4 micro-batches (the last short) on 3 lanes


def trainer(digits, **overrides: object) -> ProxyTrainer:
    torch.manual_seed(0)
    plain = arch(dropout=0.0, drop_path=0.0)  # no random layers: the two paths can match exactly
    return ProxyTrainer(plain, cfg(**overrides), digits, resolution=16, seed=3)


def grads_after_one_step(t: ProxyTrainer) -> list[torch.Tensor]:
    # the step's update, undone by comparing gradients: zero lr leaves the weights alone
    t.base_lr = 0.0
    t.step(0)
    return [p.grad.clone() for p in t.model.parameters()]


def test_lanes_give_the_gradients_of_the_micro_batches_in_turn(digits) -> None:
    # no dropout / stochastic depth, two micro-batches of 16: the two paths then compute the very
    # same arithmetic (one intra-op thread per micro-batch either way) and add the two gradients
    # once, so the bits agree (with 4 micro-batches the sums would associate differently)
    with threads(2):
        side = trainer(digits, init="default")
        assert side.result.lanes == 2 and side.lanes is not None
        g_side = grads_after_one_step(side)
        assert torch.get_num_threads() == 2  # restored after the lanes ran on one thread each
    with threads(1):
        turn = trainer(digits, init="default", parallel_micro_batches=False)
        assert turn.result.lanes == 1 and turn.lanes is None
        g_turn = grads_after_one_step(turn)
    assert len(g_side) == len(g_turn) == len(list(side.model.parameters()))
    assert any(g.abs().sum() > 0 for g in g_turn[:-2])  # gradients reach the body, not only the head
    for a, b in zip(g_side, g_turn):
        assert torch.equal(a, b)


def test_bn_statistics_are_the_lanes_average(digits) -> None:
    with threads(2):
        t = trainer(digits, bn_momentum=0.5)
        conv, bn = t.model.stem[0], t.model.stem[1]  # the stem's BN sees the input directly
        replica_bn = t.lanes.models[1].stem[1]
        before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
        state = t.generator.get_state()
        grads_after_one_step(t)
        t.generator.set_state(state)  # step 0's batch again: its permutation and augmentation
        x, _ = t.batch_at(torch.randperm(len(t.train_y), generator=t.generator), 0)
    with torch.no_grad():
        outs = [conv(xs) for xs in x.split(16)]  # the two micro-batches, each alone
    means = [o.mean((0, 2, 3)) for o in outs]
    variances = [o.var((0, 2, 3), unbiased=True) for o in outs]
    # each lane: one momentum-0.5 update from the same start; the model keeps their average
    exp_mean = sum(0.5 * before_mean + 0.5 * m for m in means) / 2
    exp_var = sum(0.5 * before_var + 0.5 * v for v in variances) / 2
    assert torch.allclose(bn.running_mean, exp_mean, rtol=1e-4, atol=1e-5)
    assert torch.allclose(bn.running_var, exp_var, rtol=1e-4, atol=1e-5)
    assert bn.num_batches_tracked.item() == 2  # both lanes' updates are counted
    # the replica starts the next step from the model's statistics, with the same parameters
    t.lanes._share_buffers()
    assert torch.equal(replica_bn.running_mean, bn.running_mean)
    assert replica_bn.weight is bn.weight


# slow (31 s): lanes against training in turn stays in the default suite (the test above);
# this adds dropout and drop-path
@pytest.mark.slow
def test_lanes_train_reproducibly_with_dropout_and_drop_path(digits) -> None:
    a = arch(dropout=0.3, drop_path=0.3)
    proxy = cfg(epochs=2)
    with threads(2):
        rng = torch.get_rng_state()
        one = evaluate(a, proxy, digits, seed=7, resolution=16, keep_model=True)
        two = evaluate(a, proxy, digits, seed=7, resolution=16, keep_model=True)
        other_seed = evaluate(a, proxy, digits, seed=8, resolution=16)
        assert torch.equal(torch.get_rng_state(), rng)  # lanes draw from their own generators
    assert one.status == two.status == "ok" and one.lanes == 2
    strip = lambda r: [{k: v for k, v in m.items() if k != "images_per_second"} for m in r.history]  # noqa: E731
    assert strip(one) == strip(two)
    for p, q in zip(one.model.state_dict().values(), two.model.state_dict().values()):
        assert torch.equal(p, q)
    assert strip(one) != strip(other_seed)
    assert one.accuracy > 0.3  # it learns (chance 0.1)


def test_lanes_train_exactly_as_in_turn_without_random_layers(digits) -> None:
    # a whole run (steps, optimizer updates, BN statistics): the same bits as the micro-batches
    # in turn on one thread; the evaluations run on 2 and 1 threads, so they agree to rounding
    a = arch(dropout=0.0, drop_path=0.0)
    side = evaluate(a, cfg(epochs=2, report_every=0.5), digits, seed=4, resolution=16, threads=2)
    turn = evaluate(
        a,
        cfg(epochs=2, report_every=0.5, parallel_micro_batches=False),
        digits,
        seed=4,
        resolution=16,
        threads=1,
    )
    assert (side.lanes, turn.lanes) == (2, 1)
    assert len(side.history) == len(turn.history) == 4
    for a_, b_ in zip(side.history, turn.history):
        assert (a_["step"], a_["train_loss"], a_["lr"]) == (b_["step"], b_["train_loss"], b_["lr"])
        assert a_["val_loss"] == pytest.approx(b_["val_loss"], rel=1e-5)
        assert abs(a_["val_accuracy"] - b_["val_accuracy"]) <= 1 / 250


def test_lane_masks_come_from_the_lane_generator() -> None:
    drop = torch.nn.Dropout(0.5)
    path = lanes.blocks.DropPath(0.5)
    lanes._swap_random_layers(torch.nn.Sequential(drop, path))
    assert type(drop) is lanes.LaneDropout and type(path) is lanes.LaneDropPath
    x = torch.ones(8, 4, 2, 2)
    lanes._local.generator = torch.Generator().manual_seed(1)
    try:
        first = (drop(x), path(x))
        lanes._local.generator.manual_seed(1)
        again = (drop(x), path(x))
    finally:
        lanes._local.generator = None
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert set(first[0].unique().tolist()) == {0.0, 2.0}  # inverted dropout scaling
    per_sample = first[1].flatten(1)
    assert all(len(set(row.tolist())) == 1 for row in per_sample)  # one decision per sample
    drop.eval()
    assert torch.equal(drop(x), x)  # outside training: the stock module


def test_diverging_run_on_lanes_fails_cleanly(digits) -> None:
    with threads(2):
        r = evaluate(arch(), cfg(lr=1e12, init="default", epochs=1), digits, seed=0, resolution=16)
    assert r.status == "failed" and "step" in r.error
    assert r.lanes == 2


def test_switch_and_single_thread_keep_the_old_path(digits) -> None:
    with threads(2):
        assert trainer(digits, parallel_micro_batches=False).result.lanes == 1
        assert trainer(digits, micro_batch=0).result.lanes == 1
    with threads(1):
        assert trainer(digits).result.lanes == 1
