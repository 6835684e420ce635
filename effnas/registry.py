"""The stage registry: every stage declared once, and everything the application derives from it.

A stage is one module (`run(cfg, rundir[, execute])`, optional `validate(cfg)`) plus one row here:
its name, module, config schema (beside the stage), the config groups a user picks from
`conf/<group>/`, a help line and its flags. The CLI's subcommands, flags and `--help`, the schema
Hydra composes against (`effnas.config.full_schema`) and the run lifecycle all read this table;
adding a stage is a module and a row. Stages that run proxy trials (`trials=True`) get the `ray` settings in their config and an
executor (Ray Tune, or in-process) from the application. Imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    """A CLI flag that sets one config key (`--target-flops 400M` -> `target_flops=400M`)."""

    name: str  # "--target-flops"
    key: str  # the config key it sets
    help: str
    kind: str = (
        "text"  # text | int | positive_int | flops | duration | latency | choice | switch | list | mapping
    )
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    also: tuple[str, ...] = ()  # overrides the flag implies (`--target-latency` -> target_flops=null)


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # the stage's code
    schema: str  # "module:Class", the stage's own config schema (beside its code)
    groups: tuple[str, ...]  # config groups picked from conf/<group>/ (arch, data, proxy, ...)
    help: str
    flags: tuple[Flag, ...] = ()
    trials: bool = False  # runs proxy trials: `ray` settings and an executor
    # trains one model on Ray Train's data-parallel workers when asked (train.workers > 1): the
    # `ray` settings and a launcher (adapters.raytrain)
    data_parallel: bool = False
    resume: bool = False  # `--resume RUN_DIR` continues an interrupted run
    writes_run: bool = True  # False: prints only (describe)
    runs_stages: bool = False  # runs other stages (the pipeline): gets effnas.lifecycle.LIFECYCLE
    subcommands: tuple[str, ...] = ()  # `effnas study scaling`: the first positional, config key `kind`
    positionals: str | None = None  # the list key bare arguments fill (`effnas report RUN_DIR...`)
    # (prefix, list key): an override whose key starts with the prefix is kept as text in that
    # list key instead of set (`effnas pipeline search.trials=4` -> search: [trials=4]); a prefix
    # ending in "." is cut off, another is kept (`data=cifar10` -> shared: [data=cifar10])
    routes: tuple[tuple[str, str], ...] = ()
    notes: str = ""  # more of `effnas <stage> --help`'s description

    @property
    def all_flags(self) -> tuple[Flag, ...]:
        """The stage's own flags and those every stage has."""
        return (*self.flags, SEED)

    def schema_class(self) -> type:
        module, _, name = self.schema.partition(":")
        return getattr(importlib.import_module(module), name)

    def load(self) -> Any:
        return importlib.import_module(self.module)


