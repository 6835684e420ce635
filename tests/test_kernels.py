"""training/kernels: the C depthwise weight gradient, the fused SE backward, the class swap, the
build cache and the fallback when no compiler is at hand."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from search_spaces import blocks
from search_spaces.arch import Arch
from search_spaces.builder import build_model
from search_spaces.official import official
from training import kernels


@pytest.fixture
def fresh_kernels(monkeypatch: pytest.MonkeyPatch):
    """Forget the loaded library, so a test sees the build (or its failure) happen."""
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "unavailable_reason", None)
    return kernels


def _require_c() -> None:
    if kernels.library() is None:
        pytest.skip(f"no C compiler here: {kernels.unavailable_reason}")


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "k", "stride"),
    [
        (3, 5, 7, 7, 3, 1),  # fewer channels than a 16-channel block: the plain loop only
        (4, 16, 8, 6, 5, 2),  # one block, non-square map, stride 2
        (2, 33, 2, 2, 5, 1),  # two blocks + 1 channel; map smaller than the kernel
        (3, 48, 6, 5, 3, 2),  # 3x3 blocks, odd width, stride 2
        (5, 24, 9, 9, 7, 2),  # 7x7: no register tile, the plain loop per block
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_weight_grad_matches_autograd(n, c, h, w, k, stride, threads) -> None:
    _require_c()
    g = torch.Generator().manual_seed(n * 100 + c)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g, requires_grad=True)
    y = F.conv2d(x, weight, None, stride, k // 2, 1, c)
    gy = torch.randn(y.shape, generator=g)
    (expected,) = torch.autograd.grad(y, weight, gy)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = kernels.depthwise_weight_grad(x, gy, k, stride, k // 2)
        again = kernels.depthwise_weight_grad(x, gy, k, stride, k // 2)
    finally:
        torch.set_num_threads(before)
    assert got.shape == expected.shape
    assert got.is_contiguous()  # the weight's layout: torch.autograd.grad hands it on as is
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got, again)  # fixed split and summation order: same bits


def test_squeeze_excite_backward_passes_gradcheck() -> None:
    se = kernels.SqueezeExcite(6, 2).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    params = (se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
    assert torch.autograd.gradcheck(kernels._SqueezeExcite.apply, (x, *params))


@pytest.mark.parametrize("shape", [(4, 96, 6, 6), (3, 40, 5, 3), (2, 8, 1, 1)])
def test_channel_dot_matches_torch(shape: tuple[int, ...]) -> None:
    _require_c()
    g = torch.Generator().manual_seed(shape[1])
    a, b = (torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2))
    got = kernels._channel_dot(a, b)  # one thread (the suite's setting): the C pass
    torch.testing.assert_close(got, (a * b).sum((2, 3)), rtol=1e-5, atol=1e-5)
    assert torch.equal(got, kernels._channel_dot(a, b))


def _small_arch() -> Arch:
    # every op kind the swap touches: k3 and k5 depthwise convs, SE, residual blocks
    blocks = ["r1_k3_s11_e1_i32_o16_se0.25", "r2_k5_s22_e6_i16_o24_se0.25", "r1_k3_s11_e6_i24_o24_se0.25"]
    return Arch.from_dict({"name": "tiny", "blocks": blocks, "head": 64, "resolution": 32})


@pytest.mark.parametrize("arch", [_small_arch(), official("efficientnet_b0")], ids=["tiny", "b0"])
def test_accelerated_model_trains_like_the_stock_one(arch: Arch) -> None:
    torch.manual_seed(0)
    stock = build_model(arch, num_classes=10, stem_stride=1).to(memory_format=torch.channels_last)
    for m in stock.modules():  # no random masks: the two passes must see the same network
        if hasattr(m, "rate"):
            m.rate = 0.0
    fast = copy.deepcopy(stock)
    swapped = kernels.accelerate(fast)
    assert swapped > 0
    assert list(fast.state_dict()) == list(stock.state_dict())
    x = torch.randn(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (6,))
    losses = []
    for model in (stock, fast):
        model.train()
        torch.manual_seed(1)  # the classifier's dropout
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), (_, b) in zip(stock.named_buffers(), fast.named_buffers()):  # BN statistics
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    scale = max(p.grad.abs().max().item() for p in stock.parameters())
    for (name, a), (_, b) in zip(stock.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5 * scale, msg=name)
    with torch.no_grad():  # outside training the swapped layers run the stock code
        stock.eval(), fast.eval()
        torch.testing.assert_close(fast(x), stock(x))
        fast.load_state_dict(stock.state_dict())
        assert torch.equal(stock(x), fast(x))


@pytest.mark.parametrize("shape", [(8, 32, 6, 6), (4, 24, 5, 3), (3, 40, 1, 1), (2, 8, 2, 2)])
def test_conv_bn_silu_matches_the_stock_modules(shape: tuple[int, int, int, int]) -> None:
    # channel counts that are not a multiple of the 16-wide blocks, and 1x1 / 2x2 maps
    _require_c()
    n, c, h, w = shape
    torch.manual_seed(c)
    stock = blocks.ConvNormAct(5, c, 3).to(memory_format=torch.channels_last)
    stock[1].momentum = 0.3
    with torch.no_grad():
        stock[1].weight.uniform_(0.5, 1.5), stock[1].bias.uniform_(-0.5, 0.5)
        stock[1].running_mean.uniform_(-1, 1)
    fast = copy.deepcopy(stock)
    assert kernels.accelerate(fast) == 1 and type(fast) is kernels.ConvNormSiLU
    x = (torch.randn(n, 5, h, w) * 3 + 1).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(n, c, h, w)
    outs, grads = [], []
    for model in (stock, fast):
        xr = x.clone().requires_grad_(True)
        y = model(xr)
        (y * gy).sum().backward()
        outs.append(y.detach())
        grads.append([xr.grad] + [p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    for a, b in zip(stock.buffers(), fast.buffers()):  # running mean, variance, batch counter
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert fast[1].num_batches_tracked.item() == 1


def test_conv_bn_silu_runs_the_stock_code_off_its_path() -> None:
    _require_c()
    stock = blocks.ConvNormAct(3, 16, 3).to(memory_format=torch.channels_last)
    fast = copy.deepcopy(stock)
    kernels.accelerate(fast)
    x = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # more than one thread: PyTorch's own multi-threaded kernels
    try:
        assert torch.equal(fast(x), stock(x))
    finally:
        torch.set_num_threads(before)
    nchw = blocks.ConvNormAct(3, 16, 3)  # an NCHW model: its conv outputs are not channels-last
    nchw_fast = copy.deepcopy(nchw)
    kernels.accelerate(nchw_fast)
    assert torch.equal(nchw_fast(x.contiguous()), nchw(x.contiguous()))
    with torch.no_grad():  # BN calibration and evaluation
        assert torch.equal(fast(x), stock(x))
    fast.eval(), stock.eval()
    assert torch.equal(fast(x), stock(x))


def test_swap_counts_what_it_swaps() -> None:
    _require_c()
    model = build_model(_small_arch(), num_classes=10)
    # four blocks: a depthwise conv and an SE each; conv-BN-SiLU: the stem, the head, the four
    # depthwise convs' and the three expansions' (the first block has none)
    assert kernels.accelerate(model) == 4 + 4 + 9
    assert sum(isinstance(m, kernels.DepthwiseConv2d) for m in model.modules()) == 4
    assert sum(isinstance(m, kernels.ConvNormSiLU) for m in model.modules()) == 9
    assert kernels.accelerate(model) == 0  # already swapped


def test_build_is_cached_and_atomic(fresh_kernels, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path))
    lib = fresh_kernels.library()
    if lib is None:
        pytest.skip(f"no C compiler here: {fresh_kernels.unavailable_reason}")
    built = list((tmp_path / "kernels").iterdir())
    assert [p.name.startswith("cpu-") and p.suffix == ".so" for p in built] == [True]  # no temp left
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(fresh_kernels, "_tried", False)
    assert fresh_kernels.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_no_compiler_falls_back_with_one_warning(fresh_kernels, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="training.kernels"):
        assert fresh_kernels.library() is None
        assert fresh_kernels.library() is None
    warnings = [r for r in caplog.records if "CPU kernels unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "no-such-cc" in fresh_kernels.unavailable_reason
    model = build_model(_small_arch(), num_classes=10)
    assert kernels.accelerate(model) == 4  # SE blocks only: the depthwise convs stay stock
    assert not any(isinstance(m, kernels.DepthwiseConv2d) for m in model.modules())


def test_environment_switch_turns_the_kernels_off(fresh_kernels, monkeypatch) -> None:
    monkeypatch.setenv("EFFNAS_CPU_KERNELS", "0")
    assert fresh_kernels.library() is None
    assert fresh_kernels.unavailable_reason == "EFFNAS_CPU_KERNELS=0"


ALLOCATIONS = """
import resource, sys, threading
import torch
from training import kernels
if sys.argv[1] == "tuned":
    assert kernels.tune_allocator()
