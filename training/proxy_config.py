"""The proxy contract: the one typed config every stage and `ProxyTrainer` read, its checks, and
the budget arithmetic (steps, reports, warm-up) derived from it.

The schema's values come from `conf/proxy/*.yaml` (`default.yaml` holds every default, once);
`ProxyConfig` only says which keys exist and their types. `check` runs for every stage that has
a proxy before anything starts (the CLI), so a bad value fails at once, not in every trial.
No torch: the CLI composes and checks configs without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from foundation.errors import UserError

OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("cosine", "exponential", "constant")
COMPILE_MODES = ("auto", "on", "off")
INITS = ("zero_head", "zero_residual", "default")
CROPS = ("pad", "random_resized")  # training/data/augment.py
AUGMENT_POLICIES = ("none", "randaugment", "autoaugment")


@dataclass
class ProxyConfig:
    """The proxy task (training/proxy.py): one short training run per trial. See docs/proxy.md;
    what each key means is commented in `conf/proxy/default.yaml`."""

    epochs: float = MISSING
    images: Optional[int] = MISSING
    batch_size: int = MISSING
    micro_batch: int = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    rmsprop_eps: float = MISSING
    weight_decay: float = MISSING
    label_smoothing: float = MISSING
    schedule: str = MISSING
    warmup_epochs: float = MISSING
    decay_rate: float = MISSING
    decay_epochs: float = MISSING
    reference_epochs: float = MISSING
    bn_momentum: Optional[float] = MISSING
    init: str = MISSING
    resolution: int = MISSING
    stem_stride: int = MISSING
    num_classes: Optional[int] = MISSING
    channels_last: bool = MISSING
    compile: str = MISSING
    cpu_kernels: bool = MISSING
    parallel_micro_batches: bool = MISSING
    augment: bool = MISSING
    crop: str = MISSING
    crop_pad: int = MISSING
    crop_area: list[float] = MISSING
    crop_aspect: list[float] = MISSING
    crop_fraction: float = MISSING
    flip: bool = MISSING
    augment_policy: str = MISSING
    randaugment_n: int = MISSING
    randaugment_m: float = MISSING
    ema_decay: Optional[float] = MISSING
    eval_batch_size: int = MISSING
    bn_calibration: int = MISSING
    report_every: float = MISSING
    trial_timeout: Optional[str] = MISSING  # a duration (90s, 10m, 2h) or null: no limit


def as_proxy(node: Any) -> ProxyConfig:
    """A typed `ProxyConfig` from a composed config node, a plain mapping or itself; a missing
    key or a wrong type is a UserError (checks of the values: `check`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(node, ProxyConfig):
        return node
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ProxyConfig), node)
        missing = sorted(k for k in merged if OmegaConf.is_missing(merged, k))
        if missing:
            raise UserError(f"proxy config lacks {', '.join(missing)} (conf/proxy/default.yaml has them all)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"proxy: {str(exc).splitlines()[0]}") from None


def check(proxy: ProxyConfig) -> None:
    """Every value within its rule; the first violation is one UserError line."""
    p = proxy
    for key, allowed in (
        ("optimizer", OPTIMIZERS),
        ("schedule", SCHEDULES),
        ("compile", COMPILE_MODES),
        ("init", INITS),
        ("crop", CROPS),
        ("augment_policy", AUGMENT_POLICIES),
    ):
        if str(getattr(p, key)) not in allowed:
            raise UserError(f"proxy.{key} must be one of {', '.join(allowed)}, got {getattr(p, key)!r}")
    rules: list[tuple[bool, str, Any]] = [
        (p.images is not None or p.epochs > 0, "proxy.epochs must be > 0 (or set proxy.images)", p.epochs),
        (p.images is None or p.images >= 1, "proxy.images must be >= 1 or null", p.images),
        (p.batch_size >= 1, "proxy.batch_size must be >= 1", p.batch_size),
        (p.micro_batch >= 0, "proxy.micro_batch must be >= 0 (0 = whole batch)", p.micro_batch),
        (p.lr > 0, "proxy.lr must be > 0", p.lr),
        (0 <= p.momentum < 1, "proxy.momentum must be within [0, 1)", p.momentum),
        (p.rmsprop_eps > 0, "proxy.rmsprop_eps must be > 0", p.rmsprop_eps),
        (p.weight_decay >= 0, "proxy.weight_decay must be >= 0", p.weight_decay),
        (0 <= p.label_smoothing < 1, "proxy.label_smoothing must be within [0, 1)", p.label_smoothing),
        (p.warmup_epochs >= 0, "proxy.warmup_epochs must be >= 0", p.warmup_epochs),
        (0 < p.decay_rate <= 1, "proxy.decay_rate must be within (0, 1]", p.decay_rate),
        (p.decay_epochs > 0, "proxy.decay_epochs must be > 0", p.decay_epochs),
        (p.reference_epochs > 0, "proxy.reference_epochs must be > 0", p.reference_epochs),
        (
            p.bn_momentum is None or 0 < p.bn_momentum <= 1,
            "proxy.bn_momentum must be within (0, 1] or null",
            p.bn_momentum,
        ),
        (p.resolution >= 8, "proxy.resolution must be >= 8", p.resolution),
        (p.stem_stride in (1, 2), "proxy.stem_stride must be 1 or 2", p.stem_stride),
        (
            p.num_classes is None or p.num_classes >= 1,
            "proxy.num_classes must be >= 1 or null",
            p.num_classes,
        ),
        (p.crop_pad >= 0, "proxy.crop_pad must be >= 0", p.crop_pad),
        (
            _range(p.crop_area, 0, 1),
            "proxy.crop_area must be [low, high] with 0 < low <= high <= 1",
            p.crop_area,
        ),
        (
            _range(p.crop_aspect, 0, None),
            "proxy.crop_aspect must be [low, high] with 0 < low <= high",
            p.crop_aspect,
        ),
        (0 < p.crop_fraction <= 1, "proxy.crop_fraction must be within (0, 1]", p.crop_fraction),
        (p.randaugment_n >= 1, "proxy.randaugment_n must be >= 1", p.randaugment_n),
        (
            0 < p.randaugment_m < 10,
            "proxy.randaugment_m must be within (0, 10) (timm's scale)",
            p.randaugment_m,
        ),
        (
            p.ema_decay is None or 0 < p.ema_decay < 1,
            "proxy.ema_decay must be within (0, 1) or null (no EMA)",
            p.ema_decay,
        ),
        (p.eval_batch_size >= 1, "proxy.eval_batch_size must be >= 1", p.eval_batch_size),
        (p.bn_calibration >= 0, "proxy.bn_calibration must be >= 0 (0 = off)", p.bn_calibration),
        (p.report_every >= 0, "proxy.report_every must be >= 0 (0 = only at the end)", p.report_every),
    ]
    for ok, rule, value in rules:
        if not ok:
            raise UserError(f"{rule}, got {value}")
    if str(p.augment_policy) != "none" and not p.augment:
        raise UserError(
            f"proxy.augment_policy={p.augment_policy} augments training batches, but proxy.augment=false "
            "turns augmentation off: set proxy.augment=true or proxy.augment_policy=none"
        )
    if p.trial_timeout is not None:
        try:
            time_limit(p)
        except UserError as exc:
            raise UserError(f"proxy.trial_timeout: {exc}") from None


def _range(pair: Any, low: float, high: float | None) -> bool:
    """[a, b] with low < a <= b (<= high when given)."""
    if len(pair) != 2:
        return False
    a, b = float(pair[0]), float(pair[1])
    return low < a <= b and (high is None or b <= high)


def storage_size(proxy: ProxyConfig, resolution: int | None = None) -> int:
    """The image size the trainer keeps the training images at for `resolution` (default
    `proxy.resolution`): the resolution itself, or resolution / crop_fraction with the random-
    resized crop, so that crop and the evaluation's center crop have pixels to take (224 -> 256)."""
    res = int(resolution or proxy.resolution)
    return round(res / float(proxy.crop_fraction)) if str(proxy.crop) == "random_resized" else res


# `proxy.eval_batch_size` is set for 32 px CIFAR-sized maps (stem stride 1: 32x32 after the stem).
# Inference keeps a few feature maps of one layer alive, so its memory grows with images x the
# stem's output area: 256 images of B0 at 160 px (stem stride 2, 80x80 maps, a 96-channel
# expansion is 630 MB) peaked at 3.8 GB RSS in `benchmarks/bench_store.py --memory --image-size
# 160` (training batch 4: the evaluation, not the store, set the peak). The batch shrinks so that
# images x area stays at the 32 px value; at <= 32x32 maps it is `eval_batch_size` unchanged
# (batching does not change what is scored; every 32 px run keeps its batches).
EVAL_REFERENCE_AREA = 32 * 32


def eval_batch(proxy: ProxyConfig, resolution: int | None = None) -> int:
    """Images per evaluation batch at `resolution` (default `proxy.resolution`): eval_batch_size
    scaled down by the stem's output area over 32x32, at least 1."""
    res = int(resolution or proxy.resolution)
    side = -(-res // max(1, int(proxy.stem_stride)))  # the stem's output side (padding "same")
    area = side * side
    size = int(proxy.eval_batch_size)
    return size if area <= EVAL_REFERENCE_AREA else max(1, size * EVAL_REFERENCE_AREA // area)


def time_limit(proxy: ProxyConfig) -> float | None:
    """`proxy.trial_timeout` in seconds (None: no limit): wall time one proxy run may take."""
    from foundation.units import parse_duration

    return None if proxy.trial_timeout is None else parse_duration(proxy.trial_timeout)


def checked(node: Any) -> ProxyConfig:
    """`as_proxy` then `check`: what every consumer of a proxy config calls."""
    proxy = as_proxy(node)
    check(proxy)
    return proxy


@dataclass(frozen=True)
class Budget:
    """A proxy run's length in optimizer steps, on `n_train` training images."""

    batch: int  # images per step (the configured batch, capped at the training split)
    steps_per_epoch: int  # full batches per epoch (drop_last: static shapes for compile and BN)
    total_steps: int
    report_steps: int  # steps between intermediate reports
    warmup_steps: int

    @property
    def total_epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @property
    def reports(self) -> int:
        """Reports a whole run sends: the intermediate ones plus the final result (ASHA's max_t:
        a scheduler must not stop a trial at its last intermediate report)."""
        return math.ceil(self.total_steps / self.report_steps) + 1


def budget(proxy: ProxyConfig, n_train: int) -> Budget:
    """`proxy.images` (when set) or `proxy.epochs` of `n_train` images, in steps."""
    batch = max(1, min(int(proxy.batch_size), int(n_train)))
    per_epoch = max(1, int(n_train) // batch)
    if proxy.images is not None:
        total = max(1, math.ceil(int(proxy.images) / batch))
    else:
        total = max(1, round(float(proxy.epochs) * per_epoch))
    every = float(proxy.report_every)
    report = max(1, round(every * per_epoch)) if every > 0 else total
    warmup = min(total - 1, round(float(proxy.warmup_epochs) * per_epoch))
    return Budget(batch, per_epoch, total, report, warmup)


def load_proxy(name: str = "default", **overrides: Any) -> ProxyConfig:
    """`conf/proxy/<name>.yaml` (with the group options it extends), then `overrides`: the
    proxy a Python caller (a benchmark, a notebook) gets without composing a stage."""
    from foundation.conf_dir import load_option

    try:
        values = load_option("proxy", name)
    except LookupError as exc:
        raise UserError(f"no proxy config {name!r}: {exc}") from None
    return checked({**values, **overrides})