SEED = Flag("--seed", "run.seed", "run.seed", "int")
_FROM_SEARCH = Flag("--from", "upstream", "a search run: its best_arch.yaml", metavar="RUN_DIR")
_FROM_GRID = Flag("--from", "upstream", "a grid run: its coefficients.yaml", metavar="RUN_DIR")

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "search",
            "nas.stage",
            "nas.config:SearchConfig",
            ("data", "proxy", "sampler", "space", "evaluator"),
            "NAS for the baseline: sample, train on the proxy, score ACC*(MACs/T)^w",
            flags=(
                Flag(
                    "--target-flops", "target_flops", "T: MACs at 224x224, 1000 classes (e.g. 400M)", "flops"
                ),
                Flag(
                    "--target-latency",
                    "target_latency",
                    "T as latency instead: 15ms, or 15ms@onnxruntime (runtime torch|onnxruntime; needs "
                    "--latency-predictor or --latency-table)",
                    "latency",
                    also=("target_flops=null",),
                ),
                Flag("--latency-table", "latency_table", "a latency table of this machine", metavar="PATH"),
                Flag(
                    "--latency-predictor",
                    "latency_predictor",
                    "a learned latency predictor (effnas latency --fit-predictor)",
                    metavar="PATH",
                ),
                Flag("--trials", "trials", "number of architectures to try", "positive_int"),
                Flag("--time-budget", "time_budget", "stop starting trials after this (30m, 2h)", "duration"),
                Flag(
                    "--sampler", "sampler", "random | tpe | nsga2 | evolution | controller | local | bananas"
                ),
            ),
            trials=True,
            resume=True,
        ),
        Stage(
            "grid",
            "scaling.grid",
            "scaling.config:GridConfig",
            ("arch", "data", "proxy"),
            "grid over (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ 2, on the proxy",
            flags=(
                Flag("--phi", "phi", "compound coefficient of the grid (default 1)"),
                _FROM_SEARCH,
                Flag(
                    "--seeds",
                    "seeds",
                    "train each candidate N times (seeds run.seed .. run.seed+N-1)",
                    "positive_int",
                ),
            ),
            trials=True,
            resume=True,
        ),
        Stage(
            "scale",
            "scaling.scaler",
            "scaling.config:ScaleConfig",
            ("arch",),
            "emit B1..B7 configs with their params and MACs",
            flags=(
                Flag("--phi", "phi", "3, 1..7 or 1,3,5"),
                _FROM_GRID,
                Flag("--mode", "mode", "formula | official | flops-matched"),
            ),
        ),
        Stage(
            "train",
            "models.train",
            "models.train:TrainConfig",
            ("arch", "data", "proxy"),
            "train one architecture with the proxy trainer (checkpointed: --resume continues it; "
            "--init fine-tunes)",
            flags=(
                Flag(
                    "--init",
                    "train.init",
                    "start from a train or convert run's weights or a state_dict file (fine-tuning)",
                    metavar="RUN_DIR_OR_FILE",
                ),
            ),
            resume=True,
            data_parallel=True,
            notes="""\
Data-parallel (docs/train.md): train.workers=N trains on N Ray Train workers (DDP), proxy.batch_size
each (global batch N x it, the learning rate scaled with it); ray.address=auto joins a cluster.
Fine-tuning (docs/train.md): --init RUN_DIR|FILE loads a train or convert run's model.pt, or a
.pt/.pth/.safetensors state_dict in effnas's layout, into the arch trained here (it must be the
same network; a convert run's is RUN/arch.yaml). Another class count gets a new classifier.
  train.body_lr_scale=0.1        the body learns at 0.1x the classifier's learning rate
  train.freeze_epochs=1          for the first epoch: the body's parameters and BN statistics
  train.freeze=body|bn           stay as loaded (body), or only the BN statistics (bn)
  train.new_classifier=true      a new classifier at the same class count (another task)""",
        ),
        Stage(
            "study",
            "effnas.studies",
            "effnas.studies:StudyConfig",
            ("arch", "data", "proxy"),
            "trained studies: `scaling`, compound vs one dimension at equal MACs (paper Tables 3/7, "
            "Figs 3/8); `search`, the searched arch vs random ones of its MACs and the base",
            flags=(
                Flag("--flops", "flops", "MACs levels as multiples of the baseline's: 2x or 2x,4x"),
                Flag(
                    "--from",
                    "upstream",
                    "a search run (its best arch; `search`: also its space and reward) or a grid run",
                    metavar="RUN_DIR",
                ),
                Flag(
                    "--random",
                    "random",
                    "search: random archs of the searched one's MACs (default 4)",
                    "positive_int",
                ),
                Flag(
                    "--methods", "methods", "baseline,depth,width,resolution,compound,dwr (a subset)", "list"
                ),
                Flag(
                    "--seeds",
                    "seeds",
                    "train each arm this many times (default 3; under 3 no spread, no winner)",
                    "positive_int",
                ),
                Flag(
                    "--budgets",
                    "budgets",
                    "proxy epochs, e.g. 5,15: does the ranking hold? (default: scaling 4, search 16)",
                    "list",
                ),
                Flag("--sweep", "sweep", "width | depth | resolution alone at --multipliers (Figure 3)"),
                Flag("--multipliers", "multipliers", "the sweep's multipliers, e.g. 1,1.4,1.8,2.6", "list"),
            ),
            trials=True,
            resume=True,
            subcommands=("scaling", "search"),
        ),
        Stage(
            "latency",
            "deploy.latency",
            "deploy.latency:LatencyConfig",
            ("arch", "space"),
            "measured inference latency (paper Table 4 protocol), a latency table for this machine",
            flags=(
                Flag("--compare", "compare", "models to time side by side (names or YAML files)", "list"),
                Flag("--accuracy", "accuracy", "top-1 to show per model: NAME=VALUE,...", "mapping"),
                Flag("--batch", "batch", "images per forward pass (default 1)", "positive_int"),
                Flag("--threads", "threads", "intra-op threads (default 1)", "positive_int"),
                Flag("--runs", "runs", "timed runs (default 20)", "positive_int"),
                Flag("--runtime", "runtime", "torch | onnxruntime", "choice", ("torch", "onnxruntime")),
                Flag("--device", "run.device", "cpu | cuda", "choice", ("cpu", "cuda")),
                Flag("--build-table", "build_table", "time every part of the search space", "switch"),
                Flag("--table", "table", "a latency table: read to predict, or where --build-table writes"),
                Flag(
                    "--repeat",
                    "repeat",
                    "measure each model K times, keep the median (default 3)",
                    "positive_int",
                ),
                Flag(
                    "--noise-check",
                    "noise_check",
                    "CV of repeated B0 and random archs; a predictor's ceiling",
                    "switch",
                ),
                Flag(
                    "--fit-predictor",
                    "fit_predictor",
                    "measure N random archs of the space, fit and k-fold a latency predictor (needs --table)",
                    "positive_int",
                    metavar="N",
                ),
                Flag(
                    "--predictor",
                    "predictor",
                    "a fitted latency predictor: its prediction per model",
                    metavar="PATH",
                ),
                Flag(
                    "--check-predictor",
                    "check_predictor",
                    "measure N archs --predictor was not fitted on: does it hold here now (drift-scaled too)?",
                    "positive_int",
                    metavar="N",
                ),
            ),
            resume=True,
        ),
        Stage(
            "export",
            "deploy.export",
            "deploy.export:ExportConfig",
            ("arch",),
            "export an architecture to ONNX or TorchScript, checked against PyTorch",
            flags=(
                Flag("--format", "format", "output format", "choice", ("onnx", "torchscript")),
                Flag(
                    "--weights",
                    "weights",
                    "a train or convert run (its model.pt) or a .pt state_dict (default: random init)",
                    metavar="RUN_DIR_OR_FILE",
                ),
                Flag("--resolution", "resolution", "input size (default: run's, arch's)", "positive_int"),
                Flag("--num-classes", "num_classes", "classes (default: the run's, 1000)", "positive_int"),
            ),
        ),
        Stage(
            "surrogate",
            "nas.surrogate_fit",
            "nas.surrogate_fit:SurrogateFitConfig",
            ("space",),
            "fit a surrogate of proxy accuracy on trained architectures (for evaluator=surrogate)",
            positionals="sources",
            flags=(
                Flag("--model", "model", "auto | gbr | rf | ridge | knn"),
                Flag("--folds", "folds", "k of the k-fold validation (default 5)", "positive_int"),
            ),
            subcommands=("fit",),
        ),
        Stage(  # added by the report engineer for tests/test_report.py; keep or re-add as is
            "report",
            "effnas.views.report",
            "effnas.views.report:ReportConfig",
            (),
            "one Markdown report (+ PNGs) of search, grid, scale, study, train and latency runs, as the paper",
            positionals="runs",
            flags=(
                Flag(
                    "--runs",
                    "runs",
                    "run directories to report on, any mix of stages",
                    "list",
                    metavar="RUN_DIR",
                ),
                Flag("--title", "title", "the report's heading"),
            ),
        ),
        Stage(
            "pipeline",
            "effnas.pipeline",
            "effnas.pipeline:PipelineConfig",
            (),
            "the whole method: search -> grid -> scale -> train, one run directory per stage in one",
            flags=(
                Flag(
                    "--target-flops", "target_flops", "the search's T: MACs at 224x224 (e.g. 400M)", "flops"
                ),
                Flag("--phi", "phi", "the models to scale: 3, 1..7 or 1,3,5"),
                Flag(
                    "--train",
                    "models",
                    "models to train: b0 (the searched baseline), b1..b7 (scaled); none: --train none",
                    "list",
                    metavar="MODEL",
                ),
            ),
            resume=True,
            runs_stages=True,
            routes=(
                ("search.", "search"),
                ("grid.", "grid"),
                ("scale.", "scale"),
                ("train.", "train"),
                ("data", "shared"),
                ("proxy", "shared"),
                ("ray", "shared"),
            ),
            notes="""\
Runs each stage as `effnas <stage>` would, into <run>/search, <run>/grid, <run>/scale and
<run>/train_<model>; grid reads the search run, scale the grid run, each model its YAML.

Overrides:
  search.KEY=V, grid.KEY=V, scale.KEY=V, train.KEY=V   that stage only
                      (search.trials=4  grid.seeds=1  scale.mode=official  train.proxy.epochs=10)
  data=..., data.KEY=V, proxy=..., proxy.KEY=V, ray.KEY=V
                      every stage that has the key (search and grid; scale has none)
  run.seed, run.threads, run.device   the pipeline's and every stage's
The models train on the data and proxy the grid ran with (its recorded config), then train.*.
--resume RUN_DIR skips finished stages, resumes an interrupted search, grid or train (their own
--resume: no finished trial is trained again, a train continues from its last checkpoint) and
restarts an interrupted scale.""",
        ),
        Stage(
            "dashboard",
            "effnas.views.dashboard",
            "effnas.views.dashboard:DashboardConfig",
            (),
            "serve a run's Optuna study (every search, grid and study run has one) with optuna-dashboard",
            positionals="runs",
            flags=(
                Flag("--port", "port", "port to listen on (default 8080)", "int"),
                Flag("--host", "host", "address to listen on (default 127.0.0.1: this machine only)"),
            ),
            writes_run=False,
        ),
        Stage(
            "describe",
            "models.describe",
            "models.describe:DescribeConfig",
            ("arch",),
            "per-stage table of an architecture's shape, MACs and params",
            flags=(Flag("--format", "format", "output format", "choice", ("table", "csv", "json")),),
            writes_run=False,
        ),
        Stage(
            "cam",
            "models.cam",
            "models.cam:CamConfig",
            (),
            "class activation maps (CAM, Grad-CAM) of train runs side by side, with a faithfulness score",
            positionals="inputs",
            flags=(
                Flag(
                    "--data",
                    "sample",
                    "N images drawn from the runs' validation split (default 8 without files)",
                    "positive_int",
                    metavar="N",
                ),
                Flag("--methods", "methods", "cam,gradcam (a subset)", "list"),
                Flag(
                    "--steps",
                    "steps",
                    "points of the deletion / insertion curves (default 16)",
                    "positive_int",
                ),
            ),
            notes="""\
effnas cam RUN_DIR [RUN_DIR...] [IMAGE...] [--data N]: a grid (cam.png) of each image, its
true class and, per run and method, the map over the image with the predicted class (paper
Figure 7: B0 and its scaled models side by side); faithfulness.csv: deletion / insertion
areas (Petsiuk et al. 2018) of each map against a random pixel order. Image files: RGB, of the
runs' data.image_size; one in a folder named as a class has that class as its truth.""",
        ),
        Stage(
            "convert",
            "models.convert",
            "models.convert:ConvertConfig",
            (),
            "torchvision / timm state_dicts to an effnas run (arch.yaml + model.pt), and back",
            positionals="files",
            flags=(
                Flag(
                    "--model",
                    "model",
                    "LIBRARY:NAME, e.g. torchvision:efficientnet_b3, timm:tf_efficientnet_b3",
                    metavar="LIBRARY:NAME",
                ),
                Flag(
                    "--to",
                    "to",
                    "the output's layout (default effnas)",
                    "choice",
                    ("effnas", "torchvision", "timm"),
                ),
                Flag("--format", "format", "the library file's format", "choice", ("pt", "safetensors")),
            ),
            notes="""\
Input: a .pt/.pth/.safetensors state_dict in the library's layout (--to effnas), or with
--to torchvision|timm a convert or train run directory or a state_dict file in effnas's layout.
timm's tf_efficientnet_b* weights get padding: same and bn_eps: 0.001 in arch.yaml; the
PyTorch-trained ones bn_eps: 1.0e-05. The round trip is bit-exact.""",
        ),
    )
}
