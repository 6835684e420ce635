"""The search's latency: predicted for every trial (a learned predictor, `effnas latency
--fit-predictor`, or a latency table) and measured end to end for the best ones before the
winner is named.

MnasNet prices each candidate by its latency on the target device. Ranking by a predicted latency
has a winner's curse: among many candidates, the one predicted fastest is disproportionately one
the predictor underestimates (the digits search picked an architecture predicted at 10.3 ms that
measured 16.3 ms). So with a latency target the top `measure_top` trials by reward are measured
end to end, exactly as the predictor's training data was (`training.timing`: its runtime, thread
count and batch, the process pinned), their reward recomputed on the measured latency
(`measured_reward`), and the best is picked on that. trials.csv keeps predicted (`latency_ms`)
and measured (`measured_ms`) side by side.

Before any of that, the drift check (`check_drift`): the same machine ran the same 400
architectures a median 1.35x slower one afternoon than that morning (docs/latency.md), so a
predictor is only as good as the spell it was measured in. A predictor keeps a few reference
architectures with their latency (`search_spaces.latency_predictor.choose_references`); the
search measures them again, exactly as they were measured, and with `latency_drift: scale`
multiplies every prediction by the median ratio now / then (the target means milliseconds on
this machine now) unless it is within +-10% (in three checks the factor was 6-17% off the one
that fitted 60-100 other architectures best: a smaller move is not told from its own error);
`warn` only says it; `off` skips the check. A resumed run reuses the factor
its start measured, so every trial of one run is priced alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from foundation.errors import UserError
from search_spaces.arch import Arch


@dataclass(frozen=True)
class LatencyModel:
    """What predicts a trial's latency, and the setup it was measured under."""

    predict: Callable[[Arch], float]
    kind: str  # predictor | table
    path: str
    setup: dict[str, Any]  # runtime, threads, batch, channels_last, device, num_classes, stem_stride
    description: str
    references: tuple[dict[str, Any], ...] = ()  # the predictor's, for the drift check
    anchor: dict[str, Any] | None = None  # a predictor fitted beside an anchor: its record

    @property
    def runtime(self) -> str:
        return str(self.setup.get("runtime", "torch"))


def asked_runtime(cfg: Any) -> str | None:
    """The runtime `--target-latency 15ms@onnxruntime` names (None: the predictor's own)."""
    from foundation.units import parse_latency_target

    return parse_latency_target(cfg.target_latency)[1] if cfg.target_latency is not None else None


def latency_model_of(cfg: Any, space: Any) -> LatencyModel | None:
    """The search's latency model from `latency_predictor` or `latency_table`, checked against the
    space and the runtime the target names; None when neither is given."""
    from training.timing import runtime_missing

    if cfg.latency_predictor and cfg.latency_table:
        raise UserError(
            "give --latency-predictor or --latency-table, not both (a predictor carries the table it was "
            "fitted with)"
        )
    runtime = asked_runtime(cfg)
    if runtime is not None and runtime_missing(runtime):
        raise UserError(f"--target-latency {cfg.target_latency}: {runtime_missing(runtime)}")
    if cfg.latency_predictor:
        model = _predictor(cfg, space, runtime)
    elif cfg.latency_table:
        model = _table(cfg, space, runtime)
    else:
        return None
    if cfg.target_latency is not None and int(cfg.measure_top) > 0 and runtime_missing(model.runtime):
        raise UserError(
            f"{model.path} was measured on {model.runtime}, which cannot measure the winners here: "
            f"{runtime_missing(model.runtime)}"
        )
    return model


def _predictor(cfg: Any, space: Any, runtime: str | None) -> LatencyModel:
    from search_spaces.latency_predictor import LatencyPredictor, PredictorError

    path = str(cfg.latency_predictor)
    try:
        predictor = LatencyPredictor.load(path)
        predictor.check(space=space, runtime=runtime, where=f"latency predictor {path}")
    except PredictorError as exc:
        raise UserError(str(exc)) from None
    same_machine(cfg, predictor.machine, f"latency predictor {path}")
    setup = {"runtime": predictor.runtime, "threads": predictor.threads, "batch": predictor.batch}
    setup = {**setup, **predictor.kw, **predictor.setup}
    return LatencyModel(
        predictor.predict,
        "predictor",
        path,
        setup,
        predictor.describe(),
        tuple(predictor.references),
        predictor.anchor or None,
    )


