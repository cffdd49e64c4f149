"""Multi-fidelity proxy: successive-halving promotion inside each trial (ASHA-style).

With ``search.fidelity: {levels: [S0, S1, ...], promote: p, min_results: m}`` a trial scores its
policy with an ``S0``-step proxy fine-tune, writes its record (status ``running``, ``levels``
``{"S0": metrics}``), and then asks :func:`is_promoted`: among the distinct candidates whose
records on disk have reached level 0 (all workers, Ray actors and earlier runs of this run
directory write them there), is it within the best ``floor(p * n)`` (and ``n >= m``)? If so the
same trial scores it again with ``S1`` steps, and so on. The trial then reports the highest level
it reached: its record's ``metrics`` are that level's (so the Pareto front, reports, ``finalize``
and the audit use them), ``levels`` keeps every level's metrics, and the Optuna trial is told that
level's values. One Optuna trial per candidate: counts stay exact, and a trial interrupted during
a promotion is retried like any dead trial (its finished levels come back from the result cache).

**Order.** Feasible candidates first, by non-dominated rank over the run's objectives
(:func:`autocompress.pareto.nondominated_sort`), crowding distance within the front breaking ties
(larger first: the front's extremes and sparse regions are promoted first,
:func:`autocompress.pareto.crowding_distance`), then the earlier trial; infeasible candidates after
them by total constraint violation. A candidate proposed twice (same search params) counts once.

**Slots.** ``floor(p * n)``: a candidate is promoted only when that many of the ``n`` results so far
make room for it, so with ``p = 0.3`` the first three never are (ASHA's rule); ``min_results``
keeps the first few from being promoted against too small a field (see ``docs/ARCHITECTURE.md``
for the measurement behind the defaults).

**Re-run, not continue.** A promoted candidate is fine-tuned afresh from the pruned start with
the longer schedule: its level-``k`` result is exactly what replaying its recipe (the applied policy
with ``S_k`` steps) gives, cacheable by policy hash and reproducible by ``apply --verify``.

**Baselines** (``original``, ``uniform-*``) are scored at every level, so the front compares them
with searched points under the same recipe. A policy that neither prunes nor quantizes is not
fine-tuned at all: its level-0 metrics hold for every level.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.pareto import crowding_distance, nondominated_sort
from autocompress.rundir import TrialRecord
from spaces.policy import Policy

log = logging.getLogger("search.promotion")

#: baseline label families scored at every level (seeds are candidates like any other)
ALWAYS_PROMOTED = ("original", "uniform-")


@dataclass(frozen=True)
class LevelResult:
    """One candidate's result at one level: objective values (natural units), feasibility and
    total constraint violation (0 when feasible)."""

    trial: int
    values: tuple[float, ...]
    feasible: bool = True
    violation: float = 0.0


def levels_of(space: Any) -> tuple[int, ...]:
    """The proxy fine-tune steps of each level; ``()`` when the space has one level (``budget.finetune``)."""
    fidelity = getattr(space.search, "fidelity", None)
    return tuple(fidelity.levels) if fidelity is not None else ()


def policy_at(policy: Policy, steps: int) -> Policy:
    """``policy`` with a proxy fine-tune of ``steps`` steps (its other fine-tune settings kept)."""
    return policy.replace(finetune=dataclasses.replace(policy.finetune, steps=int(steps), epochs=None))


def promotion_order(results: Sequence[LevelResult], directions: Sequence[str]) -> list[int]:
    """Trial numbers of ``results``, best first (see the module docstring)."""
    feasible = [r for r in results if r.feasible]
    order: list[int] = []
    if feasible:
        values = np.array([r.values for r in feasible], dtype=float).reshape(len(feasible), len(directions))
        ranks = nondominated_sort(values, directions)
        crowd = np.zeros(len(feasible))
        for level in np.unique(ranks):
            members = np.flatnonzero(ranks == level)
            crowd[members] = crowding_distance(values[members], directions)
        keyed = sorted(range(len(feasible)), key=lambda i: (ranks[i], -crowd[i], feasible[i].trial))
        order += [feasible[i].trial for i in keyed]
    infeasible = sorted((r for r in results if not r.feasible), key=lambda r: (r.violation, r.trial))
    return order + [r.trial for r in infeasible]


def slots(n: int, fraction: float, min_results: int = 1) -> int:
    """How many of ``n`` results a level promotes: ``floor(fraction * n)``, 0 below ``min_results``."""
    if n < min_results:
        return 0
    return int(math.floor(fraction * n + 1e-9))


def is_promoted(results: Sequence[LevelResult], trial: int, directions: Sequence[str], fraction: float,
                min_results: int = 1) -> bool:
    """Whether ``trial`` (one of ``results``) is within the best ``slots(len(results), ...)``."""
    order = promotion_order(results, directions)
    if trial not in order:
        raise ValueError(f"trial {trial} is not among the level's results {sorted(order)}")
    return order.index(trial) < slots(len(order), fraction, min_results)


def _violation(metrics: Mapping[str, Any], space: Any) -> float:
    total = sum(max(0.0, float(c.violation(metrics))) for c in space.parsed_constraints)
    return total if math.isfinite(total) else 1e12


def _candidate_key(record: TrialRecord) -> str:
    """Search params of the proposal (a duplicate proposal counts once), else the trial number."""
    params = (record.policy.get("provenance") or {}).get("params") if isinstance(record.policy, dict) else None
    return json.dumps(params, sort_keys=True, default=str) if params else f"trial:{record.trial}"


def candidate_results(records: Iterable[TrialRecord], metrics_of: Callable[[TrialRecord], Mapping[str, Any] | None],
                      space: Any) -> tuple[list[LevelResult], dict[int, int]]:
    """The distinct candidates' results among ``records`` (``complete`` or ``running``), each record's
    metrics at the level given by ``metrics_of`` (``None`` or empty: not at that level), and, for every
    record taken, the trial that stands for its candidate (the earliest with the same search params)."""
    objectives = list(space.objectives)
    seen: dict[str, LevelResult] = {}
    keys: dict[int, str] = {}
    for record in records:
        metrics = metrics_of(record)
        if record.status not in ("complete", "running") or not metrics:
            continue
        try:
            values = tuple(float(metrics[m]) for m in objectives)
        except (KeyError, TypeError, ValueError):
            continue
        violation = _violation(metrics, space)
        key = keys[record.trial] = _candidate_key(record)
        if key not in seen or record.trial < seen[key].trial:
            seen[key] = LevelResult(record.trial, values, violation <= 0, violation)
    return list(seen.values()), {t: seen[k].trial for t, k in keys.items()}


def _readable_records(run_dir: str | Path) -> Iterator[TrialRecord]:
    for path in sorted((Path(run_dir) / "records").glob("trial-*.json")):
        try:
            yield TrialRecord.from_dict(json.loads(path.read_text()), source=str(path))
        except Exception:  # noqa: BLE001 - a record mid-replacement or of another schema
            continue


def _collect(run_dir: str | Path, steps: int, space: Any) -> tuple[list[LevelResult], dict[int, int]]:
    """:func:`level_results` and, for every trial seen, the trial that stands for its candidate."""
    return candidate_results(_readable_records(run_dir), lambda r: (r.levels or {}).get(str(steps)), space)


def level_results(run_dir: str | Path, steps: int, space: Any) -> list[LevelResult]:
    """The distinct candidates whose records (``complete`` or still ``running``) hold level ``steps``.

    Unreadable records (being replaced, another version) are skipped: this is a ranking, not a report.
    """
    return _collect(run_dir, steps, space)[0]


def always_promoted(baseline: str | None) -> bool:
    """Baselines (``original``, ``uniform-*``) are scored at every level; seeds and searched points compete."""
    return bool(baseline) and any(baseline == p or baseline.startswith(p) for p in ALWAYS_PROMOTED)


def promote(run_dir: str | Path, space: Any, trial: int, steps: int, baseline: str | None = None) -> bool:
    """Whether ``trial`` (whose record holds level ``steps``) goes on to the next level. A
    duplicate proposal is ranked in its earliest twin's place."""
    if always_promoted(baseline):
        return True
    fidelity = space.search.fidelity
    results, stands_for = _collect(run_dir, steps, space)
    if trial not in stands_for:
        raise ValueError(f"trial {trial} has no readable record at {steps} steps in {run_dir}")
    decision = is_promoted(results, stands_for[trial], space.directions, fidelity.promote, fidelity.min_results)
    log.info("trial %d at %d steps: %s (%d candidates at this level, %d promoted)", trial, steps,
             "promoted" if decision else "not promoted", len(results),
             slots(len(results), fidelity.promote, fidelity.min_results))
    return decision


__all__ = ["ALWAYS_PROMOTED", "LevelResult", "always_promoted", "candidate_results", "is_promoted", "level_results",
           "levels_of", "policy_at", "promote", "promotion_order", "slots"]
