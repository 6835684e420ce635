"""`effnas search`: find the baseline B0 by MnasNet-style search (EfficientNet §4, MnasNet §3-4).

    effnas search --target-flops 400M [--trials 20] [--time-budget 30m] [--sampler tpe]
    effnas search --resume results/search/<run>

Samples the factorized space (`search_spaces.mnasnet`), prices each sample with the analytic
cost model at 224x224/1000 classes, trains the ones within `reject_above` x T on the proxy (as Ray
Tune trials, or in this process with `ray.enabled=false`), and scores them with ACC x (MACs/T)^w (`nas.reward`). Writes, in the run directory:
trials.csv, pareto.csv, best_arch.yaml (what `effnas grid --from` reads), the Optuna study of
every trial whatever the sampler (study.log, or any `storage=` URL; `training.trial_log`),
reward_over_trials.png, accuracy_vs_macs.png, and the summary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.errors import UserError
from nas.records import COLUMNS

if TYPE_CHECKING:
    from training.trials import Executor

SUMMARY_KEYS = ("trials_done", "trials_stopped", "trials_failed", "trials_rejected")
# what the trial log (Optuna study, MLflow) gets of each trials.csv row as attributes: every column
# but the ones that are the trial itself there (its key, state, parameters, the sampler's number)
# (the end-to-end measurements come after the trials finished: Optuna takes no attributes then)
SKIPPED = (
    "id", "status", "choices", "sampler_key", "measured_ms", "measured_cv", "measured_raw_ms", "measured_reward"
)  # fmt: skip
LOGGED = tuple(c for c in COLUMNS if c not in SKIPPED)
ARTIFACTS = (
    "trials.csv",
    "pareto.csv",
    "best_arch.yaml",
    "reward_over_trials.png",
    "accuracy_vs_macs.png",
    "accuracy_vs_latency.png",
    "predicted_vs_measured.png",
)


def validate(cfg: Any) -> None:
    """Cheap checks before the run directory exists; each failure is one UserError line."""
    from foundation.units import parse_duration
    from nas.latency_check import DRIFT_MODES, MACHINE_MODES, latency_model_of
    from nas.reward import KINDS
    from nas.samplers import SAMPLERS
    from training.trial_log import check

    objective_of(cfg)
    check(cfg)
    if cfg.latency_machine not in MACHINE_MODES:
        raise UserError(
            f"unknown latency_machine {cfg.latency_machine!r}; expected one of {', '.join(MACHINE_MODES)}"
        )
    latency_model_of(cfg, space_of(cfg))
    if cfg.latency_drift not in DRIFT_MODES:
        raise UserError(
            f"unknown latency_drift {cfg.latency_drift!r}; expected one of {', '.join(DRIFT_MODES)}"
        )
    if int(cfg.measure_top) < 0 or int(cfg.measure_runs) < 1 or int(cfg.measure_repeat) < 1:
        raise UserError(
            f"measure_top must be >= 0, measure_runs and measure_repeat >= 1; got {cfg.measure_top}, "
            f"{cfg.measure_runs}, {cfg.measure_repeat}"
        )
    if int(cfg.trials) < 1:
        raise UserError(f"--trials must be >= 1, got {cfg.trials}")
    if cfg.time_budget is not None:
        parse_duration(cfg.time_budget)
    if cfg.sampler.name not in SAMPLERS:
        raise UserError(f"unknown sampler {cfg.sampler.name!r}; expected one of {', '.join(SAMPLERS)}")
    s = cfg.sampler
    if s.name in ("evolution", "nsga2") and int(s.population) < 2:
        raise UserError(f"sampler.population must be >= 2, got {s.population}")
    if s.name == "evolution" and not 1 <= int(s.sample_size) <= int(s.population):
        raise UserError(
            f"sampler.sample_size must be within 1..population ({s.population}), got {s.sample_size}"
        )
    if s.name == "controller" and (not s.lr > 0 or not 0 <= s.baseline_decay < 1 or s.entropy < 0):
        raise UserError(
            f"controller needs lr > 0, 0 <= baseline_decay < 1, entropy >= 0; got lr={s.lr} "
            f"baseline_decay={s.baseline_decay} entropy={s.entropy}"
        )
    if s.name in ("local", "bananas") and int(s.n_init) < (1 if s.name == "local" else 2):
        raise UserError(f"sampler.n_init must be >= {1 if s.name == 'local' else 2}, got {s.n_init}")
    bananas_ok = 1 <= int(s.batch) <= int(s.candidates) and int(s.parents) >= 1 and int(s.trees) >= 1
    if s.name == "bananas" and not bananas_ok:
        raise UserError(
            f"bananas needs 1 <= batch <= candidates, parents >= 1, trees >= 1; got batch={s.batch} "
            f"candidates={s.candidates} parents={s.parents} trees={s.trees}"
        )
    if cfg.prerank is not None:
        from training.zero_cost import PROXIES

        if cfg.prerank not in PROXIES:
            raise UserError(f"unknown prerank proxy {cfg.prerank!r}; expected one of {', '.join(PROXIES)}")
        if cfg.sampler.name != "random":
            raise UserError(
                f"prerank needs sampler=random (got {cfg.sampler.name}): it discards proposals a "
                "learning sampler would expect to be told about"
            )
        if int(cfg.prerank_candidates) < 1:
            raise UserError(f"prerank_candidates must be >= 1, got {cfg.prerank_candidates}")
    evaluator_of(cfg, space_of(cfg))
    if cfg.reward.kind not in KINDS:
        raise UserError(f"unknown reward.kind {cfg.reward.kind!r}; expected soft or hard")
    if cfg.reject_above is not None and not cfg.reject_above > 0:
        raise UserError(
            f"reject_above must be > 0 (a multiple of the target) or null, got {cfg.reject_above}"
        )
    if cfg.asha and (int(cfg.asha_grace_period) < 1 or not cfg.asha_reduction_factor > 1):
        raise UserError(
            f"ASHA needs asha_grace_period >= 1 and asha_reduction_factor > 1, "
            f"got {cfg.asha_grace_period}, {cfg.asha_reduction_factor}"
        )


def objective_of(cfg: Any) -> tuple[float, str]:
    """(the target T, its unit): MACs from `target_flops`, or ms from `target_latency`."""
    from foundation.units import parse_flops, parse_latency_target

    if cfg.target_flops is not None and cfg.target_latency is not None:
        raise UserError(
            f"give a FLOPs target or a latency target, not both (target_flops={cfg.target_flops}, "
            f"target_latency={cfg.target_latency}); set the other to null"
        )
    if cfg.target_latency is not None:
        if not cfg.latency_table and not cfg.latency_predictor:
            raise UserError(
                "--target-latency needs a latency table or predictor of this machine: "
                "--latency-predictor PATH (effnas latency --fit-predictor N) or --latency-table PATH "
                "(effnas latency --build-table)"
            )
        return parse_latency_target(cfg.target_latency)[0], "ms"
    if cfg.target_flops is None:
        raise UserError("give a target: --target-flops (e.g. 400M) or --target-latency (e.g. 15ms)")
    return float(parse_flops(cfg.target_flops)), "MACs"


def prerank_of(cfg: Any, space: Any, data: Any) -> Any:
    """Zero-cost pre-ranking (`prerank=naswot|synflow`): choice vectors -> scores of the networks
    the proxy would train, at initialization, on one fixed batch of the training data."""
    if not cfg.prerank:
        return None
    from training.zero_cost import batch_of, score

    if data is None:
        from training.data import load_dataset

        data = load_dataset(cfg.data)
    images = batch_of(data, 64, int(cfg.proxy.resolution), seed=int(cfg.run.seed))
    print(
        f"search: zero-cost pre-ranking: {cfg.prerank} on one batch of 64, the best of "
        f"{cfg.prerank_candidates} random proposals trains",
        file=sys.stderr,
    )

    def scores(rows: list[tuple[int, ...]]) -> list[float]:
        return [
            score(
                space.decode(choices),
                str(cfg.prerank),
                images,
                num_classes=int(cfg.proxy.num_classes or data.num_classes),
                stem_stride=cfg.proxy.stem_stride,
                seed=int(cfg.run.seed),
            )
            for choices in rows
        ]

    return scores


def evaluator_of(cfg: Any, space: Any) -> Any:
    """None for the proxy trainer (the application's executor trains), or the loaded surrogate
    checked against this run's space."""
    name = cfg.evaluator.name
    if name == "proxy":
        return None
    if name != "surrogate":
        raise UserError(f"unknown evaluator {name!r}; expected proxy or surrogate")
    from nas.surrogate import Surrogate, SurrogateError

    if not cfg.evaluator.path:
        raise UserError("evaluator=surrogate needs evaluator.path=<an effnas surrogate fit run or its .pkl>")
    if not cfg.evaluator.noise >= 0:
        raise UserError(f"evaluator.noise must be >= 0, got {cfg.evaluator.noise}")
    try:
        surrogate = Surrogate.load(cfg.evaluator.path)
        surrogate.check_space(space, cfg.evaluator.path)
    except SurrogateError as exc:
        raise UserError(str(exc)) from None
    return surrogate


def space_of(cfg: Any) -> Any:
    from search_spaces.mnasnet import MnasNetSpace, SpaceError

    try:
        return MnasNetSpace.from_config(cfg.space)
    except SpaceError as exc:
        raise UserError(str(exc)) from None


def run(cfg: Any, rundir: Any, execute: Executor) -> dict[str, Any]:
    """The search stage; `execute` runs its trials (Ray Tune, or in this process)."""
    from foundation.units import format_flops
    from nas.latency_check import check_drift, drift_after, latency_model_of, measure_winners
    from nas.records import read_trials
    from nas.reward import RewardFn

    t0 = time.time()
    space = space_of(cfg)
    target, unit = objective_of(cfg)
    reward_fn = RewardFn.from_config(cfg.reward, target, unit)
    latency = latency_model_of(cfg, space)
    if latency is not None:
        print(f"search: predicted latency from {latency.path}: {latency.description}", file=sys.stderr)
    print(f"search: {space.describe()}", file=sys.stderr)
    print(f"search: reward {reward_fn}; sampler {cfg.sampler.name}", file=sys.stderr)
    surrogate = evaluator_of(cfg, space)
    if surrogate is None:
        data = _load_data(cfg, rundir)
    else:
        data, execute = None, _surrogate_executor(cfg, rundir, space, surrogate)
    older = cfg.resume and "latency_drift" not in rundir.manifest and rundir.file("trials.csv").is_file()
    if latency is not None and older:
        print(
            "search: this run started before searches checked the latency drift; its trials stay priced "
            "as they were (unscaled)",
            file=sys.stderr,
        )
    elif latency is not None:  # after the data loaded: bad data fails before ~10 s of measuring
        latency, drift = check_drift(cfg, space, latency, rundir.manifest.get("latency_drift"))
        rundir.record(latency_drift=drift)
    rundir.record(
        space={"size": space.size, "distinct": space.distinct_size(), "description": space.describe()},
        target_macs=int(target) if unit == "MACs" else None,
        target={"value": target, "unit": unit},
        latency_table=str(Path(cfg.latency_table).resolve()) if cfg.latency_table else None,
        latency_predictor=str(Path(cfg.latency_predictor).resolve()) if cfg.latency_predictor else None,
        latency_setup=None if latency is None else latency.setup,
    )

    rows = read_trials(rundir.file("trials.csv")) if cfg.resume else []
    sampler, log = _open_sampler(cfg, rundir, space)
    _restore_history(rows, space, unit, sampler, log)
    search = _make_search(cfg, rundir, space, sampler, reward_fn, rows, log, latency, data)
    if rows:
        print(
            f"search: resuming with {search.trained} trained trial(s) of {search.trials} "
            f"({len(rows)} recorded, {search.elapsed_before:.0f}s spent)",
            file=sys.stderr,
        )
    write_trials(rundir, search.rows)
    interrupted = _run_search(cfg, rundir, search, sampler, execute, reward_fn, data)
    if not interrupted and unit == "ms" and latency is not None and int(cfg.measure_top) > 0:
        start = rundir.manifest.get("latency_drift")
        try:
            if start and "latency_drift_end" not in rundir.manifest:
                rundir.record(latency_drift_end=drift_after(space, latency, start))
            measure_winners(cfg, space, search.rows, reward_fn, latency, lambda r: write_trials(rundir, r))
        except KeyboardInterrupt:
            interrupted = True  # measured rows are saved; --resume measures the rest
    summary = write_outputs(cfg, rundir, space, search.rows, target, reward_fn)
    log.finish(rundir, ARTIFACTS, "KILLED" if interrupted else "FINISHED")
    if interrupted:
        raise KeyboardInterrupt
    best = summary.get("best_macs")
    print(
        f"search: {summary['trials_done']} trained, best reward {summary['best_reward']} "
        f"(acc {summary['best_accuracy']}, {format_flops(best) if best else '-'} MACs) -> "
        f"{rundir.file('best_arch.yaml')}",
        file=sys.stderr,
    )
    summary.update(
        stop_reason=search.stop_reason,
        search_seconds=round(search.elapsed(), 2),
        wall_seconds=round(time.time() - t0, 2),
    )
    return summary


# -- the stage's phases ---------------------------------------------------------------------------
def _load_data(cfg: Any, rundir: Any) -> Any:
    """The proxy's dataset, loaded now to fail on bad data before Ray starts; recorded as used."""
    from training.data import load_dataset

    data = load_dataset(cfg.data)
    rundir.record_dataset(data)
    return data


def _surrogate_executor(cfg: Any, rundir: Any, space: Any, surrogate: Any) -> Executor:
    """The executor that scores trials with the surrogate instead of training them; recorded."""
    from nas.surrogate import executor

    print(
        f"search: trials scored by the {surrogate.kind} surrogate {cfg.evaluator.path} (fitted on "
        f"{surrogate.rows} architectures, k-fold Kendall {surrogate.cv['kendall']:.3f}); nothing trains",
        file=sys.stderr,
    )
    execute = executor(surrogate, space, float(cfg.evaluator.noise), int(cfg.run.seed))
    rundir.record(
        evaluator={
            "name": "surrogate",
            "path": str(Path(cfg.evaluator.path).resolve()),
            "model": surrogate.kind,
            "rows": surrogate.rows,
            "cv_kendall": surrogate.cv["kendall"],
            "noise": float(cfg.evaluator.noise),
        }
    )
    return execute


def _open_sampler(cfg: Any, rundir: Any, space: Any) -> tuple[Any, Any]:
    """(the sampler, the trial log), both on the run's Optuna storage, opened once: a journal is
    replayed whole on opening. Every trial also goes to the run's Optuna study (and MLflow): a
    sampler that asks and tells through the study already (tpe, nsga2) has its trials annotated
    there, not copied."""
    from nas.samplers import make_sampler
    from training.trial_log import Choice, TrialLog, open_storage, study_of

    storage, study_name = study_of(rundir, cfg, "search")
    opened = open_storage(storage)
    options = {k: cfg.sampler[k] for k in cfg.sampler if k != "name"}
    sampler = make_sampler(
        cfg.sampler.name,
        space,
        int(cfg.run.seed),
        storage=opened,
        study_name=study_name,
        **options,
    )
    log = TrialLog.open(
        rundir,
        cfg,
        "search",
        {d.name: Choice(range(len(d.values))) for d in space.dims},
        study=getattr(sampler, "study", None),
        storage=opened,
    )
    return sampler, log


def _restore_history(rows: list[dict[str, Any]], space: Any, unit: str, sampler: Any, log: Any) -> None:
    """A resumed run's recorded trials into the trial log, then into the sampler (nothing for a
    first attempt)."""
    from nas.records import history_of

    # what finished before the study heard of it. Before `restore`, which closes the trials a kill
    # left running: Optuna takes no attributes on a finished trial, and one killed between its row
    # and its annotation would stay in the study without its key.
    log.sync(trial_entries(rows, space))
    history = history_of(rows, "latency_ms" if unit == "ms" else "macs")
    if history:
        sampler.restore(history)


def _make_search(
    cfg: Any,
    rundir: Any,
    space: Any,
    sampler: Any,
    reward_fn: Any,
    rows: list[dict[str, Any]],
    log: Any,
    latency: Any,
    data: Any,
) -> Any:
    """The search driver over the recorded `rows` (a resumed run's time spent counts against the
    time budget); every change of its rows rewrites trials.csv, then the trial log."""
    from foundation.units import parse_duration
    from nas.driver import Search

    elapsed_before = float(rundir.manifest.get("search_seconds", 0.0)) if cfg.resume else 0.0

    def save(all_rows: list[dict[str, Any]]) -> None:
        write_trials(rundir, all_rows)  # the record first: the study is rebuilt from it on resume
        log.sync(trial_entries(all_rows, space))
        rundir.record(search_seconds=round(search.elapsed(), 2))

    search = Search(
        space,
        sampler,
        reward_fn,
        rows,
        trials=int(cfg.trials),
        time_budget=parse_duration(cfg.time_budget) if cfg.time_budget else None,
        elapsed_before=elapsed_before,
        reject_above=cfg.reject_above,
        save=save,
        latency_of=None if latency is None else latency.predict,
        prerank=prerank_of(cfg, space, data),
        prerank_candidates=int(cfg.prerank_candidates),
    )
    return search


def _run_search(
    cfg: Any, rundir: Any, search: Any, sampler: Any, execute: Executor, reward_fn: Any, data: Any
) -> bool:
    """Runs the search's remaining trials; whether it was interrupted (Ctrl-C). Whatever happens,
    the trials in hand are abandoned, the sampler closed and the time spent recorded."""
    from nas.driver import RewardMetric
    from training.proxy_config import budget, checked
    from training.trials import EarlyStop, Scheduling, TrialSetup

    interrupted = False
    try:
        if search.remaining > 0:
            early_stop = None
            if cfg.asha and data is not None:  # ASHA stops trainings; a surrogate's trials do not train
                reports = budget(checked(cfg.proxy), len(data.train)).reports
                early_stop = EarlyStop(reports, int(cfg.asha_grace_period), float(cfg.asha_reduction_factor))
            setup = TrialSetup.of(cfg, metrics=RewardMetric(reward_fn))
            execute(search, setup, Scheduling(metric="reward", early_stop=early_stop))
            # Tune ends quietly on Ctrl-C: the budget is then neither spent nor given up on
            interrupted = search.stop_reason is None and search.remaining > 0
        if search.stop_reason is None and search.remaining == 0:
            search.stop_reason = "trials"
    except KeyboardInterrupt:
        interrupted = True
    finally:
        search.abandon_pending()
        sampler.close()
        rundir.record(search_seconds=round(search.elapsed(), 2))
    return interrupted


def trial_entries(rows: list[dict[str, Any]], space: Any) -> list[Any]:
    """trials.csv rows as the trial log's entries: the choice vector, the reward, the rest."""
    from training.trial_log import Entry

    names = [d.name for d in space.dims]
    return [
        Entry(
            key=str(r["id"]),
            status=r["status"],
            params=dict(zip(names, (int(c) for c in str(r["choices"]).split()))),
            value=r["reward"],
            attrs={k: r.get(k) for k in LOGGED},
            number=None if r.get("sampler_key") is None else int(r["sampler_key"]),
        )
        for r in rows
        if r["status"] != "pending"
    ]


def write_trials(rundir: Any, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    from nas.records import COLUMNS

    rundir.write_csv(
        "trials.csv", pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in rows], columns=COLUMNS)
    )


