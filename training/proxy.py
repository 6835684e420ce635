"""The proxy trainer: one short, seeded training run of an `Arch` -> a `TrialResult`.

Every search trial, every grid point and `effnas train` run through `evaluate`, so this module is
the speed of the whole product (docs/proxy.md has the measurements and the design choices):
- data stay uint8 tensors (on the GPU under CUDA); a batch is one gather, the batched
  augmentation (`training.data.augment.BatchAugment`: crop+flip, or the paper recipe's random-
  resized crop and RandAugment / AutoAugment through kornia), and one fused normalise: no
  DataLoader, no per-image Python;
- on CPU, a step's micro-batches train side by side on one thread each (`training.lanes`) with
  effnas's C kernels (`training.kernels`);
- channels-last, AMP (bf16) on CUDA, `torch.compile` when the budget pays for it
  (`proxy.compile=auto`), evaluation under `inference_mode`, and no host sync per step
  (losses go to a device buffer read once per report);
- a diverging run (NaN/inf loss) ends as `status="failed"` with the step, never an exception;
  so does one over `proxy.trial_timeout` (checked after every step, from the call's start);
- on CPU the same seed gives bit-identical metrics (with the same thread count).

Budget, optimizer and schedule follow the EfficientNet paper §5.2 where it says something (RMSProp
decay 0.9 / momentum 0.9, exponential decay 0.97 every 2.4 epochs, label smoothing, stochastic
depth, dropout from the arch), scaled down to a proxy budget; `proxy=efficientnet` adds the rest
of the paper's recipe (its augmentation, and the EMA of the weights: `proxy.ema_decay`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from search_spaces.arch import Arch
    from training.data import Dataset

from foundation import interrupt, per_image
from training.proxy_config import (
    INITS,
    OPTIMIZERS,
    ProxyConfig,
    budget,
    checked,
    eval_batch,
    storage_size,
    time_limit,
)


@dataclass
class TrialResult:
    """What one proxy run measured. `macs`/`params` are the paper's unit: the deployment model
    (arch at `arch.resolution`, 1000 classes); `proxy_macs` is the network actually trained."""

    status: str  # "ok" | "failed"
    accuracy: float | None  # validation accuracy in [0, 1] (held out of the training data)
    loss: float | None  # final validation loss (plain cross-entropy, no smoothing)
    macs: int
    params: int
    proxy_macs: int
    seconds: float  # wall time of the whole call
    images_per_second: float  # training images / training-step seconds (no eval, no compile)
    epochs: float  # epochs actually trained
    test_accuracy: float | None = None
    # with the EMA on (proxy.ema_decay), the trained weights themselves, scored beside the EMA's
    raw_accuracy: float | None = None
    raw_test_accuracy: float | None = None
    # which evaluation images the final weights got right (foundation.per_image.encode): the records a
    # verdict pairs over the same images (foundation/verdict.py); `test_correct` only with test=True
    correct: str | None = None
    test_correct: str | None = None
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    resolution: int = 0
    compiled: bool = False
    cpu_kernels: int = 0  # layers running effnas's C kernels (training/kernels)
    lanes: int = 1  # CPU: micro-batches trained side by side, one thread each (training/lanes.py)
    compile_seconds: float = 0.0
    device: str = "cpu"
    model: Any = field(default=None, repr=False, compare=False)  # only with keep_model=True

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (the model, if kept, is left out)."""
        out = asdict(replace(self, model=None))
        del out["model"]
        return out


class Diverged(Exception):
    """Raised inside the loop when the loss stops being finite; becomes a failed result."""


class TimeLimit(Exception):
    """Raised inside the loop past `proxy.trial_timeout`; becomes a failed result."""


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return device


