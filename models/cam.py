"""`effnas cam`: class activation maps of trained runs side by side (paper Figure 7), and how
faithful each map is, as a number.

    effnas cam results/train/<b0> results/train/<b1> results/train/<b2> --data 8
    effnas cam results/train/<b0> cat.png dogs/dog1.png        # files: a folder named as a class is the truth

Writes `cam.png` (a row per image: the image with its true class, then per run and method the
map over the image with the predicted class and its probability), `faithfulness.csv` (a row per
run and method), `images.csv` (a row per image, run and method) and the summary.

The maps, on the last conv of any arch effnas builds (`forward_features`: the head conv's
output, or the last stage's where there is no head conv), which feeds global average pooling and
one linear layer:
- CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", eq. 2):
  M_c(x, y) = sum_k w_ck f_k(x, y), w_c the classifier's row of the predicted class c.
- Grad-CAM (Selvaraju et al. 2017, eq. 1-2): alpha_k = mean_xy d y_c / d f_k(x, y),
  M = ReLU(sum_k alpha_k f_k). Under a pooled linear head d y_c / d f_k(x, y) = w_ck / (h w),
  so Grad-CAM = ReLU(CAM) / (h w): the summary records the largest difference per run, the check
  pytorch-grad-cam's users rely on without seeing.
Maps are upsampled (bilinear) to the input the run trained at.

Faithfulness: the deletion and insertion curves of Petsiuk et al. 2018 ("RISE", BMVC, §4.1):
pixels are removed (set to the dataset's mean colour) or inserted (into a blurred copy of the
image, Gaussian sigma = resolution / 8) most relevant first, in `steps` equal steps, and the
softmax probability of the class predicted on the intact image is measured after each; a curve's
area (trapezoid over the removed fraction) is its score. A faithful map deletes with a low area
and inserts with a high one. The same curves for a random pixel order (seeded by run.seed) are
the reference: `deletion_gain` = random deletion area - map deletion area (> 0: the map beats
chance), with a 95% interval over the images (mean +- 1.96 sd / sqrt(n), normal approximation;
under 3 images: not estimable). ROAD (Rong et al. 2022; models/road.py, `road: true`, the
default) imputes removed pixels from their neighbours instead of blanking them, to keep the input
in distribution, and compares most- with least-relevant-first removal: `road_gain`.

pytorch-grad-cam (`grad-cam`) would do the maps, but it imports torchvision at import time and
its install pulls a CUDA torch; the methods are a few lines each.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundation.errors import UserError

METHODS = ("cam", "gradcam")
TITLES = {"cam": "CAM", "gradcam": "Grad-CAM"}
DEFAULT_IMAGES = 8  # --data when neither it nor files are given
SHOWN = 12  # rows of the figure at most; every image is scored
REFERENCES = {
    "cam": "Zhou et al. 2016, Learning Deep Features for Discriminative Localization (CVPR), eq. 2",
    "gradcam": "Selvaraju et al. 2017, Grad-CAM (ICCV), eq. 1-2",
    "faithfulness": "deletion / insertion areas, Petsiuk et al. 2018, RISE (BMVC) §4.1",
    "road": "ROAD, Rong et al. 2022, A Consistent and Efficient Evaluation Strategy for Attribution Methods (ICML) §4",
}


@dataclass
class CamConfig:
    """Schema of `conf/cam.yaml` (values and their meaning there; `run` is added by the stage
    registry)."""

    inputs: list[str] = field(default_factory=list)
    sample: Optional[int] = MISSING
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    steps: int = MISSING
    road: bool = MISSING


@dataclass(frozen=True)
class Inputs:
    runs: list[Path]
    images: list[Path]
    sample: int  # 0 with image files


# -- input checks (before a run directory exists) -------------------------------------------------
def inputs(cfg: Any) -> Inputs:
    """The train runs and image files of `cfg.inputs`, checked; bad input is one line."""
    from foundation.runfiles import stage_of

    runs, images = [], []
    for value in cfg.inputs or []:
        path = Path(str(value))
        if path.is_dir():
            stage = stage_of(path)
            if stage != "train":
                what = f"a {stage} run" if stage else "not an effnas run directory"
                raise UserError(
                    f"{path}: {what}; cam needs a train run (its weights and the data they trained on)"
                )
            runs.append(path)
        elif path.is_file():
            images.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    if not runs:
        raise UserError(
            "give at least one train run directory (effnas cam RUN_DIR [RUN_DIR...] [images] [--data N])"
        )
    methods = [str(m) for m in cfg.methods]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"methods must be a non-empty subset of {', '.join(METHODS)}, got {methods}")
    if int(cfg.steps) < 2:
        raise UserError(f"steps (points of the deletion / insertion curves) must be >= 2, got {cfg.steps}")
    sample = cfg.sample
    if sample is not None and int(sample) < 1:
        raise UserError(f"--data must be >= 1 (images of the validation split), got {sample}")
    if sample is not None and images:
        raise UserError("give image files or --data N, not both")
    return Inputs(runs, images, 0 if images else int(sample or DEFAULT_IMAGES))


@dataclass(frozen=True)
class Trained:
    """One train run as cam reads it."""

    path: Path
    weights: Path
    config: Any  # the recorded config (OmegaConf)
    dataset: dict[str, Any]  # the manifest's dataset record
    label: str


def trained_run(path: Path) -> Trained:
    from omegaconf import OmegaConf

    from foundation.runfiles import read_json
    from training.weights import weight_source

    weights, run, _ = weight_source(path, "cam")  # finished, has model.pt and a recorded config
    assert weights is not None and run is not None
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    dataset = read_json(run / "manifest.json").get("dataset") or {}
    if not dataset.get("fingerprint"):
        raise UserError(f"{run}: the manifest records no dataset: not a run cam can read")
    return Trained(run, weights, config, dataset, str(config.arch.name))


def read_image(path: Path, size: int) -> Any:
    """An RGB image file of `size` x `size` pixels as a uint8 CHW array."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            pixels = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"{path}: not an image file Pillow can read") from None
    if mode != "RGB":
        raise UserError(
            f"{path}: an image of mode {mode} ({len(mode)} channel(s)); the runs trained on RGB "
            "images (3 channels): convert it first"
        )
    if (w, h) != (size, size):
        raise UserError(
            f"{path}: {w}x{h} pixels; the runs' images are {size}x{size} (their data.image_size): "
            "resize it first"
        )
    return pixels.transpose(2, 0, 1).copy()


