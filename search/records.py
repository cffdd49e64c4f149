"""Trial records and the run directory layout: the contract between search and reports.

A run directory holds::

    RUN/
      run.json               RunInfo: model, checkpoint, dataset, objectives, reference metrics, ...
      config.yaml            the final, fully resolved search config (space + --set overrides)
      records/trial-00012.json   one TrialRecord per trial (written atomically when it ends)
      trials.csv             pandas table: one row per trial, policy fields flattened, metrics, status, times
      pareto.csv             the feasible non-dominated trials over the configured objectives
      recipes/trial-12.yaml  a replayable recipe (Policy) for every Pareto point
      study.db               Optuna storage (default; readable by optuna-dashboard)
      final/                 written by `autocompress finalize`

Reports read these files and never rerun a model. ``SCHEMA_VERSION`` changes whenever a
field's meaning changes; readers refuse other versions with a clear message.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from spaces._schema import UserError

SCHEMA_VERSION = 1

#: metric name -> (direction, description). Objectives and constraints may use any of these.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("maximize", "top-1 accuracy on the val split, percent"),
    "top5": ("maximize", "top-5 accuracy on the val split, percent"),
    "accuracy_drop": ("minimize", "reference top-1 minus this top-1, percentage points"),
    "flops": ("minimize", "fvcore FLOPs (multiply-accumulates) at the policy's input size"),
    "flops_ratio": ("minimize", "flops / reference flops"),
    "params": ("minimize", "parameter count"),
    "size": ("minimize", "weight bytes at the policy's bit-widths"),
    "bops": ("minimize", "bit-operations: sum over layers of MACs x w_bits x a_bits"),
    "latency": ("minimize", "latency ratio to the original model, measured interleaved (lower is faster)"),
    "latency_ratio": ("minimize", "same as latency"),
}

Status = Literal["complete", "failed", "pruned", "running"]
Baseline = Literal["original", "uniform-prune", "uniform-int8"]


@dataclass
class TrialRecord:
    """Everything known about one trial. One JSON file per trial under ``records/``.

    ``metrics`` keys come from :data:`METRICS` plus ``latency_ci_low``/``latency_ci_high``,
    ``latency_busy`` (bool: the machine was busy during measurement) and ``int8_latency_note``.
    ``times`` holds seconds per phase: ``prune``, ``finetune``, ``evaluate``, ``cost``,
    ``latency``, ``total``.
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
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<record>") -> "TrialRecord":
        version = data.get("schema")
        if version != SCHEMA_VERSION:
            raise RunFormatError(
                f"{source}: trial record schema = {version!r}; this autocompress reads schema {SCHEMA_VERSION}. "
                "Re-run the search with this version, or use the autocompress version that wrote it."
            )
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise RunFormatError(f"{source}: unknown fields {sorted(unknown)} in trial record")
        return cls(**data)


@dataclass
class RunInfo:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "run.json") -> "RunInfo":
        version = data.get("schema")
        if version != SCHEMA_VERSION:
            raise RunFormatError(
                f"{source}: run schema = {version!r}; this autocompress reads schema {SCHEMA_VERSION}."
            )
        data = dict(data)
        data["objectives"] = [tuple(o) for o in data.get("objectives", [])]
        return cls(**data)


class RunFormatError(UserError, ValueError):
    """A run directory is missing, empty, or written by an incompatible version."""


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so that a reader (or a SIGKILL) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(run_dir: Path, trial: int) -> Path:
    return Path(run_dir) / "records" / f"trial-{trial:05d}.json"


def write_record(run_dir: Path, record: TrialRecord) -> Path:
    path = record_path(run_dir, record.trial)
    atomic_write_json(path, record.to_dict())
    return path


def read_records(run_dir: Path) -> list[TrialRecord]:
    """All trial records of a run, by trial number."""
    d = Path(run_dir) / "records"
    out = []
    for p in sorted(d.glob("trial-*.json")):
        out.append(TrialRecord.from_dict(json.loads(p.read_text()), source=str(p)))
    return sorted(out, key=lambda r: r.trial)


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    atomic_write_json(Path(run_dir) / "run.json", info.to_dict())


def read_run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFormatError(f"{run_dir}: no such run directory")
    p = run_dir / "run.json"
    if not p.is_file():
        raise RunFormatError(f"{run_dir}: not a run directory (no run.json); run `autocompress search --out {run_dir}`")
    return RunInfo.from_dict(json.loads(p.read_text()), source=str(p))
