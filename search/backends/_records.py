"""Failed trial records for trials that never reached ``run_trial`` (bad params, interrupt, dead worker)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from search.records import TrialRecord
from search.trial import versions


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