def prepare(cfg: Any) -> tuple[Inputs, list[Trained], Any]:
    """Inputs, runs and (for files) the images, every check done."""
    import numpy as np

    from models.convert import read_state_dict

    given = inputs(cfg)
    runs = [trained_run(p) for p in given.runs]
    for r in runs:  # a truncated or foreign file fails here, before a run directory exists
        read_state_dict(r.weights)
    sizes = {int(r.dataset.get("image_size") or 0) for r in runs}
    if given.sample:
        prints = {r.dataset["fingerprint"] for r in runs}
        if len(prints) > 1:
            raise UserError(
                "--data: the runs trained on different data (dataset fingerprints "
                f"{', '.join(sorted(p[:12] for p in prints))}); give image files instead"
            )
        val = int(runs[0].dataset.get("val") or 0)
        if given.sample > val:
            raise UserError(f"--data {given.sample}: the validation split has {val} images")
        return given, runs, None
    if len(sizes) > 1:
        raise UserError(
            f"the runs' images are of different sizes ({sorted(sizes)} px): give runs of one dataset"
        )
    size = sizes.pop()
    return given, runs, np.stack([read_image(p, size) for p in given.images])


def validate(cfg: Any) -> None:
    prepare(cfg)


# -- the maps -------------------------------------------------------------------------------------
def class_maps(model: Any, x: Any) -> dict[str, Any]:
    """CAM and Grad-CAM of the predicted class for a normalised batch `x` (eval mode), at the
    last conv's resolution, with the logits: {"logits", "cam", "gradcam"}."""
    import torch

    features = model.forward_features(x)
    if not features.requires_grad:
        features.requires_grad_(True)
    logits = model.classifier(model.dropout(model.pool(features).flatten(1)))
    pred = logits.argmax(1)
    (grads,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), features)
    weights = model.classifier.weight[pred]  # (N, C): w_c of each image's predicted class
    cam = torch.einsum("nc,nchw->nhw", weights, features)
    gradcam = torch.relu(torch.einsum("nc,nchw->nhw", grads.mean((2, 3)), features))
    return {"logits": logits.detach(), "cam": cam.detach(), "gradcam": gradcam.detach()}