def evaluate(
    arch: Arch,
    proxy: ProxyConfig | Any,
    data: Dataset,
    *,
    resolution: int | None = None,
    seed: int = 0,
    threads: int = 0,
    device: str = "auto",
    report: Callable[[dict[str, Any]], None] | None = None,
    test: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    keep_model: bool = False,
) -> TrialResult:
    """Train `arch` on `data.train` under the `proxy` budget; score it on `data.val`.

    `resolution` is the proxy input size (default `proxy.resolution`; the grid passes
    gamma^phi * base). `report(metrics)` is called every `proxy.report_every` epochs and at the
    end; an exception it raises propagates (that is how Ray Tune stops a trial). `progress`
    gets the same dicts plus timing (for `effnas train`'s console). `test=True` also scores
    `data.test`; `keep_model=True` leaves the trained module in `result.model` (the EMA's
    weights when `proxy.ema_decay` is set). The global torch RNG is left as it was.
    """
    import torch

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    # process-wide, left on: denormal floats (weights decaying towards zero late in a run) can
    # make CPU kernels 10-100x slower; flushing them changes values below 1e-38 only
    torch.set_flush_denormal(True)
    if dev.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest kernels once
    devices = [torch.device(dev).index or 0] if dev.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # weights, dropout, stochastic depth; data draw from their own
        trainer = ProxyTrainer(arch, proxy, data, resolution=resolution, seed=seed, device=dev)
        result = trainer.result
        limit = time_limit(trainer.proxy)
        trainer.deadline = None if limit is None else t0 + limit
        try:
            trainer.train(report, progress)
            if test:
                if data.test is None:
                    raise ValueError(f"dataset {data.name} has no test split")
                result.test_accuracy, _, hits = trainer.score(trainer.test_x, trainer.test_y)
                result.test_correct = per_image.encode(hits)
        except (Diverged, TimeLimit) as exc:
            result.status, result.error = "failed", str(exc)
            result.accuracy = result.loss = result.test_accuracy = None
            result.correct = result.test_correct = None
        except torch.OutOfMemoryError as exc:
            result.status, result.error = "failed", f"out of memory: {str(exc).splitlines()[0]}"
        finally:
            trainer.close()
        if keep_model:
            result.model = trainer.eval_model
    if not keep_model:
        from training import kernels

        del trainer
        kernels.release_memory()
    result.seconds = time.perf_counter() - t0
    return result


