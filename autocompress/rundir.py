"""The run directory: trial records, run info, atomic writes and file locks.

The contract between ``search`` (which writes a run) and ``reports`` (which reads it)::

    RUN/
      run.json               RunInfo: model, checkpoint, dataset, objectives, reference metrics, ...
      config.yaml            the final, fully resolved search config (space + --set overrides)
      records/trial-00012.json   one TrialRecord per trial (written atomically when it ends)
      trials.csv             one row per trial, policy fields flattened, metrics, status, times
      pareto.csv             the feasible non-dominated trials over the configured objectives
      recipes/trial-12.yaml  a replayable recipe (Policy) for every Pareto point
      study.db               Optuna storage (default; readable by optuna-dashboard)
      baseline/, cache/      the search's trained/adapted original model, reference metrics, result cache
      final/                 written by `autocompress finalize`
      audit/trial-00012.json one AuditRecord per audited trial (`autocompress audit`), written atomically
      audit/noise.json       the proxy re-evaluated under other seeds (`autocompress audit --noise`)
      audit/summary.json     tau, rho, regret of the audit (derived from the records and noise.json)

Reports read these files and never rerun a model. ``SCHEMA_VERSION`` changes whenever a
field's meaning changes; readers convert the versions in :data:`READABLE_SCHEMAS` and refuse
others with a clear message:

- schema 2: ``TrialRecord.policy`` is the *applied* policy of a complete trial
  (``spaces.policy.Policy.to_dict()`` of ``compress.apply.Compressed.policy``, with the kept
  channel indices in ``prune.kept``); of a failed trial, the proposed policy (or
  ``{"params": ...}`` when no policy could be built). ``policy_hash`` stays the hash of the
  proposed policy: the result-cache key that ``cached_from`` refers to.
- schema 1: ``policy`` was the proposed policy (no kept indices); otherwise the same. Read as is.
- optional fields added within schema 2 (absent in older records, which load unchanged):
  ``TrialRecord.levels`` (multi-fidelity search: metrics per level).

Everything here is plain Python (numpy for the Pareto front): ``autocompress`` imports no
other autocompress package.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import filelock
import numpy as np

from autocompress.errors import RunFormatError
from autocompress.pareto import non_dominated

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: schemas this version reads (older ones are converted on read)
READABLE_SCHEMAS = (1, 2)

Status = Literal["complete", "failed", "pruned", "running"]
STATUSES: tuple[str, ...] = ("complete", "failed", "pruned", "running")


D = TypeVar("D", bound="_Document")


class _Document:
    """JSON (de)serialisation of a schema-versioned dataclass of the run directory."""

    WHAT: ClassVar[str] = "document"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[D], data: dict[str, Any], source: str | None = None) -> D:
        """The document from its JSON object: schema 1 is converted, other schemas and unknown
        fields are a :class:`RunFormatError` naming ``source``."""
        source = source or f"<{cls.WHAT}>"
        version = data.get("schema")
        if version not in READABLE_SCHEMAS:
            raise RunFormatError(
                f"{source}: {cls.WHAT} schema = {version!r}; this autocompress reads schemas "
                f"{', '.join(map(str, READABLE_SCHEMAS))}. Re-run the search with this version, or use the "
                "autocompress version that wrote it.")
        unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise RunFormatError(f"{source}: unknown fields {sorted(unknown)} in {cls.WHAT}")
        return cls(**cls._converted({**data, "schema": SCHEMA_VERSION}))

    @classmethod
    def _converted(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data


@dataclass
class TrialRecord(_Document):
    """Everything known about one trial. One JSON file per trial under ``records/``.

    ``policy`` is the applied policy (see the module docstring, schema 2). ``metrics`` keys are
    metric names (:data:`autocompress.metrics.METRICS`) plus the details
    (:data:`autocompress.metrics.DETAILS`). ``times`` holds seconds per phase: ``prune``,
    ``finetune``, ``evaluate``, ``cost``, ``latency``, ``total``.
    """

    trial: int
    status: Status
    policy: dict[str, Any]
    policy_hash: str
    metrics: dict[str, Any] = field(default_factory=dict)
    feasible: bool = True
    constraints: dict[str, float] = field(default_factory=dict)  # name -> violation (<= 0 satisfied)
    baseline: str | None = None  # "original", "uniform-prune-0.25", "uniform-int8", ...
    times: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    error: str | None = None
    cached_from: int | None = None  # trial whose result was reused (same policy hash)
    started: str | None = None  # ISO-8601 UTC
    finished: str | None = None
    worker: str | None = None  # host:pid
    #: multi-fidelity search: metrics of every level the trial reached, keyed by the proxy
    #: fine-tune steps as text (``{"100": {...}, "400": {...}}``); ``metrics`` are the highest
    #: level's. Empty for a one-level search (optional: records without it load as before).
    levels: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    WHAT: ClassVar[str] = "trial record"

    @property
    def level_steps(self) -> int | None:
        """Proxy fine-tune steps of the highest level reached (None for a one-level search)."""
        return max((int(k) for k in self.levels), default=None)


@dataclass
class RunInfo(_Document):
    """Run-level facts, written once at the start (``run.json``) and updated at the end."""

    space: str
    model: str
    checkpoint: str | None
    dataset: str
    objectives: list[tuple[str, str]]  # (metric, "maximize"|"minimize"), in order
    constraints: list[str] = field(default_factory=list)  # e.g. "accuracy_drop <= 1.0"
    reference: dict[str, Any] = field(default_factory=dict)  # metrics of the original model
    hv_reference: dict[str, float] = field(default_factory=dict)  # hypervolume reference point
    search: dict[str, Any] = field(default_factory=dict)  # sampler, trials, seed, backend, storage, study
    budget: dict[str, Any] = field(default_factory=dict)  # proxy fine-tune steps, val subset, latency settings
    started: str | None = None
    finished: str | None = None
    wall_time_s: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    # optional, for reports: network order of prune groups and quantizable layers
    # (compress.prune.list_groups names, compress.models.quantizable_layers)
    groups: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    WHAT: ClassVar[str] = "run"

    @classmethod
    def _converted(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "objectives": [tuple(o) for o in data.get("objectives", [])]}


@dataclass
class AuditRecord(_Document):
    """One trial of a run fully fine-tuned by ``autocompress audit`` (``RUN/audit/trial-NNNNN.json``).

    ``proxy_accuracy`` is the trial's search metric (val top-1 after the proxy fine-tune, from its
    :class:`TrialRecord`); ``val_accuracy``/``test_accuracy`` are measured after the full fine-tune
    (``search.finalize.finetune_and_measure``), whose other measurements are ``metrics`` (flops,
    params, size, latency_ratio, ...). ``settings`` are the audit's budget (``epochs``, ``steps``,
    ``seed``, ``kd``): every record of one ``RUN/audit/`` has the same settings.
    """

    trial: int
    settings: dict[str, Any]
    proxy_accuracy: float
    val_accuracy: float
    test_accuracy: float
    metrics: dict[str, Any] = field(default_factory=dict)
    search_metrics: dict[str, Any] = field(default_factory=dict)  # the trial record's metrics
    epochs: float | None = None
    steps: int | None = None  # optimizer steps the full fine-tune ran
    seed: int = 0
    policy_hash: str = ""  # hash of the fully fine-tuned (applied) policy
    wall_time_s: float = 0.0
    finished: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    schema: int = SCHEMA_VERSION

    WHAT: ClassVar[str] = "audit record"


# ----- writing files -----------------------------------------------------------------------------


def file_mode() -> int:
    """The mode a new file gets from ``open(path, "w")``: ``0o666`` less the process umask (0644
    under the usual umask 022). Read from ``/proc/self/status`` where Linux has it, so no thread
    ever sees the umask changed; else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; when the ``with`` block succeeds it
    replaces ``path`` in one step, so a reader (or a SIGKILL) never sees a half-written file.
    On an error the temporary file is removed and ``path`` keeps its old content.

    The file gets the mode of any other new file (:func:`file_mode`, 0644 under umask 022), not
    the 0600 of the temporary file it was written as."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (:func:`atomic_path`), flushed to disk."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write_text` of ``data`` as indented JSON (unknown types as ``str``)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float | None = None, *, what: str = "lock") -> Iterator[float]:
    """Hold an exclusive inter-process lock on ``path`` (``filelock.FileLock``); yields the
    seconds spent waiting for it.

    ``timeout_s=None`` waits as long as needed; otherwise :class:`TimeoutError` (``what``
    names the lock in its message and in the log line said while waiting).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path))
    start = time.monotonic()
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("waiting for the %s %s (held by another process)", what, path)
        try:
            lock.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start)))
        except filelock.Timeout:
            raise TimeoutError(f"{what} {path} still held after {timeout_s:g} s") from None
    try:
        yield time.monotonic() - start
    finally:
        lock.release()


def record_path(run_dir: Path, trial: int) -> Path:
    """``RUN/records/trial-NNNNN.json``."""
    return Path(run_dir) / "records" / f"trial-{trial:05d}.json"


def write_record(run_dir: Path, record: TrialRecord) -> Path:
    """Write ``record`` atomically to its :func:`record_path`."""
    path = record_path(run_dir, record.trial)
    atomic_write_json(path, record.to_dict())
    return path


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    """Write ``RUN/run.json`` atomically."""
    atomic_write_json(Path(run_dir) / "run.json", info.to_dict())


def audit_dir(run_dir: Path) -> Path:
    """``RUN/audit``."""
    return Path(run_dir) / "audit"


def audit_path(run_dir: Path, trial: int) -> Path:
    """``RUN/audit/trial-NNNNN.json``."""
    return audit_dir(run_dir) / f"trial-{trial:05d}.json"


def write_audit_record(run_dir: Path, record: AuditRecord) -> Path:
    """Write ``record`` atomically to its :func:`audit_path` (a SIGKILL leaves the old file or none)."""
    path = audit_path(run_dir, record.trial)
    atomic_write_json(path, record.to_dict())
    return path


# ----- reading a run -----------------------------------------------------------------------------


def read_json_object(path: Path, what: str = "document") -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunFormatError` naming the file when it is not valid
    UTF-8 JSON or holds something else than an object (``what`` names the document)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: not valid JSON ({' '.join(str(exc).split())}); expected a {what}") from None
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a {what} (a JSON object), got a JSON {type(data).__name__}")
    return data