def upsample(maps: Any, size: int) -> Any:
    import torch.nn.functional as F

    return F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def for_display(maps: Any) -> Any:
    """Each map scaled to [0, 1] (min to max; a constant map is all zero)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)


def blurred(x: Any, sigma: float) -> Any:
    """A separable Gaussian blur of an NCHW batch (edges replicated)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def curves(model: Any, x: Any, order: Any, target: Any, steps: int, batch: int = 256) -> dict[str, Any]:
    """Deletion and insertion curves (see the module docstring): `order` (N, H*W) lists each
    image's pixels most relevant first. -> {"deletion", "insertion"}: (N, steps + 1) probabilities
    of `target` with 0, 1/steps, ..., 1 of the pixels removed / inserted."""
    import torch

    n, _, h, w = x.shape
    pixels = h * w
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand(n, -1))
    counts = torch.tensor([round(i * pixels / steps) for i in range(steps + 1)], device=x.device)
    masks = (rank[:, None, :] < counts[None, :, None]).view(n, steps + 1, 1, h, w)  # True: moved
    canvas = blurred(x, max(0.5, h / 8))
    out = {}
    for name, moved, kept in (
        ("deletion", torch.zeros_like(x), x),  # 0 after normalisation: the dataset's mean colour
        ("insertion", x, canvas),
    ):
        batch_x = torch.where(masks, moved[:, None], kept[:, None]).flatten(0, 1)
        probs = []
        with torch.no_grad():
            for part in batch_x.split(batch):
                probs.append(torch.softmax(model(part).float(), 1))
        p = torch.cat(probs).view(n, steps + 1, -1)
        out[name] = p.gather(2, target[:, None, None].expand(n, steps + 1, 1))[..., 0]
    return out


def area(curve: Any) -> Any:
    """Trapezoid area under (N, K + 1) curves over [0, 1]."""
    k = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * k)


def interval(values: Any) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the 95% normal-approximation interval of the mean; None under 3 values."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 3:
        return mean, None, None
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half


# -- one run --------------------------------------------------------------------------------------
@dataclass
class RunMaps:
    label: str
    run: Path
    arch: str
    resolution: int
    shown: Any  # uint8 images at the run's resolution (N, 3, r, r)
    probs: Any  # (N, classes)
    pred: Any  # (N,)
    maps: dict[str, Any]  # method -> (N, r, r), scaled to [0, 1]
    scores: dict[str, dict[str, Any]]  # method and "random" -> {"deletion": (N,), "insertion": (N,)}
    agreement: float  # max |Grad-CAM - ReLU(CAM) / (h w)| relative to max |Grad-CAM|
    classes: tuple[str, ...]


