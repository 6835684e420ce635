"""Batched, on-device image transforms for training: random crop with zero padding + flip, resize,
center crop, and `BatchAugment`, the training batch's whole augmentation (the paper recipe's
random-resized crop, RandAugment and AutoAugment through kornia).

All work on whole NCHW batches (uint8 or float, CPU or GPU) with no per-image Python loop, so the
augmentation costs a few tensor ops per batch instead of dominating a small proxy network's step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Each image shifted by up to `pad` pixels each way (a random crop of the zero-padded image, as in
    the CIFAR ResNet recipe) and, with `flip`, mirrored left-right with probability 1/2.

    Randomness comes only from `generator` (on any device), so the same generator state gives the
    same batch. Returns a new tensor of `x`'s shape, dtype and device.
    """
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects an NCHW batch, got shape {list(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = x.shape
    draw = {"generator": generator, "device": generator.device}
    shift = torch.randint(0, 2 * pad + 1, (2, n), **draw).to(x.device)
    mirror = torch.randint(0, 2, (n,), **draw).to(x.device).bool() if flip else None

    # One gather from the padded batch: output pixel (i, j) of image k reads padded pixel
    # (shift_y[k] + i, shift_x[k] + j), or (shift_x[k] + w-1-j) when the image is mirrored.
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x.contiguous()
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = shift[0, :, None] + torch.arange(h, device=x.device)  # [n, h]
    j = torch.arange(w, device=x.device)
    cols = shift[1, :, None] + (torch.where(mirror[:, None], w - 1 - j, j) if flip else j)  # [n, w]
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, index).reshape(n, c, h, w)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """An NCHW batch resized to `size` x `size`: bilinear, antialiased when shrinking; `x` itself when
    it already has that size. uint8 in gives uint8 out (rounded), float gives float."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if x.ndim != 4:
        raise ValueError(f"resize_batch expects an NCHW batch, got shape {list(x.shape)}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrinking = size < x.shape[-2] or size < x.shape[-1]
    y = F.interpolate(
        x if x.is_floating_point() else x.float(),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=shrinking,  # without it, shrinking aliases: it samples instead of averaging
    )
    if x.is_floating_point():
        return y
    info = torch.iinfo(x.dtype)
    return y.round_().clamp_(info.min, info.max).to(x.dtype)


def center_crop_batch(x: torch.Tensor, size: int, fraction: float) -> torch.Tensor:
    """The evaluation view of the random-resized-crop recipe: the batch resized to
    round(size / fraction) (a no-op when stored at that size), then its central `size` x `size`
    (tensorflow/tpu preprocessing `_decode_and_center_crop`, crop_padding 32 at 224: 0.875)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be within (0, 1], got {fraction}")
    x = resize_batch(x, round(size / fraction))
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


class BatchAugment:
    """A training batch's augmentation, in the reference order (tensorflow/tpu
    `preprocess_for_train`): crop, flip, then the policy.

    - `crop="pad"`: `augment_batch`'s shift crop of the zero-padded image (the images keep their
      size; with `policy="none"` exactly the proxies' crop + flip, same bits);
    - `crop="random_resized"`: Inception's crop (`area` fraction of the image, width / height in
      `aspect`, 10 tries then the whole image) resized to `size`, kornia's RandomResizedCrop;
    - `policy="randaugment"`: `n` rounds, each image drawing one of kornia's RandAugment
      operations (with replacement, as tensorflow/tpu's `distort_image_with_randaugment`) at
      magnitude `m` on timm's 0-10 scale (kornia's is 0-30: x3); `"autoaugment"`: each image one
      sub-policy of the AutoAugment paper's ImageNet policy (kornia's `imagenet`), each operation
      applied with its probability. kornia's own policies draw one choice for the whole batch; here
      the choice is per image (the batch sorted by choice, one kornia call per group).

    Randomness: every draw comes from `generator` (the trainer's data generator, checkpointed);
    kornia draws from torch's global generator, so each call seeds it from `generator` inside
    `torch.random.fork_rng`, leaving the global stream (dropout, stochastic depth) untouched.
    uint8 in, uint8 out, `size` x `size`.
    """

    def __init__(
        self,
        size: int,
        *,
        crop: str = "pad",
        pad: int = 4,
        flip: bool = True,
        area: Sequence[float] = (0.08, 1.0),
        aspect: Sequence[float] = (3 / 4, 4 / 3),
        policy: str = "none",
        n: int = 2,
        m: float = 9,
    ) -> None:
        if crop not in ("pad", "random_resized"):
            raise ValueError(f"crop must be pad or random_resized, got {crop!r}")
        if policy not in ("none", "randaugment", "autoaugment"):
            raise ValueError(f"policy must be none, randaugment or autoaugment, got {policy!r}")
        self.size, self.crop, self.pad, self.flip, self.policy = size, crop, pad, flip, policy
        self.resized_crop: Any = None
        self.choices: list[Any] = []  # the policy's alternatives, one kornia module each
        self.rounds = 0
        self.device = torch.device("cpu")
        if crop == "random_resized":
            import kornia.augmentation as K

            self.resized_crop = K.RandomResizedCrop(
                (size, size),
                scale=(float(area[0]), float(area[1])),
                ratio=(float(aspect[0]), float(aspect[1])),
                cropping_mode="resample",  # one batched warp, not a loop over the images
            )
        if policy == "randaugment":
            from kornia.augmentation.auto import RandAugment
            from kornia.augmentation.auto.rand_augment.rand_augment import default_policy

            self.choices = [RandAugment(n=1, m=3 * float(m), policy=[op]) for op in default_policy]  # type: ignore[arg-type]
            self.rounds = n
        elif policy == "autoaugment":
            from kornia.augmentation.auto import AutoAugment
            from kornia.augmentation.auto.autoaugment.autoaugment import imagenet_policy

            self.choices = [AutoAugment(policy=[sub]) for sub in imagenet_policy]
            self.rounds = 1

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment expects an NCHW batch, got shape {list(x.shape)}")
        if self.crop == "pad" and not self.choices:
            return augment_batch(x, generator, pad=self.pad, flip=self.flip)
        if self.crop == "pad":
            x = augment_batch(x, generator, pad=self.pad, flip=self.flip)
        self._move_to(x.device)
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        with _seeded_global_rng(seed, x.device):
            y = x.float().div_(255.0)
            if self.crop == "random_resized":
                y = self.resized_crop(y)
                if self.flip:
                    y = augment_batch(y, generator, pad=0, flip=True)
            for _ in range(self.rounds):
                y = self._per_image(y, generator)
        return y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)

    def _move_to(self, device: torch.device) -> None:
        if device != self.device:  # kornia's modules hold their ranges and probabilities as tensors
            for module in [self.resized_crop, *self.choices]:
                if module is not None:
                    module.to(device)
            self.device = device

    def _per_image(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image through one of `self.choices`, drawn uniformly from `generator`."""
        n = len(y)
        draw = torch.randint(0, len(self.choices), (n,), generator=generator, device=generator.device)
        draw = draw.to(y.device)
        order = draw.argsort(stable=True)
        counts = torch.bincount(draw, minlength=len(self.choices)).tolist()  # one host sync
        out = torch.empty_like(y)
        for choice, rows in zip(self.choices, order.split(counts)):
            if len(rows):
                out[rows] = choice(y[rows])
        return out


@contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generators (CPU, and `device`'s under CUDA) seeded with `seed` inside, restored
    after: kornia samples its parameters from them and takes no generator."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
