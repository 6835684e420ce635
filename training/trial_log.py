"""Every finished trial of a run, recorded where tools can read it: the run's Optuna study and,
optionally, MLflow.

A trial stage (search, grid, study) keeps its own table (`trials.csv`, `study.csv`), the source
of truth it resumes from. After each rewrite of that table it hands the rows to `TrialLog.sync`
as `Entry`s; the log adds to the study every finished entry whose key it has not recorded yet,
so a resumed run, or one killed between the table and the study, never records a trial twice.
The stage needs nothing else from its sampler: an Optuna-backed sampler that asks and tells
through the run's study already (`TrialLog.open(..., study=sampler.study)`) gets its trials
annotated instead of copied (while they run: a trial killed before its annotation keeps the
sampler's own record, params, value and state, without the log's attributes).

    log = TrialLog.open(rundir, cfg, "search", {"op": Choice(range(4))})
    log.sync([Entry("0", "ok", {"op": 2}, value=0.71, attrs={"macs": 3.9e8, "arch": "..."})])
    log.finish(rundir, ["trials.csv", "best_arch.yaml"])   # MLflow: the run's files as artifacts

The study lives in an Optuna storage: by default the journal file `study.log` in the run directory
(Optuna's JournalStorage: an append-only log of operations, which Optuna recommends for local
multi-process use and optuna-dashboard reads as it is), or any `storage=` database URL (SQLite,
PostgreSQL, which several runs may share under distinct study names). Its name and redacted URL
go to manifest.json, where `effnas dashboard RUN_DIR` finds them. Nothing heavy is imported until
a log is opened (optuna, mlflow).

Why a journal and not an SQLite study.db by default: recording one search trial (42 categorical
parameters, 10 attributes) costs 53 ms in an SQLite RDBStorage against 2.1 ms appended to a journal
(`python benchmarks/bench_trial_log.py --trials 40`, 2-core x86_64, optuna 5.0, load 2.7); under
cProfile a 300-trial search on the surrogate spent 35 of its 44 s recording trials in SQLite.
Disk syncs are not the cost: SQLAlchemy runs two queries per parameter, CPU in the ORM.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from foundation.errors import UserError

JOURNAL = "study.log"  # the run's own study, unless `storage=` names a database
KEY_ATTR = "effnas_key"  # user attr / MLflow tag naming a trial within its run
STATES = {"ok": "COMPLETE", "failed": "FAIL", "stopped": "PRUNED", "rejected": "PRUNED"}


@dataclass
class MlflowConfig:
    """`mlflow.*` of every trial stage (added by the application, like `ray`)."""

    enabled: bool = False  # log every trial and the run's files to MLflow (pip install 'effnas[mlflow]')
    tracking_uri: Optional[str] = None  # None: MLflow's own default ($MLFLOW_TRACKING_URI)
    experiment: Optional[str] = None  # None: effnas-<stage>


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of `values` (the search's choice indices, a method name)."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class Range:
    """A float parameter within [low, high] (a multiplier)."""

    low: float
    high: float

    @classmethod
    def over(cls, values: Iterable[float]) -> Range:
        """The smallest range holding every value (a stage knows its plan up front)."""
        xs = [float(v) for v in values]
        return cls(min(xs), max(xs))


@dataclass(frozen=True)
class Entry:
    """One trial as the log records it.

    key: unique within the run (a trial id); status: ok | stopped | failed | rejected (a
    `pending` entry is skipped until it finishes); params: the trial's point (names as in
    `TrialLog`'s space); value: the objective (reward, or accuracy); attrs: what else is known
    (macs, params, accuracy, reward, arch, error, seconds); number: the trial's number in a study
    an Optuna sampler asks and tells through (`TrialLog.open(study=...)`), else None."""

    key: str
    status: str
    params: Mapping[str, Any]
    value: float | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    number: int | None = None


def redact(url: str) -> str:
    """A storage URL without its password (manifests get shared)."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def check(cfg: Any) -> None:
    """Cheap checks of `storage` and `mlflow.*` before a run directory exists."""
    storage = cfg.get("storage")
    if storage:
        if "://" not in str(storage):
            raise UserError(
                f"storage must be a database URL (sqlite:///path, postgresql://...), got {storage!r}"
            )
        open_storage(str(storage))  # a server that is down is bad input too, found before the run starts
    ml = cfg.get("mlflow")
    if ml is None or not ml.enabled:
        return
    try:
        import importlib.util

        found = importlib.util.find_spec("mlflow") is not None
    except ValueError:
        found = False
    if not found:
        raise UserError("mlflow.enabled=true needs MLflow: pip install 'effnas[mlflow]'")
    uri = str(ml.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
    if uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        # MLflow 3 refuses its file store unless asked; say so before the run starts
        raise UserError(
            f"mlflow.tracking_uri={uri}: MLflow's file store needs MLFLOW_ALLOW_FILE_STORE=true "
            "in the environment; or use a database, e.g. sqlite:///mlflow.db"
        )


def open_storage(url: str) -> Any:
    """An Optuna storage, or a UserError of one line: a database URL (`scheme://...`) opens an
    RDBStorage (its tables created if new); a file path, a journal (created if new, replayed whole
    if not, so a corrupt one is found here)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in url:
        return open_journal(url)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # the storage's own errors: bad URL, server down, no driver
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"storage {redact(url)}: {line}") from None


def open_journal(path: str) -> Any:
    """The Optuna journal at `path`, replayed; a file that is not one is a UserError."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        with open(path, "rb") as f:  # every journal record is a JSON object on its own line
            if f.read(1) not in (b"", b"{"):
                raise ValueError("its first record is not a JSON object")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(
            f"{path} is not an Optuna journal (corrupt?): {exc}; restore it or start a new run"
        ) from None
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # replays the log: a torn or foreign file fails here, not mid-run
    except Exception as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path} is not an Optuna journal (corrupt?): {why}; restore it or start a new run"
        ) from None
    return storage


