"""CPU speed-ups for the proxy trainer: hand-written kernels where PyTorch's are slow or do
more passes than needed, a hand-written SE backward, and the allocator setting that stops every
step from page-faulting. All keep the model's parameters, state_dict and results (to float
rounding); the trainer applies them on CPU unless `proxy.cpu_kernels=false`.

- `DepthwiseConv2d`: an `nn.Conv2d` whose training backward computes the weight gradient with
  `dw_weight_grad_threads` (cpu.c) where oneDNN's is slow - 5x5 kernels, and any kernel on maps
  of 2x2 and smaller: there oneDNN's depthwise weight gradient costs 8-50x its own forward, the
  C loop 2-5x (per-layer table in docs/proxy.md). Forward and input gradient stay oneDNN's.
- `ConvNormSiLU`: conv -> BN -> SiLU whose BN (batch statistics) and SiLU run as one kernel
  (`bn_silu_forward` / `bn_silu_backward`, cpu.c): three passes over the activation forward and
  six backward instead of PyTorch's five and eight, and only the BN input kept for backward.
  Single-threaded, so used where a micro-batch has one thread (training/lanes.py, one-thread
  trials); 7-13% of a 2-thread B0 step on this machine.
- `SqueezeExcite`: the SE block with a backward that writes the input gradient in one pass
  instead of autograd's three, and the small MLP's gradients by hand.
- `tune_allocator()`: glibc returns freed heap memory to the kernel above a 128 KB-64 MB trim
  threshold, so every training step faulted 60-190 MB of fresh pages back in (measured with
  getrusage). Trimming is turned off, every activation of a 64-image micro-batch stays under
  the 32 MB mmap threshold, and all threads share one arena: the lanes' threads would otherwise
  get arenas of their own, whose heaps glibc unmaps when they empty whatever the threshold
  (15-36k page faults per step).

`accelerate(model)` swaps the class of eligible layers in place (parameters, state_dict and
`isinstance` unchanged); outside training (eval, no_grad, BN calibration) they run PyTorch's ops.
The C source is compiled on first use with the system's C compiler into the effnas cache
(`$EFFNAS_CACHE/kernels/`, keyed by source, compiler and CPU flags; atomic rename, so parallel
trials race harmlessly). No compiler, or a failed build: one warning, and PyTorch's ops are
used - results stay correct, only slower. `EFFNAS_CPU_KERNELS=0` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import blocks

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11", "-pthread")

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False
unavailable_reason: Optional[str] = None


def _disabled() -> bool:
    return os.environ.get("EFFNAS_CPU_KERNELS", "1") == "0"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(cache: Path) -> Path:
    cc = os.environ.get("CC", "cc")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    key = hashlib.sha256(
        SOURCE.read_bytes() + "\0".join((*FLAGS, version, _cpu_flags())).encode()
    ).hexdigest()[:16]
    target = cache / f"cpu-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".cpu-", suffix=".so")
    os.close(fd)
    try:
        out = subprocess.run(
            [cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> Optional[ctypes.CDLL]:
    """The compiled kernels, building them on first use; None when they cannot be had."""
    global _lib, _tried, unavailable_reason
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if _disabled():
            unavailable_reason = "EFFNAS_CPU_KERNELS=0"
            return None
        from training.data.cache import cache_root

        try:
            lib = ctypes.CDLL(str(_build(cache_root(None) / "kernels")))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            unavailable_reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("effnas: CPU kernels unavailable (%s); using PyTorch's ops", unavailable_reason)
            return None
        lib.dw_weight_grad_threads.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 10
        lib.dw_weight_grad_threads.restype = ctypes.c_int
        ptr, long_, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
        lib.bn_silu_forward.argtypes = [ptr] * 7 + [long_, int_, ctypes.c_float]
        lib.bn_silu_forward.restype = int_
        lib.bn_silu_backward.argtypes = [ptr] * 9 + [long_, int_]
        lib.bn_silu_backward.restype = int_
        lib.channel_dot.argtypes = [ptr] * 3 + [int_, long_, int_]
        lib.channel_dot.restype = None
        _lib = lib
        return _lib


def depthwise_weight_grad(
    x: torch.Tensor, gy: torch.Tensor, kernel: int, stride: int, padding: int
) -> torch.Tensor:
    """Weight gradient (C, 1, K, K) of a depthwise convolution from its input x (N,C,H,W) and
    output gradient gy; float32 CPU tensors. Per-thread partial sums are added in a fixed order,
    so the result is the same for the same thread count."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"CPU kernels unavailable: {unavailable_reason}")
    n, c, h, w = x.shape
    ho, wo = gy.shape[2:]
    x = x.contiguous(memory_format=torch.channels_last)
    gy = gy.contiguous(memory_format=torch.channels_last)
    threads = max(1, min(torch.get_num_threads(), n))
    parts = torch.zeros(threads, kernel * kernel, c)
    lib.dw_weight_grad_threads(
        x.data_ptr(), gy.data_ptr(), parts.data_ptr(), n, h, w, c, ho, wo, kernel, stride, padding, threads
    )
    # the weight's own (contiguous) layout: a transposed view would reach the optimizer as is
    # wherever no AccumulateGrad copies it (torch.autograd.grad), and fused optimizers assume it
    return parts.sum(0).t().contiguous().view(c, 1, kernel, kernel)


