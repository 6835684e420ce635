"""Fine-tuning for `effnas train --init`: start from another run's weights, with the options
timm's users expect (a lower learning rate for the body, a frozen body or frozen BN statistics
for the first epochs).

    effnas train arch=efficientnet_b0 --init results/train/<run>              # another train run
    effnas train results/convert/<run>/arch.yaml --init results/convert/<run>   # converted weights
    effnas train arch=efficientnet_b0 --init b0.safetensors train.body_lr_scale=0.1 \
        train.freeze_epochs=1 train.freeze=body

What it owns:
- `init_source` / `check_init`: where the weights come from (a finished train or convert run, its
  model.pt, or a `.pt`/`.pth`/`.safetensors` state_dict in effnas's layout) and whether they fit
  the arch being trained: a run of another arch is refused naming the first field that differs,
  a file by the first key that is missing, unexpected or of another shape. Only the classifier
  may differ, in its class count: it is then the new model's own (`proxy.init`), and said so;
  `train.new_classifier=true` makes it the new model's own at the same class count too (another
  task with as many classes: CIFAR-10's classes 0-4 -> 5-9).
- `FineTune`: installed on a built `ProxyTrainer`, before a checkpoint's optimizer state loads.
  The body (every parameter but the classifier's) gets `train.body_lr_scale` x the schedule's
  learning rate, as its own optimizer groups (`lr_scale` in each group, so a checkpoint holds
  it). For the first `train.freeze_epochs` epochs every BatchNorm normalises with its running
  statistics and keeps them (`FrozenStatsBatchNorm2d`, timm's `freeze_batch_norm_2d` in effect),
  and with `train.freeze=body` the body's parameters do not move either: their gradients are
  dropped before each update, so neither the update, momentum nor weight decay touches them.
  Everything keys on the step, so `--resume` inside or after the frozen epochs continues exactly.

Gradients of a frozen body are still computed (and then dropped) rather than switched off with
`requires_grad`: the CPU lanes (training/lanes.py) fix their parameter list when built, and a
step's cost matters less than one code path for every trainer configuration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import UserError

FREEZE = ("body", "bn")
# the Arch fields that say what the weights are (Arch's docstring): a run whose arch differs in
# one of these holds weights of another network, or weights meant for another padding / BN eps
WEIGHT_FIELDS = (
    "stages",
    "stem",
    "head",
    "width",
    "depth",
    "stem_kernel",
    "stem_pool",
    "head_min",
    "act",
    "padding",
    "bn_eps",
)
CLASSIFIER = ("classifier.weight", "classifier.bias")
FLAG = "--init"


@dataclass(frozen=True)
class Init:
    """Where `--init` weights come from."""

    weights: Path  # the state_dict file
    run: Path | None  # the train or convert run it belongs to
    stage: str | None  # that run's stage
    arch: Any  # search_spaces.arch.Arch of that run; None for a bare file


def init_source(value: str) -> Init:
    """`--init VALUE`: a finished train or convert run (its model.pt), a file inside one, or a
    `.pt`/`.pth`/`.safetensors` state_dict in effnas's layout."""
    from foundation.runfiles import stage_of
    from search_spaces.arch import Arch, ArchError
    from search_spaces.arch_config import arch_from_cfg
    from training.weights import weight_source

    path = Path(str(value))
    if path.is_dir() and stage_of(path) not in ("train", "convert"):
        found = stage_of(path)
        what = f"a {found} run" if found else "not an effnas run directory"
        raise UserError(f"{FLAG} {path}: {what}, expected a train or convert run or a state_dict file")
    weights, run, facts = weight_source(path, FLAG)
    assert weights is not None  # value is not empty
    arch = None
    if run is not None:
        try:
            arch = arch_from_cfg(facts["arch"]) if stage_of(run) == "train" else Arch.from_dict(facts["arch"])
        except (ArchError, UserError) as exc:
            raise UserError(f"{FLAG} {run}: its arch does not load: {exc}") from None
    return Init(weights, run, stage_of(run) if run is not None else None, arch)


def read_init(init: Init) -> dict[str, Any]:
    """The state_dict behind `init` ({name: tensor}; `.safetensors` through safetensors)."""
    from models.convert import read_state_dict

    try:
        return read_state_dict(init.weights)
    except UserError as exc:
        raise UserError(f"{FLAG} {exc}") from None


