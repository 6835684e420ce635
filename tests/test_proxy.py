"""The proxy trainer on real data (scikit-learn digits) with a tiny network: learning, budgets,
optimizers and schedules, the NaN path, the report callback, determinism under the seed."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import make_arch
from omegaconf import OmegaConf

from foundation.errors import UserError
from search_spaces.arch import Arch
from search_spaces.cost import count
from training.data import load_dataset
from training.proxy import TrialResult, compile_pays_off, evaluate, make_optimizer
from training.proxy_config import budget, eval_batch, load_proxy

# three stages (conftest.TINY_BLOCKS has two): the tiny proxy network these tests train
PROXY_BLOCKS = ("r1_k3_s11_e1_i16_o16_se0.25", "r1_k3_s22_e3_i16_o24_se0.25", "r1_k5_s22_e3_i24_o40_se0.25")


def tiny_arch(**changes: object) -> Arch:
    return make_arch(PROXY_BLOCKS, "tiny", head=96, **changes)


def proxy_cfg(**overrides: object):
    return load_proxy("default", **{"batch_size": 32, "lr": 0.4, "epochs": 1, "compile": "off", **overrides})


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_dataset(OmegaConf.create({"name": "digits", "image_size": 32, "val_fraction": 0.15}))


def metrics_of(result: TrialResult) -> list[dict]:
    """History without the timing fields (those legitimately differ between runs)."""
    return [{k: v for k, v in m.items() if k != "images_per_second"} for m in result.history]


def test_short_run_learns_digits(digits) -> None:
    arch = tiny_arch()
    seen: list[dict] = []
    r = evaluate(arch, proxy_cfg(epochs=4), digits, seed=0, report=seen.append, test=True)
    assert r.status == "ok", r.error
    assert r.accuracy > 0.5, r.history  # chance is 0.1
    assert r.test_accuracy > 0.5
    assert math.isfinite(r.loss) and r.loss < 2.0
    # the paper's unit: deployment resolution (224), 1000 classes, stem stride 2
    assert (r.macs, r.params) == (count(arch).macs, count(arch).params)
    assert r.proxy_macs == count(arch, resolution=32, num_classes=10, stem_stride=1).macs
    assert r.epochs == pytest.approx(4.0) and r.steps == 4 * (len(digits.train) // 32)
    assert [m["epoch"] for m in seen] == [1.0, 2.0, 3.0, 4.0]
    assert {"epoch", "val_accuracy", "val_loss", "train_loss"} <= set(seen[-1])
    assert seen[-1]["val_accuracy"] == r.accuracy
    assert r.images_per_second > 0 and r.seconds > 0
    d = r.to_dict()
    assert d["status"] == "ok" and "model" not in d and d["history"] == r.history


def test_same_seed_same_metrics_other_seed_differs(digits) -> None:
    cfg = proxy_cfg(images=320, report_every=0.25)
    a = evaluate(tiny_arch(), cfg, digits, seed=3)
    b = evaluate(tiny_arch(), cfg, digits, seed=3)
    c = evaluate(tiny_arch(), cfg, digits, seed=4)
    assert metrics_of(a) == metrics_of(b)
    assert (a.accuracy, a.loss) == (b.accuracy, b.loss)
    assert metrics_of(a) != metrics_of(c)


def test_global_rng_left_alone(digits) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate(tiny_arch(), proxy_cfg(images=32), digits, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_divergence_is_a_failed_result_not_an_exception(digits) -> None:
    r = evaluate(tiny_arch(), proxy_cfg(lr=1e6, epochs=2), digits)
    assert r.status == "failed"
    assert r.accuracy is None and r.loss is None
    assert "became" in r.error and "step" in r.error, r.error
    assert r.macs == count(tiny_arch()).macs  # costs are still known


def test_report_exception_propagates(digits) -> None:
    class Stop(Exception):
        pass

    calls: list[float] = []

    def report(m: dict) -> None:
        calls.append(m["epoch"])
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        evaluate(tiny_arch(), proxy_cfg(epochs=3, report_every=0.5), digits, report=report)
    assert calls == [0.5, 1.0]


def test_images_budget_wins_over_epochs(digits) -> None:
    r = evaluate(tiny_arch(), proxy_cfg(epochs=10, images=200, report_every=0), digits)
    per_epoch = len(digits.train) // 32
    assert r.steps == math.ceil(200 / 32)
    assert r.epochs == pytest.approx(r.steps / per_epoch)
    assert len(r.history) == 1  # report_every=0: only the final evaluation


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "sgd", "schedule": "cosine", "warmup_epochs": 0.25},
        {"optimizer": "rmsprop", "schedule": "exponential", "lr": 0.016, "warmup_epochs": 0.25},
        {
            "optimizer": "sgd",
            "schedule": "constant",
            "warmup_epochs": 0,
            "momentum": 0.0,
            "label_smoothing": 0.0,
        },
    ],
)
def test_optimizers_and_schedules_run(digits, overrides: dict) -> None:
    r = evaluate(tiny_arch(), proxy_cfg(epochs=1, report_every=0.25, **overrides), digits)
    assert r.status == "ok", r.error
    lrs = [m["lr"] for m in r.history]
    base = overrides["lr"] * 32 / 256 if "lr" in overrides else 0.4 * 32 / 256
    if overrides["schedule"] == "constant":
        assert lrs == [base] * len(lrs)
    else:  # warmup then decay: the last lr is below the peak
        assert max(lrs) <= base + 1e-12 and lrs[-1] < max(lrs)


def test_exponential_schedule_has_the_papers_number_of_decays(digits) -> None:
    # 0.97 every 2.4 of 350 epochs: about 145 decays over any budget, so the last lr is
    # about 0.97^145 of the first (paper §5.2, scaled to the proxy budget).
    cfg = proxy_cfg(schedule="exponential", batch_size=4, images=4 * 300, report_every=0, lr=0.1)
    r = evaluate(tiny_arch(), cfg, digits)
    assert r.steps == 300
    assert r.history[-1]["lr"] / (0.1 * 4 / 256) == pytest.approx(0.97**145, rel=0.1)


def test_rmsprop_is_tensorflows_form() -> None:
    # TF: ms = 0.9 ms + 0.1 g^2 (ms starts at 1); mom = 0.9 mom + lr g / sqrt(ms + eps); w -= mom
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    opt = make_optimizer(model, proxy_cfg(optimizer="rmsprop", momentum=0.9, weight_decay=0.0), lr=0.1)
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    ms, mom = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for g in ([0.5, -3.0], [1.0, 2.0]):
        grad = torch.tensor(g, dtype=torch.float64)
        model.weight.grad = grad.float().view(1, 2)
        opt.step()
        ms = 0.9 * ms + 0.1 * grad**2
        mom = 0.9 * mom + 0.1 * grad / torch.sqrt(ms + 1e-3)
        w = w - mom
    assert torch.allclose(model.weight.detach().double().view(2), w, atol=1e-6)


@pytest.mark.parametrize("init", ["zero_head", "zero_residual", "default"])
def test_proxy_init(init: str) -> None:
    from search_spaces.builder import build_model
    from training.proxy import proxy_init

    model = build_model(tiny_arch(), num_classes=10, stem_stride=1)
    proxy_init(model, init)
    head_zero = bool((model.classifier.weight == 0).all())
    residual = [b for b in model.blocks if b.use_residual]
    assert residual  # the tiny arch has one residual block (stage 1: 16 -> 16, stride 1)
    last_bn = [[m for m in b.body.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1] for b in residual]
    assert head_zero == (init != "default")
    assert all(bool((bn.weight == 0).all()) for bn in last_bn) == (init == "zero_residual")


def test_weight_decay_skips_norm_and_bias() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = make_optimizer(model, proxy_cfg(optimizer="sgd", weight_decay=1e-4), lr=0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_resolution_override_is_what_is_trained(digits) -> None:
    arch = tiny_arch()
    r = evaluate(arch, proxy_cfg(images=64), digits, resolution=16)
    assert r.status == "ok" and r.resolution == 16
    assert r.proxy_macs == count(arch, resolution=16, num_classes=10, stem_stride=1).macs
    assert r.macs == count(arch).macs


def test_bad_names_are_refused(digits) -> None:
    with pytest.raises(UserError, match=r"proxy\.optimizer must be one of sgd, rmsprop, got 'adam'"):
        proxy_cfg(optimizer="adam")
    with pytest.raises(UserError, match="schedule"):
        evaluate(tiny_arch(), {**dataclasses.asdict(proxy_cfg()), "schedule": "step"}, digits)
    with pytest.raises(UserError, match="proxy config lacks lr"):
        evaluate(tiny_arch(), {k: v for k, v in dataclasses.asdict(proxy_cfg()).items() if k != "lr"}, digits)


def test_budget_arithmetic_is_the_trainers() -> None:
    """One place counts steps (training.proxy_config.budget); the trainer and ASHA's max_t read it."""
    plan = budget(proxy_cfg(epochs=2.5, batch_size=32, report_every=0.5, warmup_epochs=0.3), 100)
    assert (plan.batch, plan.steps_per_epoch, plan.total_steps) == (32, 3, 8)  # round(2.5 * 3)
    assert (plan.report_steps, plan.warmup_steps, plan.reports) == (2, 1, 5)  # 4 intermediate + final
    by_images = budget(proxy_cfg(images=100, batch_size=32, report_every=0), 1000)
    assert by_images.total_steps == 4 and by_images.report_steps == 4 and by_images.reports == 2