def c_weight_grad_wins(kernel: int, height: int, width: int) -> bool:
    """Where the C weight gradient beats oneDNN's (docs/proxy.md's per-layer table): 5x5 and
    larger kernels at every size, any kernel on maps of 2x2 and smaller (3x3 kernels at 4x4 are
    a tie). A fixed rule, not a timing, so a rerun takes the same path and gets the same bits."""
    return kernel >= 5 or height * width <= 4


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                gy,
                x,
                weight,
                None,
                [s, s],
                [p, p],
                [1, 1],
                False,
                [0, 0],
                weight.shape[0],
                [True, False, False],
            )[0]
        if ctx.needs_input_grad[1]:
            gw = depthwise_weight_grad(x, gy, weight.shape[-1], s, p)
        return gx, gw, None, None


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise `nn.Conv2d` that trains with the C weight gradient where that wins."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        if (
            self.training
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and c_weight_grad_wins(k, x.shape[2], x.shape[3])
            and _lib is not None  # loaded: accelerate() swaps only then; no lock per forward
        ):
            return _DepthwiseConv.apply(x, self.weight, self.stride[0], self.padding[0])
        return super().forward(x)


def _one_thread_c(*tensors: torch.Tensor) -> bool:
    """Whether the single-threaded C kernels (fused BN + SiLU, channel_dot) take these tensors:
    the library loaded, one intra-op thread (a lane, or a one-thread trial), and float32 4-D
    channels-last CPU tensors."""
    return (
        _lib is not None
        and torch.get_num_threads() == 1
        and all(
            t.device.type == "cpu"
            and t.dtype == torch.float32
            and t.dim() == 4
            and t.is_contiguous(memory_format=torch.channels_last)
            for t in tensors
        )
    )


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a * b).sum((2, 3)) for (N, C, H, W) tensors: one C pass without the product tensor where
    both are channels-last float32 on one intra-op thread, PyTorch's two ops elsewhere."""
    if a.shape == b.shape and _one_thread_c(a, b):
        n, c, h, w = a.shape
        out = torch.empty(n, c)
        _lib.channel_dot(a.data_ptr(), b.data_ptr(), out.data_ptr(), n, h * w, c)
        return out
    return (a * b).sum((2, 3))


class _SqueezeExcite(torch.autograd.Function):
    """x * sigmoid(expand(silu(reduce(mean_hw(x))))) with a hand-written backward.

    Autograd's version writes the input gradient in three full-size passes (dy * gate, the
    mean's broadcast division, the sum of the two branches); this one writes it with one
    addcmul: dx = dy * gate + d(pool) / HW. The N x C MLP's gradients are written out too (a
    few small matmuls) rather than re-entering autograd for them, which cost more than the
    full-size work on B0's small late layers."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> torch.Tensor:
        pooled = x.mean((2, 3))
        h = F.linear(pooled, w1.flatten(1), b1)
        a = F.silu(h)
        gate = torch.sigmoid(F.linear(a, w2.flatten(1), b2))
        ctx.save_for_backward(x, pooled, h, a, gate, w1, w2)
        return x * gate[:, :, None, None]

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, pooled, h, a, gate, w1, w2 = ctx.saved_tensors
        dgate = _channel_dot(gy, x)
        ds = dgate * gate * (1.0 - gate)  # through the sigmoid
        dw2 = ds.t() @ a
        da = ds @ w2.flatten(1)
        sh = torch.sigmoid(h)
        dh = da * sh * (1.0 + h * (1.0 - sh))  # through the SiLU
        dw1 = dh.t() @ pooled
        dp = dh @ w1.flatten(1)
        hw = x.shape[2] * x.shape[3]
        gx = torch.addcmul((dp / hw)[:, :, None, None], gy, gate[:, :, None, None])
        return gx, dw1.view(w1.shape), dh.sum(0), dw2.view(w2.shape), ds.sum(0)


class SqueezeExcite(blocks.SqueezeExcite):
    """`search_spaces.blocks.SqueezeExcite` that trains with `_SqueezeExcite`'s backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and type(self.act) is nn.SiLU:
            return _SqueezeExcite.apply(
                x, self.reduce.weight, self.reduce.bias, self.expand.weight, self.expand.bias
            )
        return super().forward(x)


