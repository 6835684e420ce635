"""Batched, on-device image transforms for training: random crop with zero padding + flip, resize.

Both work on whole NCHW batches (uint8 or float, CPU or GPU) with no per-image Python loop, so the
augmentation costs a few tensor ops per batch instead of dominating a small proxy network's step.
"""

from __future__ import annotations

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