def test_compile_auto_depends_on_the_budget_only() -> None:
    b0_proxy_macs = 32_000_000  # B0 at 32 px, stem stride 1: 16 layers
    # measured on CPU: compiling never repays its minute (benchmarks/bench_trainer.py --compile)
    assert not any(compile_pays_off(b0_proxy_macs, 10**k, "cpu") for k in range(2, 10))
    decisions = [compile_pays_off(b0_proxy_macs, 10**k, "cuda") for k in range(2, 10)]
    assert decisions == sorted(decisions) and decisions[0] is False and decisions[-1] is True


@pytest.mark.slow
def test_compiled_training_runs(digits) -> None:
    r = evaluate(tiny_arch(), proxy_cfg(images=128, compile="on"), digits)
    assert r.status == "ok" and r.compiled and r.compile_seconds > 0
    assert r.images_per_second > 0


def test_evaluating_more_often_does_not_change_training(digits) -> None:
    # BN recalibration draws no random numbers and only touches BN statistics, which training
    # mode does not read: the final weights, hence the final metrics, are the same.
    often = evaluate(tiny_arch(), proxy_cfg(images=384, report_every=0.25), digits, seed=1)
    once = evaluate(tiny_arch(), proxy_cfg(images=384, report_every=0), digits, seed=1)
    assert len(often.history) > len(once.history) == 1
    assert (often.accuracy, often.loss) == (once.accuracy, once.loss)