def _table(cfg: Any, space: Any, runtime: str | None) -> LatencyModel:
    from search_spaces.latency import LatencyTable, TableError, space_parts

    path = str(cfg.latency_table)
    try:
        table = LatencyTable.load(path)
        table.check(f"latency table {path}")
    except TableError as exc:
        raise UserError(str(exc)) from None
    lacking = table.missing(space_parts(space))
    if lacking:
        raise UserError(
            f"latency table {path} lacks {len(lacking)} parts of this search space (first: "
            f"{lacking[0]}); build it for this space: `effnas latency --build-table`"
        )
    same_machine(cfg, table.setup.get("machine"), f"latency table {path}")
    model = LatencyModel(
        table.predict, "table", path, dict(table.setup), f"latency table ({len(table.ms)} parts)"
    )
    if runtime is not None and runtime != model.runtime:
        raise UserError(
            f"latency table {path} was measured on {model.runtime}, not {runtime}: build one with "
            f"`effnas latency --build-table --runtime {runtime}`"
        )
    return model


# -- another machine ------------------------------------------------------------------------------
# same: a predictor or table measured on another CPU model is refused; any: used, its predictions
# scaled by the references' drift (latency_drift). Why refuse: latency belongs to the device, not
# only its speed (an EPYC-fitted predictor on a Xeon kept its ranking but not +-10%: the figures in
# conf/search.yaml, measured 2026-12-05, docs/latency.md).
MACHINE_MODES = ("same", "any")


def same_machine(cfg: Any, measured_on: Any, what: str) -> None:
    """Refuse `what` (a predictor or table) measured on another CPU model than this machine's,
    unless `latency_machine=any`; one measured where the CPU was not recorded passes."""
    from training.timing import other_cpu

    now = other_cpu(measured_on) if str(cfg.latency_machine) != "any" else None
    if now is not None:
        raise UserError(
            f"{what} was measured on {measured_on['cpu']}; this machine is {now}: latency belongs to the device, so fit "
            "one here (effnas latency --fit-predictor N), or pass latency_machine=any to use it with its "
            "predictions scaled by its references' drift"
        )


# -- the drift check ------------------------------------------------------------------------------
DRIFT_MODES = ("scale", "warn", "off")


@dataclass(frozen=True)
class Scaled:
    """A prediction multiplied by the machine's drift factor (picklable, unlike a lambda)."""

    predict: Callable[[Arch], float]
    factor: float

    def __call__(self, arch: Arch) -> float:
        return self.predict(arch) * self.factor


def check_drift(
    cfg: Any, space: Any, model: LatencyModel, recorded: dict[str, Any] | None
) -> tuple[LatencyModel, dict[str, Any] | None]:
    """(the model the search prices trials with, the drift found): the references measured again
    under the predictor's own setup (or `recorded`, the factor this run measured before it was
    resumed), and with `latency_drift: scale` the predictions multiplied by the factor."""
    from search_spaces.latency_predictor import WITHIN
    from training.timing import reference_drift

    mode = str(cfg.latency_drift)
    if mode == "off":
        return model, None
    if model.anchor:
        print(
            f"search: {Path(model.path).name} was fitted beside the anchor {model.anchor['arch']}: its "
            f"predictions are milliseconds at the speed that ran it in {model.anchor['reference_ms']:.2f} ms, "
            "and the winners are measured beside it and converted to that speed; no drift to scale",
            file=sys.stderr,
        )
        return model, None
    if not model.references:
        print(
            f"search: {model.path} keeps no reference architectures (a latency table, or a predictor "
            "fitted before predictors kept them and without its run's measurements.csv): how far this "
            "machine moved since it was measured is not checked",
            file=sys.stderr,
        )
        return model, None
    refs = model.references
    if recorded is not None:
        found = dict(recorded)
        print(
            f"search: latency drift {found['factor']:.3f}x as this run measured it when it started",
            file=sys.stderr,
        )
    else:
        print(
            f"search: measuring {len(refs)} reference architectures of {Path(model.path).name} again "
            f"({model.runtime}, {model.setup.get('threads', 1)} thread(s), as they were measured for it)",
            file=sys.stderr,
            flush=True,
        )
        found = {**reference_drift(refs, space, {**model.setup, "runtime": model.runtime}), "mode": mode}
    factor = float(found["factor"])
    found["scaled"] = mode == "scale" and abs(factor - 1) > WITHIN
    moved = (
        f"this machine runs the predictor's references {factor:.3f}x the latency they had when it was "
        f"fitted (each {found['low']:.3f}-{found['high']:.3f}x)"
    )
    if found["scaled"]:
        print(
            f"search: {moved}; every prediction is multiplied by {factor:.3f} (latency_drift=scale)",
            file=sys.stderr,
        )
        return replace(model, predict=Scaled(model.predict, factor)), found
    if mode == "scale":
        tail = "; within +-10%, the factor's own error on this VM: predictions left as fitted"
    elif abs(factor - 1) > WITHIN:
        tail = f"; predictions are off by about {factor - 1:+.0%} (latency_drift=scale corrects it)"
    else:
        tail = ""
    print(f"search: {moved}{tail}", file=sys.stderr)
    return model, found