def run_maps(
    trained: Trained,
    images: Any | None,
    sample: int,
    methods: list[str],
    steps: int,
    seed: int,
    device: str,
    road: bool = False,
) -> tuple[RunMaps, Any, Any]:
    """The maps and curves of one run. -> (RunMaps, the uint8 images at their stored size, their
    labels or None)."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from models.convert import read_state_dict
    from search_spaces.arch_config import arch_from_cfg
    from training.data import load_dataset, resize_batch
    from training.proxy import ProxyTrainer
    from training.proxy_config import eval_batch
    from training.weights import load_into

    cfg = trained.config
    arch = arch_from_cfg(cfg.arch)
    data = load_dataset(cfg.data)
    if data.fingerprint != trained.dataset["fingerprint"]:
        raise UserError(
            f"{trained.path}: its data changed since it trained (dataset fingerprint "
            f"{trained.dataset['fingerprint'][:12]} then, {data.fingerprint[:12]} now)"
        )
    # the trainer's own preprocessing (resize, per-channel statistics) and model, stock layers
    proxy = OmegaConf.merge(
        cfg.proxy, {"compile": "off", "cpu_kernels": False, "parallel_micro_batches": False}
    )
    with torch.random.fork_rng():
        trainer = ProxyTrainer(arch, proxy, data, seed=seed, device=device)
    model = trainer.model
    load_into(model, read_state_dict(trained.weights), f"{trained.weights} do not fit {arch.name}")
    model.eval()
    labels = None
    if images is None:
        pick = np.sort(np.random.default_rng(seed).choice(len(data.val), sample, replace=False))
        images, labels = data.val.x[pick], data.val.y[pick]
    raw = torch.from_numpy(np.ascontiguousarray(images)).to(trainer.dev)
    res = trainer.result.resolution
    shown = resize_batch(raw, res)
    x = trainer.normalize(shown)
    out = class_maps(model, x)
    probs = torch.softmax(out["logits"].float(), 1)
    pred = probs.argmax(1)
    h, w = out["cam"].shape[-2:]
    expected = torch.relu(out["cam"]) / (h * w)
    agreement = float((out["gradcam"] - expected).abs().max() / out["gradcam"].abs().max().clamp_min(1e-12))
    maps, scores = {}, {}
    g = torch.Generator(device="cpu").manual_seed(seed)
    orders = {
        "random": torch.stack([torch.randperm(res * res, generator=g) for _ in range(len(x))]).to(x.device)
    }
    for method in methods:
        up = upsample(out[method], res)
        maps[method] = for_display(up).cpu()
        orders[method] = torch.sort(up.flatten(1), dim=1, descending=True, stable=True).indices
    batch = eval_batch(trainer.proxy, trainer.res)
    for name, order in orders.items():
        c = curves(model, x, order, pred, steps, batch)
        scores[name] = {k: area(v).cpu().numpy() for k, v in c.items()}
    if road:  # imputed removal (models/road.py), the maps' orders only: a random one's gain is 0 by symmetry
        from models import road as road_rule

        def predict(batch_x: Any) -> Any:
            with torch.no_grad():
                parts = [
                    torch.softmax(model(torch.from_numpy(part).to(x.device)).float(), 1).cpu()
                    for part in np.array_split(batch_x, max(1, math.ceil(len(batch_x) / batch)))
                ]
            return torch.cat(parts).numpy()

        normalised, target = x.cpu().numpy(), pred.cpu().numpy()
        for method in methods:
            r = road_rule.road_curves(predict, normalised, orders[method].cpu().numpy(), target, seed)
            scores[method].update(road_morf=r["morf_score"], road_lerf=r["lerf_score"], road_gain=r["gain"])
    trainer.close()
    result = RunMaps(
        trained.label,
        trained.path,
        arch.name,
        res,
        shown.cpu(),
        probs.cpu(),
        pred.cpu(),
        maps,
        scores,
        agreement,
        tuple(data.classes),
    )
    return result, images, labels


# -- the figure -----------------------------------------------------------------------------------
def figure(results: list[RunMaps], images: Any, truth: list[str | None], methods: list[str]) -> Any:
    """Rows: images (at most SHOWN); columns: the image and its true class, then each run's
    maps over the image it saw, titled with the predicted class and its probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(len(truth), SHOWN)
    cols = 1 + len(results) * len(methods)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows), squeeze=False)
    for i in range(rows):
        ax = axes[i][0]
        ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"true: {truth[i] if truth[i] is not None else '?'}", fontsize=8)
        col = 1
        for r in results:
            k = int(r.pred[i])
            name = r.classes[k] if k < len(r.classes) else str(k)
            color = "black" if truth[i] is None else ("green" if name == truth[i] else "red")
            for method in methods:
                ax = axes[i][col]
                ax.imshow(r.shown[i].numpy().transpose(1, 2, 0), interpolation="nearest")
                ax.imshow(r.maps[method][i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                head = f"{r.label} {TITLES[method]}\n" if i == 0 else ""
                ax.set_title(f"{head}pred: {name} {float(r.probs[i, k]):.2f}", fontsize=8, color=color)
                col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# -- the stage ------------------------------------------------------------------------------------
def labels_of(runs: list[RunMaps]) -> None:
    """Runs of the same arch get their directory's name in their label."""
    names = [r.label for r in runs]
    for r in runs:
        if names.count(r.label) > 1:
            r.label = f"{r.label} ({r.run.name})"


def run(cfg: Any, rundir: Any) -> dict[str, Any]:
    import torch

    from training.proxy import resolve_device

    given, runs, files = prepare(cfg)
    methods = [str(m) for m in cfg.methods]
    steps, seed = int(cfg.steps), int(cfg.run.seed)
    if int(cfg.run.threads) > 0:
        torch.set_num_threads(int(cfg.run.threads))
    try:
        device = resolve_device(str(cfg.run.device))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    rundir.record(device=device)
    results, images, truth = [], files, None
    for trained in runs:
        rundir.record_upstream(trained.path, "train", f"weights {trained.weights.name}")
        maps, used, labels = run_maps(
            trained, files, given.sample, methods, steps, seed, device, bool(cfg.get("road", False))
        )
        results.append(maps)
        if images is None:
            images = used
        if truth is None:
            classes = maps.classes
            if labels is not None:
                truth = [classes[int(y)] for y in labels]
            else:  # a file in a folder named as a class (ImageFolder's layout): that class
                truth = [p.parent.name if p.parent.name in classes else None for p in given.images]
        print(f"effnas cam: {maps.label}: {len(truth)} images, resolution {maps.resolution}", file=sys.stderr)
    labels_of(results)
    fig = figure(results, images, truth, methods)
    rundir.save_figure("cam.png", fig)
    import matplotlib.pyplot as plt

    plt.close(fig)

    names = [str(p) for p in given.images] or [f"val[{i}]" for i in range(len(truth))]
    per_image, table, summary_runs = [], [], []
    for r in results:
        correct = [None if t is None else r.classes[int(k)] == t for k, t in zip(r.pred, truth)]
        known = [c for c in correct if c is not None]
        entry = {
            "run": str(r.run),
            "label": r.label,
            "arch": r.arch,
            "resolution": r.resolution,
            "accuracy": sum(known) / len(known) if known else None,
            "cam_gradcam_max_difference": r.agreement,
            "methods": {},
        }
        rand = r.scores["random"]
        for method in methods:
            s = r.scores[method]
            deletion, insertion = interval(s["deletion"]), interval(s["insertion"])
            gain = interval(rand["deletion"] - s["deletion"])
            row = {
                "run": str(r.run),
                "label": r.label,
                "arch": r.arch,
                "method": method,
                "images": len(truth),
                "deletion_auc": deletion[0],
                "insertion_auc": insertion[0],
                "random_deletion_auc": float(rand["deletion"].mean()),
                "random_insertion_auc": float(rand["insertion"].mean()),
                "deletion_gain": gain[0],
                "deletion_gain_low": gain[1],
                "deletion_gain_high": gain[2],
                "insertion_gain": float((s["insertion"] - rand["insertion"]).mean()),
            }
            if "road_gain" in s:
                road = interval(s["road_gain"])
                row.update(
                    road_morf=float(s["road_morf"].mean()),
                    road_lerf=float(s["road_lerf"].mean()),
                    road_gain=road[0],
                    road_gain_low=road[1],
                    road_gain_high=road[2],
                )
            table.append(row)
            entry["methods"][method] = {
                k: v for k, v in row.items() if k not in ("run", "label", "arch", "method")
            }
            for i in range(len(truth)):
                k = int(r.pred[i])
                per_image.append(
                    {
                        "image": names[i],
                        "true": truth[i],
                        "run": r.label,
                        "method": method,
                        "predicted": r.classes[k] if k < len(r.classes) else k,
                        "probability": round(float(r.probs[i, k]), 6),
                        "deletion_auc": round(float(s["deletion"][i]), 6),
                        "insertion_auc": round(float(s["insertion"][i]), 6),
                        "random_deletion_auc": round(float(rand["deletion"][i]), 6),
                        "random_insertion_auc": round(float(rand["insertion"][i]), 6),
                        **{
                            k: round(float(s[k][i]), 6)
                            for k in ("road_morf", "road_lerf", "road_gain")
                            if k in s
                        },
                    }
                )
        summary_runs.append(entry)
        best = ", ".join(
            f"{TITLES[m]} deletion {entry['methods'][m]['deletion_auc']:.3f} "
            f"(random {entry['methods'][m]['random_deletion_auc']:.3f})"
            + (
                f", ROAD gain {entry['methods'][m]['road_gain']:+.3f}"
                if "road_gain" in entry["methods"][m]
                else ""
            )
            for m in methods
        )
        print(f"effnas cam: {r.label}: {best}", file=sys.stderr)
    rundir.write_csv("faithfulness.csv", table)
    rundir.write_csv("images.csv", per_image)
    print(f"effnas cam: cam.png, faithfulness.csv -> {rundir.path}", file=sys.stderr)
    return {
        "runs": summary_runs,
        "images": len(truth),
        "source": "files" if given.images else f"validation split, {len(truth)} drawn with run.seed={seed}",
        "methods": methods,
        "steps": steps,
        "faithfulness": (
            "deletion / insertion: area under the probability of the predicted class as pixels are "
            "set to the mean colour / inserted into a blurred copy, most relevant first (Petsiuk et "
            "al. 2018); deletion_gain: random order's deletion area minus the map's, 95% normal "
            "interval over images"
        ),
        "road": (
            "ROAD (Rong et al. 2022): pixels removed at 10%..90% and imputed from their neighbours "
            "(noisy linear imputation), most relevant first (road_morf) and least relevant first "
            "(road_lerf), each the mean probability of the predicted class over the fractions; "
            "road_gain = road_lerf - road_morf, 95% normal interval over images"
            if bool(cfg.get("road", False))
            else None
        ),
        "references": REFERENCES,
        "figure": "cam.png",
    }
