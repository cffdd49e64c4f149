"""Optuna study plumbing shared by the Optuna and Ray backends.

Storage URLs
    ``sqlite:///path/study.db`` (default ``sqlite:///RUN/study.db``) and any SQLAlchemy URL
    (``postgresql://...``, ``mysql://...``) open an :class:`optuna.storages.RDBStorage` with a
    heartbeat: a trial whose worker stops beating for ``grace_period`` seconds is marked FAIL by the
    next worker that asks for a trial, and its parameters are queued again (at most
    :data:`MAX_RETRY` times). ``journal:///path/study.log`` or any path ending in ``.log`` opens a
    :class:`~optuna.storages.JournalStorage` over a :class:`~optuna.storages.journal.JournalFileBackend`
    (journal storage has no heartbeat; see below).

Dead local workers
    Every trial carries the user attribute ``worker = "host:pid"`` and the process start time. A
    RUNNING trial whose worker ran on *this host* and is no longer alive (SIGKILL, power loss of a
    previous run) is marked FAIL and re-queued immediately when a search starts or asks for the next
    trial, whatever the storage. Trials of other hosts are left to the RDB heartbeat. A RUNNING trial
    that carries no ``worker`` :data:`ORPHAN_GRACE_S` seconds after it started was orphaned: its
    process died between ``ask`` and tagging it (milliseconds apart); any host's worker fails and
    re-queues it the same way.

Exact trial counts
    ``count + ask`` happens under an exclusive file lock that lives next to a file storage
    (``study.db.search-lock`` / ``study.log.search-lock``) or, for a network database, in the run directory, so
    all workers on one machine agree on how many trials remain. Workers on other machines sharing a
    network database additionally re-check after asking (see :func:`is_surplus`). The one exception
    is a dead trial's retry (:func:`next_is_retry`): when its worker died after the others had already
    started enough trials to fill the count, the retry still runs, so the study ends with one more
    complete trial per such death rather than without that baseline, seed or proposal.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import UserError
from autocompress.rundir import file_lock
from search.backends._stored import store_record

log = logging.getLogger(__name__)

SAMPLERS = ("nsga2", "tpe", "gp", "random")
MAX_RETRY = 2
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
#: a RUNNING trial still without a ``worker`` attribute this many seconds after it started is orphaned
ORPHAN_GRACE_S = 60.0
#: a constraint violation of +inf (metric missing) is stored as this finite number
MAX_VIOLATION = 1e12

#: user attributes written on every trial
ATTR_WORKER = "worker"
ATTR_BASELINE = "baseline"
ATTR_ERROR = "error"
#: system attribute of a retry: the number of the first trial whose worker died with these parameters
ATTR_FAILED_TRIAL = "failed_trial"
ATTR_RECORD = "record"
ATTR_METRICS = "metrics"
STUDY_ATTR_BASELINES = "autocompress:baselines_enqueued"
#: study user attribute: the constraint texts, in the order of each trial's ``constraints`` values
STUDY_ATTR_CONSTRAINTS = "constraints"
#: trial system attribute Optuna (``FrozenTrial.constraints``) and optuna-dashboard read constraints from
CONSTRAINTS_KEY = "constraints"


class StorageError(UserError, ValueError):
    """A storage URL or study cannot be used (bad URL, directions differ from the existing study)."""


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage URL: the URL optuna gets, and the local file behind it (if any)."""

    url: str
    kind: str  # "rdb" | "journal"
    path: Path | None  # local file for sqlite / journal; None for network databases

    def lock_path(self, run_dir: Path) -> Path:
        if self.path is not None:
            return self.path.with_name(self.path.name + ".search-lock")  # not ".lock": the journal backend uses that
        return Path(run_dir) / ".study.search-lock"


def parse_storage(url: str | None, run_dir: Path) -> StorageSpec:
    """Resolve ``--storage`` (``None`` -> ``sqlite:///RUN/study.db``)."""
    run_dir = Path(run_dir)
    if url is None or url == "":
        path = (run_dir / "study.db").resolve()
        return StorageSpec(f"sqlite:///{path}", "rdb", path)
    if url.startswith("journal://"):
        rest = url[len("journal://"):]
        path = Path(rest).expanduser().resolve()
        return StorageSpec(str(path), "journal", path)
    if "://" not in url:
        if url.endswith(".log"):
            path = Path(url).expanduser().resolve()
            return StorageSpec(str(path), "journal", path)
        if url.endswith(".db") or url.endswith(".sqlite"):
            path = Path(url).expanduser().resolve()
            return StorageSpec(f"sqlite:///{path}", "rdb", path)
        raise StorageError(
            f"--storage = {url!r}: not a storage URL; allowed sqlite:///path.db, journal:///path.log, "
            "a path ending in .db or .log, or a database URL such as postgresql://user@host/db"
        )
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser()
        if str(path) in ("", ":memory:"):
            raise StorageError(f"--storage = {url!r}: an in-memory database cannot be shared or resumed; "
                               "give a file, e.g. sqlite:///runs/study.db")
        path = path.resolve()
        return StorageSpec(f"sqlite:///{path}", "rdb", path)
    return StorageSpec(url, "rdb", None)