def write_outputs(
    cfg: Any, rundir: Any, space: Any, rows: list[dict[str, Any]], target: float, reward_fn: Any
) -> dict[str, Any]:
    """pareto.csv, best_arch.yaml, the plots; returns the summary fields."""
    import pandas as pd

    from nas.records import COLUMNS, best_of, counts, pareto_front, plot_pareto, plot_rewards

    write_trials(rundir, rows)
    cost = "latency_ms" if reward_fn.unit == "ms" else "macs"
    front = pareto_front(rows, cost)
    rundir.write_csv(
        "pareto.csv", pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in front], columns=COLUMNS)
    )
    from nas.latency_check import best_measured

    by_prediction = best_of(rows, cost)
    best = best_measured(rows) or by_prediction  # latency target: picked on the measured latency
    n = counts(rows)
    shown = f"{target:g} ms (predicted)" if cost == "latency_ms" else f"{target / 1e6:g}M"
    title = f"{cfg.sampler.name} on {cfg.data.name}, T = {shown}"
    if any(r["status"] in ("ok", "stopped") for r in rows):
        rundir.save_figure("reward_over_trials.png", plot_rewards(rows, title))
        rundir.save_figure("accuracy_vs_macs.png", plot_pareto(rows, target, title, cost))
        if cost == "macs" and any(r.get("latency_ms") is not None for r in rows):
            rundir.save_figure(
                "accuracy_vs_latency.png", plot_pareto(rows, target, title, "latency_ms", False)
            )
        measured = [r for r in rows if r.get("measured_ms") is not None]
        if measured:
            from foundation.figures import predicted_vs_measured
            from nas.latency_check import scaled_by

            k = scaled_by(rundir.manifest.get("latency_drift"))
            scaled = f", predictions x{k:.3f} (drift)" if k != 1.0 else ""
            panel = (f"{title}: top {len(measured)}{scaled}", [r["measured_ms"] for r in measured])
            fig = predicted_vs_measured([(*panel, [r["latency_ms"] for r in measured])])
            rundir.save_figure("predicted_vs_measured.png", fig)
        import matplotlib.pyplot as plt

        plt.close("all")
    summary: dict[str, Any] = {
        "best_reward": None,
        "best_accuracy": None,
        "best_macs": None,
        "best_params": None,
        "best_trial": None,
        "best_arch": None,
        "trials_done": n["ok"],
        "trials_stopped": n["stopped"],
        "trials_failed": n["failed"],
        "trials_rejected": n["rejected"],
        "trials_trained": n["trained"],
        "trials_budget": int(cfg.trials),
        "pareto_size": len(front),
        "sampler": str(cfg.sampler.name),
        "target_macs": int(target) if cost == "macs" else None,
        "target_latency_ms": target if cost == "latency_ms" else None,
        "best_latency_ms": None,
        "best_measured_ms": None,
        "reward": repr(reward_fn),
        "latency_drift": rundir.manifest.get("latency_drift"),
        "latency_drift_end": rundir.manifest.get("latency_drift_end"),
        "space_size": space.size,
        "dataset": str(cfg.data.name),
    }
    if best is None:
        print("search: no trial finished successfully; no best_arch.yaml written", file=sys.stderr)
        return summary
    summary.update(_measured_summary(rows, best, by_prediction, target if cost == "latency_ms" else None))
    choices = tuple(int(c) for c in str(best["choices"]).split())
    arch = space.decode(choices)
    if " ".join(arch.blocks) != best["arch"]:
        raise UserError(
            f"trials.csv row #{best['id']}: its choices decode to another architecture than it records; "
            "was the space changed for this run?"
        )
    arch = arch.scaled(
        meta={
            "source": "effnas search",
            "run": str(rundir.path.resolve()),
            "trial": int(best["id"]),
            "reward": float(best["reward"]),
            "accuracy": float(best["accuracy"]),
            "macs": int(best["macs"]),
            "params": int(best["params"]),
            "target_macs": int(target) if cost == "macs" else None,
            "target_latency_ms": target if cost == "latency_ms" else None,
            "latency_ms": best.get("latency_ms"),
            "measured_latency_ms": best.get("measured_ms"),
            "measured_reward": best.get("measured_reward"),
            "sampler": str(cfg.sampler.name),
            "dataset": str(cfg.data.name),
        }
    )
    rundir.write_text("best_arch.yaml", arch.to_yaml())
    summary.update(
        best_reward=round(float(best["reward"]), 6),
        best_accuracy=round(float(best["accuracy"]), 6),
        best_macs=int(best["macs"]),
        best_latency_ms=best.get("latency_ms"),
        best_measured_ms=best.get("measured_ms"),
        best_params=int(best["params"]),
        best_trial=int(best["id"]),
        best_arch=arch.name,
        best_blocks=list(arch.blocks),
    )
    return summary