def _document(cls: type[D], path: Path) -> D:
    """``cls`` read from ``path``; every problem is a one-line :class:`RunFormatError` naming the file."""
    data = read_json_object(path, cls.WHAT)
    try:
        return cls.from_dict(data, source=str(path))
    except TypeError as exc:  # missing required fields, or values of the wrong kind
        raise RunFormatError(f"{path}: malformed {cls.WHAT} ({exc})") from None


def read_record(path: Path) -> TrialRecord:
    """One trial record; :class:`RunFormatError` naming the file when it cannot be read."""
    return _document(TrialRecord, path)


def read_records(run_dir: Path) -> list[TrialRecord]:
    """All trial records of a run, by trial number (none yet: an empty list)."""
    return sorted((read_record(p) for p in sorted((Path(run_dir) / "records").glob("trial-*.json"))),
                  key=lambda r: r.trial)


def read_run_info(run_dir: Path) -> RunInfo:
    """``RUN/run.json``; :class:`RunFormatError` for a missing directory or file, or another schema."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFormatError(f"{run_dir}: no such run directory")
    p = run_dir / "run.json"
    if not p.is_file():
        raise RunFormatError(f"{run_dir}: not a run directory (no run.json); run `autocompress search --out {run_dir}`")
    return _document(RunInfo, p)


def read_audit_records(run_dir: Path) -> list[AuditRecord]:
    """Every audit record of a run, by trial number (no audit yet: an empty list)."""
    out = [_document(AuditRecord, path) for path in sorted(audit_dir(run_dir).glob("trial-*.json"))]
    return sorted(out, key=lambda r: r.trial)


def read_audit_noise(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/audit/noise.json`` (``{"seeds": {trial: {seed: proxy accuracy}}, ...}``), or None."""
    path = audit_dir(run_dir) / "noise.json"
    return read_json_object(path, "noise file of the audit") if path.is_file() else None