def recorded_spec(url: str) -> StorageSpec:
    """The :class:`StorageSpec` of a URL that :func:`parse_storage` resolved (``run.json``'s
    ``search.storage``): a journal file is recorded as its bare path."""
    if "://" in url:
        return parse_storage(url, Path("."))
    path = Path(url)
    return StorageSpec(str(path), "journal", path)


def open_storage(spec: StorageSpec, *, heartbeat: bool = True,
                 connect_timeout_s: int | None = None) -> optuna.storages.BaseStorage:
    """Open the storage; RDB storages get a heartbeat (unless ``heartbeat=False``) and retry stale trials.

    A local file storage is opened under its lock: two processes creating the same new SQLite
    schema at once would otherwise collide (``UNIQUE constraint failed: alembic_version``).
    ``connect_timeout_s`` bounds the wait for a PostgreSQL or MySQL server.
    """
    if spec.path is None:
        return _open_storage(spec, heartbeat, connect_timeout_s)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(spec.lock_path(spec.path.parent)):
        return _open_storage(spec, heartbeat, connect_timeout_s)


def _open_storage(spec: StorageSpec, heartbeat: bool, connect_timeout_s: int | None) -> optuna.storages.BaseStorage:
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(spec.path)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        kwargs: dict[str, Any] = {}
        if spec.url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        elif connect_timeout_s is not None and spec.url.startswith(("postgresql", "mysql")):
            kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": int(connect_timeout_s)}}
        if heartbeat:
            kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
                          heartbeat_stale_trial_callback=retry)
        storage = _rdb_storage(spec.url, kwargs)
    if spec.url.startswith("sqlite"):
        _sqlite_wal(storage)
    return storage


def _rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 6) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried while other workers create the same new schema.

    Workers that first open an empty PostgreSQL/MySQL database at the same moment all create
    Optuna's tables; all but one fail (measured with 4 processes on PostgreSQL 15: 3 failed with
    ``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``). Opening
    again then finds the tables. Local SQLite files are opened under a file lock instead.
    """
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == attempts - 1:
                raise
            log.info("another worker is creating the study tables (%s); retrying", type(exc.orig).__name__)
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _sqlite_wal(storage: optuna.storages.RDBStorage) -> None:
    """WAL journal + ``synchronous=NORMAL``: a commit costs no fsync, yet a killed process never
    corrupts or loses committed data (only an OS crash can drop the last transactions)."""
    import sqlalchemy

    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sqlalchemy.event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # connections opened during init are replaced by ones with the pragmas


def make_sampler(name: str, seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    """``nsga2`` | ``tpe`` | ``gp`` | ``random``; constraints come from each trial's ``constraints``
    system attribute (:func:`tell_record`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise StorageError(f"search.sampler = {name!r}: allowed {', '.join(SAMPLERS)}")


def create_study(storage: optuna.storages.BaseStorage, study_name: str, directions: Sequence[str],
                 sampler: str, seed: int | None, lock: Path | None = None, *,
                 metric_names: Sequence[str] | None = None,
                 constraints: Sequence[str] = ()) -> tuple[optuna.Study, int | None, bool]:
    """Create or load the study (under ``lock``) with a ``sampler`` seeded for this worker.

    ``metric_names`` (the objectives) become the study's metric names (``study.set_metric_names``:
    optuna-dashboard labels its axes with them) and ``constraints`` (their texts, in the order of
    each trial's ``constraints`` values) the study user attribute ``constraints``.

    Returns the study, the sampler seed used and whether this process created the study: exactly
    one process does, also among workers of several machines starting at once on a network
    database (the storage refuses a second study of the same name), so that one alone queues the
    baselines (:func:`enqueue_baselines`). The process that creates the study uses
    ``seed`` itself, so a fresh single-worker run is reproducible. A process that joins an
    existing study (a resumed run, or another worker on the same storage) gets a seed derived
    from ``seed``, its worker id and the number of trials already in the study: reusing ``seed``
    would replay the very proposals the study already holds (the random start of NSGA-II/TPE),
    which the objective's cache answers but which use up the trial budget.
    Refuses a study whose objectives point elsewhere or have other names.
    """
    with file_lock(lock) if lock is not None else contextlib.nullcontext():
        n_before, used = 0, seed
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, directions=list(directions),
                                        sampler=make_sampler(sampler, seed, len(directions)))
        except optuna.exceptions.DuplicatedStudyError:
            n_before = len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
            used = derived_seed(seed, worker_id(), n_before)
            study = optuna.load_study(study_name=study_name, storage=storage,
                                      sampler=make_sampler(sampler, used, len(directions)))
            created = False
        else:
            created = True
    have = [d.name.lower() for d in study.directions]
    if have != [d.lower() for d in directions]:
        raise StorageError(
            f"study {study_name!r} in this storage has directions {have}, but the space asks for "
            f"{list(directions)}; use another --study or --storage"
        )
    _name_metrics(study, study_name, metric_names, constraints)
    if not created:
        log.info("joined study %r (%d trials so far): sampler seed %s derived from seed %s",
                 study_name, n_before, used, seed)
    return study, used, created