def scaled_by(drift: dict[str, Any] | None) -> float:
    """The factor a search's predictions were multiplied by (1.0: not scaled), from its record."""
    if not drift:
        return 1.0
    scaled = drift.get("scaled", drift.get("mode") == "scale")  # runs recorded before `scaled`
    return float(drift["factor"]) if scaled else 1.0


def drift_after(space: Any, model: LatencyModel, start: dict[str, Any]) -> dict[str, Any]:
    """The references measured once more after the trials, before the winners are: did the
    machine hold its speed during the search? (On this VM it did not always: the references
    of the morning predictor ran 1.4-3.0x their morning latency within one minute one evening,
    docs/latency.md.) Says so when the factor moved by more than 10% since the start."""
    from search_spaces.latency_predictor import WITHIN
    from training.timing import reference_drift

    print(
        f"search: measuring the {len(model.references)} reference architectures again after the trials",
        file=sys.stderr,
        flush=True,
    )
    record = {**model.setup, "runtime": model.runtime}
    end = reference_drift(model.references, space, record, warm_up=False)  # warm by now
    moved = end["factor"] / float(start["factor"]) - 1
    print(
        f"search: the references ran {end['factor']:.3f}x their fitted latency after the trials, "
        f"{start['factor']:.3f}x before them ({moved:+.0%})"
        + (
            ": the machine did not hold its speed during the search, so the predictions (priced at the "
            "start) and the winners' measurements (taken now) compare across that change"
            if abs(moved) > WITHIN
            else ""
        ),
        file=sys.stderr,
    )
    return end


def measure_winners(
    cfg: Any,
    space: Any,
    rows: list[dict[str, Any]],
    reward_fn: Any,
    model: LatencyModel,
    save: Callable[[list[dict[str, Any]]], None],
) -> int:
    """Measure the top `measure_top` finished trials by reward that are not measured yet (a
    resumed run keeps its measurements); each row gets `measured_ms`, `measured_cv` and
    `measured_reward`, saved after each. A predictor fitted beside an anchor has them measured
    beside it (`training.timing.paired`): `measured_ms` is the ratio x the predictor's anchor
    latency (its units), `measured_cv` the ratio's, `measured_raw_ms` the plain milliseconds.
    Returns how many were measured now."""
    from training.timing import model_latency, model_runner, paired_latency, pinned, setup_from

    top = sorted(
        (r for r in rows if r["status"] == "ok" and r["reward"] is not None),
        key=lambda r: -float(r["reward"]),
    )[: int(cfg.measure_top)]
    todo = [r for r in top if r.get("measured_ms") is None]
    if not todo:
        return 0
    s = model.setup
    setup = setup_from(
        {**s, "runtime": model.runtime},
        runs=int(cfg.measure_runs),
        warmup=int(cfg.measure_warmup),
        repeat=int(cfg.measure_repeat),
    )
    print(
        f"search: measuring the top {len(top)} trials by reward end to end ({setup.runtime}, "
        f"{setup.threads} thread(s), as {Path(model.path).name} was measured) before naming the best",
        file=sys.stderr,
        flush=True,
    )
    nc, ss = int(s.get("num_classes", 1000)), s.get("stem_stride")
    with pinned(setup.threads, setup.device == "cpu"):
        anchor = None
        if model.anchor:
            anchor_arch = Arch.from_yaml(str(model.anchor["yaml"]))
            anchor = model_runner(anchor_arch, setup, anchor_arch.resolution, nc, ss)
        for row in todo:
            arch = space.decode(tuple(int(c) for c in str(row["choices"]).split()))
            if anchor is None:
                measured = model_latency(arch, setup, arch.resolution, nc, ss)
                ms, spread, raw = measured.median_ms, measured.cv, ""
            else:
                both = paired_latency(arch, anchor, setup, arch.resolution, nc, ss)
                ms, spread = both.ratio * float(model.anchor["reference_ms"]), both.ratio_cv
                row["measured_raw_ms"] = round(both.model.median_ms, 4)
                raw = f" ({both.model.median_ms:.2f} ms now, the anchor {both.anchor.median_ms:.2f} ms)"
            row["measured_ms"] = round(ms, 4)
            row["measured_cv"] = None if spread is None else round(spread, 5)
            row["measured_reward"] = reward_fn(float(row["accuracy"]), ms)
            save(rows)
            print(
                f"  #{row['id']}: predicted {row['latency_ms']:.2f} ms, measured {row['measured_ms']:.2f} ms{raw} "
                f"({row['measured_ms'] / row['latency_ms'] - 1:+.1%}); reward {row['reward']:.4f} -> "
                f"{row['measured_reward']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    return len(todo)


def best_measured(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best measured trial: highest reward on its measured latency (ties: faster)."""
    measured = [r for r in rows if r.get("measured_reward") is not None]
    if not measured:
        return None
    return max(measured, key=lambda r: (float(r["measured_reward"]), -float(r["measured_ms"])))
