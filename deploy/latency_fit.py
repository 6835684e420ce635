"""`effnas latency --noise-check` and `--fit-predictor N`: measuring many whole networks.

    effnas latency --noise-check                    # B0 + 20 random archs, 10 repeats each, round-robin
    effnas latency --fit-predictor 300 --table <table run>/latency_table.json [--runtime onnxruntime]
    effnas latency --resume results/latency/<run>   # continues an interrupted --fit-predictor

The noise check measures the base architecture and `noise_archs` random ones of the space
`noise_repeats` times, round-robin (so a slow drift of the machine spreads over every model
instead of biasing one), and reports each one's CV over its repeats. From the same repeats it
says how close to +-10% the machine lets any predictor get: a predictor that knew each
architecture's noise-free latency (the median of its other repeats) is held against one single
measurement, exactly as a learned predictor is checked, and the share within +-10% and the rank
agreement between two repeats are its ceiling.

The predictor fit measures N random architectures of the space end to end (seeded by `run.seed`,
so a resumed run measures the same ones), one row per architecture appended to
`measurements.csv` (rewritten atomically after each: a kill loses at most the one in progress),
with a time estimate after the first and an ETA on every line; then fits
`search_spaces.latency_predictor` with `folds`-fold validation and reports, on architectures
each fold did not see, the share within +-10% and Spearman, beside the old table-sum predictor
(refit on the same folds, and as built) on the same held-out architectures. Writes
`latency_predictor.pkl` beside a copy of the table it read (`latency_table.json`),
`predictor.csv` (every architecture's held-out prediction) and `predicted_vs_measured.png`.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from foundation import tables
from foundation.errors import UserError
from training.timing import Setup, machine, measure, model_latency, model_runner, paired_latency


def _command(rundir: Any) -> str:
    return " ".join(str(a) for a in rundir.manifest.get("command", [])) or "effnas latency ..."


def _eta(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f}s"


# -- the noise check ------------------------------------------------------------------------------
def noise_check(cfg: Any, rundir: Any, setup: Setup, space: Any) -> dict[str, Any]:
    from search_spaces.arch_config import arch_from_cfg

    rng = random.Random(int(cfg.run.seed))
    base = arch_from_cfg(cfg.arch)
    models = [(base.name, base)]
    models += [(f"random{i}", space.decode(space.sample(rng))) for i in range(int(cfg.noise_archs))]
    repeats = int(cfg.noise_repeats)
    nc, ss = int(cfg.num_classes), cfg.stem_stride
    print(
        f"noise check: {models[0][0]} and {len(models) - 1} random architectures of {space.describe()}, "
        f"{repeats} repeats each, round-robin",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    calls = [model_runner(a, setup, int(cfg.resolution or a.resolution), nc, ss) for _, a in models]
    built = time.perf_counter() - t0
    medians: list[list[float]] = [[] for _ in models]
    lows: list[list[float]] = [[] for _ in models]  # each repeat's fastest run, a second statistic
    for r in range(repeats):
        t_round = time.perf_counter()
        for i, call in enumerate(calls):
            times = measure(call, setup.runs, setup.warmup)
            medians[i].append(statistics.median(times))
            lows[i].append(min(times))
        spent = time.perf_counter() - t_round
        if r == 0:
            print(
                f"noise check: time estimate ~{_eta(built + spent * repeats)} ({len(models)} models built "
                f"in {built:.0f}s, one round {spent:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        print(
            f"  round {r + 1}/{repeats}: {spent:.1f}s, ETA {_eta(spent * (repeats - r - 1))} "
            f"(load {os.getloadavg()[0]:.2f})",
            file=sys.stderr,
            flush=True,
        )
    return _noise_summary(cfg, rundir, models, medians, lows)


def noise_ceiling(medians: list[list[float]], k: int = 1) -> dict[str, float | None]:
    """What the noise alone allows a predictor judged against measurements that are each the
    median of `k` repeats (`--repeat k`): each disjoint run of `k` repeats of a model against the
    median of its other repeats (a perfect predictor of the noise-free latency), and the mean
    Spearman between two such measurements over the models (the best rank agreement they allow)."""
    from scipy.stats import spearmanr

    def chunks(m: list[float]) -> list[tuple[float, float]]:
        """(the median of repeats j..j+k, the median of the others) for each disjoint chunk."""
        out = []
        for j in range(0, len(m) - k + 1 if len(m) > k else 0, k):
            out.append((statistics.median(m[j : j + k]), statistics.median(m[:j] + m[j + k :])))
        return out

    pairs = [chunks(m) for m in medians]
    errors = [abs(one / rest - 1) for p in pairs for one, rest in p]
    if not errors:
        return {f"ceiling{k}_within_10pct": None, f"ceiling{k}_spearman": None}
    width = min(len(p) for p in pairs)
    rhos = [
        float(spearmanr([p[a][0] for p in pairs], [p[b][0] for p in pairs]).statistic)
        for a, b in itertools.combinations(range(width), 2)
    ]
    return {
        f"ceiling{k}_within_10pct": round(sum(e <= 0.10 for e in errors) / len(errors), 4),
        f"ceiling{k}_median_abs_error": round(statistics.median(errors), 4),
        f"ceiling{k}_spearman": round(statistics.fmean(rhos), 4) if rhos and len(medians) > 2 else None,
    }


def _noise_summary(
    cfg: Any,
    rundir: Any,
    models: list[tuple[str, Any]],
    medians: list[list[float]],
    lows: list[list[float]] | None = None,
) -> dict[str, Any]:
    from search_spaces.cost import count
    from training.timing import cv

    threshold = float(cfg.cv_threshold)
    rows = []
    for (label, arch), m, fast in zip(models, medians, lows or [None] * len(models)):
        spread = cv(m) or 0.0
        rows.append(
            {
                "model": label,
                "arch": arch.name,
                "blocks": " ".join(arch.blocks),
                "macs": count(arch).macs,
                "median_ms": round(statistics.median(m), 4),
                "cv": round(spread, 5),
                "min_ms": round(min(m), 4),
                "max_ms": round(max(m), 4),
                "repeats": len(m),
                "flagged": spread > threshold,
                "medians_ms": " ".join(f"{v:.4f}" for v in m),
                "fastest_cv": None if fast is None else round(cv(fast) or 0.0, 5),
                "fastest_ms": None if fast is None else " ".join(f"{v:.4f}" for v in fast),
            }
        )
    rundir.write_csv("noise.csv", rows)
    randoms = rows[1:]
    judged = medians[1:] if len(medians) > 3 else medians  # the random architectures when enough
    k = int(cfg.repeat)
    ceiling = {**noise_ceiling(judged, 1), **(noise_ceiling(judged, k) if k > 1 else {})}
    if lows:  # the same timings' fastest runs: how much steadier a statistic the machine allows
        fast = noise_ceiling(lows[1:] if len(lows) > 3 else lows, 1)
        ceiling.update({f"fastest_{key}": v for key, v in fast.items()})
    head = ["model", "median ms", "CV", "min-max ms"]
    lines = [
        {
            "model": r["model"],
            "median ms": f"{r['median_ms']:.2f}",
            "CV": f"{r['cv']:.1%}" + (" !" if r["flagged"] else ""),
            "min-max ms": f"{r['min_ms']:.2f}-{r['max_ms']:.2f}",
        }
        for r in rows
    ]
    print(tables.format_table(lines, head, {h: str for h in head}, align="first-left"))
    summary: dict[str, Any] = {
        "base": rows[0]["model"],
        "base_cv": rows[0]["cv"],
        "random_archs": len(randoms),
        "random_median_cv": round(statistics.median(r["cv"] for r in randoms), 5) if randoms else None,
        "random_max_cv": round(max(r["cv"] for r in randoms), 5) if randoms else None,
        "flagged": [r["model"] for r in rows if r["flagged"]],
        "cv_threshold": threshold,
        "repeats": int(cfg.noise_repeats),
        **ceiling,
    }
    print(
        f"noise: {rows[0]['model']} CV {rows[0]['cv']:.2%} over {cfg.noise_repeats} repeats"
        + (
            f"; {len(randoms)} random archs: median CV {summary['random_median_cv']:.2%}, "
            f"max {summary['random_max_cv']:.2%}"
            if randoms
            else ""
        )
        + f"; {len(summary['flagged'])} over {threshold:.0%}"
    )
    for kk in sorted({1, k}):
        within, rho = ceiling.get(f"ceiling{kk}_within_10pct"), ceiling.get(f"ceiling{kk}_spearman")
        if within is None:
            print(f"ceiling (median of {kk}): needs more than {kk} repeats (noise_repeats)")
            continue
        print(
            f"ceiling: against measurements that are the median of {kk} repeat(s), a predictor that knew "
            f"each architecture's noise-free latency would put {within:.0%} within +-10% (median "
            f"|error| {ceiling[f'ceiling{kk}_median_abs_error']:.2%})"
            + ("" if rho is None else f" and rank them with Spearman {rho:.3f}")
            + (
                "; the goal of 90% is within the noise"
                if within >= 0.95
                else "; noise alone caps any predictor near this"
            )
        )
    if summary.get("fastest_ceiling1_within_10pct") is not None:
        rho = summary["fastest_ceiling1_spearman"]
        print(
            "ceiling of the same timings' fastest run (one measurement; the protocol keeps the median): "
            f"{summary['fastest_ceiling1_within_10pct']:.0%} within +-10%"
            + ("" if rho is None else f", Spearman {rho:.3f}")
            + f"; median CV over repeats {statistics.median(r['fastest_cv'] for r in randoms or rows):.2%}"
        )
    print(f"load average {os.getloadavg()[0]:.2f}; command: {_command(rundir)}")
    return summary


# -- the learned predictor -------------------------------------------------------------------------
COLUMNS = (
    "id",
    "arch",
    "blocks",
    "choices",
    "measured_ms",
    "cv",
    "repeats",
    "flagged",
    "remeasured",
    "first_ms",
    "first_cv",
    "fastest_ms",
    "fastest_cv",
    "passes_ms",
    "anchor_ms",
    "ratio",
    "ratio_cv",
    "table_ms",
    "seconds",
    "load1",
)
# --check-predictor's measurements.csv: the predictor's own (unscaled) prediction beside each
CHECK_COLUMNS = (
    *COLUMNS[:8], "fastest_ms", "fastest_cv", "anchor_ms", "ratio", "ratio_cv", "predicted_ms", "seconds", "load1"
)  # fmt: skip


def _choices(row: dict[str, Any]) -> tuple[int, ...]:
    """A measurements.csv row's choice vector (stored space-separated)."""
    return tuple(int(c) for c in str(row["choices"]).split())