def check_init(init: Init, state: dict[str, Any], arch: Any) -> None:
    """The weights fit `arch` but for the classifier's class count; else one line naming the
    first arch field (a run) or state_dict key (any source) that does not."""
    from models.convert import expected_shapes

    if init.arch is not None:
        for name in WEIGHT_FIELDS:
            theirs, ours = getattr(init.arch, name), getattr(arch, name)
            if theirs != ours:
                if name == "stages":
                    theirs, ours = " ".join(init.arch.blocks), " ".join(arch.blocks)
                raise UserError(
                    f"{FLAG} {init.run}: the {init.stage} run's arch {init.arch.name!r} differs from "
                    f"the one trained here ({arch.name!r}) in {name}: {theirs} there, {ours} here; "
                    f"train its arch ({_arch_hint(init)})"
                )
    shapes = expected_shapes(arch, 1)
    for key, want in shapes.items():
        if key not in state:
            raise UserError(f"{FLAG} {init.weights}: missing key {key} (not weights of {arch.name}?)")
        got = tuple(state[key].shape)
        if key in CLASSIFIER:  # any number of classes: the rows
            want = (got[0], *want[1:]) if got else want
        if got != want:
            raise UserError(
                f"{FLAG} {init.weights}: {key} has shape {list(got)}, {arch.name} needs {list(want)}"
            )
    extra = [k for k in state if k not in shapes]
    if extra:
        raise UserError(
            f"{FLAG} {init.weights}: unexpected key {extra[0]} ({len(extra)} in all; not weights of "
            f"{arch.name}?)"
        )
    rows = {int(state[k].shape[0]) for k in CLASSIFIER}
    if len(rows) != 1:
        raise UserError(
            f"{FLAG} {init.weights}: classifier.weight and classifier.bias disagree on the classes"
        )


def _arch_hint(init: Init) -> str:
    if init.stage == "convert":
        return f"{init.run}/arch.yaml"
    return f"arch={init.arch.name} or that run's config"


def validate(settings: Any, arch: Any, source: bool = True) -> None:
    """The fine-tuning keys of `conf/train.yaml`'s `train` node and, with `source`, `--init`'s
    weights (read and checked against `arch`), before a run directory exists."""
    scale = float(settings.body_lr_scale)
    if not scale >= 0:
        raise UserError(f"train.body_lr_scale must be >= 0 (1: the body as the head), got {scale:g}")
    if str(settings.freeze) not in FREEZE:
        raise UserError(f"train.freeze must be one of {', '.join(FREEZE)}, got {settings.freeze!r}")
    epochs = float(settings.freeze_epochs)
    if not epochs >= 0:
        raise UserError(f"train.freeze_epochs must be >= 0, got {epochs:g}")
    if bool(settings.get("new_classifier", False)) and not settings.init:
        raise UserError("train.new_classifier=true replaces --init's classifier: give --init RUN_DIR|FILE")
    if settings.init and source:
        init = init_source(str(settings.init))
        check_init(init, read_init(init), arch)


def load_init(model: Any, init: Init, state: dict[str, Any], new_classifier: bool = False) -> bool:
    """Copy `state` into `model` in place (the optimizer and CPU lanes keep their tensors); the
    classifier too when its class count matches and `new_classifier` is off. True when the
    classifier was kept as the model's own."""
    own = model.state_dict()
    replace = new_classifier or tuple(state["classifier.weight"].shape) != tuple(
        own["classifier.weight"].shape
    )
    merged = {**state, **{k: own[k] for k in CLASSIFIER}} if replace else state
    model.load_state_dict(merged)
    return replace


def apply_init(
    model: Any, init: Init, arch: Any, proxy_init: str, new_classifier: bool = False
) -> dict[str, Any]:
    """Read, check and load `init` into `model`; print what was loaded. -> the summary's facts."""
    state = read_init(init)
    check_init(init, state, arch)
    replaced = load_init(model, init, state, new_classifier)
    classes = int(state["classifier.weight"].shape[0])
    ours = int(model.classifier.out_features)
    source = f"the {init.stage} run {init.run}" if init.run is not None else str(init.weights)
    print(f"effnas train: weights from {source} ({len(state)} tensors)", file=sys.stderr)
    if replaced and classes == ours:
        print(
            f"effnas train: train.new_classifier=true: --init's classifier ({classes} classes) is not "
            f"kept, the classifier is new (proxy.init={proxy_init})",
            file=sys.stderr,
        )
    elif replaced:
        print(
            f"effnas train: --init has {classes} classes, this run {ours}: the classifier is new "
            f"(proxy.init={proxy_init})",
            file=sys.stderr,
        )
    return {"init": str(init.run or init.weights), "init_classes": classes, "classifier_replaced": replaced}


def _frozen_bn_class() -> type:
    import torch.nn.functional as F
    from torch import nn

    class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
        """BatchNorm that normalises with its running statistics and never changes them, in
        training mode too (a class swapped in place: the module keeps its tensors)."""

        def forward(self, x: Any) -> Any:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )

        def reset_running_stats(self) -> None:
            # ProxyTrainer.calibrate_bn re-estimates every BN before an evaluation: not a frozen one
            return

    return FrozenStatsBatchNorm2d


_FROZEN: type | None = None


def frozen_bn_class() -> type:
    global _FROZEN
    if _FROZEN is None:
        _FROZEN = _frozen_bn_class()
    return _FROZEN


