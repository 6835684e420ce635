"""Random architectures over every block token: the cost model's and builder's stress input.

Unlike the MnasNet space (`search_spaces.mnasnet`), nothing here is tied to a skeleton: op,
kernel, stride, expand, SE ratio, skip, channels and repeats are all drawn independently.
"""

from __future__ import annotations

import random

from search_spaces.arch import Arch, StageSpec


def random_arch(rng: random.Random, max_stages: int = 7, max_channels: int = 96) -> Arch:
    n = rng.randint(1, max_stages)
    stem = rng.choice(range(8, 49, 8))
    stages, in_ch = [], stem
    for _ in range(n):
        op = rng.choice(("mbconv", "ds", "conv"))
        out_ch = rng.randint(4, max_channels)
        stages.append(
            StageSpec(
                repeats=rng.randint(1, 3),
                kernel=rng.choice((1, 3, 5, 7)),
                stride=rng.choice((1, 2)),
                expand=rng.choice((1, 3, 4, 6)) if op == "mbconv" else 1,
                in_ch=in_ch,
                out_ch=out_ch,
                se=rng.choice((0.0, 0.25, 0.5)),
                skip=rng.random() < 0.7,
                op=op,
            )
        )
        in_ch = out_ch
    return Arch(
        stages=tuple(stages),
        name=f"random{rng.randint(0, 10**6)}",
        stem=stem,
        head=rng.choice((64, 128, 320, 1280)),
        width=rng.choice((0.5, 0.75, 1.0, 1.1, 1.4)),
        depth=rng.choice((0.5, 1.0, 1.2, 2.0)),
        resolution=rng.choice((32, 64, 96, 128, 224, 227)),
        dropout=rng.choice((0.0, 0.2)),
        drop_path=rng.choice((0.0, 0.2)),
    )