def work():  # activation-sized tensors, every page touched, freed, six times
    for _ in range(6):
        tensors = [torch.ones(mb << 18) for mb in (30, 25, 20, 12, 6, 3) * 3]
        del tensors
def two_threads():  # as two lanes allocate
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
two_threads()  # the heap grows to its peak
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
two_threads()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator settings")
def test_allocator_setting_keeps_freed_memory_for_every_thread() -> None:
    # memory freed by worker threads must not go back to the kernel to be faulted in again: with
    # per-thread arenas (a 1 GiB trim threshold alone) the lanes took 15-36k page faults per step
    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", ALLOCATIONS, mode], capture_output=True, text=True, timeout=120, check=True
        )
        return int(out.stdout.split()[-1])

    tuned, plain = faults("tuned"), faults("plain")
    assert plain > 50_000  # glibc's defaults: the memory goes back and is faulted in again
    assert tuned < plain / 4


def test_release_memory_returns_the_untrimmed_heap_to_the_kernel() -> None:
    """With trimming off (tune_allocator), freed heap stays resident until release_memory()."""
    import subprocess
    import sys

    code = """
import training.kernels as k
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20
assert k.tune_allocator()
blocks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]  # ~200 MB of malloc'd chunks
high = rss(); del blocks; kept = rss()
assert k.release_memory(); after = rss()
print(high, kept, after)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    high, kept, after = map(int, out.split())
    assert kept > high - 50  # nothing given back by free() alone
    assert after < kept - 150  # malloc_trim gave it back