class ProxyTrainer:
    """The state of one run: `step` is one training step, `train` the loop with its reports,
    `score` an evaluation. `evaluate` is the API; this class is public for the benchmarks."""

    def __init__(
        self,
        arch: Arch,
        proxy: ProxyConfig | Any,
        data: Dataset,
        *,
        resolution: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        precision: str = "auto",
    ) -> None:
        import torch

        from search_spaces.builder import build_model
        from search_spaces.cost import count

        proxy = checked(proxy)  # the typed proxy contract: every key present and within its rule
        res = int(resolution or proxy.resolution)
        num_classes = int(proxy.num_classes or data.num_classes)
        stem_stride = int(proxy.stem_stride)
        dev = resolve_device(device)
        deploy = count(arch)
        trained = count(arch, resolution=res, num_classes=num_classes, stem_stride=stem_stride)
        result = TrialResult(
            status="ok",
            accuracy=None,
            loss=None,
            macs=deploy.macs,
            params=deploy.params,
            proxy_macs=trained.macs,
            seconds=0.0,
            images_per_second=0.0,
            epochs=0.0,
            resolution=res,
            device=dev,
        )
        self.proxy, self.dev, self.result = proxy, torch.device(dev), result
        self.cuda = self.dev.type == "cuda"
        self.deadline: float | None = None  # perf_counter() past which `train` stops (evaluate sets it)
        self.memory_format = torch.channels_last if proxy.channels_last else torch.contiguous_format
        # -- data: uint8 at the storage size (the proxy resolution, or resolution / crop_fraction
        # with the random-resized crop), resident on the training device (or memory-mapped) -------
        self.res, stored = res, storage_size(proxy, res)
        self.train_x, self.train_y = self._tensors(data.train, stored)
        self.val_x, self.val_y = self._tensors(data.val, stored)
        self.test_x = self.test_y = None
        if data.test is not None:
            self.test_x, self.test_y = self._tensors(data.test, stored)
        # per-channel statistics of the training images: x_float = x_uint8 * scale + shift
        mean = data.train.x.mean(axis=(0, 2, 3), dtype="float64") / 255.0
        std = data.train.x.std(axis=(0, 2, 3), dtype="float64") / 255.0
        std[std < 1e-3] = 1.0
        self.scale = torch.tensor(1.0 / (255.0 * std), dtype=torch.float32, device=self.dev)
        self.shift = torch.tensor(-mean / std, dtype=torch.float32, device=self.dev)
        self.scale, self.shift = self.scale.view(1, 3, 1, 1), self.shift.view(1, 3, 1, 1)
        self.pad = round(int(proxy.crop_pad) * res / 32)
        self.augment = None
        if proxy.augment:
            from training.data.augment import BatchAugment

            self.augment = BatchAugment(
                res,
                crop=str(proxy.crop),
                pad=self.pad,
                flip=bool(proxy.flip),
                area=tuple(proxy.crop_area),
                aspect=tuple(proxy.crop_aspect),
                policy=str(proxy.augment_policy),
                n=int(proxy.randaugment_n),
                m=float(proxy.randaugment_m),
            )
        self.generator = torch.Generator(device=self.dev).manual_seed(seed)
        self._order: torch.Tensor | None = None  # this epoch's permutation of the training set
        self._steps_done, self._calibrated_at = 0, -1

        # -- budget (training.proxy_config.budget: the one place steps are counted) -------------
        n = len(self.train_y)
        if n < 2:
            raise ValueError(f"dataset {data.name} has {n} training images; need at least 2")
        plan = budget(proxy, n)
        self.batch, self.steps_per_epoch = plan.batch, plan.steps_per_epoch
        self.total_steps, self.total_epochs = plan.total_steps, plan.total_epochs
        self.report_steps, self.warmup_steps = plan.report_steps, plan.warmup_steps
        # On CPU a 128-image batch of B0's 32x32 expansion (50 MB) overflows the cache; two
        # passes of 64 ran up to 1.3x faster per image when two trials shared the CPU (docs/proxy.md).
        # On CUDA: the whole batch.
        micro = proxy.micro_batch
        self.micro_batch = self.batch if (micro <= 0 or self.cuda) else min(micro, self.batch)

        # -- model and optimizer ------------------------------------------------------------
        self.model = build_model(arch, num_classes=num_classes, stem_stride=stem_stride)
        bn_momentum = proxy.bn_momentum
        if bn_momentum is not None:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = float(bn_momentum)
        proxy_init(self.model, str(proxy.init))
        self.model.to(self.dev, memory_format=self.memory_format)
        self.base_lr = float(proxy.lr) * self.batch / 256  # lr is per 256 images
        self.optimizer = make_optimizer(self.model, proxy, self.base_lr)
        self.schedule = str(proxy.schedule)
        self.smoothing = float(proxy.label_smoothing)
        self.step_fn = self.model
        result.compiled = self._want_compile()
        # mixed precision (`precision_of`): autocast to bf16/fp16, a gradient scaler for fp16;
        # on CPU bf16 runs torch's own kernels (effnas's C kernels and the lanes are fp32, and
        # autocast is thread-local: the lanes' threads would not see it)
        self.precision = precision_of(str(precision), str(self.dev))
        low = self.precision in ("bf16", "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.amp = torch.autocast(self.dev.type, dtype=dtype) if low else None
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if not self.cuda and proxy.cpu_kernels and not low:
            from training import kernels

            kernels.tune_allocator()
            if not result.compiled:  # the C kernels would only break torch.compile's graph
                result.cpu_kernels = kernels.accelerate(self.model)
        # the exponential moving average of the weights (BN statistics included), evaluated and
        # exported instead of them when on; a copy made after `accelerate`, so it evaluates as fast
        self.ema = None
        if proxy.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.model, use_buffers=True)
            self.ema.update_parameters(self.model)  # n_averaged 1: from here every update averages
        if result.compiled:
            self.step_fn = torch.compile(self.model, dynamic=False)
        self.lanes = None
        if not self.cuda and not result.compiled and proxy.parallel_micro_batches and not low:
            from training import lanes

            threads = torch.get_num_threads()
            n_lanes = lanes.plan(threads, self.batch, self.micro_batch)
            if n_lanes > 1:
                self.lanes = lanes.Lanes(self.model, n_lanes, threads, seed)
                result.lanes = n_lanes

    def _tensors(self, split: Any, res: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from training.data import resize_batch
        from training.data.store import row_reader

        reader = row_reader(split.x)
        if reader is not None:  # a disk store: each batch read when it is used
            return StoredRows(reader, self.dev, res), torch.from_numpy(split.y).to(self.dev)
        x = torch.from_numpy(split.x).to(self.dev)
        if x.shape[-1] != res or x.shape[-2] != res:
            # once, up front, in chunks: the grid's resolution scaling costs no per-step resize
            x = torch.cat([resize_batch(c, res) for c in x.split(4096)])
        return x, torch.from_numpy(split.y).to(self.dev)

    def _want_compile(self) -> bool:
        mode = str(self.proxy.compile)
        if mode != "auto":
            return mode == "on"
        return compile_pays_off(
            self.result.proxy_macs, self.total_steps * self.batch, self.dev.type, len(self.model.blocks)
        )

    # -- one step ---------------------------------------------------------------------------
    def batch_at(self, order: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[i * self.batch : (i + 1) * self.batch]
        x, y = self.train_x[idx], self.train_y[idx]
        x = self.eval_view(x) if self.augment is None else self.augment(x, self.generator)
        return self.normalize(x), y

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        """A stored batch as evaluation sees it: itself, or with the random-resized crop the
        resize + center crop of `proxy.crop_fraction` (paper recipe; tensorflow/tpu eval)."""
        if str(self.proxy.crop) != "random_resized":
            return x
        from training.data.augment import center_crop_batch

        return center_crop_batch(x, self.res, float(self.proxy.crop_fraction))

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights evaluated and exported: the EMA's when `proxy.ema_decay` is set."""
        return self.model if self.ema is None else self.ema.module

    def update_ema(self, steps_done: int) -> None:
        """One EMA step after the optimizer's `steps_done`-th update. The decay is tensorflow/tpu's
        (`tf.train.ExponentialMovingAverage(decay, num_updates=global_step)`): min(decay,
        (1 + steps) / (10 + steps)), so early averages are not pinned to the initial weights."""
        if self.ema is None:
            return
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        decay = min(float(self.proxy.ema_decay), (1 + steps_done) / (10 + steps_done))
        self.ema.multi_avg_fn = get_ema_multi_avg_fn(decay)
        self.ema.update_parameters(self.model)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        return x.float().mul_(self.scale).add_(self.shift)

    def lr_at(self, step: int) -> float:
        """Linear warmup from 0, then the schedule over the remaining steps (per step, no stairs
        shorter than one step)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        t, span = step - self.warmup_steps, max(1, self.total_steps - self.warmup_steps)
        if self.schedule == "cosine":
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * t / span))
        if self.schedule == "exponential":
            # paper §5.2: x0.97 every 2.4 epochs of 350; the same number of decays over our budget
            every = float(self.proxy.decay_epochs) / float(self.proxy.reference_epochs)
            decays = math.floor(t / max(1.0, every * span))
            return self.base_lr * float(self.proxy.decay_rate) ** decays
        return self.base_lr

    def train(
        self,
        report: Callable[[dict[str, Any]], None] | None,
        progress: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        import torch

        r, model = self.result, self.model
        losses = torch.zeros(self.total_steps, device=self.dev)
        checked = 0  # losses[:checked] are known finite
        # host syncs: every step on CPU costs nothing; on CUDA only at reports (and every 50)
        check_every = 50 if self.cuda else 1
        train_seconds, images, compile_seconds = 0.0, 0, 0.0
        model.train()
        tic = time.perf_counter()
        for step in range(self.total_steps):
            lr, loss = self.step(step)
            losses[step] = loss.detach()
            if step == 0 and r.compiled:
                compile_seconds = time.perf_counter() - tic  # the first step compiles
                tic = time.perf_counter()
            else:
                images += self.batch
            done = step + 1
            self.check_deadline(done)
            if done - checked >= check_every or done % self.report_steps == 0 or done == self.total_steps:
                checked = self._check_finite(losses, checked, done)
            if done % self.report_steps == 0 or done == self.total_steps:
                if self.cuda:
                    torch.cuda.synchronize()
                train_seconds += time.perf_counter() - tic
                r.accuracy, r.loss, hits = self.score(self.val_x, self.val_y)
                r.correct = per_image.encode(hits)
                start = ((done - 1) // self.report_steps) * self.report_steps
                if not math.isfinite(r.loss):
                    raise Diverged(f"validation loss became {r.loss} at step {done}")
                metrics = {
                    "epoch": round(done / self.steps_per_epoch, 4),
                    "step": done,
                    "train_loss": float(losses[start:done].mean()),
                    "val_accuracy": r.accuracy,
                    "val_loss": r.loss,
                    "lr": lr,
                    "images_per_second": images / train_seconds if train_seconds > 0 else 0.0,
                }
                r.history.append(metrics)
                r.steps, r.epochs = done, done / self.steps_per_epoch
                r.images_per_second, r.compile_seconds = metrics["images_per_second"], compile_seconds
                if progress is not None:
                    progress({**metrics, "total_steps": self.total_steps, "train_seconds": train_seconds})
                if report is not None:
                    report(dict(metrics))
                tic = time.perf_counter()

    def step(self, step: int) -> tuple[float, torch.Tensor]:
        """Training step `step` (0-based): its batch, learning rate, forward, backward, update.
        -> (lr, the loss as a device tensor: reading it would sync the device)."""
        import torch
        import torch.nn.functional as F

        interrupt.check()  # a SIGTERM whose KeyboardInterrupt was dropped (foundation.interrupt)
        i = step % self.steps_per_epoch
        if i == 0 or self._order is None:
            self._order = torch.randperm(len(self.train_y), generator=self.generator, device=self.dev)
        x, y = self.batch_at(self._order, i)
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.lanes is not None:  # the micro-batches side by side, one thread each
            loss = self.lanes.step(step, x, y, self.micro_batch, self.smoothing)
        else:
            loss = None
            # micro-batches: gradients accumulate to exactly the full batch's mean-loss gradient;
            # only BN sees micro-batch statistics ("ghost" batch norm)
            for xs, ys in zip(x.split(self.micro_batch), y.split(self.micro_batch)):
                if self.amp is not None:
                    with self.amp:
                        logits = self.step_fn(xs)
                else:
                    logits = self.step_fn(xs)
                part = F.cross_entropy(logits.float(), ys, label_smoothing=self.smoothing) * (
                    len(ys) / len(y)
                )
                (part if self.scaler is None else self.scaler.scale(part)).backward()
                loss = part.detach() if loss is None else loss + part.detach()
        if self.scaler is not None:  # fp16: unscale, skip the step on inf/nan, adapt the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._steps_done = step + 1
        self.update_ema(self._steps_done)
        return lr, loss

    def close(self) -> None:
        """Stop the lanes' threads (a later step starts them again)."""
        if self.lanes is not None:
            self.lanes.close()

    def check_deadline(self, done: int, what: str = "trial time limit") -> None:
        """TimeLimit once the wall clock passes the deadline (`proxy.trial_timeout`), `done` steps in."""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            limit, given = f"{time_limit(self.proxy):g}s", str(self.proxy.trial_timeout)
            raise TimeLimit(
                f"exceeded the {what} of {limit}"
                + (f" ({given})" if given != limit else "")
                + f" at step {done} of {self.total_steps}"
            )

    def _check_finite(self, losses: torch.Tensor, start: int, end: int) -> int:
        import torch

        window = losses[start:end]
        bad = ~torch.isfinite(window)
        if bool(bad.any()):
            first = start + int(bad.nonzero()[0, 0])
            raise Diverged(f"training loss became {float(losses[first])} at step {first + 1}")
        return end

    def calibrate_bn(self) -> None:
        """Re-estimate every BN layer's statistics for the current weights ("precise BN").

        In a short run the weights move faster than BN's running averages follow: B0 on digits
        after one epoch scored 10% (chance) with its running statistics and 90% with
        recalibrated ones. So before an evaluation, `proxy.bn_calibration` training images
        (a fixed, evenly spaced subset: no random draw, so evaluating never changes training)
        pass forward with BN in training mode and a cumulative average; dropout and stochastic
        depth stay off. Costs about a third of a training step per batch of images. With the EMA on,
        the evaluated model is the EMA's, so its statistics are the ones re-estimated (for the
        averaged weights); the EMA keeps averaging from them.
        """

        if int(self.proxy.bn_calibration) <= 0 or self._calibrated_at == self._steps_done:
            return
        self._recalibrate(self.eval_model)
        self._calibrated_at = self._steps_done

    def _recalibrate(self, model: torch.nn.Module) -> None:
        """`calibrate_bn`'s pass on `model`: its BN statistics re-estimated in place."""
        import torch

        from training.batchnorm import reestimating

        wanted = int(self.proxy.bn_calibration)
        n = len(self.train_y)
        chunk = min(self.micro_batch, n)
        count = max(chunk, (min(wanted, n) // chunk) * chunk)  # whole chunks: no 1-image batch
        index = torch.linspace(0, n - 1, count, device=self.dev).long()
        model.eval()  # dropout and stochastic depth off; the BN layers train inside
        with reestimating(model), torch.no_grad():
            for part in index.split(chunk):
                x = self.normalize(self.eval_view(self.train_x[part]))
                if self.amp is not None:
                    with self.amp:
                        model(x)
                else:
                    model(x)
        self.model.train()

    def score(self, x_all: torch.Tensor, y_all: torch.Tensor, raw: bool = False) -> tuple[float, float, Any]:
        """(accuracy, mean cross-entropy, per-image correctness as a bool numpy array) of the
        current weights (the EMA's when on: `eval_model`) on the evaluation view of `x_all`; BN
        recalibrated, eval mode.

        `raw=True` with the EMA on scores the trained weights themselves instead (what the EMA is
        measured against): their BN statistics are re-estimated like the EMA's when
        `proxy.bn_calibration` is on and put back afterwards, and scoring draws no random
        numbers, so the training run's bits are the same with or without it."""
        import torch
        import torch.nn.functional as F

        saved = None
        if raw and self.ema is not None:
            model = self.model
            if int(self.proxy.bn_calibration) > 0:
                saved = [b.detach().clone() for b in model.buffers()]
                self._recalibrate(model)
        else:
            self.calibrate_bn()
            model = self.eval_model
        model.eval()
        hits = torch.zeros(len(y_all), dtype=torch.bool, device=self.dev)
        total_loss = torch.zeros((), dtype=torch.float64, device=self.dev)
        size = eval_batch(self.proxy, self.res)
        with torch.inference_mode():
            for start in range(0, len(y_all), size):
                x = self.normalize(self.eval_view(x_all[start : start + size]))
                y = y_all[start : start + size]
                if self.amp is not None:
                    with self.amp:
                        logits = model(x).float()
                else:
                    logits = model(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum").double()
                hits[start : start + size] = logits.argmax(1) == y
        if saved is not None:
            with torch.no_grad():
                for b, value in zip(model.buffers(), saved):
                    b.copy_(value)
        self.model.train()
        n = len(y_all)
        hits_np = hits.cpu().numpy()
        return int(hits_np.sum()) / n, float(total_loss) / n, hits_np


class StoredRows:
    """A split left in its disk store, indexed like the resident tensor it stands for: `x[index]`
    (a tensor of row numbers, or a slice) reads those rows (`training.data.store.row_reader`),
    resizes them to the proxy resolution if the store holds another size, and puts them on the
    training device."""

    def __init__(self, reader: Any, device: torch.device, res: int) -> None:
        self.reader, self.device, self.res = reader, device, res

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: Any) -> torch.Tensor:
        import numpy as np
        import torch

        from training.data import resize_batch

        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        x = torch.from_numpy(self.reader.rows(rows)).to(self.device)
        if x.shape[-1] != self.res or x.shape[-2] != self.res:
            x = resize_batch(x, self.res)
        return x


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX-BF16 (oneDNN's bf16 paths,
    which torch's CPU autocast runs on; without them bf16 is emulated in fp32 and only slower).
    Read from /proc/cpuinfo's flags (Linux); elsewhere torch's own mkldnn probe."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
        return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))
    except OSError:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision_of(precision: str, device: str) -> str:
    """`train.precision` on `device`, resolved (fp32, bf16 or fp16), or ValueError saying why
    not. auto: bf16 on CUDA (what every CUDA proxy run did before the setting), fp32 on CPU. fp16
    needs CUDA (a gradient scaler against underflow; CPU autocast's fp16 has no fast kernels);
    bf16 on CPU needs native support (cpu_has_bf16). The CUDA paths are written to torch's
    autocast / GradScaler API and have not run here (no GPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = device.startswith("cuda")
    if precision == "auto":
        return "bf16" if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError(
            "train.precision=fp16 needs a CUDA device (fp16 with a gradient scaler); on CPU use bf16 "
            "(where the CPU has it) or fp32"
        )
    if precision == "bf16" and not cuda and not cpu_has_bf16():
        raise ValueError(
            "train.precision=bf16: this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16 "
            "in /proc/cpuinfo); use fp32"
        )
    return precision


def proxy_init(model: torch.nn.Module, init: str) -> None:
    """Initialisation changes for short proxy runs (the deployment init is the builder's).

    The builder follows tensorflow/tpu: the classifier ~ U(+-1/sqrt(classes)). With 10 classes
    instead of 1000 that is 10x wider, so the first logits are large and a short run spends its
    budget undoing them (B0 on CIFAR starts near loss 4, not ln 10 = 2.3). `zero_head` zeroes the
    classifier (first loss exactly ln classes); `zero_residual` also zeroes the last BN scale of
    every residual block, so each starts as the identity (Goyal et al. 2017). `default` keeps all.
    """
    import torch

    if init not in INITS:
        raise ValueError(f"unknown proxy.init {init!r}; expected {', '.join(INITS)}")
    if init == "default":
        return
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, torch.nn.Linear):
        torch.nn.init.zeros_(classifier.weight)
        torch.nn.init.zeros_(classifier.bias)
    if init == "zero_residual":
        for block in getattr(model, "blocks", ()):
            if getattr(block, "use_residual", False):
                norms = [m for m in block.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                torch.nn.init.zeros_(norms[-1].weight)


def make_optimizer(model: torch.nn.Module, proxy: ProxyConfig, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or the paper's RMSProp in TensorFlow's form (`RMSpropTF`).

    Weight decay (L2, coupled, as TensorFlow's regulariser) applies to conv and linear weights
    only: BN scales/shifts and biases are not decayed.
    """
    import torch

    name = str(proxy.optimizer)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown proxy.optimizer {name!r}; expected {', '.join(OPTIMIZERS)}")
    wd = float(proxy.weight_decay)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    momentum = float(proxy.momentum)
    if name == "sgd":
        try:  # one fused kernel for all parameters: 1.1 ms per B0 step on 2 CPU threads, foreach 5.4
            return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch without fused SGD on this device
            return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, foreach=True)
    return RMSpropTF(groups, lr=lr, alpha=0.9, momentum=momentum, eps=float(proxy.rmsprop_eps))


def _rmsprop_tf_class() -> type:
    import torch

    class _RMSpropTF(torch.optim.Optimizer):
        """TensorFlow's RMSProp (the paper's optimizer, decay 0.9, momentum 0.9, eps 1e-3).

        It differs from `torch.optim.RMSprop` in three ways that matter at eps=1e-3: eps sits
        inside the square root (lr * g / sqrt(ms + eps)), the mean square starts at 1 rather
        than 0 (no huge first steps), and the learning rate multiplies the momentum update.
        torch's RMSprop(eps=1e-3) would be a different, much less damped, optimizer.
        """

        def __init__(self, params: Any, lr: float, alpha: float, momentum: float, eps: float) -> None:
            super().__init__(params, {"lr": lr, "alpha": alpha, "momentum": momentum, "eps": eps})

        @torch.no_grad()
        def step(self, closure: Any = None) -> None:
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                grads = [p.grad for p in params]
                if group["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                ms, mom = [], []
                for p in params:
                    state = self.state[p]
                    if not state:
                        state["ms"] = torch.ones_like(p)
                        state["mom"] = torch.zeros_like(p)
                    ms.append(state["ms"])
                    mom.append(state["mom"])
                a = group["alpha"]
                torch._foreach_mul_(ms, a)
                torch._foreach_addcmul_(ms, grads, grads, value=1.0 - a)
                denom = torch._foreach_sqrt(torch._foreach_add(ms, group["eps"]))
                torch._foreach_mul_(mom, group["momentum"])
                torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
                torch._foreach_sub_(params, mom)

    return _RMSpropTF


def RMSpropTF(params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    return _rmsprop_tf_class()(params, **kwargs)


# -- torch.compile: when does it pay? ------------------------------------------------------------
# benchmarks/bench_trainer.py --compile (B0, 32 px, stem stride 1, batch 128, 2 threads, on the
# shared 2-core CPU; two runs): compiling the training step took 62-110 s and changed the step
# time by -5% to +7% (inductor keeps oneDNN's convolutions and only fuses the element-wise ops,
# which are not what limits this step). No budget repays that, so on CPU `auto` never compiles.
# CUDA was not measured here (no GPU was lent); its constants are assumptions to be replaced by
# a measurement. The decision uses only the budget and the MAC count, never a timing, so a
# rerun decides the same way.
COMPILE_SECONDS = {"cpu": 110.0, "cuda": 60.0}
COMPILE_GAIN = {"cpu": 0.0, "cuda": 0.3}  # fraction of an eager step saved
EAGER_MACS_PER_SECOND = {"cpu": 4e10, "cuda": 2e12}  # training MACs (3 x forward) per second


def compile_pays_off(proxy_macs: int, images: int, device: str, layers: int = 16) -> bool:
    """Predicted eager seconds x gain > 1.5 x compile seconds. Compile time grows with the number
    of layers (the constants are for B0's 16)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    eager = 3 * proxy_macs * images / EAGER_MACS_PER_SECOND[kind]
    return eager * COMPILE_GAIN[kind] > 1.5 * COMPILE_SECONDS[kind] * max(1, layers) / 16


__all__ = [
    "Diverged",
    "ProxyTrainer",
    "TrialResult",
    "compile_pays_off",
    "evaluate",
    "make_optimizer",
    "resolve_device",
]
