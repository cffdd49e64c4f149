"""One trial: evaluate a policy, never crash the search, write its record.

:func:`run_trial` is what every backend calls after ``spaces.space.suggest_policy``. Any
exception while applying or measuring the policy (a policy that does not fit the model, a
diverging fine-tune, out of memory, ...) becomes a ``failed`` :class:`TrialRecord` whose
``error`` is ``"Type: message"``, so the search goes on. Feasibility comes from the space's
constraints with Optuna's convention (violation ``<= 0`` is satisfied).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from autocompress.rundir import TrialRecord, write_record
from search.promotion import levels_of, policy_at, promote
from spaces.policy import Policy
from spaces.space import SearchSpace

log = logging.getLogger("search.trial")

REPO = Path(__file__).resolve().parents[1]

#: exceptions that must stop the search rather than fail one trial
FATAL = (KeyboardInterrupt, SystemExit)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, optuna, ray and autocompress (those installed)."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "optuna", "ray", "autocompress"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """``git rev-parse HEAD`` of the autocompress checkout, or None (not a git checkout / no git)."""
    if not (REPO / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def constraint_values(space: SearchSpace, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Constraint text -> violation (``<= 0`` satisfied; ``inf`` when the metric is missing)."""
    return {c.text: float(c.violation(metrics)) for c in space.parsed_constraints}


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        text = f"out of memory: {text}"
    return f"{type(exc).__name__}: {text}"


def _effective(objective: Any, policy: Policy, seed: int) -> Policy:
    return objective.effective_policy(policy, seed) if hasattr(objective, "effective_policy") else policy


def _take(record: TrialRecord, space: SearchSpace, metrics: Any) -> None:
    """Fill ``record`` from one evaluation: metrics, constraints, feasibility, applied policy,
    cache provenance; phase times are added up (levels of a multi-fidelity trial)."""
    applied = getattr(metrics, "policy", None)
    if applied is not None:  # the applied policy: kept channel indices included
        record.policy = dict(applied)
    record.metrics = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                      for k, v in dict(metrics).items()}
    record.constraints = constraint_values(space, record.metrics)
    record.feasible = all(v <= 0 for v in record.constraints.values())
    record.cached_from = None
    if getattr(metrics, "cached", False):
        cached_from = getattr(metrics, "cached_from", None)
        record.cached_from = -1 if cached_from is None else int(cached_from)
    else:  # phase times of this evaluation (a cached result cost nothing but the lookup)
        for phase, seconds in dict(getattr(metrics, "times", {}) or {}).items():
            record.times[phase] = round(record.times.get(phase, 0.0) + float(seconds), 3)


def _climb(objective: Any, policy: Policy, record: TrialRecord, levels: tuple[int, ...], *, seed: int) -> None:
    """Levels after the first (``search.promotion``): write the record, ask for promotion, evaluate
    the policy with the next level's steps; ``record`` ends with the highest level's metrics."""
    space: SearchSpace = objective.space
    record.levels = {str(levels[0]): dict(record.metrics)}
    if not (policy.prune.active or policy.quant.active):  # never fine-tuned (the original): same at every level
        record.levels.update({str(steps): dict(record.metrics) for steps in levels[1:]})
        record.policy = {**record.policy, "finetune": {**record.policy["finetune"], "steps": levels[-1],
                                                       "epochs": None}}
        return
    for lower, steps in zip(levels, levels[1:]):
        write_record(objective.run_dir, record)  # status running: the level's result, for everyone's ranking
        if not promote(objective.run_dir, space, record.trial, lower, record.baseline):
            break
        stepped = policy_at(policy, steps)
        metrics = objective.evaluate(stepped, seed=seed, trial=record.trial)
        _take(record, space, metrics)
        record.policy_hash = _effective(objective, stepped, seed).hash()
        if getattr(metrics, "policy", None) is None:
            record.policy = _effective(objective, stepped, seed).to_dict()
        record.levels[str(steps)] = dict(record.metrics)


def run_trial(objective: Any, policy: Policy, *, trial_number: int, seed: int,
              baseline: str | None = None) -> TrialRecord:
    """Evaluate ``policy`` with ``objective`` and write ``records/trial-NNNNN.json``.

    Returns the record: ``complete`` with metrics, constraint violations, feasibility, phase
    times and the applied policy (when the objective reports it, as ``Metrics.policy``; the
    record's ``policy_hash`` stays the proposed policy's); or ``failed`` with ``error =
    "Type: message"`` and the proposed policy (the traceback goes to the debug log). A result
    reused from the objective's cache has ``cached_from`` set.

    With ``search.fidelity`` the policy is scored at the first level's proxy steps, then at each
    further level it is promoted to (:mod:`search.promotion`); ``levels`` keeps every level's
    metrics, ``metrics``/``policy``/``policy_hash`` are the highest level's and ``times`` the sum.
    """
    space: SearchSpace = objective.space
    started = now_iso()
    t0 = time.perf_counter()
    levels = levels_of(space)
    first = policy_at(policy, levels[0]) if levels else policy
    effective = _effective(objective, first, seed)
    record = TrialRecord(
        trial=int(trial_number), status="running", policy=effective.to_dict(), policy_hash=effective.hash(),
        baseline=baseline, seed=int(seed), versions=versions(), git_sha=git_sha(), started=started,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    try:
        _take(record, space, objective.evaluate(first, seed=seed, trial=trial_number))
        if len(levels) > 1:
            _climb(objective, policy, record, levels, seed=seed)
        elif levels:
            record.levels = {str(levels[0]): dict(record.metrics)}
    except Exception as exc:  # noqa: BLE001 - any failure of one policy is a failed trial
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        record.status = "failed"
        record.feasible = False
        record.error = _error_text(exc)
        log.warning("trial %d failed: %s", trial_number, record.error)
        log.debug("trial %d traceback:\n%s", trial_number, traceback.format_exc())
    else:
        record.status = "complete"
    record.times["total"] = round(time.perf_counter() - t0, 3)
    record.finished = now_iso()
    write_record(objective.run_dir, record)
    return record


__all__ = ["FATAL", "constraint_values", "git_sha", "now_iso", "run_trial", "versions"]
