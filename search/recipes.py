"""Replayable recipes of a run's trials: the record's Policy plus where it came from.

A trial record holds the applied policy (``Policy.to_dict()``, kept channel indices included;
see :mod:`autocompress.rundir`). :func:`recipe_policy` reads it back with
:meth:`spaces.policy.Policy.from_dict` and adds provenance, for ``RUN/recipes/trial-N.yaml``
(``reports.tables.write_exports``) and ``autocompress finalize``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autocompress.rundir import Run, record_path
from spaces.policy import Policy


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python, NaN -> None (YAML/JSON-safe)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def trial_policy(run: Run, trial: int) -> Policy:
    """The Policy of ``trial``'s record (applied, with kept indices, for a complete trial)."""
    rec = run.record(trial)
    return Policy.from_dict(rec.policy, source=f"{record_path(run.dir, trial)}: policy")


def recipe_policy(run: Run, trial: int) -> Policy:
    """The replayable Policy of ``trial`` with provenance (run, study, trial, metrics, versions, git sha)."""
    rec = run.record(trial)
    policy = trial_policy(run, trial)
    info = run.info
    provenance = dict(policy.provenance)
    provenance.update({
        "source": "autocompress search",
        "run": str(run.dir.resolve()),
        "study": info.search.get("study"),
        "trial": rec.trial,
        "baseline": rec.baseline,
        "space": info.space,
        "model": info.model,
        "checkpoint": info.checkpoint,
        "dataset": info.dataset,
        "objectives": [list(o) for o in info.objectives],
        "metrics": {k: _plain(v) for k, v in rec.metrics.items()},
        "reference": {k: _plain(v) for k, v in info.reference.items()},
        "policy_hash": rec.policy_hash,
        "seed": rec.seed,
        "versions": dict(rec.versions or info.versions),
        "git_sha": rec.git_sha or info.git_sha,
        "finished": rec.finished,
    })
    return policy.replace(provenance=provenance)


__all__ = ["recipe_policy", "trial_policy"]