@dataclass
class Run:
    """A loaded run directory: its ``run.json`` and every trial record, by trial number."""

    dir: Path
    info: RunInfo
    records: list[TrialRecord]

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """``[(metric, direction), ...]`` of the run."""
        return [(m, d) for m, d in self.info.objectives]

    def record(self, trial: int) -> TrialRecord:
        """The record of ``trial``; ``KeyError`` naming the run when there is none."""
        for r in self.records:
            if r.trial == trial:
                return r
        raise KeyError(f"{self.dir}: no trial {trial}")

    def counts(self) -> dict[str, int]:
        """Number of trials per status (complete, failed, pruned, running)."""
        c = Counter(r.status for r in self.records)
        return {s: c.get(s, 0) for s in STATUSES}


def load_run(run_dir: str | Path) -> Run:
    """Load ``run_dir``; raise :class:`RunFormatError` if it is missing, empty or from another schema."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)  # missing dir / no run.json / schema version
    rec_dir = run_dir / "records"
    records = read_records(run_dir) if rec_dir.is_dir() else []
    if not records:
        raise RunFormatError(f"{run_dir}: the run has no trial records (expected {rec_dir}/trial-NNNNN.json); "
                             "the search has not finished a trial yet")
    return Run(dir=run_dir, info=info, records=records)


def require_complete(run: Run) -> None:
    """Raise :class:`RunFormatError` when no trial completed, listing why the trials failed."""
    if any(r.status == "complete" for r in run.records):
        return
    counts = {k: v for k, v in run.counts().items() if v}
    reasons = Counter((r.error or f"status {r.status}, no error message").strip().splitlines()[0][:200]
                      for r in run.records)
    lines = [f"  {n} x {reason}" for reason, n in reasons.most_common(10)]
    raise RunFormatError(f"{run.dir}: no trial completed ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
                         "nothing to report. Reasons:\n" + "\n".join(lines))


# ----- the Pareto front of a run -----------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def eligible(run: Run) -> tuple[list[TrialRecord], np.ndarray]:
    """The complete, feasible trials that have every objective metric, and their objective
    values (``(n, objectives)`` array, natural units), by trial number."""
    names = [m for m, _ in run.objectives]
    recs = [r for r in run.records if r.status == "complete" and r.feasible
            and all(_number(r.metrics.get(m)) for m in names)]
    values = np.array([[float(r.metrics[m]) for m in names] for r in recs], dtype=float)
    return recs, values.reshape(len(recs), len(names))


def pareto_records(run: Run) -> list[TrialRecord]:
    """The run's Pareto front: the :func:`eligible` trials no other eligible trial dominates,
    sorted by the first objective's value, then by trial number."""
    recs, values = eligible(run)
    if not recs:
        return []
    mask = non_dominated(values, [d for _, d in run.objectives])
    front = [(v[0], r.trial, r) for r, v, keep in zip(recs, values, mask) if keep]
    return [r for _, _, r in sorted(front, key=lambda t: (t[0], t[1]))]


__all__ = [
    "READABLE_SCHEMAS", "SCHEMA_VERSION", "STATUSES", "AuditRecord", "Run", "RunInfo", "Status", "TrialRecord",
    "atomic_path", "atomic_write_json", "atomic_write_text", "audit_dir", "audit_path", "eligible", "file_lock",
    "file_mode", "load_run", "pareto_records", "read_audit_noise", "read_audit_records", "read_json_object",
    "read_record", "read_records", "read_run_info", "record_path", "require_complete", "write_audit_record",
    "write_record",
    "write_run_info",
]
