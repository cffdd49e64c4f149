"""The search driver: run directory, config, run info, backend.

:func:`run_search` is what ``autocompress search`` calls::

    RUN/config.yaml      the fully resolved space (search settings included)
    RUN/run.json         RunInfo: reference metrics of the original model, hv reference point, ...
    RUN/records/         one TrialRecord per trial (written by search.trial.run_trial)
    RUN/study.db         Optuna storage (default; any --storage works)

At the end the run directory holds the record of every finished trial of the study: those of
other workers sharing ``--storage``/``--study`` are rebuilt from the storage
(:mod:`search.study_records`). It returns a :class:`SearchResult` and renders nothing: the exports (``trials.csv``,
``pareto.csv``, ``recipes/``) and ``report.html`` are the reports package's, which the CLI
(``search/commands/search.py``) asks for after the search.

Rerunning with the same run directory resumes: the backend only runs the trials that are
still missing (see :mod:`search.backends.optuna_backend`). A run directory belongs to one
space: resuming with a space that differs in anything but the ``search`` settings is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autocompress.errors import UserError
from autocompress.pareto import default_reference
from autocompress.rundir import RunInfo, read_run_info, write_run_info
from search.backends import BACKENDS, BackendResult, ObjectiveFactory, SearchContext
from search.backends._study import StorageSpec
from search.checks import check_device, check_out_dir, check_storage
from search.finalize import finalize as run_finalize
from search.objective import Objective
from search.sensitivity import search_seeds
from search.study_records import sync_records
from search.trial import git_sha, versions
from spaces._schema import read_document, to_dict, write_document

log = logging.getLogger("search")


class SearchConfigError(UserError, ValueError):
    """The run directory holds a different search space than the one given, or the devices
    asked for cannot be used."""


def check_devices(space: Any, device: str, backend: str, ray: dict[str, Any] | None = None) -> None:
    """Raise :class:`SearchConfigError` when the training ``device`` or the space's latency device
    cannot work: CUDA asked for but absent here, or Ray trials that would not see a GPU.

    Ray gives each trial only the GPUs it reserves (``CUDA_VISIBLE_DEVICES``): CUDA in trials needs
    ``gpus_per_trial > 0``, and there the trial's GPU is ``cuda`` (``cuda:N`` would name a GPU the
    trial cannot see).
    """
    import torch

    check_device(device, "--device", SearchConfigError)  # cpu, cuda, cuda:N or mps, and present here
    wanted = [("--device", device)]
    if getattr(space, "needs_latency", False):
        wanted.append(("budget.latency.device", space.budget.latency.device))
    cuda = [(what, d) for what, d in wanted if str(d).startswith("cuda")]
    if not cuda:
        return
    # this process prepares the baseline and reference on --device; trials run here too unless
    # Ray joins a cluster (then only the cluster's nodes need the latency device)
    remote = backend == "ray" and (ray or {}).get("address") is not None
    for what, d in cuda:
        if (what == "--device" or not remote) and not torch.cuda.is_available():
            raise SearchConfigError(f"{what} = {d}: no CUDA device is available here "
                                    "(torch.cuda.is_available() is False); use cpu")
    if backend != "ray":
        return
    what, d = cuda[0]
    if float((ray or {}).get("gpus_per_trial") or 0) <= 0:
        raise SearchConfigError(f"{what} = {d} with --backend ray needs --gpus-per-trial > 0: Ray hides the GPUs "
                                "from trials that reserve none (e.g. --gpus-per-trial 0.25 runs 4 trials per GPU)")
    for what, d in cuda:
        if d != "cuda":
            raise SearchConfigError(f"{what} = {d} with --backend ray: use cuda (each Ray trial sees only the GPU "
                                    "it reserved, as cuda)")


@dataclass
class SearchResult:
    """Outcome of :func:`run_search`."""

    run_dir: Path
    complete: int
    failed: int
    ran: int
    storage_url: str
    study: str
    wall_time_s: float
    stopped_early: str | None = None
    backend_wall_s: float = 0.0  # time inside the backend (trials + sampling + storage + scheduling)
    workers: dict[str, int] = dataclasses.field(default_factory=dict)  # finished trials per worker, whole study
    synced: list[int] = dataclasses.field(default_factory=list)  # records rebuilt from the storage (other workers)
    final: dict[str, Any] | None = None  # search.finalize.finalize's metrics, with --finalize


class DefaultObjective:
    """Objective factory building :class:`search.objective.Objective` (picklable for workers)."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __call__(self, space: Any, run_dir: Path) -> Any:
        return Objective(space, run_dir, device=self.device)