def _save(rundir: Any, rows: list[dict[str, Any]]) -> None:
    """measurements.csv as it stands (written after every measurement: a kill loses at most one)."""
    columns = CHECK_COLUMNS if rows and "predicted_ms" in rows[0] else COLUMNS
    rundir.write_csv("measurements.csv", [{k: r.get(k) for k in columns} for r in rows])


def distinct_samples(
    space: Any, n: int, seed: int, exclude: frozenset[str] = frozenset(), flag: str = "--fit-predictor"
) -> list[tuple[int, ...]]:
    """`n` random architectures of `space`, no two the same network (a duplicate would sit in a
    training fold and in its held-out fold at once and flatter the k-fold figures) and none named
    in `exclude` (a predictor's own architectures, when it is checked). Refused when the space
    has fewer than that many distinct networks."""
    if space.distinct_size() < n + len(exclude):
        others = f" besides the {len(exclude)} the predictor was fitted on" if exclude else ""
        raise UserError(
            f"{flag} {n}: the space has only {space.distinct_size()} distinct architectures{others}"
        )
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < n:
        choices = space.sample(rng)
        name = space.decode(choices).name  # a digest of its blocks
        if name not in seen:
            seen.add(name)
            out.append(choices)
    return out


def _measured_before(rundir: Any, choices: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """A resumed run's measurements.csv, checked to be the architectures this run draws."""
    import pandas as pd

    path = rundir.file("measurements.csv")
    if not path.is_file() or path.stat().st_size == 0:
        return []
    frame = pd.read_csv(path)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in rows:
        i = int(row["id"])
        if i >= len(choices) or _choices(row) != choices[i]:
            raise UserError(
                f"{path}: row {i} is not the architecture this run draws (was the space or seed "
                "changed?); start a new run"
            )
    return rows


def fit_predictor(cfg: Any, rundir: Any, setup: Setup, space: Any, table: Any) -> dict[str, Any]:
    from foundation.runfiles import atomic_write
    from search_spaces.arch_config import arch_from_cfg

    n = int(cfg.fit_predictor)
    kw = {"num_classes": int(cfg.num_classes), "stem_stride": cfg.stem_stride}
    choices = distinct_samples(space, n, int(cfg.run.seed))
    rows = _measured_before(rundir, choices)
    atomic_write(rundir.file("latency_table.json"), table.to_json())
    print(
        f"fit predictor: {n} random architectures of {space.describe()} ({len(rows)} measured before); "
        f"each the median of {setup.repeat} repeat(s) of the median of {setup.runs} runs after "
        f"{setup.warmup} warm-up",
        file=sys.stderr,
        flush=True,
    )
    if int(cfg.get("passes", 1)) > 1:
        print(
            f"fit predictor: {int(cfg.get('passes', 1))} passes: every architecture measured once in each, "
            "combined by search_spaces.latency_predictor.combine_passes (the time estimate below is one pass)",
            file=sys.stderr,
            flush=True,
        )
    anchor = anchor_runner(arch_from_cfg(cfg.arch), setup, kw) if cfg.get("anchor") else None
    if anchor is not None:
        print(
            f"fit predictor: each beside the anchor {anchor[0].name}, their timed runs "
            "alternating: the latency fitted is the ratio to it x its median over the sweep",
            file=sys.stderr,
            flush=True,
        )
    measure_all(
        cfg,
        rundir,
        setup,
        space,
        choices,
        rows,
        "fit predictor",
        "table",
        lambda a: table.predict(a, **kw),
        anchor,
    )
    remeasure(cfg, rundir, setup, space, rows, kw, anchor)
    more_passes(cfg, rundir, setup, space, rows, kw)
    return _fit(cfg, rundir, setup, space, table, rows, kw, anchor[0] if anchor else None)


Anchor = tuple[Any, Callable[[], Any]]  # the anchor architecture and a runner of it


def anchor_runner(arch: Any, setup: Setup, kw: dict[str, Any]) -> Anchor:
    """The anchor architecture built once, at its own resolution, to be timed beside every
    architecture (`training.timing.paired`)."""
    return arch, model_runner(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"])


def measured_columns(arch: Any, setup: Setup, kw: dict[str, Any], anchor: Anchor | None) -> dict[str, Any]:
    """`arch` measured end to end: a row's measurement columns. With `anchor`, beside it run by
    run: `anchor_ms` (its median over the same stretch), `ratio` (the median over repeats of
    the model's median over the anchor's) and `ratio_cv`; `measured_ms` stays the model's own."""
    if anchor is None:
        measured = model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"])
        extra: dict[str, Any] = {}
    else:
        both = paired_latency(arch, anchor[1], setup, arch.resolution, kw["num_classes"], kw["stem_stride"])
        measured = both.model
        extra = {
            "anchor_ms": round(both.anchor.median_ms, 4),
            "ratio": round(both.ratio, 6),
            "ratio_cv": None if both.ratio_cv is None else round(both.ratio_cv, 5),
        }
    return {
        "measured_ms": round(measured.median_ms, 4),
        "cv": None if measured.cv is None else round(measured.cv, 5),
        "repeats": len(measured.medians),
        **_fastest(measured),
        **extra,
    }


def _known(value: Any) -> bool:
    return value is not None and value == value  # a CSV read back holds NaN for an empty cell


def spread(row: dict[str, Any]) -> float | None:
    """How far a row's measurement can be trusted: the CV of its ratio to the anchor when it was
    measured beside one, else of its milliseconds (None with one repeat)."""
    value = row.get("ratio_cv") if _known(row.get("ratio")) else row.get("cv")
    return float(value) if _known(value) else None


def anchored_ms(rows: list[dict[str, Any]]) -> tuple[list[float], float] | None:
    """(each row's latency at the anchor's typical speed over the sweep: its ratio x the median
    of the anchor's measurements, that median) when every row was measured beside the anchor,
    else None."""
    if not rows or not all(_known(r.get("ratio")) and _known(r.get("anchor_ms")) for r in rows):
        return None
    level = statistics.median(float(r["anchor_ms"]) for r in rows)
    return [float(r["ratio"]) * level for r in rows], level


def measure_all(
    cfg: Any,
    rundir: Any,
    setup: Setup,
    space: Any,
    choices: list[tuple[int, ...]],
    rows: list[dict[str, Any]],
    what: str,
    beside: str,
    predict: Callable[[Any], float],
    anchor: Anchor | None = None,
) -> None:
    """Measure the architectures `choices[len(rows):]` end to end (beside `anchor` when given),
    one row each appended to `rows` and measurements.csv saved after each (a kill loses at most
    the one in progress), with a time estimate after the first and an ETA on every line;
    `predict` is shown beside each measurement and kept as `table_ms` (the fit's feature) or
    `predicted_ms` (a predictor checked)."""
    kw = {"num_classes": int(cfg.num_classes), "stem_stride": cfg.stem_stride}
    column = "table_ms" if beside == "table" else "predicted_ms"
    n, t0, start = len(choices), time.perf_counter(), len(rows)
    for i in range(start, n):
        arch = space.decode(choices[i])
        t_arch = time.perf_counter()
        measured = measured_columns(arch, setup, kw, anchor)
        seconds = time.perf_counter() - t_arch
        trust = spread(measured)
        rows.append(
            {
                "id": i,
                "arch": arch.name,
                "blocks": " ".join(arch.blocks),
                "choices": " ".join(str(c) for c in choices[i]),
                **measured,
                "flagged": trust is not None and trust > float(cfg.cv_threshold),
                column: round(predict(arch), 4),
                "seconds": round(seconds, 3),
                "load1": round(os.getloadavg()[0], 2),
            }
        )
        _save(rundir, rows)
        left = n - i - 1
        per = (time.perf_counter() - t0) / (i + 1 - start)  # seconds per architecture this session
        if i == start:
            print(
                f"{what}: time estimate ~{_eta(seconds * (left + 1))} for {left + 1} architectures "
                f"(the first took {seconds:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        beside_anchor = (
            f", {measured['ratio']:.3f}x the anchor ({measured['anchor_ms']:.2f} ms)" if anchor else ""
        )
        print(
            f"  [{i + 1}/{n}] {arch.name}: {measured['measured_ms']:.2f} ms{beside_anchor} "
            f"({beside} {rows[-1][column]:.2f})"
            f"{'' if trust is None else f', CV {trust:.1%}'}"
            f"{' ! over the CV threshold' if rows[-1]['flagged'] else ''}  ETA {_eta(per * left)}",
            file=sys.stderr,
            flush=True,
        )


def _fastest(measured: Any) -> dict[str, float | None]:
    """The row's second statistic of the same timings (`Measurement.fastest_ms`)."""
    fast, spread = measured.fastest_ms, measured.fastest_cv
    return {
        "fastest_ms": None if fast is None else round(fast, 4),
        "fastest_cv": None if spread is None else round(spread, 5),
    }


def remeasure(
    cfg: Any,
    rundir: Any,
    setup: Setup,
    space: Any,
    rows: list[dict[str, Any]],
    kw: dict[str, Any],
    anchor: Anchor | None = None,
) -> None:
    """`cfg.remeasure` rounds over the rows still flagged (CV over the threshold), after every
    architecture has had its first measurement: the noise of a shared VM comes in spells
    (docs/latency.md: median CV 3.4% over one stretch of 100 archs, 1.3% over the rest), so a
    later measurement is mostly taken outside the spell. A new measurement replaces the row's
    when its CV is lower (of its ratio to the anchor, when measured beside one; the first one's
    median and CV stay in `first_ms`, `first_cv`); the
    rule picks by agreement between repeats, never by the latency itself. Resumable: a row
    carries how many times it was re-measured."""
    rounds, threshold = int(cfg.get("remeasure", 0)), float(cfg.cv_threshold)
    for k in range(1, rounds + 1):
        todo = [r for r in rows if r["flagged"] and int(r.get("remeasured") or 0) < k]
        if not todo:
            break
        print(
            f"fit predictor: re-measuring {len(todo)} flagged architectures (round {k}/{rounds})",
            file=sys.stderr,
            flush=True,
        )
        for j, row in enumerate(todo):
            arch = space.decode(_choices(row))
            t_arch = time.perf_counter()
            again = measured_columns(arch, setup, kw, anchor)
            if row.get("first_ms") is None:
                row["first_ms"], row["first_cv"] = row["measured_ms"], row["cv"]
            now, was = spread(again), spread(row)
            better = now is not None and (was is None or now < was)
            if better:
                row.update(again)
                row["flagged"] = now > threshold
            row["remeasured"] = k
            row["seconds"] = round(float(row["seconds"]) + time.perf_counter() - t_arch, 3)
            _save(rundir, rows)
            print(
                f"  [{j + 1}/{len(todo)}] {arch.name}: {again['measured_ms']:.2f} ms, CV "
                f"{'-' if now is None else f'{now:.1%}'} "
                f"({'kept' if better else 'first kept'}: {row['measured_ms']:.2f} ms, CV {spread(row) or 0:.1%})",
                file=sys.stderr,
                flush=True,
            )


def _passes(row: dict[str, Any]) -> list[float]:
    """A row's latency in each pass so far (`passes_ms`, space-separated; a CSV read back may
    hold a single pass as a number)."""
    value = row.get("passes_ms")
    return [] if value is None or value != value else [float(v) for v in str(value).split()]


def more_passes(
    cfg: Any, rundir: Any, setup: Setup, space: Any, rows: list[dict[str, Any]], kw: dict[str, Any]
) -> None:
    """Passes 2..`cfg.passes` over every architecture, in the first pass's order, after it and
    its re-measuring round: each pass's latency appended to the row's `passes_ms` (the first
    value is the first pass's), then `measured_ms` set to `combine_passes` of them (a sweep spans
    minutes of one spell of this machine; docs/latency.md). Resumable: a row carries the passes it
    has; the combination is recomputed from them, so it is the same however often it is run."""
    from search_spaces.latency_predictor import combine_passes

    total = int(cfg.get("passes", 1))
    if total <= 1:
        return
    for row in rows:
        if not _passes(row):
            row["passes_ms"] = f"{float(row['measured_ms']):.4f}"
    _save(rundir, rows)
    for k in range(2, total + 1):
        todo = [r for r in rows if len(_passes(r)) < k]
        if not todo:
            continue
        print(f"fit predictor: pass {k}/{total} over {len(todo)} architectures", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        for j, row in enumerate(todo):
            arch = space.decode(_choices(row))
            t_arch = time.perf_counter()
            again = model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"])
            row["passes_ms"] = " ".join([*str(row["passes_ms"]).split(), f"{again.median_ms:.4f}"])
            row["seconds"] = round(float(row["seconds"]) + time.perf_counter() - t_arch, 3)
            _save(rundir, rows)
            per = (time.perf_counter() - t0) / (j + 1)
            print(
                f"  [{j + 1}/{len(todo)}] {arch.name}: {again.median_ms:.2f} ms (passes so far: "
                f"{row['passes_ms']})  ETA {_eta(per * (len(todo) - j - 1))}",
                file=sys.stderr,
                flush=True,
            )
    combined = combine_passes([[_passes(r)[k] for r in rows] for k in range(total)])
    for row, ms in zip(rows, combined):
        row["measured_ms"] = round(ms, 4)
    _save(rundir, rows)


def _fit(
    cfg: Any,
    rundir: Any,
    setup: Setup,
    space: Any,
    table: Any,
    rows: list[dict[str, Any]],
    kw: dict[str, Any],
    anchor: Any = None,
) -> dict[str, Any]:
    """k-fold validation, the predictor refit on every row and saved, the report. Rows measured
    beside `anchor` (the anchor architecture) are fitted on `anchored_ms`: milliseconds at the
    anchor's median speed over the sweep."""
    from search_spaces.latency_predictor import (
        LatencyPredictor,
        PredictorError,
        agreement,
        choose_references,
        features,
        fit,
    )

    stages = len(space.base.stages)
    archs = [space.decode(_choices(r)) for r in rows]
    x = [features(a, table, stages, **kw) for a in archs]
    raw = [float(r["measured_ms"]) for r in rows]
    by_anchor = anchored_ms(rows) if anchor is not None else None
    y = by_anchor[0] if by_anchor else raw
    anchor_record: dict[str, Any] = {}
    if by_anchor:
        from training.timing import cv

        spread_ = cv([float(r["anchor_ms"]) for r in rows])
        anchor_record = {
            "arch": anchor.name,
            "yaml": anchor.to_yaml(),
            "reference_ms": round(by_anchor[1], 4),
            "cv": None if spread_ is None else round(spread_, 5),
        }
    kind, folds, seed = str(cfg.predictor_model), int(cfg.folds), int(cfg.run.seed)
    print(f"fit predictor: {folds}-fold validation of {kind} on {len(y)} architectures", file=sys.stderr)
    try:
        model, chosen, oof, scores = fit(x, y, kind=kind, folds=folds, seed=seed)
    except PredictorError as exc:
        raise UserError(str(exc)) from None
    as_built = agreement(y, [float(r["table_ms"]) for r in rows])
    measuring = round(sum(float(r["seconds"]) for r in rows), 1)
    predictor = LatencyPredictor(
        model=model,
        kind=chosen,
        table=table,
        stages=stages,
        space_fingerprint=space.fingerprint(),
        space_description=space.describe(),
        runtime=setup.runtime,
        threads=setup.threads,
        batch=setup.batch,
        kw=kw,
        machine=machine(),
        rows=len(y),
        cv={"folds": folds, "model": kind, **scores[kind]},
        setup={**setup.__dict__, **kw},
        # a search measures these again first (its drift check), in the units the predictor predicts
        references=choose_references([{**r, "measured_ms": v} for r, v in zip(rows, y)]),
        trained_on=[str(r["arch"]) for r in rows],  # --check-predictor measures others
        anchor=anchor_record,
    )
    path = rundir.file("latency_predictor.pkl")
    predictor.save(path)
    out = [
        {
            "id": r["id"],
            "arch": r["arch"],
            "blocks": r["blocks"],
            "measured_ms": round(y[i], 4),
            "predicted_ms": round(float(oof[kind][i]), 4),
            "error": round(float(oof[kind][i]) / y[i] - 1, 4),
            "raw_ms": r["measured_ms"],
            "table_refit_ms": round(float(oof["table"][i]), 4),
            "table_ms": r["table_ms"],
            "cv": r["cv"],
            "flagged": r["flagged"],
        }
        for i, r in enumerate(rows)
    ]
    rundir.write_csv("predictor.csv", out)
    _plot(rundir, y, [o["predicted_ms"] for o in out], [o["table_refit_ms"] for o in out], kind, scores)
    results = {f"{kind} (k-fold)": scores[kind], "table refit (k-fold)": scores["table"]}
    results["table as built"] = as_built
    fastest = [r.get("fastest_ms") for r in rows]
    if all(f is not None and float(f) == float(f) for f in fastest):
        # the same architectures' fastest run (recorded beside each median): is it the statistic a
        # predictor holds better on this machine? Figures only; the predictor fits the median
        _, _, _, by_fastest = fit(x, [float(f) for f in fastest], kind=kind, folds=folds, seed=seed)
        results[f"{kind}, fastest run (k-fold)"] = by_fastest[kind]
        results["table refit, fastest run (k-fold)"] = by_fastest["table"]
    if by_anchor:  # the same timings without the anchor: what it bought, same folds
        _, _, _, by_raw = fit(x, raw, kind=kind, folds=folds, seed=seed)
        results[f"{kind}, milliseconds without the anchor (k-fold)"] = by_raw[kind]
        results["table refit, milliseconds without the anchor (k-fold)"] = by_raw["table"]
        results["table as built, milliseconds without the anchor"] = agreement(
            raw, [float(r["table_ms"]) for r in rows]
        )
    if int(cfg.get("passes", 1)) > 1:  # what one pass alone would have given, same architectures
        first = [_passes(r)[0] for r in rows]
        _, _, _, by_first = fit(x, first, kind=kind, folds=folds, seed=seed)
        results[f"{kind}, the first pass alone (k-fold)"] = by_first[kind]
    print(_agreement_table(results))
    flagged = sum(bool(r["flagged"]) for r in rows)
    again = sum(bool(r.get("remeasured")) for r in rows)
    print(
        f"{predictor.describe()} -> {path}; {len(y)} architectures measured in {_eta(measuring)}, "
        f"{again} re-measured, {flagged} still with CV over {float(cfg.cv_threshold):.0%}; "
        f"{setup.runtime}, {setup.threads} "
        f"thread(s), load average {os.getloadavg()[0]:.2f}"
    )
    if anchor_record:
        print(
            f"anchor {anchor_record['arch']}: median {anchor_record['reference_ms']:.2f} ms over the sweep "
            f"(CV {anchor_record['cv'] or 0:.1%} between architectures); the predictor predicts milliseconds at "
            "that speed, and a measurement beside the anchor is converted to it"
        )
    refs = ", ".join(f"{r['arch']} {r['measured_ms']:.2f} ms" for r in predictor.references)
    print(f"references a search measures again before it trusts the predictor: {refs}")
    print(f"command: {_command(rundir)}")
    return {
        "predictor": str(path.resolve()),
        "references": predictor.references,
        "table": str(rundir.file("latency_table.json").resolve()),
        "model": kind,
        "fitted": chosen,
        "architectures": len(y),
        "folds": folds,
        "measuring_seconds": measuring,
        "flagged": flagged,
        "remeasured": again,
        "passes": int(cfg.get("passes", 1)),
        "anchor": {k: v for k, v in anchor_record.items() if k != "yaml"} or None,
        "runtime": setup.runtime,
        "threads": setup.threads,
        "space_fingerprint": space.fingerprint(),
        "within_10pct": scores[kind]["within_10pct"],
        "spearman": scores[kind]["spearman"],
        "agreement": results,
    }


def _plot(
    rundir: Any,
    measured: list[float],
    predicted: list[float],
    table: list[float],
    kind: str,
    scores: dict[str, Any],
) -> None:
    from foundation.figures import close, predicted_vs_measured

    def title(name: str, a: dict[str, Any]) -> str:
        return f"{name}:\n{a['within_10pct']:.0%} within +-10%, Spearman {a['spearman']:.3f}"

    fig = predicted_vs_measured(
        [
            (title(f"{kind}, held out", scores[kind]), measured, predicted),
            (title("table refit, held out", scores["table"]), measured, table),
        ]
    )
    rundir.save_figure("predicted_vs_measured.png", fig)
    close(fig)


# -- a predictor checked on this machine, now --------------------------------------------------------
def check_predictor(cfg: Any, rundir: Any, setup: Setup, space: Any, predictor: Any) -> dict[str, Any]:
    """Does a predictor still hold here? Its reference architectures measured again (the drift a
    search would scale by), then N random architectures of the space it was not fitted on,
    measured end to end now, then the references once more (did the machine hold its speed
    meanwhile?): the share within +-10% and Spearman of its predictions as fitted, scaled by the
    references' drift before (what a search with `latency_drift: scale` prices with) and after,
    and scaled by the one factor that fits these N best (hindsight: the most any one-number
    correction could give); the old table-sum predictor on the same N beside (`table_baselines`).
    Resumable (`--resume`): a drift measured before is reused."""
    from search_spaces.latency_predictor import agreement
    from training.timing import other_cpu, reference_drift

    n = int(cfg.check_predictor)
    now = other_cpu(predictor.machine)
    if now is not None:  # a search refuses it (latency_machine); a check measures how far it carries
        print(
            f"check predictor: it was measured on {predictor.machine['cpu']}; this machine is {now}",
            file=sys.stderr,
        )
    if predictor.anchor:
        return _check_anchored(cfg, rundir, setup, space, predictor)
    found = rundir.manifest.get("latency_drift")
    if found is None and predictor.references:
        refs = predictor.references
        print(
            f"check predictor: {predictor.describe()}; measuring its {len(refs)} reference architectures "
            "again, as they were measured for it",
            file=sys.stderr,
            flush=True,
        )
        found = {
            **reference_drift(refs, space, {**predictor.setup, "runtime": predictor.runtime}),
            "mode": "scale",
        }
        rundir.record(latency_drift=found)
    elif found is None:
        print(
            "check predictor: it keeps no reference architectures (and its run's measurements.csv is "
            "not beside it): no drift is measured, the scaled column equals the fitted one",
            file=sys.stderr,
        )
    factor = float(found["factor"]) if found else 1.0
    exclude = frozenset(predictor.trained_on)
    if not exclude:
        print(
            "check predictor: it does not name the architectures it was fitted on; some drawn here "
            "may be among them (their figures flatter it)",
            file=sys.stderr,
        )
    choices = distinct_samples(space, n, int(cfg.run.seed) + 1, exclude, "--check-predictor")
    rows = _measured_before(rundir, choices)
    print(
        f"check predictor: {n} random architectures it was not fitted on ({len(rows)} measured before); "
        f"each the median of {setup.repeat} repeat(s) of the median of {setup.runs} runs after "
        f"{setup.warmup} warm-up",
        file=sys.stderr,
        flush=True,
    )
    measure_all(cfg, rundir, setup, space, choices, rows, "check predictor", "predicted", predictor.predict)
    end = rundir.manifest.get("latency_drift_end")
    if found is not None and end is None:  # did the machine hold its speed while these were measured?
        print("check predictor: its reference architectures again, after the others", file=sys.stderr)
        record = {**predictor.setup, "runtime": predictor.runtime}
        end = reference_drift(predictor.references, space, record, warm_up=False)  # warm by now
        rundir.record(latency_drift_end=end)
    measured = [float(r["measured_ms"]) for r in rows]
    raw = [float(r["predicted_ms"]) for r in rows]
    best = statistics.median(m / p for m, p in zip(measured, raw))
    results = {"as fitted": agreement(measured, raw)}
    results[f"x{factor:.3f}: the references' drift before (a search's)"] = agreement(
        measured, [p * factor for p in raw]
    )
    if end is not None:
        results[f"x{end['factor']:.3f}: the references' drift after"] = agreement(
            measured, [p * float(end["factor"]) for p in raw]
        )
    results[f"x{best:.3f}: the best one factor (hindsight)"] = agreement(measured, [p * best for p in raw])
    results.update(table_baselines(cfg, space, predictor, rows, measured))
    rundir.write_csv(
        "predictor.csv",
        [
            {
                "id": r["id"],
                "arch": r["arch"],
                "blocks": r["blocks"],
                "measured_ms": r["measured_ms"],
                "predicted_ms": round(float(r["predicted_ms"]) * factor, 4),
                "unscaled_ms": r["predicted_ms"],
                "error": round(float(r["predicted_ms"]) * factor / float(r["measured_ms"]) - 1, 4),
                "cv": r["cv"],
                "flagged": r["flagged"],
            }
            for r in rows
        ],
    )
    _plot_check(rundir, measured, raw, factor, results)
    print(_agreement_table(results))
    flagged = sum(bool(r["flagged"]) for r in rows)
    measuring = round(sum(float(r["seconds"]) for r in rows), 1)
    print(
        f"{predictor.describe()}: {n} architectures it was not fitted on, measured in {_eta(measuring)} "
        f"({flagged} with CV over {float(cfg.cv_threshold):.0%}); {setup.runtime}, {setup.threads} "
        f"thread(s), load average {os.getloadavg()[0]:.2f}"
    )
    print(f"command: {_command(rundir)}")
    return {
        "predictor": str(cfg.predictor),
        "architectures": n,
        "drift": found,
        "drift_after": end,
        "best_factor": round(best, 4),
        "measuring_seconds": measuring,
        "flagged": flagged,
        "runtime": setup.runtime,
        "threads": setup.threads,
        "within_10pct": results[f"x{factor:.3f}: the references' drift before (a search's)"]["within_10pct"],
        "within_10pct_as_fitted": results["as fitted"]["within_10pct"],
        "spearman": results["as fitted"]["spearman"],
        "agreement": results,
    }


def table_baselines(
    cfg: Any, space: Any, predictor: Any, rows: list[dict[str, Any]], measured: list[float]
) -> dict[str, dict[str, Any]]:
    """The old table-sum predictor on the same held-out architectures, for comparison: the table
    the predictor reads, as built (its own calibration), and `overhead + scale x sum of parts`
    refitted on the architectures the predictor was fitted on (the fit run's measurements.csv
    beside it; left out, with a line saying so, where that file is not there)."""
    from search_spaces.latency_predictor import TableFit, agreement, features, fit_rows, predictor_file

    archs = [space.decode(_choices(r)) for r in rows]
    kw = predictor.kw
    out = {"the table as built": agreement(measured, [predictor.table.predict(a, **kw) for a in archs])}
    try:
        fitted = [r for r in fit_rows(predictor_file(str(cfg.predictor))) if r.get("measured_ms")]
        train = [space.decode(_choices(r)) for r in fitted]
    except (OSError, ValueError, KeyError) as exc:
        print(f"check predictor: no table refit beside it ({exc})", file=sys.stderr)
        return out
    if len(fitted) < 2:
        print(
            "check predictor: no table refit (its fit run's measurements.csv is not beside it)",
            file=sys.stderr,
        )
        return out
    stages = len(space.base.stages)
    x = [features(a, predictor.table, stages, **kw) for a in train]
    refit = TableFit().fit(_array(x), _array([float(r["measured_ms"]) for r in fitted]))
    held = refit.predict(_array([features(a, predictor.table, stages, **kw) for a in archs]))
    out[f"the table refitted on the fit's {len(fitted)}"] = agreement(measured, [float(v) for v in held])
    return out


def _array(values: Any) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def _check_anchored(cfg: Any, rundir: Any, setup: Setup, space: Any, predictor: Any) -> dict[str, Any]:
    """`check_predictor` for a predictor fitted beside an anchor: each architecture measured
    beside the same anchor, its ratio converted at the predictor's reference speed (no drift to
    measure first: the anchor, timed run by run, is the machine's speed now). Beside it, the
    same timings in plain milliseconds, as fitted and scaled by the one factor that fits them
    best (hindsight), and how fast the machine ran the anchor against the fit."""
    from search_spaces.arch import Arch
    from search_spaces.latency_predictor import agreement

    n = int(cfg.check_predictor)
    kw = {"num_classes": int(cfg.num_classes), "stem_stride": cfg.stem_stride}
    anchor = anchor_runner(Arch.from_yaml(predictor.anchor["yaml"]), setup, kw)
    reference = float(predictor.anchor["reference_ms"])
    choices = distinct_samples(
        space, n, int(cfg.run.seed) + 1, frozenset(predictor.trained_on), "--check-predictor"
    )
    rows = _measured_before(rundir, choices)
    print(
        f"check predictor: {predictor.describe()}; {n} random architectures it was not fitted on "
        f"({len(rows)} measured before), each beside the anchor {anchor[0].name}",
        file=sys.stderr,
        flush=True,
    )
    measure_all(
        cfg, rundir, setup, space, choices, rows, "check predictor", "predicted", predictor.predict, anchor
    )
    at_reference = [float(r["ratio"]) * reference for r in rows]
    raw = [float(r["measured_ms"]) for r in rows]
    predicted = [float(r["predicted_ms"]) for r in rows]
    speed = statistics.median(float(r["anchor_ms"]) for r in rows) / reference
    best = statistics.median(m / p for m, p in zip(raw, predicted))
    results = {
        f"beside the anchor (ratio x {reference:.2f} ms)": agreement(at_reference, predicted),
        "milliseconds now, as fitted": agreement(raw, predicted),
        f"milliseconds now, x{best:.3f} (hindsight)": agreement(raw, [p * best for p in predicted]),
    }
    rundir.write_csv(
        "predictor.csv",
        [
            {
                "id": r["id"],
                "arch": r["arch"],
                "blocks": r["blocks"],
                "measured_ms": round(m, 4),
                "predicted_ms": r["predicted_ms"],
                "error": round(float(r["predicted_ms"]) / m - 1, 4),
                "raw_ms": r["measured_ms"],
                "anchor_ms": r["anchor_ms"],
                "ratio_cv": r["ratio_cv"],
                "flagged": r["flagged"],
            }
            for r, m in zip(rows, at_reference)
        ],
    )
    from foundation.figures import close, predicted_vs_measured

    fig = predicted_vs_measured(
        [
            (f"{name}:\n{a['within_10pct']:.0%} within +-10%", measured, predicted)
            for (name, a), measured in zip(list(results.items())[:2], (at_reference, raw))
        ]
    )
    rundir.save_figure("predicted_vs_measured.png", fig)
    close(fig)
    print(_agreement_table(results))
    measuring = round(sum(float(r["seconds"]) for r in rows), 1)
    flagged = sum(bool(r["flagged"]) for r in rows)
    print(
        f"the anchor ran {speed:.3f}x its fitted latency ({reference:.2f} ms) over this check; {n} architectures "
        f"measured in {_eta(measuring)} ({flagged} with the ratio's CV over {float(cfg.cv_threshold):.0%}); "
        f"{setup.runtime}, {setup.threads} thread(s), load average {os.getloadavg()[0]:.2f}"
    )
    print(f"command: {_command(rundir)}")
    first = next(iter(results))
    return {
        "predictor": str(cfg.predictor),
        "architectures": n,
        "anchor": {k: v for k, v in predictor.anchor.items() if k != "yaml"},
        "anchor_speed": round(speed, 4),
        "best_factor": round(best, 4),
        "measuring_seconds": measuring,
        "flagged": flagged,
        "runtime": setup.runtime,
        "threads": setup.threads,
        "within_10pct": results[first]["within_10pct"],
        "within_10pct_as_fitted": results["milliseconds now, as fitted"]["within_10pct"],
        "spearman": results[first]["spearman"],
        "agreement": results,
    }


def _agreement_table(results: dict[str, dict[str, Any]]) -> str:
    head = ["predictor", "held out", "within +-10%", "Spearman", "median |err|", "max |err|", "bias"]
    lines = [
        {
            "predictor": name,
            "held out": str(a["n"]),
            "within +-10%": f"{a['within_10pct']:.0%}",
            "Spearman": f"{a['spearman']:.3f}",
            "median |err|": f"{a['median_abs_error']:.1%}",
            "max |err|": f"{a['max_abs_error']:.1%}",
            "bias": f"{a['mean_signed_error']:+.1%}",
        }
        for name, a in results.items()
    ]
    return tables.format_table(lines, head, {h: str for h in head}, align="first-left")


def _plot_check(
    rundir: Any, measured: list[float], raw: list[float], factor: float, results: dict[str, Any]
) -> None:
    from foundation.figures import close, predicted_vs_measured

    (name0, a0), (name1, a1) = list(results.items())[:2]
    fig = predicted_vs_measured(
        [
            (f"{name0}:\n{a0['within_10pct']:.0%} within +-10%", measured, raw),
            (f"{name1}:\n{a1['within_10pct']:.0%} within +-10%", measured, [p * factor for p in raw]),
        ]
    )
    rundir.save_figure("predicted_vs_measured.png", fig)
    close(fig)