def _name_metrics(study: optuna.Study, study_name: str, metric_names: Sequence[str] | None,
                  constraints: Sequence[str]) -> None:
    """Set the metric names and constraint texts of a study that has none; refuse other names."""
    if metric_names is not None:
        have = study.metric_names
        if have is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metric_names))
        elif list(have) != list(metric_names):
            raise StorageError(f"study {study_name!r} in this storage has objectives {list(have)}, but the space "
                               f"asks for {list(metric_names)}; use another --study or --storage")
    if constraints and STUDY_ATTR_CONSTRAINTS not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR_CONSTRAINTS, list(constraints))


def derived_seed(seed: int | None, *parts: object) -> int | None:
    """A 32-bit sampler seed derived from ``seed`` and ``parts`` (worker id, trial count, ...);
    None (unseeded, random) stays None."""
    if seed is None:
        return None
    mix = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(mix.encode()).digest()[:4], "little")


# ----- workers ----------------------------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:  # noqa: BLE001 - no such process / no psutil
        return None


def tag_worker(trial: optuna.Trial, *, heartbeat: bool = False) -> None:
    """Record which process runs ``trial`` (for dead-worker detection on this host) and whether
    it beats the RDB heartbeat (then workers on other hosts notice when it dies)."""
    tag: dict[str, Any] = {"id": worker_id(), "start": _process_start(os.getpid())}
    if heartbeat:
        tag["heartbeat"] = True
    trial.set_user_attr(ATTR_WORKER, tag)


def recoverable(trial: FrozenTrial) -> bool:
    """Whether a worker will notice if ``trial``'s process dies: it runs on this host (pid check),
    beats the RDB heartbeat (another worker fails it after the grace period), or is not tagged yet
    (its worker tags it within milliseconds, or it is orphaned: :func:`is_orphan`)."""
    worker, _ = trial_worker(trial)
    if worker is None:
        return True
    tag = trial.user_attrs.get(ATTR_WORKER)
    if isinstance(tag, dict) and tag.get("heartbeat"):
        return True
    return isinstance(worker, str) and worker.rpartition(":")[0] == socket.gethostname()


def trial_worker(trial: FrozenTrial) -> tuple[str | None, float | None]:
    """``("host:pid", process start time)`` of the process that ran ``trial``, if recorded."""
    w = trial.user_attrs.get(ATTR_WORKER)
    if isinstance(w, dict):
        return w.get("id"), w.get("start")
    return None, None


def worker_is_dead(trial: FrozenTrial) -> bool:
    """True when ``trial`` ran on this host in a process that no longer exists."""
    worker, started = trial_worker(trial)
    if not isinstance(worker, str) or ":" not in worker:
        return False
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    now = _process_start(pid)
    return started is not None and now is not None and abs(now - float(started)) > 1.0  # pid reused


def _untagged_age(trial: FrozenTrial, now: datetime | None) -> float | None:
    """Seconds since a RUNNING trial no process has tagged (:func:`tag_worker`) started; None otherwise.

    ``datetime_start`` is the asking host's local clock (optuna's ``datetime.now()``), compared with
    this host's; hosts sharing a study are assumed to keep time within :data:`ORPHAN_GRACE_S` of each other.
    """
    if trial.state != TrialState.RUNNING or trial_worker(trial)[0] is not None or trial.datetime_start is None:
        return None
    return ((now or datetime.now()) - trial.datetime_start).total_seconds()