def _measured_summary(
    rows: list[dict[str, Any]], best: dict[str, Any], by_prediction: Any, target_ms: float | None
) -> dict[str, Any]:
    """Predicted against measured on the trials measured end to end, and whether measuring
    changed the winner (empty when none was measured)."""
    measured = [r for r in rows if r.get("measured_ms") is not None]
    if not measured:
        return {}
    from search_spaces.latency_predictor import agreement

    out: dict[str, Any] = {
        "measured_trials": len(measured),
        "measured_agreement": agreement(
            [r["measured_ms"] for r in measured], [r["latency_ms"] for r in measured]
        ),
        "best_by_prediction": None if by_prediction is None else int(by_prediction["id"]),
        "picked_on": "measured latency",
    }
    if target_ms is not None:
        out["best_measured_vs_target"] = round(float(best["measured_ms"]) / target_ms - 1, 4)
        out["best_measured_vs_predicted"] = round(
            float(best["measured_ms"]) / float(best["latency_ms"]) - 1, 4
        )
    print(
        f"search: best #{best['id']} picked on measured latency {best['measured_ms']:.2f} ms (predicted "
        f"{best['latency_ms']:.2f} ms{'' if target_ms is None else f', target {target_ms:g} ms'}); "
        f"the prediction alone would have picked #{out['best_by_prediction']}",
        file=sys.stderr,
    )
    return out
