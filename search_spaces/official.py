"""The official EfficientNet family: B0's block list and the released (width, depth, res,
dropout) table. B1..B7 are B0 plus one row of the table, never separate lists. Also the paper's
other baselines (Table 3, Figure 1): MobileNetV1, MobileNetV2 and ResNet-50/101/152, whose
width/depth rules are in conf/arch/<name>.yaml and docs/baselines.md.

Sources: REFERENCE.md (paper Table 1; tensorflow/tpu `efficientnet_builder.py`); torchvision
`mobilenetv2.py` and `resnet.py`; timm `_gen_mobilenet_v1` (Keras `MobileNet` layout).
"""

from __future__ import annotations

from functools import partial

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

# (alpha, beta, gamma) the paper's grid found at phi = 1 (EfficientNet §3.3); the grid, the scaler,
# the study and the report all compare against it.
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)

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


# -- the paper's other baselines ------------------------------------------------------------------
# No residuals in MobileNetV1 (`noskip` on every stage, so depth scaling adds none either).
MOBILENET_V1_BLOCKS = (
    "dsa_r1_k3_s11_i32_o64_noskip_relu",
    "dsa_r2_k3_s22_i64_o128_noskip_relu",
    "dsa_r2_k3_s22_i128_o256_noskip_relu",
    "dsa_r6_k3_s22_i256_o512_noskip_relu",
    "dsa_r2_k3_s22_i512_o1024_noskip_relu",
)
# torchvision's inverted_residual_setting (t, c, n, s) with ReLU6 and no SE.
MOBILENET_V2_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_relu6",
    "r2_k3_s22_e6_i16_o24_relu6",
    "r3_k3_s22_e6_i24_o32_relu6",
    "r4_k3_s22_e6_i32_o64_relu6",
    "r3_k3_s11_e6_i64_o96_relu6",
    "r3_k3_s22_e6_i96_o160_relu6",
    "r1_k3_s11_e6_i160_o320_relu6",
)
RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}


def resnet_blocks(layers: tuple[int, int, int, int]) -> tuple[str, ...]:
    """torchvision's Bottleneck stages (expansion 4, stride on the 3x3: v1.5)."""
    chans = (64, 256, 512, 1024, 2048)
    return tuple(
        f"bneck_r{n}_k3_s{s}{s}_e4_i{chans[i]}_o{chans[i + 1]}_relu"
        for i, (n, s) in enumerate(zip(layers, (1, 2, 2, 2)))
    )


def mobilenet_v1() -> Arch:
    return Arch(
        stages=tuple(decode_stage(b) for b in MOBILENET_V1_BLOCKS),
        name="mobilenet_v1",
        stem=32,
        head=0,
        act="relu",
        dropout=0.0,
        drop_path=0.0,
    )


def mobilenet_v2() -> Arch:
    return Arch(
        stages=tuple(decode_stage(b) for b in MOBILENET_V2_BLOCKS),
        name="mobilenet_v2",
        stem=32,
        head=1280,
        head_min=1280,
        act="relu6",
        dropout=0.2,
        drop_path=0.0,
    )


def resnet(name: str) -> Arch:
    return Arch(
        stages=tuple(decode_stage(b) for b in resnet_blocks(RESNET_LAYERS[name])),
        name=name,
        stem=64,
        head=0,
        stem_kernel=7,
        stem_pool=True,
        act="relu",
        dropout=0.0,
        drop_path=0.0,
    )


BASELINES = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    **{name: partial(resnet, name) for name in RESNET_LAYERS},
}
# Exact parameter counts at 1000 classes: torchvision (mobilenet_v2, resnet50/101/152) and
# Keras MobileNet 1.0 (trainable; its BN running statistics are buffers here).
BASELINE_PARAMS = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# Multiply-adds at 224 px: MobileNetV1 paper Table 8 (569M), torchvision's model docs
# (mobilenet_v2 0.30, resnet50 4.09, resnet101 7.80, resnet152 11.51 GFLOPS).
BASELINE_MACS = {
    "mobilenet_v1": 568.7e6,
    "mobilenet_v2": 300.8e6,
    "resnet50": 4.089e9,
    "resnet101": 7.80e9,
    "resnet152": 11.51e9,
}


def baseline(name: str) -> Arch:
    """One of the paper's other baselines (mobilenet_v1, mobilenet_v2, resnet50/101/152)."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name]()
