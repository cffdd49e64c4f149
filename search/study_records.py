"""The records of a study shared by several run directories, rebuilt from its storage.

Workers on several machines (or several ``--out`` directories) that share one study through
``--storage``/``--study`` each write only their own trials to ``RUN/records/``. Every finished
trial also keeps its whole record in the storage (:mod:`search.backends._stored`), so
:func:`sync_records` brings a run directory up to date with the study: it writes the record of
every finished trial that is missing here or disagrees with the storage (the storage is the
truth: e.g. a trial this directory's worker finished after another worker had already failed it
for a missed heartbeat). A FAIL trial without a stored record (its worker died on another host)
gets a failed record from its parameters and error. Each record keeps the ``worker`` (``host:pid``)
that ran it, so reports count the trials per worker. The reports then read the run directory
only (``autocompress.rundir`` stays the one reader of records).

``autocompress search`` syncs before writing its exports, ``autocompress report`` and
``autocompress finalize`` before reading the run (``--no-sync`` skips it). A storage that cannot be
reached leaves the run directory as it is, with a warning that says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import RunFormatError
from autocompress.rundir import TrialRecord, read_record, read_run_info, record_path, write_record
from search.backends._records import failed_record
from search.backends._stored import stored_record
from search.backends._study import ATTR_BASELINE, ATTR_ERROR, open_storage, recorded_spec, trial_worker

log = logging.getLogger("search.study_records")

#: seconds to wait for a database server before reporting the local records only
CONNECT_TIMEOUT_S = 10


@dataclass
class SyncResult:
    """What :func:`sync_records` did."""

    storage: str | None
    study: str | None
    written: list[int] = field(default_factory=list)  # trials whose record was written here
    unrecoverable: list[int] = field(default_factory=list)  # finished trials with no record to rebuild
    skipped: str | None = None  # why the storage was not read


def record_from_trial(trial: FrozenTrial, *, seed: int = 0) -> TrialRecord | None:
    """The record of a finished trial from the storage: the stored one, or for a FAIL trial without
    one a failed record from its parameters and error; None for a COMPLETE trial stored by an
    autocompress that kept no record there (or a record this version cannot read)."""
    return _remote(trial, seed)[0]


def _remote(trial: FrozenTrial, seed: int) -> tuple[TrialRecord | None, bool]:
    """(:func:`record_from_trial`, whether it is the stored record)."""
    data = stored_record(trial)
    if data is not None:
        try:
            return TrialRecord.from_dict(data, source=f"trial {trial.number} in the storage"), True
        except (RunFormatError, TypeError) as exc:
            log.warning("trial %d: stored record not readable (%s)", trial.number, exc)
            return None, True
    if trial.state != TrialState.FAIL:
        return None, False
    record = failed_record(trial.number, None, trial.user_attrs.get(ATTR_ERROR) or "status FAIL in the study",
                           seed=seed, baseline=trial.user_attrs.get(ATTR_BASELINE), params=trial.params,
                           worker=trial_worker(trial)[0])
    record.started, record.finished = _utc(trial.datetime_start), _utc(trial.datetime_complete)
    return record, False


def _utc(when: datetime | None) -> str | None:
    """Optuna's naive local time as the records' ISO-8601 UTC."""
    return when.astimezone(timezone.utc).isoformat(timespec="seconds") if when is not None else None


def _local(run_dir: Path, trial: int) -> TrialRecord | None:
    path = record_path(run_dir, trial)
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except RunFormatError:
        return None


def _outdated(local: TrialRecord | None, remote: TrialRecord, stored: bool) -> bool:
    """Whether the local record must be replaced by the one from the storage."""
    if local is None:
        return True
    if stored:  # the very record the trial's worker told the study
        return local.to_dict() != remote.to_dict()
    return local.status != remote.status  # rebuilt failed record: only a disagreeing status matters


def _open_study(url: str, name: str) -> tuple[optuna.Study | None, str | None]:
    """(study, None) or (None, why it cannot be read)."""
    spec = recorded_spec(url)
    if spec.path is not None and not spec.path.is_file():
        return None, f"storage file {spec.path} not found"
    try:
        storage = open_storage(spec, heartbeat=False, connect_timeout_s=CONNECT_TIMEOUT_S)
        return optuna.load_study(study_name=name, storage=storage), None
    except KeyError:
        return None, f"no study {name!r} in {url}"
    except Exception as exc:  # noqa: BLE001 - an unreachable database must not stop a report of local records
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def sync_records(run_dir: str | Path, *, study: optuna.Study | None = None) -> SyncResult:
    """Write the records of the run's study (``run.json``: ``search.storage``, ``search.study``)
    that are missing from ``RUN/records/`` or disagree with the storage. See the module docstring.

    ``study`` is the open study (default: opened from ``run.json``). Never raises for an
    unreachable storage: the result says why it was skipped (and a warning is logged).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    url, name = info.search.get("storage"), info.search.get("study")
    result = SyncResult(storage=url, study=name)
    if study is None:
        if not url or not name:
            result.skipped = "run.json names no storage and study"
            return result
        study, result.skipped = _open_study(url, name)
        if study is None:
            log.warning("records of other workers not read from %s: %s", url, result.skipped)
            return result
    seed = int(info.search.get("seed") or 0)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        remote, stored = _remote(trial, seed)
        if remote is None:
            if not record_path(run_dir, trial.number).is_file():
                result.unrecoverable.append(trial.number)
            continue
        if _outdated(_local(run_dir, trial.number), remote, stored):
            write_record(run_dir, remote)
            result.written.append(trial.number)
    if result.written:
        log.info("%d trial records of study %r rebuilt from its storage (other workers' trials)",
                 len(result.written), name)
    if result.unrecoverable:
        log.warning("%d finished trials of study %r have no record in the storage (written by an older "
                    "autocompress?): trials %s are left out of this run's reports", len(result.unrecoverable), name,
                    result.unrecoverable[:20])
    return result


__all__ = ["SyncResult", "record_from_trial", "sync_records"]
