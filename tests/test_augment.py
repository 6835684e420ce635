"""augment_batch and resize_batch: shapes, dtypes, determinism, and that each output image really is a
shifted (zero-filled) and possibly mirrored copy of its input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.data import augment_batch, resize_batch


def batch(n=16, c=3, h=8, w=8, dtype=torch.uint8) -> torch.Tensor:
    x = torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(0))  # no zeros
    return x.to(dtype)


def candidates(image: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every crop of the zero-padded image, mirrored or not: what augment_batch may return."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [(dy, dx, False, crop), (dy, dx, True, crop.flip(-1))]
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_image_is_a_padded_crop_maybe_mirrored(dtype):
    x = batch(dtype=dtype)
    y = augment_batch(x, torch.Generator().manual_seed(1), pad=2)
    assert y.shape == x.shape and y.dtype == dtype
    seen = set()
    for image, out in zip(x, y):
        match = [(dy, dx, m) for dy, dx, m, c in candidates(image, 2) if torch.equal(c, out)]
        assert match, "output is not a crop of the zero-padded input"
        seen.add(match[0])
    assert len(seen) > 4  # offsets and flips vary across the batch
    assert any(m for _, _, m in seen) and not all(m for _, _, m in seen)


def test_deterministic_given_the_generator():
    x = batch(n=64)
    a = augment_batch(x, torch.Generator().manual_seed(7))
    b = augment_batch(x, torch.Generator().manual_seed(7))
    c = augment_batch(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)  # it changes images
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(augment_batch(x, g), augment_batch(x, g))  # and advances the generator


def test_flip_only_and_identity():
    x = batch(n=64)
    y = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    assert torch.equal(augment_batch(x, torch.Generator(), pad=0, flip=False), x)
    shifted = augment_batch(x, torch.Generator().manual_seed(0), pad=4, flip=False)
    assert (shifted == 0).any()  # zero padding shows at the borders


def test_channels_last_and_bad_input():
    x = batch(n=4, h=6, w=10).float().contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(augment_batch(x, g), augment_batch(x.contiguous(), torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="NCHW"):
        augment_batch(x[0], g)
    with pytest.raises(ValueError, match="pad"):
        augment_batch(x, g, pad=-1)


def test_resize():
    x = batch(n=4, h=32, w=32)
    assert resize_batch(x, 32) is x
    up = resize_batch(x, 48)
    assert up.shape == (4, 3, 48, 48) and up.dtype == torch.uint8
    down = resize_batch(x.float(), 16)
    expected = F.interpolate(x.float(), size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert down.dtype == torch.float32 and torch.allclose(down, expected)
    flat = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    assert (resize_batch(flat, 20) == 200).all() and (resize_batch(flat, 40) == 200).all()
    with pytest.raises(ValueError, match="positive"):
        resize_batch(x, 0)