def test_bn_calibration_fixes_stale_statistics(digits) -> None:
    # Early in a run BN's running averages lag the weights; recalibrated statistics do not.
    cfg = {"images": 1600, "bn_momentum": 0.01, "report_every": 0}
    stale = evaluate(tiny_arch(), proxy_cfg(bn_calibration=0, **cfg), digits, seed=2)
    fresh = evaluate(tiny_arch(), proxy_cfg(**cfg), digits, seed=2)
    assert fresh.accuracy > stale.accuracy + 0.1, (stale.accuracy, fresh.accuracy)


def test_cpu_kernels_are_on_by_default_and_can_be_turned_off(digits) -> None:
    from training import kernels

    cfg = {"images": 256, "report_every": 0}
    on = evaluate(tiny_arch(), proxy_cfg(**cfg), digits, seed=5)
    off = evaluate(tiny_arch(), proxy_cfg(cpu_kernels=False, **cfg), digits, seed=5)
    # every block has an SE and a depthwise conv (swapped when the C kernels could be built; at
    # run time only the 5x5 one takes the C path: no map here is 2x2), and conv-BN-SiLU layers:
    # stem, head, every depthwise conv's and the two expansions'
    blocks = len(PROXY_BLOCKS)
    assert on.cpu_kernels == blocks + (blocks + 2 + blocks + 2 if kernels.library() is not None else 0)
    assert off.cpu_kernels == 0
    # the same training to float rounding: the kernels change no arithmetic but its order
    assert on.status == off.status == "ok"
    assert on.loss == pytest.approx(off.loss, rel=1e-3)
    assert abs(on.accuracy - off.accuracy) <= 0.02
    # torch.compile gets the plain model: the C kernels would only break its graph
    from training.proxy import ProxyTrainer

    assert ProxyTrainer(tiny_arch(), proxy_cfg(compile="on"), digits).result.cpu_kernels == 0