class _BatchNormSiLU(torch.autograd.Function):
    """silu(batch_norm(x)) with training statistics, forward and backward in cpu.c (one thread).
    Returns (y, stats): stats rows are the batch mean, biased variance and 1/std."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> Any:
        n, c, h, w = x.shape
        y = torch.empty_like(x, memory_format=torch.channels_last)
        stats = torch.empty(3, c)
        rc = _lib.bn_silu_forward(
            x.data_ptr(), weight.data_ptr(), bias.data_ptr(), y.data_ptr(), *(r.data_ptr() for r in stats),
            n * h * w, c, eps,
        )  # fmt: skip
        if rc != 0:
            raise torch.OutOfMemoryError("bn_silu_forward: out of memory")
        ctx.save_for_backward(x, weight, bias, stats)
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _: Any) -> tuple[Optional[torch.Tensor], ...]:
        x, weight, bias, stats = ctx.saved_tensors
        n, c, h, w = x.shape
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        dw, db = torch.empty(c), torch.empty(c)
        rc = _lib.bn_silu_backward(
            dy.data_ptr(), x.data_ptr(), weight.data_ptr(), bias.data_ptr(), stats[0].data_ptr(),
            stats[2].data_ptr(), dx.data_ptr(), dw.data_ptr(), db.data_ptr(), n * h * w, c,
        )  # fmt: skip
        if rc != 0:
            raise torch.OutOfMemoryError("bn_silu_backward: out of memory")
        return dx, dw, db, None


class ConvNormSiLU(blocks.ConvNormAct):
    """`blocks.ConvNormAct` (conv -> BN -> SiLU) whose BN + SiLU train as one C kernel where it
    pays: one intra-op thread (micro-batches side by side, or a one-thread trial), float32
    channels-last CPU input, BN with batch statistics and a momentum. Elsewhere: the stock
    modules. Running statistics and the batch counter are updated as `nn.BatchNorm2d` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act = self[0], self[1], self[2]
        x = conv(x)
        count = x.shape[0] * x.shape[2] * x.shape[3] if x.dim() == 4 else 0  # values per channel
        if (
            bn.training
            and torch.is_grad_enabled()
            and bn.momentum is not None
            and x.shape[1] > 0
            and count > 1
            and _one_thread_c(x)
        ):
            y, stats = _BatchNormSiLU.apply(x, bn.weight, bn.bias, float(bn.eps))
            with torch.no_grad():
                m = float(bn.momentum)
                bn.running_mean.mul_(1.0 - m).add_(stats[0], alpha=m)
                bn.running_var.mul_(1.0 - m).add_(stats[1], alpha=m * count / (count - 1))
                bn.num_batches_tracked.add_(1)
            return y
        return act(bn(x))


def _conv_bn_silu_eligible(m: nn.Module) -> bool:
    return (
        type(m) is blocks.ConvNormAct
        and len(m) == 3
        and type(m[1]) is nn.BatchNorm2d
        and m[1].affine
        and m[1].track_running_stats
        and type(m[2]) is nn.SiLU
    )


def _depthwise_eligible(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d:
        return False
    k = m.kernel_size[0]
    return (
        m.groups > 1
        and m.groups == m.in_channels == m.out_channels
        and m.bias is None
        and m.kernel_size == (k, k)
        and m.stride[0] == m.stride[1]
        and m.padding == (k // 2, k // 2)
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
    )


def accelerate(model: nn.Module) -> int:
    """Swap eligible layers of `model` for their faster training versions, in place: depthwise
    convolutions (when the C kernels could be built) and squeeze-excite blocks. Returns how many
    layers were swapped."""
    have_c = library() is not None
    swapped = 0
    for m in model.modules():
        if have_c and _depthwise_eligible(m):
            m.__class__ = DepthwiseConv2d
            swapped += 1
        elif have_c and _conv_bn_silu_eligible(m):
            m.__class__ = ConvNormSiLU
            swapped += 1
        elif type(m) is blocks.SqueezeExcite:
            m.__class__ = SqueezeExcite
            swapped += 1
    return swapped


_allocator_tuned = False


def release_memory() -> bool:
    """Between trials: hand the heap's free memory back to the kernel (`malloc_trim`). With
    trimming off during training (`tune_allocator`), a process that trains one architecture after
    another (a reused Ray Tune worker) otherwise keeps the high-water mark of every model it has
    trained, fragmented: a CIFAR-10 collection's two workers held 5.3 and 6.7 GB after ~20
    trials each, growing ~80 MB per trial. Measured on digits (random archs, one process, 1 epoch;
    /tmp/memtest-style loop, load ~6): RSS after trials 1-4 was 752, 765, 938, 939 MB without it,
    544, 551, 557, 561 MB with it. True if memory was released."""
    if not _allocator_tuned:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def tune_allocator() -> bool:
    """Keep freed heap memory in the process, for every thread (glibc only; once per process,
    before the threads that should share the arena allocate). True if set."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if platform.system() != "Linux" or _disabled():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1 and libc.mallopt(m_trim_threshold, -1) == 1
        # one arena for every thread: the lanes' threads (training/lanes.py) would otherwise get
        # arenas of their own, whose heaps glibc unmaps when they empty - 15-36k page faults
        # per step - whatever the trim threshold
        ok = ok and libc.mallopt(m_arena_max, 1) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok
