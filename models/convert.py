"""`effnas convert`: torchvision's and timm's state_dicts in and out of effnas's layout.

    effnas convert efficientnet_b3.pth --model torchvision:efficientnet_b3     # -> a run directory
    effnas convert tf_b3.safetensors --model timm:tf_efficientnet_b3
    effnas convert results/convert/<run> --to timm --model tf_efficientnet_b3  # and back

Into effnas (`--to effnas`, the default) the run directory holds `arch.yaml` (the model's arch with
what its weights need: `padding: same` and `bn_eps: 0.001` for timm's `tf_` weights, `bn_eps:
1.0e-05` for PyTorch-trained ones; search_spaces.arch.Arch) and `model.pt` (a plain state_dict in
effnas's layout, what `effnas train` writes), so `effnas export --weights RUN`, `effnas latency
RUN/arch.yaml` and the Python API take it as they take a train run. Out of effnas (`--to
torchvision|timm`) it holds `<model>.pt` (or `.safetensors`) in the library's layout; the input is
a convert or train run directory or a state_dict file in effnas's layout.

The mapping is one table of names per layer (`key_pairs`), walked over the same layer plan the
builder builds, so it holds for every width, depth and class count: B0..B7, MobileNetV2 and
ResNet-50/101/152. Tensors are moved, never cast or copied through a model: the round trip is
bit-exact. Every key and shape is checked before anything is written; the first key that does
not fit is the error's one line. Layouts: torchvision 0.29 `efficientnet.py`, `mobilenetv2.py`,
`resnet.py`; timm 1.0 `_efficientnet_blocks.py` (DepthwiseSeparableConv, InvertedResidual).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from foundation.errors import UserError
from foundation.runfiles import atomic_write

LIBRARIES = ("torchvision", "timm")
TARGETS = ("effnas", *LIBRARIES)
FORMATS = ("pt", "safetensors")
_B = tuple(f"efficientnet_b{i}" for i in range(8))
MODELS: dict[str, tuple[str, ...]] = {
    "torchvision": (*_B, "mobilenet_v2", "resnet50", "resnet101", "resnet152"),
    "timm": (*_B, *(f"tf_{n}" for n in _B)),
}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
TORCH_EPS = 1e-5  # nn.BatchNorm2d's default: torchvision's and timm's own (non-`tf_`) weights
TF_EPS = 1e-3  # tensorflow/tpu's, kept by timm's `tf_` ports (BN_EPS_TF_DEFAULT)


@dataclass
class ConvertConfig:
    """Schema of `conf/convert.yaml` (values and their meaning there; `run` is added by the stage
    registry)."""

    files: list[str] = field(default_factory=list)
    model: str = MISSING
    to: str = MISSING
    format: str = MISSING


# -- the models and their layouts -----------------------------------------------------------------
def parse_model(text: str, to: str) -> tuple[str, str]:
    """(library, model) of `--model LIB:NAME` (or `NAME` with `--to LIB`)."""
    library, _, name = str(text or "").rpartition(":")
    if to in LIBRARIES:
        if library and library != to:
            raise UserError(f"--model {text} is a {library} model but --to is {to}")
        library = to
    if library not in LIBRARIES:
        raise UserError(
            f"--model {text!r}: expected LIBRARY:NAME with LIBRARY one of {', '.join(LIBRARIES)} "
            "(e.g. torchvision:efficientnet_b3, timm:tf_efficientnet_b3)"
        )
    if name not in MODELS[library]:
        raise UserError(
            f"--model {text}: unknown {library} model {name!r}; known: {', '.join(MODELS[library])}"
        )
    return library, name


def library_arch(library: str, name: str) -> Any:
    """The effnas `Arch` that computes what `library`'s `name` computes (padding and BN eps too)."""
    from search_spaces.official import baseline, official

    if name.startswith("tf_"):  # the paper's TensorFlow weights: "SAME" padding, TF's epsilon
        return official(name[3:]).scaled(name=name, padding="same", bn_eps=TF_EPS)
    if name.startswith("efficientnet_"):
        return official(name).scaled(bn_eps=TORCH_EPS)
    return baseline(name).scaled(bn_eps=TORCH_EPS)


def key_pairs(arch: Any, library: str, name: str) -> list[tuple[str, str]]:
    """(library key, effnas key) of every state_dict entry of `library`'s `name` built as `arch`,
    in the library's order."""
    from search_spaces.plan import layer_plan

    _, layers, head = layer_plan(arch)
    pairs: list[tuple[str, str]] = []

    def conv_bn(lib_conv: str, lib_bn: str, ours: str) -> None:
        pairs.append((f"{lib_conv}.weight", f"{ours}.0.weight"))
        pairs.extend((f"{lib_bn}.{k}", f"{ours}.1.{k}") for k in BN_KEYS)

    def dense(lib: str, ours: str) -> None:
        pairs.extend((f"{lib}.{k}", f"{ours}.{k}") for k in ("weight", "bias"))

    resnet, mbv2, tv = name.startswith("resnet"), name == "mobilenet_v2", library == "torchvision"
    conv_bn(
        *(("conv1", "bn1") if resnet else ("features.0.0", "features.0.1") if tv else ("conv_stem", "bn1")),
        "stem",
    )
    within: dict[int, int] = {}
    for j, layer in enumerate(layers):
        i = within[layer.stage] = within.get(layer.stage, -1) + 1  # index within its stage
        ours = f"blocks.{j}"
        if resnet:  # torchvision Bottleneck: conv1/bn1 .. conv3/bn3, downsample.0/.1
            lib = f"layer{layer.stage + 1}.{i}"
            for m in range(3):
                conv_bn(f"{lib}.conv{m + 1}", f"{lib}.bn{m + 1}", f"{ours}.body.{m}")
            if layer.stride != 1 or layer.in_ch != layer.out_ch:
                conv_bn(f"{lib}.downsample.0", f"{lib}.downsample.1", f"{ours}.shortcut")
            continue
        # MBConv's body, in effnas's (and every library's) order
        parts = ["expand"] * (layer.expand != 1) + ["dw"] + ["se"] * (layer.se > 0) + ["project"]
        ir = layer.expand != 1  # timm: InvertedResidual; else DepthwiseSeparableConv
        timm_names = {
            "expand": ("conv_pw", "bn1"),
            "dw": ("conv_dw", "bn2" if ir else "bn1"),
            "project": ("conv_pwl", "bn3") if ir else ("conv_pw", "bn2"),
        }
        for m, part in enumerate(parts):
            body = f"{ours}.body.{m}"
            if library == "timm":
                lib = f"blocks.{layer.stage}.{i}"
                if part == "se":
                    dense(f"{lib}.se.conv_reduce", f"{body}.reduce")
                    dense(f"{lib}.se.conv_expand", f"{body}.expand")
                else:
                    conv, bn = timm_names[part]
                    conv_bn(f"{lib}.{conv}", f"{lib}.{bn}", body)
            elif mbv2:  # features.N.conv: [ConvBNReLU expand], ConvBNReLU dw, conv, bn
                lib = f"features.{j + 1}.conv"
                if part == "project":
                    conv_bn(f"{lib}.{m}", f"{lib}.{m + 1}", body)
                else:
                    conv_bn(f"{lib}.{m}.0", f"{lib}.{m}.1", body)
            else:  # torchvision MBConv: block.M (Conv2dNormActivation or SqueezeExcitation)
                lib = f"features.{layer.stage + 1}.{i}.block.{m}"
                if part == "se":
                    dense(f"{lib}.fc1", f"{body}.reduce")
                    dense(f"{lib}.fc2", f"{body}.expand")
                else:
                    conv_bn(f"{lib}.0", f"{lib}.1", body)
    if head:
        last = f"features.{(len(layers) if mbv2 else len(arch.stages)) + 1}"
        conv_bn(*((f"{last}.0", f"{last}.1") if tv else ("conv_head", "bn2")), "head")
    dense("fc" if resnet else "classifier.1" if tv else "classifier", "classifier")
    return pairs