def check_sqlite(path: Any, empty_ok: bool = True) -> None:
    """An SQLite study file that exists must be one: Optuna would wait on a corrupt file instead
    of failing, so a file without SQLite's 16-byte header is a UserError of one line. A missing or
    empty file passes when `empty_ok` (a run about to create it), fails when reading a study."""
    db = Path(str(path))
    if empty_ok and (not db.is_file() or not db.stat().st_size):
        return
    with db.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise UserError(f"{db} is not an SQLite database (corrupt?); restore it or start a new run")


def study_of(rundir: Any, cfg: Any, stage: str) -> tuple[str, str]:
    """(storage URL, study name) of the run, recorded in manifest.json. A run keeps the name its
    manifest records (a resumed run, a second call); a new one gets `study_name=` or
    `effnas-<stage>-<run dir>-<8 hex>` (the suffix keeps runs apart in a database they share)."""
    storage = cfg.get("storage") or str(rundir.file(JOURNAL).resolve())
    recorded = rundir.manifest.get("study") or {}  # this run's, or a resumed one's
    name = (
        recorded.get("name")
        or cfg.get("study_name")
        or f"effnas-{stage}-{rundir.path.name}-{uuid.uuid4().hex[:8]}"
    )
    owner = recorded.get("owner") or uuid.uuid4().hex  # who may write into the study (TrialLog.open)
    rundir.record(study={"storage": redact(storage), "name": name, "owner": owner})
    return storage, name


class TrialLog:
    """The run's study (and MLflow run, when enabled); `sync` records what is new."""

    def __init__(
        self,
        study: Any,
        space: Mapping[str, Choice | Range],
        *,
        attached: bool = False,
        mlflow: _MlflowRun | None = None,
    ) -> None:
        import optuna

        self.study = study
        self.attached = attached
        self.mlflow = mlflow
        self.distributions = {name: _distribution(optuna, p) for name, p in space.items()}
        trials = study.get_trials(deepcopy=False)
        self.recorded = {str(t.user_attrs[KEY_ATTR]) for t in trials if KEY_ATTR in t.user_attrs}

    @classmethod
    def open(
        cls,
        rundir: Any,
        cfg: Any,
        stage: str,
        space: Mapping[str, Choice | Range],
        *,
        directions: Sequence[str] = ("maximize",),
        study: Any = None,
        storage: Any = None,
    ) -> TrialLog:
        """The log of a run. `study`: an Optuna study a sampler already asks and tells through
        (its trials are annotated, not added); else the run's study is created or, on resume,
        reopened, in `storage` (the run's storage already opened) or in the one `study_of` names."""
        import optuna

        attached = study is not None
        if study is None:
            url, name = study_of(rundir, cfg, stage)
            study = optuna.create_study(
                storage=storage if storage is not None else open_storage(url),
                study_name=name,
                directions=list(directions),
                load_if_exists=True,
            )
        # one study per run: another run's study of the same name (a shared database, an explicit
        # study_name) would take this run's trials as its own, and keys would collide. A run is
        # known by the token its manifest keeps, so a run directory moved elsewhere still owns it.
        token = rundir.manifest["study"]["owner"]
        owner = study.user_attrs.get("effnas_owner")
        if owner is not None and owner != token:
            raise UserError(
                f"study {study.study_name!r} already holds the trials of run "
                f"{study.user_attrs.get('effnas_run')}; give this run its own study_name (or leave it unset)"
            )
        if owner is None:
            study.set_user_attr("effnas_owner", token)
            study.set_user_attr("effnas_run", str(rundir.path.resolve()))
            study.set_user_attr("effnas_stage", stage)
        ml = _MlflowRun.open(rundir, cfg, stage, study.study_name) if _mlflow_on(cfg) else None
        return cls(study, space, attached=attached, mlflow=ml)

    def sync(self, entries: Iterable[Entry]) -> int:
        """Record every finished entry not recorded yet; returns how many were added."""
        added = 0
        for entry in entries:
            if entry.status not in STATES or entry.key in self.recorded:
                continue
            if self.attached:
                self._annotate(entry)
            else:
                self._add(entry)
            if self.mlflow is not None:
                self.mlflow.trial(entry)
            self.recorded.add(entry.key)
            added += 1
        return added

    def _add(self, entry: Entry) -> None:
        import optuna
        from optuna.trial import TrialState

        state = TrialState[STATES[entry.status]]
        value = None if entry.value is None else float(entry.value)
        if state == TrialState.COMPLETE and value is None:  # finished without a score
            state = TrialState.FAIL
        self.study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params={k: v for k, v in entry.params.items() if k in self.distributions},
                distributions=self.distributions,
                values=[value] if state == TrialState.COMPLETE else None,
                # a stopped trial's last score, as its one intermediate value
                intermediate_values={0: value} if state == TrialState.PRUNED and value is not None else None,
                user_attrs={**_plain(entry.attrs), "status": entry.status, KEY_ATTR: entry.key},
            )
        )

    def _annotate(self, entry: Entry) -> None:
        """A trial of a sampler-owned study: the attrs go onto the sampler's own trial while it
        is still running (the driver records a row before it tells the sampler)."""
        import optuna
        from optuna.trial import TrialState

        if entry.number is None:
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number == entry.number:
                trial = optuna.trial.Trial(self.study, t._trial_id)
                for k, v in {**_plain(entry.attrs), KEY_ATTR: entry.key}.items():
                    trial.set_user_attr(k, v)
                return

    def finish(self, rundir: Any, files: Sequence[str], status: str = "FINISHED") -> None:
        """MLflow: the run's files (those that exist) as artifacts of its run, and its end."""
        if self.mlflow is not None:
            self.mlflow.finish([rundir.file(f) for f in files if rundir.file(f).is_file()], status)


