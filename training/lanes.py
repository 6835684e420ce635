"""Micro-batches on parallel threads: one CPU training step as `lanes` independent passes.

A proxy step on CPU is two (or more) micro-batches (`proxy.micro_batch`). Run one after the
other with T intra-op threads each, many of B0's layers are too small to keep T threads busy
(maps of 4x4 and 2x2, per-layer fork/join). Run side by side, each on its own Python thread with
T / lanes intra-op threads, every op stays single-threaded and the threads never wait on each
other inside a layer; the GIL is released inside every op. docs/proxy.md has the figures.

What keeps it exact and reproducible:
- every lane computes its gradients with `torch.autograd.grad` (nothing accumulates into
  `.grad` from two threads); the lanes' sums are added in lane order, so the same inputs give
  the same bits whichever OS thread ran which lane;
- lane 0 runs the model itself, the others replicas that share its parameters (the very same
  `Parameter` objects) but own their BN buffers, which start every step as copies of the
  model's; after the step the model's running statistics are the lanes' average (per lane one
  momentum update per micro-batch, as without lanes) and its batch counters the lanes' sum;
- dropout and stochastic depth draw from a per-lane generator seeded from (seed, step, micro
  batch), never from the global generator two threads would race on (`LaneDropout`,
  `LaneDropPath`: outside a lane they are the stock modules).
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import blocks

_local = threading.local()


def lane_generator() -> torch.Generator | None:
    """The generator of the lane running on this thread (None outside a lane)."""
    return getattr(_local, "generator", None)


class LaneDropout(nn.Dropout):
    """`nn.Dropout` that draws its mask from the lane's generator inside a lane."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = lane_generator()
        if g is None or not self.training or self.p == 0.0:
            return super().forward(x)
        keep = 1.0 - self.p
        if keep <= 0.0:
            return x * 0.0
        mask = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=g)
        return x * mask.div_(keep)


class LaneDropPath(blocks.DropPath):
    """`blocks.DropPath` that draws its per-sample mask from the lane's generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = lane_generator()
        if g is None or not self.training or self.rate == 0.0:
            return super().forward(x)
        keep = 1.0 - self.rate
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep, generator=g).div_(keep)


def _add(
    acc: list[torch.Tensor | None], new: tuple[torch.Tensor | None, ...] | list[torch.Tensor | None]
) -> list[torch.Tensor | None]:
    """acc + new, element-wise, None meaning zero; new tensors (neither input is written)."""
    both = [i for i, (a, b) in enumerate(zip(acc, new)) if a is not None and b is not None]
    out = [b if a is None else a for a, b in zip(acc, new)]
    if both:
        sums = torch._foreach_add([acc[i] for i in both], [new[i] for i in both])
        for i, s in zip(both, sums):
            out[i] = s
    return out


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same strides wherever a dimension has more than one element."""
    return a.shape == b.shape and all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _swap_random_layers(model: nn.Module) -> None:
    for m in model.modules():
        if type(m) is nn.Dropout:
            m.__class__ = LaneDropout
        elif type(m) is blocks.DropPath:
            m.__class__ = LaneDropPath


def _replica(model: nn.Module) -> nn.Module:
    """A copy of `model` with its own buffers and the same parameter objects."""
    params = {id(p): p for p in model.parameters()}
    replica = copy.deepcopy(model, memo={pid: p for pid, p in params.items()})
    for m, r in zip(model.modules(), replica.modules()):
        for name, p in m._parameters.items():
            assert r._parameters[name] is p  # shared through the deepcopy memo
    return replica


