"""The official EfficientNet family: B0's block list and the released (width, depth, res,
dropout) table. B1..B7 are B0 plus one row of the table, never separate lists.

Sources: REFERENCE.md (paper Table 1; tensorflow/tpu `efficientnet_builder.py`).
"""

from __future__ import annotations

from search_spaces.arch import Arch, decode_stage

B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

# name: (width, depth, resolution, dropout) -- the released table, not alpha^phi etc.
OFFICIAL_TABLE: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}

# Exact parameter counts at 1000 classes (torchvision/timm), REFERENCE.md.
OFFICIAL_PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}

# fvcore default total (conv + linear + BN + pools) at each model's resolution, REFERENCE.md.
OFFICIAL_FVCORE_GFLOPS = {
    "efficientnet_b0": 0.4017,
    "efficientnet_b1": 0.7127,
    "efficientnet_b2": 1.0266,
    "efficientnet_b3": 1.8839,
    "efficientnet_b4": 4.5125,
    "efficientnet_b5": 10.5051,
    "efficientnet_b6": 19.4721,
    "efficientnet_b7": 38.4494,
}


def efficientnet_b0() -> Arch:
    return Arch(stages=tuple(decode_stage(b) for b in B0_BLOCKS), name="efficientnet_b0")


def official(name: str) -> Arch:
    """The released model `name` (efficientnet_b0 .. efficientnet_b7)."""
    if name not in OFFICIAL_TABLE:
        raise KeyError(f"unknown official model {name!r}; expected one of {', '.join(OFFICIAL_TABLE)}")
    width, depth, res, dropout = OFFICIAL_TABLE[name]
    return efficientnet_b0().scaled(name=name, width=width, depth=depth, resolution=res, dropout=dropout)