def is_orphan(trial: FrozenTrial, now: datetime | None = None) -> bool:
    """True for a RUNNING trial that no process tagged within :data:`ORPHAN_GRACE_S` seconds of its
    start: its worker died between ``ask`` and tagging."""
    age = _untagged_age(trial, now)
    return age is not None and age > ORPHAN_GRACE_S


def orphan_wait_s(study: optuna.Study, now: datetime | None = None) -> float:
    """Seconds until every RUNNING trial of ``study`` that no worker tagged is old enough to count as
    orphaned (:func:`is_orphan`); 0 when there is none."""
    now = now or datetime.now()
    ages = (_untagged_age(t, now) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return max([0.0, *(ORPHAN_GRACE_S - a for a in ages if a is not None)])


def _death(trial: FrozenTrial) -> str | None:
    """Why ``trial`` (RUNNING) is dead, or None while it may still be alive."""
    if worker_is_dead(trial):
        return f"WorkerDied: {trial_worker(trial)[0]} exited while running"
    if is_orphan(trial):
        return (f"WorkerDied: no worker claimed it within {ORPHAN_GRACE_S:g} s of its start "
                "(its process died between asking for it and running it)")
    return None


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue ``trial``'s parameters again (like optuna's retry callback); False past :data:`MAX_RETRY`.

    The parameters are those already suggested plus, for an enqueued trial (a baseline or a
    retry), its fixed parameters, so a trial killed half-way through ``suggest`` is retried
    with the same values. ``failed_trial``/``retry_history`` system attributes link the retry to
    the original, as optuna's ``RetryHeartbeatStaleTrialCallback`` does.
    """
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > MAX_RETRY:
        return False
    params = dict(trial.system_attrs.get("fixed_params") or {})
    params.update(trial.params)
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k == ATTR_BASELINE}
    study.enqueue_trial(params, user_attrs=user_attrs)
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if t.system_attrs.get("fixed_params") == params and ATTR_FAILED_TRIAL not in t.system_attrs]
    if waiting:
        new = waiting[-1]
        storage = study._storage  # noqa: SLF001
        storage.set_trial_system_attr(new._trial_id, ATTR_FAILED_TRIAL,  # noqa: SLF001
                                      trial.system_attrs.get(ATTR_FAILED_TRIAL, trial.number))
        storage.set_trial_system_attr(new._trial_id, "retry_history", history)  # noqa: SLF001
    return True


def next_is_retry(study: optuna.Study) -> bool:
    """Whether the queued trial ``ask`` pops next (the lowest-numbered WAITING one) is a retry.

    Such a retry runs even when the study already holds its requested count of complete and
    running trials: its worker died after the others had filled the count, and its parameters (a
    baseline, a seed or a proposal the sampler already made) would otherwise never be scored.
    """
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return bool(waiting) and ATTR_FAILED_TRIAL in min(waiting, key=lambda t: t.number).system_attrs


def fail_dead_local_trials(study: optuna.Study,
                           describe: Callable[[FrozenTrial], Mapping[str, Any]] | None = None) -> list[FrozenTrial]:
    """Mark RUNNING trials of dead processes on this host, and orphaned ones (:func:`is_orphan`),
    FAIL and re-queue them. Returns them.

    ``describe(trial)`` gives the failed record of a dead trial (``TrialRecord.to_dict()``); it is
    stored on the trial (:func:`search.backends._stored.store_record`) before the trial is marked,
    so every run directory of the study rebuilds the same record.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat (no-op for journal storage)
    storage = study._storage  # noqa: SLF001 - optuna exposes no public per-trial state setter
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _death(t)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, ATTR_ERROR, reason)  # noqa: SLF001
            if describe is not None:
                store_record(storage, t._trial_id, describe(storage.get_trial(t._trial_id)))  # noqa: SLF001
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):  # noqa: SLF001
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        requeued = requeue(study, t)
        log.warning("trial %d: its worker %s died; marked FAIL%s", t.number, trial_worker(t)[0] or "(untagged)",
                    " and re-queued its parameters" if requeued else f" (retried {MAX_RETRY}x, not re-queued)")
        dead.append(t)
    return dead