class FineTune:
    """The body's learning-rate scale and the frozen first epochs on one `ProxyTrainer` (see the
    module docstring). Install it before a checkpoint's optimizer state loads: it splits the
    optimizer's groups. It wraps the trainer's `step`, so step s starts with the frozen state of
    step s (an evaluation at the end of the last frozen epoch still sees frozen BN statistics),
    and hooks the optimizer, whose step pre-hook sees the step's final gradients."""

    def __init__(self, trainer: Any, body_lr_scale: float, freeze: str, freeze_epochs: float) -> None:
        import torch

        self.t = trainer
        model = trainer.model
        head = {id(p) for p in model.classifier.parameters()}
        self.body = [p for p in model.parameters() if id(p) not in head]
        self.scale = float(body_lr_scale)
        self.freeze_steps = round(float(freeze_epochs) * trainer.steps_per_epoch)
        self.frozen_params = self.body if freeze == "body" else []
        models = [model] + (list(trainer.lanes.models[1:]) if trainer.lanes is not None else [])
        kinds = torch.nn.modules.batchnorm._BatchNorm
        self.norms = [m for mm in models for m in mm.modules() if isinstance(m, kinds)]
        self.own_norms = [m for m in model.modules() if isinstance(m, kinds)]
        self.classes = [type(m) for m in self.norms]
        self.momenta = [m.momentum for m in self.norms]
        self.frozen = False
        self.filled = False  # _fill_momentum has run
        self.snapshot: list[Any] = []
        if self.scale != 1.0:
            self._split_groups(trainer.optimizer, head, self.scale)
        self.hook = trainer.optimizer.register_step_pre_hook(self._before_update)
        self._step = trainer.step
        trainer.step = self._train_step  # an instance attribute: _Loop.run calls it

    def _train_step(self, step: int) -> Any:
        self._set_mode(step)
        return self._step(step)

    @staticmethod
    def _split_groups(optimizer: Any, head: set[int], scale: float) -> None:
        """Each parameter group (decayed / not decayed) as a body group (`lr_scale` = scale)
        and a head group (`lr_scale` 1)."""
        for group in list(optimizer.param_groups):
            body = [p for p in group["params"] if id(p) not in head]
            heads = [p for p in group["params"] if id(p) in head]
            group["lr_scale"] = scale if body else 1.0
            if body and heads:
                group["params"] = body
                optimizer.add_param_group({**group, "params": heads, "lr_scale": 1.0})

    def _before_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer step pre-hook: the step's gradients and buffers are final here."""
        if self.frozen:
            for p in self.frozen_params:
                p.grad = None
            self._restore_statistics()
        elif self.frozen_params and not self.filled:
            self._fill_momentum(optimizer)
        if self.scale != 1.0:
            for group in optimizer.param_groups:  # ProxyTrainer.step set lr to the schedule's value
                group["lr"] = group["lr"] * group["lr_scale"]

    def _fill_momentum(self, optimizer: Any) -> None:
        """The first update after the frozen epochs: a zero momentum buffer for each parameter
        that has none yet. torch's fused SGD takes a group whose buffers all exist or none do;
        with dampening 0 (effnas's SGD) a zero buffer's first update equals a first step's."""
        import torch

        for group in optimizer.param_groups:
            if "dampening" not in group or not group.get("momentum"):
                continue  # not SGD (RMSpropTF starts each parameter's state on its own), or no momentum
            states = [optimizer.state[p] for p in group["params"]]
            if any(st.get("momentum_buffer") is not None for st in states):
                for p, st in zip(group["params"], states):
                    if st.get("momentum_buffer") is None:
                        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.filled = True

    def _set_mode(self, step: int) -> None:
        want = step < self.freeze_steps
        if want == self.frozen:
            return
        frozen_class = frozen_bn_class()
        for m, cls, momentum in zip(self.norms, self.classes, self.momenta):
            m.__class__ = frozen_class if want else cls
            # momentum None: training/kernels' fused conv+BN+SiLU then leaves BN to the module
            m.momentum = None if want else momentum
        self.frozen = want
        if want:
            self.snapshot = [b.detach().clone() for m in self.own_norms for b in m.buffers()]
        elif step > 0:
            epoch = step / self.t.steps_per_epoch
            print(f"effnas train: epoch {epoch:.4g}: the frozen epochs end here", file=sys.stderr)

    def _restore_statistics(self) -> None:
        """The lanes average their replicas' BN buffers after each step: with 3 or more lanes an
        average of equal values can move by an ulp, so the frozen values are put back."""
        import torch

        current = [b for m in self.own_norms for b in m.buffers()]
        with torch.no_grad():
            for b, saved in zip(current, self.snapshot):
                b.copy_(saved)

    def close(self) -> None:
        self.hook.remove()
        del self.t.step  # the class's own again


def install(trainer: Any, settings: Any) -> FineTune | None:
    """A `FineTune` on `trainer` when `settings` (the `train` node) asks for one, else None: a
    plain run's optimizer stays exactly as `ProxyTrainer` built it."""
    scale, epochs = float(settings.body_lr_scale), float(settings.freeze_epochs)
    if scale == 1.0 and epochs == 0:
        return None
    return FineTune(trainer, scale, str(settings.freeze), epochs)