# -- the paper recipe's parts: EMA of the weights, random-resized crop, policies ------------------
def test_ema_is_tensorflows_average_of_weights_and_bn_statistics(digits) -> None:
    """After each step: ema = d * ema + (1 - d) * weights, d = min(decay, (1 + steps) / (10 + steps))
    (tf.train.ExponentialMovingAverage with num_updates), from the initial weights, for the
    parameters and the BN running statistics alike."""
    from training.proxy import ProxyTrainer

    torch.manual_seed(0)
    t = ProxyTrainer(tiny_arch(), proxy_cfg(ema_decay=0.5, images=96), digits)
    float_state = lambda m: {k: v.clone() for k, v in m.state_dict().items() if v.is_floating_point()}  # noqa: E731
    expected = float_state(t.model)
    assert t.eval_model is t.ema.module
    for step in range(3):
        t.step(step)
        d = min(0.5, (1 + step + 1) / (10 + step + 1))
        now = float_state(t.model)
        expected = {k: d * expected[k] + (1 - d) * now[k] for k in expected}
        ema = float_state(t.ema.module)
        for key in expected:
            torch.testing.assert_close(ema[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert any("running_mean" in k for k in expected)
    assert not torch.equal(ema["classifier.weight"], now["classifier.weight"])


def test_ema_is_what_is_evaluated_and_kept(digits) -> None:
    from training.proxy import ProxyTrainer

    cfg = {"images": 320, "report_every": 0, "bn_calibration": 0}
    raw = evaluate(tiny_arch(), proxy_cfg(**cfg), digits, seed=3, keep_model=True)
    ema = evaluate(tiny_arch(), proxy_cfg(ema_decay=0.9, **cfg), digits, seed=3, keep_model=True)
    assert ema.status == raw.status == "ok"
    # the same training (the EMA draws no random numbers, changes no weight), another evaluated model
    assert ema.history[0]["train_loss"] == raw.history[0]["train_loss"]
    assert ema.loss != raw.loss
    assert not torch.equal(ema.model.classifier.weight, raw.model.classifier.weight)
    # the score is the kept (EMA) model's
    t = ProxyTrainer(tiny_arch(), proxy_cfg(**cfg), digits)
    t.model.load_state_dict(ema.model.state_dict())
    assert t.score(t.val_x, t.val_y)[:2] == (ema.accuracy, ema.loss)


def test_random_resized_crop_keeps_images_at_resolution_over_crop_fraction(digits) -> None:
    from training.proxy import ProxyTrainer

    t = ProxyTrainer(tiny_arch(), proxy_cfg(crop="random_resized", resolution=28), digits)
    assert t.train_x.shape[-1] == t.val_x.shape[-1] == 32  # round(28 / 0.875)
    x, _ = t.batch_at(torch.arange(len(t.train_y)), 0)
    assert x.shape[-2:] == (28, 28) and t.eval_view(t.val_x[:4]).shape[-2:] == (28, 28)
    r = evaluate(
        tiny_arch(), proxy_cfg(crop="random_resized", augment_policy="autoaugment", images=96), digits
    )
    assert r.status == "ok" and r.resolution == 32, r.error


def test_recipe_settings_are_checked() -> None:
    with pytest.raises(UserError, match=r"proxy\.crop must be one of pad, random_resized, got 'inception'"):
        proxy_cfg(crop="inception")
    with pytest.raises(UserError, match=r"proxy\.crop_fraction must be within \(0, 1\], got 1.2"):
        proxy_cfg(crop_fraction=1.2)
    with pytest.raises(UserError, match=r"proxy\.crop_area must be \[low, high\].*got \[0.5, 0.1\]"):
        proxy_cfg(crop_area=[0.5, 0.1])
    with pytest.raises(UserError, match=r"proxy\.ema_decay must be within \(0, 1\) or null"):
        proxy_cfg(ema_decay=1.0)
    with pytest.raises(UserError, match=r"proxy\.randaugment_m must be within \(0, 10\)"):
        proxy_cfg(randaugment_m=10)
    with pytest.raises(UserError, match=r"augment_policy=randaugment .* proxy\.augment=false"):
        proxy_cfg(augment=False, augment_policy="randaugment")


def test_eval_batch_keeps_the_32px_pixels_per_batch() -> None:
    """Evaluation batches shrink with the stem's output area (the 3.8 GB peak of a 256-image batch
    at 160 px); at CIFAR's 32x32 maps they are eval_batch_size unchanged."""
    p = load_proxy("default", eval_batch_size=256, stem_stride=1)
    assert eval_batch(p, 32) == 256 and eval_batch(p, 24) == 256
    assert eval_batch(p, 64) == 64  # 4x the area: a quarter of the images
    assert (
        eval_batch(load_proxy("default", eval_batch_size=256, stem_stride=2), 160) == 40
    )  # 80x80: 256 x 1024 / 6400
    assert (
        eval_batch(load_proxy("default", eval_batch_size=256, stem_stride=2), 64) == 256
    )  # 32x32 after the stem
    assert eval_batch(load_proxy("default", eval_batch_size=2, stem_stride=1), 600) == 1  # never 0


def test_evaluation_batching_does_not_change_the_score(digits) -> None:
    """The same run evaluated in batches of 256 and of 3 scores the same images the same way."""
    a = evaluate(tiny_arch(), proxy_cfg(eval_batch_size=256), digits, seed=0)
    b = evaluate(tiny_arch(), proxy_cfg(eval_batch_size=3), digits, seed=0)
    assert a.status == b.status == "ok" and a.accuracy == b.accuracy
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