def started_count(study: optuna.Study) -> int:
    """Trials that ran or run (every state but WAITING: queued baselines and retries wait)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)


def worker_counts(study: optuna.Study) -> dict[str, int]:
    """Finished (COMPLETE or FAIL) trials of ``study`` per worker (``host:pid``), most first."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        worker = trial_worker(t)[0] or "unknown"
        counts[worker] = counts.get(worker, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def is_surplus(study: optuna.Study, trial_number: int, target: int) -> bool:
    """After asking: would running ``trial_number`` overshoot ``target`` complete trials?

    Trials ahead of it (complete, or running or queued with a smaller number) already fill the
    target. A queued (WAITING) trial with a smaller number is one a worker was popping while this
    one was created (``ask`` takes queued trials first): it runs, so it counts. A dead trial's
    retry is never surplus. Only needed when workers of several machines share a network database
    without a common lock.
    """
    ahead = 0
    for t in study.get_trials(deepcopy=False,
                              states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)):
        if t.number == trial_number and ATTR_FAILED_TRIAL in t.system_attrs:
            return False  # a dead trial's retry runs past the count (see next_is_retry)
        if t.state == TrialState.COMPLETE or t.number < trial_number:
            ahead += 1
    return ahead >= target


def enqueue_baselines(study: optuna.Study, baselines: Sequence[tuple[str, Mapping[str, Any]]], *,
                      created: bool, locked: bool = True) -> int:
    """Queue the labelled baseline (and seed) trials once per study. Returns how many.

    The process that ``created`` the study queues them (other workers may already have asked for
    trials: the baselines still run). A study left without them (its creator queued none) gets
    them from the next process that finds it empty, when it holds the lock every worker of the
    study shares (``locked``: a file storage); without one (a network database) only the creator
    queues, since two workers would both find the study empty.
    """
    if study.user_attrs.get(STUDY_ATTR_BASELINES):
        return 0
    if not created and (not locked or study.get_trials(deepcopy=False)):
        return 0
    for label, params in baselines:
        study.enqueue_trial(dict(params), user_attrs={ATTR_BASELINE: label}, skip_if_exists=True)
    study.set_user_attr(STUDY_ATTR_BASELINES, [label for label, _ in baselines])
    return len(baselines)


def finite_violation(v: float) -> float:
    v = float(v)
    if math.isnan(v) or v > MAX_VIOLATION:
        return MAX_VIOLATION
    return max(v, -MAX_VIOLATION)


def tell_record(study: optuna.Study, trial: optuna.Trial, record: Any, objectives: Sequence[str],
                record_path: str | None) -> TrialState:
    """Report a :class:`autocompress.rundir.TrialRecord` to optuna: COMPLETE with values, else FAIL.

    The values are the record's ``metrics``: a multi-fidelity trial's highest level (whose proxy
    steps ``record.steps`` names), so the study and optuna-dashboard agree with the run's reports.
    Metrics go to the user attribute ``metrics`` (optuna-dashboard shows it), the record path and
    feasibility to ``record``, the error message of a failed trial to ``error``, and the whole
    record to the storage (:func:`search.backends._stored.store_record`: other run directories of
    the study rebuild it from there). Constraint violations go to the system attribute
    ``constraints`` as one list in the space's order (their texts: the study user attribute
    ``constraints``): the format Optuna itself writes for a sampler's ``constraints_func``, which
    ``FrozenTrial.constraints``, ``study.best_trials``, the samplers *and* optuna-dashboard (which
    reads no other) all read, so the dashboard's Pareto front is the run's feasible front.
    """
    summary = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float, bool, str)) or v is None}
    trial.set_user_attr(ATTR_METRICS, summary)  # one write: each attribute is a storage transaction
    trial.set_user_attr(ATTR_RECORD, {"path": record_path, "feasible": bool(record.feasible),
                                      "cached_from": record.cached_from,
                                      **({"steps": record.level_steps} if record.levels else {})})
    values = None
    if record.status == "complete":
        try:
            values = [float(record.metrics[m]) for m in objectives]
        except (KeyError, TypeError, ValueError) as exc:
            record.error = record.error or f"MissingMetric: objective {exc} not in the trial's metrics"
            values = None
        if values is not None and any(math.isnan(v) or math.isinf(v) for v in values):
            record.error = record.error or f"BadMetric: non-finite objective values {values}"
            values = None
    storage = study._storage  # noqa: SLF001 - optuna exposes no public system-attribute setter
    if values is None:
        trial.set_user_attr(ATTR_ERROR, record.error or f"status {record.status}")
        store_record(storage, trial._trial_id, record.to_dict())  # noqa: SLF001
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    if record.constraints:
        storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY,  # noqa: SLF001
                                      [finite_violation(v) for v in record.constraints.values()])
    store_record(storage, trial._trial_id, record.to_dict())  # noqa: SLF001
    study.tell(trial, values)
    return TrialState.COMPLETE