class _Prepared:
    """Hands the objective prepared by the driver to the backend in the same process.

    Pickling (spawned workers, Ray actors) drops the instance: each process builds its own
    through ``factory`` (data and baseline model are then read from the run's caches).
    """

    def __init__(self, factory: ObjectiveFactory, objective: Any, run_dir: Path):
        self.factory = factory
        self.objective = objective
        self.run_dir = Path(run_dir)

    def __call__(self, space: Any, run_dir: Path) -> Any:
        if self.objective is not None and Path(run_dir) == self.run_dir:
            return self.objective
        return self.factory(space, run_dir)

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory, "objective": None, "run_dir": self.run_dir}


def default_run_dir(space: Any) -> Path:
    """``runs/<space name>``: deterministic, so rerunning the same command resumes the run."""
    return Path("runs") / space.name


def resolve_space(space: Any, *, backend: str | None = None, trials: int | None = None,
                  storage: str | None = None, study: str | None = None, sampler: str | None = None,
                  seed: int | None = None, workers: int | None = None,
                  timeout_s: float | None = None) -> Any:
    """Return ``space`` with explicit arguments written into its ``search`` settings."""
    changes = {k: v for k, v in dict(backend=backend, trials=trials, storage=storage, study=study,
                                        sampler=sampler, seed=seed, parallelism=workers,
                                        timeout_s=timeout_s).items() if v is not None}
    if not changes:
        return space
    new = dataclasses.replace(space, search=dataclasses.replace(space.search, **changes))
    object.__setattr__(new, "source", getattr(space, "source", None))
    return new


