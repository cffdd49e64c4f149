"""Failed trial records for trials that never reached ``run_trial`` (bad params, interrupt, dead worker)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autocompress.rundir import TrialRecord, write_record
from search.backends._study import ATTR_BASELINE, ATTR_ERROR, trial_worker
from search.trial import versions
from spaces.space import policy_from_params


def failed_record(number: int, policy: Any, error: str, *, seed: int, baseline: str | None = None,
                  params: dict[str, Any] | None = None, worker: str | None = None) -> TrialRecord:
    """A ``failed`` :class:`TrialRecord`; ``policy`` may be ``None`` (then the raw params are kept)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if policy is not None:
        policy_dict, policy_hash = policy.to_dict(), policy.hash()
    else:
        policy_dict, policy_hash = {"params": dict(params or {})}, ""
    return TrialRecord(trial=number, status="failed", policy=policy_dict, policy_hash=policy_hash,
                       feasible=False, baseline=baseline, seed=seed, error=error, finished=now,
                       worker=worker, versions=versions())


def record_dead_trials(run_dir: Path, space: Any, dims: Any, dead: list[Any], *, seed: int) -> None:
    """Write a failed record for each optuna trial (FrozenTrial) whose worker died.

    Overwrites a record the dead worker may have written just before it was killed (between
    ``run_trial`` and ``tell``), so records always agree with the study: that trial is FAIL
    there and its parameters run again under a new number.
    """
    for t in dead:
        try:
            policy = policy_from_params(space, dims, t.params)
        except Exception:  # noqa: BLE001 - killed mid-suggest: keep the raw params instead
            policy = None
        write_record(Path(run_dir), failed_record(
            t.number, policy, t.user_attrs.get(ATTR_ERROR) or "WorkerDied: worker exited while running",
            seed=seed, baseline=t.user_attrs.get(ATTR_BASELINE), params=t.params, worker=trial_worker(t)[0]))