def _distribution(optuna: Any, p: Choice | Range) -> Any:
    if isinstance(p, Choice):
        return optuna.distributions.CategoricalDistribution(list(p.values))
    return optuna.distributions.FloatDistribution(float(p.low), float(p.high))


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able values (numpy scalars become Python ones); None kept."""
    out = {}
    for k, v in attrs.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def _mlflow_on(cfg: Any) -> bool:
    ml = cfg.get("mlflow")
    return bool(ml is not None and ml.enabled)


class _MlflowRun:
    """One MLflow run per effnas run (the parent), one nested run per trial; its id is kept in
    manifest.json so a resumed run continues it, and trials carry `effnas_key` tags so none is
    logged twice."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        children = client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=50000
        )
        self.logged = {r.data.tags.get(KEY_ATTR) for r in children}

    @classmethod
    def open(cls, rundir: Any, cfg: Any, stage: str, study_name: str) -> _MlflowRun:
        import logging

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        ml = cfg.mlflow
        uri = ml.tracking_uri or mlflow.get_tracking_uri()
        try:
            client = MlflowClient(tracking_uri=uri)
            name = ml.experiment or f"effnas-{stage}"
            exp = client.get_experiment_by_name(name)
            experiment_id = exp.experiment_id if exp is not None else client.create_experiment(name)
            recorded = (rundir.manifest.get("mlflow") or {}).get("run_id")  # a resumed run's
            if recorded:
                client.update_run(recorded, status="RUNNING")
                run_id = recorded
            else:
                run = client.create_run(
                    experiment_id,
                    run_name=rundir.path.name,
                    tags={
                        "effnas.stage": stage,
                        "effnas.run": str(rundir.path.resolve()),
                        "optuna.study": study_name,
                    },
                )
                run_id = run.info.run_id
                _log_config(client, run_id, cfg)
        except MlflowException as exc:
            raise UserError(
                f"mlflow ({ml.tracking_uri or 'default URI'}): {str(exc).splitlines()[0]}"
            ) from None
        rundir.record(mlflow={"tracking_uri": redact(str(uri)), "experiment": name, "run_id": run_id})
        return cls(client, run_id, experiment_id)

    def trial(self, entry: Entry) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if entry.key in self.logged:
            return
        now = int(time.time() * 1000)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial {entry.key}",
            tags={"mlflow.parentRunId": self.run_id, KEY_ATTR: entry.key, "status": entry.status},
        )
        texts = {k: v for k, v in entry.attrs.items() if v is not None and not _number(v)}
        params = [Param(k, _text(v)) for k, v in {**texts, **entry.params}.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in entry.attrs.items() if _number(v)]
        if entry.value is not None:
            metrics.append(Metric("objective", float(entry.value), now, 0))
        self.client.log_batch(
            run.info.run_id, metrics=metrics, params=params, tags=[RunTag("effnas", "trial")]
        )
        self.client.set_terminated(run.info.run_id, "FINISHED" if entry.status != "failed" else "FAILED")
        self.logged.add(entry.key)

    def finish(self, paths: Sequence[Any], status: str) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)


def _log_config(client: Any, run_id: str, cfg: Any) -> None:
    """The run's config, flattened (`proxy.epochs`, ...), as the parent run's params."""
    from mlflow.entities import Param
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = node

    walk("", {k: v for k, v in plain.items() if k not in ("hydra", "mlflow", "storage")})
    params = [Param(k, _text(v)) for k, v in flat.items()]
    for i in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=params[i : i + 100])


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _text(v: Any) -> str:
    return str(v)[:6000]  # MLflow's param value limit