def expected_shapes(arch: Any, num_classes: int) -> dict[str, tuple[int, ...]]:
    """effnas's state_dict shapes of `arch`, built on the meta device (no memory, no init)."""
    import torch

    from search_spaces.builder import build_model

    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# -- reading and writing state_dicts --------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, Any]:
    """A `.pt`/`.pth` (torch.load, weights_only) or `.safetensors` file as {name: tensor}."""
    import torch

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception:  # header, length and dtype errors alike
            raise UserError(f"{path}: not a safetensors file (truncated or another format)") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # zip, pickle and unpickler errors alike
            raise UserError(
                f"{path}: not a state_dict file that torch.load(weights_only=True) reads (truncated?)"
            ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"{path}: not a state_dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
    return dict(state)


def effnas_input(value: str) -> Path:
    """The effnas-layout state_dict behind `--to LIB`'s input: a file, or a convert or train run
    directory's model.pt."""
    from foundation.runfiles import stage_of

    path = Path(value)
    if path.is_dir():
        stage = stage_of(path)
        if stage not in ("convert", "train"):
            what = f"a {stage} run" if stage else "not an effnas run directory"
            raise UserError(f"{path}: {what}, expected a convert or train run (or a state_dict file)")
        if not (path / "model.pt").is_file():
            raise UserError(f"{path}: the {stage} run has no model.pt")
        return path / "model.pt"
    return path


def fit(
    state: dict[str, Any],
    order: list[str],
    shapes: dict[str, tuple[int, ...]],
    where: str,
    model: str,
) -> None:
    """Every key of `order` in `state` with its shape in `shapes`, and nothing else; else one line
    naming the first key that does not fit."""
    for key in order:
        if key not in state:
            raise UserError(f"{where}: missing key {key} (not a {model} state_dict?)")
        got, want = tuple(state[key].shape), shapes[key]
        if got != want:
            raise UserError(f"{where}: {key} has shape {list(got)}, {model} needs {list(want)}")
    known = set(order)
    extra = [k for k in state if k not in known]
    if extra:
        raise UserError(
            f"{where}: unexpected key {extra[0]} ({len(extra)} in all; not a {model} state_dict?)"
        )


@dataclass(frozen=True)
class Conversion:
    """A checked conversion, ready to write."""

    library: str
    name: str
    to: str
    source: Path
    arch: Any  # search_spaces.arch.Arch
    num_classes: int
    state: dict[str, Any]  # the output, in the output's layout and order


def prepare(cfg: Any) -> Conversion:
    """Read, map and check; bad input is a UserError and nothing is written."""
    to = str(cfg.to)
    if to not in TARGETS:
        raise UserError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if str(cfg.format) not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    files = list(cfg.files or [])
    if len(files) != 1:
        raise UserError(
            f"give one state_dict file (or, with --to {'|'.join(LIBRARIES)}, a run), got {len(files)}"
        )
    library, name = parse_model(cfg.model, to)
    model = f"{library}:{name}"
    arch = library_arch(library, name)
    source = Path(files[0]) if to == "effnas" else effnas_input(files[0])
    state = read_state_dict(source)
    pairs = key_pairs(arch, library, name)
    lib_keys, our_keys = [p[0] for p in pairs], [p[1] for p in pairs]
    order = lib_keys if to == "effnas" else our_keys
    absent = next((k for k in order if k not in state), None)  # the first, in the input's order
    if absent is not None:
        raise UserError(f"{source}: missing key {absent} (not a {model} state_dict?)")
    head_key = order[-2]  # the classifier's weight: its rows are the class count
    rows = state[head_key]
    if rows.dim() != 2:
        raise UserError(f"{source}: {head_key} has shape {list(rows.shape)}, {model} needs 2 dimensions")
    num_classes = int(rows.shape[0])
    shapes = expected_shapes(arch, num_classes)
    if set(shapes) != set(our_keys):  # the table and the builder disagree: a bug, not bad input
        raise RuntimeError(
            f"key_pairs({name}) does not cover effnas's state_dict: {set(shapes) ^ set(our_keys)}"
        )
    if to == "effnas":
        fit(state, lib_keys, {lk: shapes[ek] for lk, ek in pairs}, str(source), model)
        ours = dict(zip(our_keys, lib_keys))
        out = {k: state[ours[k]] for k in shapes}  # effnas's own order
    else:
        fit(state, our_keys, shapes, str(source), f"effnas {name}")
        out = {lk: state[ek] for lk, ek in pairs}
    return Conversion(library, name, to, source, arch, num_classes, out)


def state_dict_bytes(state: dict[str, Any], fmt: str) -> bytes:
    """`state` as the bytes of a `.pt` (torch.save) or `.safetensors` file."""
    import torch

    if fmt == "safetensors":
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in state.items()})
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


# -- the stage ------------------------------------------------------------------------------------
def validate(cfg: Any) -> None:
    """Every check before a run directory exists (the file is read twice: small beside a run)."""
    prepare(cfg)


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    conv = prepare(cfg)
    model = f"{conv.library}:{conv.name}"
    if conv.to == "effnas":
        arch = conv.arch.scaled(meta={"converted_from": model})
        atomic_write(rundir.file("arch.yaml"), arch.to_yaml().encode())
        out = rundir.file("model.pt")
        atomic_write(out, state_dict_bytes(conv.state, "pt"))
    else:
        out = rundir.file(f"{conv.name}.{cfg.format}")
        atomic_write(out, state_dict_bytes(conv.state, str(cfg.format)))
        if conv.source.parent != Path("."):
            from foundation.runfiles import stage_of

            stage = stage_of(conv.source.parent)
            if stage:
                rundir.record_upstream(conv.source.parent, stage, f"weights {conv.source.name}")
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(int(v.numel()) for k, v in conv.state.items() if not k.endswith(buffers))
    print(
        f"effnas convert: {conv.source} ({'effnas' if conv.to != 'effnas' else model} layout) -> "
        f"{out.name} ({conv.to} layout): {len(conv.state)} tensors, {params:,} parameters, "
        f"{conv.num_classes} classes, padding {conv.arch.padding}, BN eps {conv.arch.bn_eps:g}",
        file=sys.stderr,
    )
    return {
        "model": model,
        "to": conv.to,
        "source": str(conv.source.resolve()),
        "file": out.name,
        "arch": conv.arch.name,
        "num_classes": conv.num_classes,
        "resolution": conv.arch.resolution,
        "padding": conv.arch.padding,
        "bn_eps": conv.arch.bn_eps,
        "tensors": len(conv.state),
        "params": params,
    }
