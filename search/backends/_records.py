"""Failed trial records for trials that never reached ``run_trial`` (bad params, interrupt, dead worker)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autocompress.rundir import TrialRecord, write_record
from search.backends._study import ATTR_BASELINE, ATTR_ERROR, fail_dead_local_trials, trial_worker
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


def dead_trial_record(t: Any, space: Any, dims: Any, *, seed: int) -> TrialRecord:
    """The failed record of the optuna trial ``t`` (FrozenTrial) whose worker died: its policy from
    its parameters (the raw parameters when it was killed mid-suggest), its error attribute."""
    try:
        policy = policy_from_params(space, dims, t.params)
    except Exception:  # noqa: BLE001 - killed mid-suggest: keep the raw params instead
        policy = None
    return failed_record(t.number, policy, t.user_attrs.get(ATTR_ERROR) or "WorkerDied: worker exited while running",
                         seed=seed, baseline=t.user_attrs.get(ATTR_BASELINE), params=t.params,
                         worker=trial_worker(t)[0])


def recover_dead_trials(run_dir: Path, study: Any, space: Any, dims: Any, *, seed: int) -> list[Any]:
    """Mark RUNNING trials of dead local processes FAIL and re-queue them
    (:func:`search.backends._study.fail_dead_local_trials`); write and store a failed record for each.

    The record is stored in the study before the trial is marked, so every run directory of the
    study rebuilds the same one, and it overwrites a record the dead worker may have written just
    before it was killed (between ``run_trial`` and ``tell``): records always agree with the study,
    where that trial is FAIL and its parameters run again under a new number. Returns the trials.
    """
    records: dict[int, TrialRecord] = {}

    def describe(t: Any) -> dict[str, Any]:
        records[t.number] = dead_trial_record(t, space, dims, seed=seed)
        return records[t.number].to_dict()

    dead = fail_dead_local_trials(study, describe)
    for t in dead:
        write_record(Path(run_dir), records[t.number])
    return dead
