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


# -- BatchAugment: the paper recipe's augmentation (kornia) ---------------------------------------
from training.data.augment import BatchAugment, center_crop_batch  # noqa: E402


def ramp(n=32, size=40) -> torch.Tensor:
    """Images whose pixel value is their column (plus a row tilt): a crop shows where it was taken."""
    j = torch.arange(size).view(1, 1, 1, size)
    i = torch.arange(size).view(1, 1, size, 1)
    return (4 * j + i).clamp(0, 255).to(torch.uint8).expand(n, 3, size, size).contiguous()


@pytest.mark.parametrize(
    ("crop", "policy"),
    [("random_resized", "none"), ("random_resized", "randaugment"), ("pad", "autoaugment")],
)
def test_batch_augment_is_seeded_by_the_generator_alone(crop, policy):
    x = ramp(n=16, size=37)
    aug = BatchAugment(32, crop=crop, policy=policy)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # kornia's draws leave the global stream alone
    torch.manual_seed(123)  # another global state: the same output
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), a)
    assert not torch.equal(aug(x, torch.Generator().manual_seed(6)), a)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(aug(x, g), a) and not torch.equal(aug(x, g), a)  # it advances the generator
    size = 32 if crop == "random_resized" else 37
    assert a.shape == (16, 3, size, size) and a.dtype == torch.uint8


def test_pad_crop_without_policy_is_the_proxies_crop_and_flip():
    x = batch(n=32)
    aug = BatchAugment(8, crop="pad", pad=2, flip=True)
    assert torch.equal(
        aug(x, torch.Generator().manual_seed(1)), augment_batch(x, torch.Generator().manual_seed(1), 2)
    )


def test_random_resized_crop_takes_a_different_window_per_image():
    x = ramp(n=64, size=40)
    # the whole image at its own size, unflipped: the identity (up to rounding)
    whole = BatchAugment(40, crop="random_resized", area=(1.0, 1.0), aspect=(1.0, 1.0), flip=False)
    assert (whole(x, torch.Generator().manual_seed(0)).int() - x.int()).abs().max() <= 1
    # mirrored or not, each about half of the time
    flipped = BatchAugment(40, crop="random_resized", area=(1.0, 1.0), aspect=(1.0, 1.0), flip=True)
    y = flipped(x, torch.Generator().manual_seed(0)).int()
    mirrored = (y - x.flip(-1).int()).abs().flatten(1).max(1).values <= 1
    same = (y - x.int()).abs().flatten(1).max(1).values <= 1
    assert (mirrored | same).all() and 10 < int(mirrored.sum()) < 54
    # Inception crops: windows of varying size and place (the ramp's range and offset per image)
    y = BatchAugment(32, crop="random_resized", flip=False)(x, torch.Generator().manual_seed(0)).float()
    left, span = y[:, 0, 0, 0], y[:, 0, 0, -1] - y[:, 0, 0, 0]
    assert len(set(left.tolist())) > 20 and len(set(span.round().tolist())) > 20
    assert float(span.min()) < 0.5 * 4 * 40 < float(span.max())  # small crops and large ones


def test_randaugment_is_drawn_per_image():
    """kornia's own RandAugment applies one draw of operations to the whole batch (identical images
    came out in 1-4 variants, random signs only); BatchAugment draws per image."""
    x = ramp(n=96, size=32)
    y = BatchAugment(32, crop="pad", pad=0, flip=False, policy="randaugment")(
        x, torch.Generator().manual_seed(0)
    )
    assert len({tuple(img.flatten().tolist()) for img in y}) > 20


@pytest.mark.parametrize(("policy", "choices", "rounds"), [("randaugment", 15, 2), ("autoaugment", 25, 1)])
def test_each_image_goes_through_one_choice_per_round(policy, choices, rounds):
    """The dispatch itself: kornia's modules swapped for ones that record which images they got."""
    aug = BatchAugment(32, crop="pad", pad=0, flip=False, policy=policy)
    assert len(aug.choices) == choices and aug.rounds == rounds
    aug.choices = [lambda y, k=k: y * 0 + (k + 1) / 255 for k in range(choices)]  # image -> its choice
    x = ramp(n=200, size=8)
    tags = aug(x, torch.Generator().manual_seed(0))[:, 0, 0, 0].long() - 1
    assert tags.min() >= 0 and len(set(tags.tolist())) > choices // 2  # many choices in one batch
    again = aug(x, torch.Generator().manual_seed(0))[:, 0, 0, 0].long() - 1
    assert torch.equal(tags, again)


def test_center_crop():
    x = batch(n=4, h=37, w=37)
    assert torch.equal(center_crop_batch(x, 32, 0.875), x[..., 2:34, 2:34])  # stored at round(32 / 0.875)
    wide = batch(n=2, h=64, w=64)
    out = center_crop_batch(wide, 32, 0.875)  # resized to 37 first, then cropped
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, resize_batch(wide, 37)[..., 2:34, 2:34])
    with pytest.raises(ValueError, match="fraction"):
        center_crop_batch(x, 32, 0.0)


def test_batch_augment_bad_input():
    with pytest.raises(ValueError, match="crop"):
        BatchAugment(32, crop="inception")
    with pytest.raises(ValueError, match="policy"):
        BatchAugment(32, policy="trivialaugment")
    with pytest.raises(ValueError, match="NCHW"):
        BatchAugment(32, crop="random_resized")(torch.zeros(3, 32, 32, dtype=torch.uint8), torch.Generator())
