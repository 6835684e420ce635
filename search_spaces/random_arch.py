"""Random architectures over every block token: the cost model's and builder's stress input.

Unlike the MnasNet space (`search_spaces.mnasnet`), nothing here is tied to a skeleton: op,
kernel, stride, expand, SE ratio, skip, activation, channels and repeats are all drawn
independently, and so are the stem (kernel, stride, max pool), the head (none, or a width with
or without a floor) and the multipliers.
"""

from __future__ import annotations

import random

from search_spaces.arch import ACTIVATIONS, OPS, Arch, StageSpec


def random_arch(rng: random.Random, max_stages: int = 7, max_channels: int = 96) -> Arch:
    n = rng.randint(1, max_stages)
    stem = rng.choice(range(8, 49, 8))
    stages, in_ch = [], stem
    for _ in range(n):
        op = rng.choice(OPS)
        expand = {"mbconv": rng.choice((1, 3, 4, 6)), "bneck": rng.choice((1, 2, 4))}.get(op, 1)
        unit = expand if op == "bneck" else 1  # a bottleneck's output is a multiple of e
        out_ch = unit * rng.randint(max(1, 4 // unit), max_channels // unit)
        stages.append(
            StageSpec(
                repeats=rng.randint(1, 3),
                kernel=rng.choice((1, 3, 5, 7)),
                stride=rng.choice((1, 2)),
                expand=expand,
                in_ch=in_ch,
                out_ch=out_ch,
                se=0.0 if op == "bneck" else rng.choice((0.0, 0.25, 0.5)),
                skip=rng.random() < 0.7,
                op=op,
                act=rng.choice(ACTIVATIONS),
            )
        )
        in_ch = out_ch
    head = rng.choice((0, 64, 128, 320, 1280))
    return Arch(
        stages=tuple(stages),
        name=f"random{rng.randint(0, 10**6)}",
        stem=stem,
        head=head,
        width=rng.choice((0.5, 0.75, 1.0, 1.1, 1.4)),
        depth=rng.choice((0.5, 1.0, 1.2, 2.0)),
        resolution=rng.choice((32, 64, 96, 128, 224, 227)),
        dropout=rng.choice((0.0, 0.2)),
        drop_path=rng.choice((0.0, 0.2)),
        stem_kernel=rng.choice((3, 5, 7)),
        stem_stride=rng.choice((1, 2)),
        stem_pool=rng.random() < 0.3,
        act=rng.choice(ACTIVATIONS),
        head_min=head if head and rng.random() < 0.3 else 0,
    )