def _check_config(run_dir: Path, space: Any) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = read_document(path) or {}
    if not isinstance(old, dict):
        raise SearchConfigError(f"{path}: not a search space (expected a YAML mapping, got {type(old).__name__}); "
                                f"use another --out, or delete {run_dir} to start over")
    new = space.to_dict()
    before, after = (old.get("search") or {}).get("fidelity"), new["search"].get("fidelity")
    if before != after:  # records of other levels would be ranked and compared with these
        raise SearchConfigError(
            f"{path}: this run directory was searched with search.fidelity = {before}, not {after}. "
            f"Use another --out, or delete {run_dir} to start over.")
    old.pop("search", None)
    new.pop("search", None)
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SearchConfigError(
            f"{path}: this run directory was created for a different search space (differs in: "
            f"{', '.join(diff)}). Use another --out, or delete {run_dir} to start over."
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_info(space: Any, objective: Any, ctx: SearchContext, storage_url: str,
              previous: RunInfo | None) -> RunInfo:
    reference = dict(objective.reference)
    pairs = space.objective_pairs
    hv = default_reference(reference, pairs)
    return RunInfo(
        space=space.name, model=space.model.name,
        checkpoint=space.model.checkpoint, dataset=space.data.dataset,
        objectives=pairs, constraints=list(space.constraints), reference=reference,
        hv_reference={m: float(v) for (m, _), v in zip(pairs, hv)},
        search={"backend": space.search.backend, "sampler": ctx.sampler, "trials": ctx.trials,
                "seed": ctx.seed, "storage": storage_url, "study": ctx.study, "workers": ctx.workers,
                "baselines": ctx.baselines, **({"ray": ctx.ray} if ctx.ray else {})},
        budget=to_dict(space.budget),
        started=previous.started if previous else _now(),
        wall_time_s=previous.wall_time_s if previous else None,
        versions=versions(), git_sha=git_sha(),
        groups=list(getattr(objective, "groups", None) or []),
        layers=list(getattr(objective, "layers", None) or []),
    )


def _previous_info(run_dir: Path) -> RunInfo | None:
    """The run's earlier ``run.json`` (a resumed run keeps its start time and wall time), if readable."""
    if not (run_dir / "run.json").is_file():
        return None
    try:
        return read_run_info(run_dir)
    except Exception as exc:  # noqa: BLE001 - rewritten by the caller
        log.warning("ignoring unreadable %s: %s", run_dir / "run.json", exc)
        return None


def _prepare_run_dir(space: Any, run_dir: Path) -> Path:
    """Create the run directory, refuse another space's, write ``config.yaml``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()
    _check_config(run_dir, space)
    write_document(space.to_dict(), run_dir / "config.yaml")
    return run_dir


def _log_outcome(result: BackendResult, elapsed: float, run_dir: Path, spec: StorageSpec) -> None:
    if result.stopped_early:
        log.warning("search stopped early: %s; rerun the same command to continue", result.stopped_early)
    log.info("study %s: %d complete, %d failed trials; this run ran %d (%.0f s)", result.study, result.complete,
             result.failed, result.ran, elapsed)
    if len(result.workers) > 1:
        log.info("trials per worker: %s", ", ".join(f"{w} {n}" for w, n in result.workers.items()))
    log.info("outputs: %s (records/, run.json, config.yaml)", run_dir)
    if spec.kind == "rdb":
        log.info("dashboard: optuna-dashboard %s", spec.url)


def run_search(space: Any, run_dir: str | Path | None = None, *, backend: str | None = None,
               trials: int | None = None, storage: str | None = None, study: str | None = None,
               sampler: str | None = None, seed: int | None = None, workers: int | None = None,
               timeout_s: float | None = None, objective_factory: ObjectiveFactory | None = None,
               device: str = "cpu", ray: dict[str, Any] | None = None, finalize: bool = False,
               progress: bool = True, max_consecutive_failures: int = 10) -> SearchResult:
    """Run (or resume) a search of ``space`` into ``run_dir``; exports and reports are the caller's.

    Explicit arguments override ``space.search`` and are saved in ``config.yaml``.
    ``objective_factory(space, run_dir)`` builds the objective (default
    :class:`search.objective.Objective`); it must be picklable for ``workers > 1`` and Ray.
    ``trials`` counts COMPLETE trials (baselines included): a rerun runs only the remainder.
    ``finalize`` fine-tunes the knee point at the end (:func:`search.finalize.finalize`).
    At the end the run directory holds the records of every finished trial of the study, also
    those other workers ran (:func:`search.study_records.sync_records`).
    """
    t0 = time.perf_counter()
    space = resolve_space(space, backend=backend, trials=trials, storage=storage, study=study,
                          sampler=sampler, seed=seed, workers=workers, timeout_s=timeout_s)
    s = space.search
    check_devices(space, device, s.backend, ray)
    run_dir = check_out_dir(run_dir if run_dir is not None else default_run_dir(space))
    spec = check_storage(s.storage, run_dir)  # bad URL or missing database driver: before any work
    run_dir = _prepare_run_dir(space, run_dir)
    runner = BACKENDS.get(s.backend)  # unknown backend -> error listing the known ones

    factory = objective_factory or DefaultObjective(device)
    objective = factory(space, run_dir)
    log.info("preparing the objective (data, original model, reference metrics)")
    reference = objective.reference  # prepares data/model in this process (quickstart: trains the baseline)
    log.info("reference (original model): %s",
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in reference.items()))

    ctx = SearchContext(
        space=space, run_dir=run_dir, objective_factory=_Prepared(factory, objective, run_dir),
        trials=s.trials, storage=s.storage, study=space.study_name, sampler=s.sampler, seed=s.seed,
        baselines=s.baselines, workers=s.parallelism, timeout_s=s.timeout_s,
        max_consecutive_failures=max_consecutive_failures, progress=progress, ray=dict(ray or {}),
    )
    ctx.seeds, sensitivity = search_seeds(objective, s.seeds)
    info = _run_info(space, objective, ctx, spec.url, _previous_info(run_dir))
    info.search.update({k: v for k, v in (("fidelity", to_dict(s.fidelity)), ("sensitivity", sensitivity)) if v})
    write_run_info(run_dir, info)
    log.info("search %s: backend=%s sampler=%s trials=%d workers=%d storage=%s study=%s",
             space.name, s.backend, s.sampler, s.trials, s.parallelism, spec.url, ctx.study)

    t_backend = time.perf_counter()
    try:
        result = runner(ctx)
    finally:
        backend_wall = time.perf_counter() - t_backend
        elapsed = time.perf_counter() - t0
        info.finished = _now()
        info.wall_time_s = (info.wall_time_s or 0.0) + elapsed
        write_run_info(run_dir, info)

    out = SearchResult(run_dir=run_dir, complete=result.complete, failed=result.failed, ran=result.ran,
                       storage_url=result.storage_url, study=result.study, wall_time_s=elapsed,
                       stopped_early=result.stopped_early, backend_wall_s=backend_wall, workers=dict(result.workers))
    _log_outcome(result, elapsed, run_dir, spec)
    out.synced = sync_records(run_dir).written  # other workers' trials of a shared study
    if finalize:
        log.info("finalizing: full fine-tune of the chosen Pareto point (knee)")
        out.final = run_finalize(run_dir, device=device, progress=progress)
        log.info("final model, metrics and ONNX export: %s", run_dir / "final")
    return out