class Lanes:
    """Runs one step's micro-batches on `lanes` threads; see the module docstring."""

    def __init__(self, model: nn.Module, lanes: int, threads: int, seed: int) -> None:
        if lanes < 2:
            raise ValueError("Lanes needs at least 2 lanes")
        _swap_random_layers(model)
        self.models = [model] + [_replica(model) for _ in range(lanes - 1)]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.threads = max(1, threads // lanes)  # intra-op threads per lane
        self.restore_threads = threads
        self.seed = seed
        self._pool: ThreadPoolExecutor | None = None
        # running means and variances, and the batch counters, in module order
        self._buffers = [[b for b in m.buffers() if b.is_floating_point()] for m in self.models]
        self._counters = [[b for b in m.buffers() if not b.is_floating_point()] for m in self.models]

    def _lane(
        self,
        lane: int,
        step: int,
        parts: list[tuple[int, torch.Tensor, torch.Tensor]],
        total: int,
        smoothing: float,
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        torch.set_num_threads(self.threads)  # this OS thread's intra-op pool
        model = self.models[lane]
        model.train()
        g = torch.Generator()
        _local.generator = g
        try:
            loss: torch.Tensor | None = None
            grads: list[torch.Tensor | None] = [None] * len(self.params)
            for j, xs, ys in parts:
                g.manual_seed((self.seed * 1_000_003 + step * 1009 + j) % (2**63))
                part = F.cross_entropy(model(xs), ys, label_smoothing=smoothing) * (len(ys) / total)
                gs = torch.autograd.grad(part, self.params, allow_unused=True)
                grads = _add(grads, gs)
                loss = part.detach() if loss is None else loss + part.detach()
            assert loss is not None
            return loss, grads
        finally:
            _local.generator = None

    def step(
        self, step: int, x: torch.Tensor, y: torch.Tensor, micro_batch: int, smoothing: float
    ) -> torch.Tensor:
        """Forward + backward of the batch (x, y) in micro-batches; leaves the mean-loss
        gradient of the whole batch in every parameter's `.grad` and returns that loss."""
        chunks = list(zip(x.split(micro_batch), y.split(micro_batch)))
        per_lane: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = [[] for _ in self.models]
        for j, (xs, ys) in enumerate(chunks):  # contiguous runs of micro-batches per lane
            per_lane[j * len(self.models) // len(chunks)].append((j, xs, ys))
        if not all(per_lane):
            raise ValueError(f"{len(chunks)} micro-batches cannot fill {len(self.models)} lanes")
        if self._pool is None:
            # denormal flushing is a per-thread CPU flag: the lanes get what `evaluate` sets
            self._pool = ThreadPoolExecutor(
                len(self.models),
                thread_name_prefix="effnas-lane",
                initializer=torch.set_flush_denormal,
                initargs=(True,),
            )
        start = self._share_buffers()
        try:
            futures = [
                self._pool.submit(self._lane, lane, step, parts, len(y), smoothing)
                for lane, parts in enumerate(per_lane)
            ]
            results = [f.result() for f in futures]  # in lane order: a fixed summation order
        finally:
            torch.set_num_threads(self.restore_threads)
        loss, grads = results[0]
        for other_loss, other in results[1:]:
            loss = loss + other_loss
            grads = _add(grads, other)
        for p, gp in zip(self.params, grads):
            if gp is not None and not _same_layout(gp, p):
                gp = torch.empty_like(p).copy_(gp)  # AccumulateGrad's contract: the parameter's layout
            p.grad = gp
        self._merge_buffers(start)
        return loss

    @torch.no_grad()
    def _share_buffers(self) -> list[torch.Tensor]:
        """Give every replica the model's BN state; returns the counters' values at the start."""
        for lane in range(1, len(self.models)):
            if self._buffers[0]:
                torch._foreach_copy_(self._buffers[lane], self._buffers[0])
            for c, src in zip(self._counters[lane], self._counters[0]):
                c.copy_(src)
        return [c.clone() for c in self._counters[0]]

    @torch.no_grad()
    def _merge_buffers(self, start: list[torch.Tensor]) -> None:
        """Running statistics := the lanes' average; batch counters := the sum of the lanes'."""
        main = self._buffers[0]
        if main:
            for bufs in self._buffers[1:]:
                torch._foreach_add_(main, bufs)
            torch._foreach_mul_(main, 1.0 / len(self.models))
        for lane in range(1, len(self.models)):
            for c, c_lane, c0 in zip(self._counters[0], self._counters[lane], start):
                c.add_(c_lane - c0)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def plan(threads: int, batch: int, micro_batch: int) -> int:
    """How many lanes a CPU step uses: one per micro-batch, at most one per thread."""
    chunks = -(-batch // max(1, micro_batch))
    return max(1, min(threads, chunks))
