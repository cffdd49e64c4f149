"""Which trial of a run to finalize: ``--pick knee``, ``--pick "max METRIC where COND ..."`` or ``--trial N``.

``knee`` (default)
    On the feasible Pareto front (``pareto.csv`` semantics, :func:`autocompress.rundir.pareto_records`),
    :func:`autocompress.pareto.knee_index`: the point farthest from the line (plane) through the
    normalised extreme points, towards the ideal point; degenerate fronts fall back to
    ``autocompress.pareto.knee_point``.
``"max METRIC [where COND [and COND ...]]"`` / ``"min METRIC ..."``
    Among feasible complete trials, the best ``METRIC`` subject to conditions such as
    ``latency_ratio <= 0.5`` or ``latency@128 <= 0.3`` (the constraint syntax of search spaces; ``@B``
    names the latency at another batch the run measured).
``trial=N``
    Trial ``N`` (any complete trial).

Light on purpose (no torch): the ``finalize`` command's parser uses :data:`PICK_HELP`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from autocompress.errors import UserError
from autocompress.metrics import is_metric, metric_names
from autocompress.pareto import knee_index
from autocompress.rundir import Run, pareto_records
from spaces.space import METRIC_NAME, Constraint, parse_constraint

_PICK_RE = re.compile(rf"^\s*(max|min)\s+({METRIC_NAME})\s*(?:where\s+(.+?))?\s*$", re.IGNORECASE)
PICK_HELP = ("'knee', or 'max METRIC [where COND and COND ...]' / 'min METRIC ...', e.g. "
             "'max accuracy where latency_ratio <= 0.5'")


class FinalizeError(UserError, ValueError):
    """The pick cannot be parsed or no trial satisfies it (a user error, shown without traceback)."""


# ----- picking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """A parsed ``--pick`` expression."""

    text: str
    goal: str  # "knee" | "max" | "min"
    metric: str | None = None
    conditions: tuple[Constraint, ...] = ()


def parse_pick(text: str) -> Pick:
    """Parse ``knee`` or ``max|min METRIC [where COND and ...]``; errors name the allowed metrics."""
    if text.strip().lower() == "knee":
        return Pick(text="knee", goal="knee")
    m = _PICK_RE.match(text)
    if not m:
        raise FinalizeError(f"--pick {text!r}: cannot parse; expected {PICK_HELP}. "
                            f"Metrics: {', '.join(metric_names())}")
    goal, metric, where = m.group(1).lower(), m.group(2), m.group(3)
    if not is_metric(metric):
        raise FinalizeError(f"--pick {text!r}: unknown metric {metric!r}; allowed: {', '.join(metric_names())}")
    conditions = []
    for part in re.split(r"\s+and\s+|\s*,\s*", where or "", flags=re.IGNORECASE):
        if not part.strip():
            if where is not None:
                raise FinalizeError(f"--pick {text!r}: empty condition after 'where'; expected {PICK_HELP}")
            continue
        try:
            conditions.append(parse_constraint(part))
        except ValueError as exc:
            raise FinalizeError(f"--pick {text!r}: {exc}") from None
    return Pick(text=text.strip(), goal=goal, metric=metric, conditions=tuple(conditions))


def choose_trial(run: Run, pick: str = "knee", *, trial: int | None = None) -> tuple[int, str]:
    """Trial number picked in a loaded run (``autocompress.rundir.Run``) and a description of why."""
    complete = [r for r in run.records if r.status == "complete"]
    if not complete:
        raise FinalizeError(f"{run.dir}: no complete trial to finalize")
    if trial is not None:
        rec = next((r for r in run.records if r.trial == trial), None)
        if rec is None:
            raise FinalizeError(f"{run.dir}: no trial {trial}; trials: {', '.join(str(r.trial) for r in run.records)}")
        if rec.status != "complete":
            raise FinalizeError(f"{run.dir}: trial {trial} is {rec.status} ({rec.error}); pick a complete trial")
        return trial, f"trial {trial}"
    p = parse_pick(pick)
    objectives = [tuple(o) for o in run.info.objectives]
    if p.goal == "knee":
        front = pareto_records(run)
        if not front:
            raise FinalizeError(f"{run.dir}: no feasible Pareto point (all {len(complete)} complete trials violate "
                                f"the constraints {run.info.constraints}); use --trial N or --pick with a condition")
        names = [m for m, _ in objectives]
        points = [[float(r.metrics[m]) for m in names] for r in front]
        i = knee_index(points, [d for _, d in objectives])
        return front[i].trial, f"knee of the {len(front)}-point Pareto front over {', '.join(names)}"
    candidates = [r for r in complete if r.feasible]
    ok = [r for r in candidates if all(c.violation(r.metrics) <= 0 for c in p.conditions)
          and _finite(r.metrics.get(p.metric))]
    if not ok:
        hints = []
        for c in p.conditions:
            vals = [float(r.metrics[c.metric]) for r in candidates if _finite(r.metrics.get(c.metric))]
            if vals:
                best = min(vals) if c.op in ("<=", "<") else max(vals)
                hints.append(f"best {c.metric} among them is {best:.4g}")
            else:
                hints.append(f"no trial has {c.metric!r} (measured metrics: {', '.join(sorted(complete[0].metrics))})")
        raise FinalizeError(f"--pick {p.text!r}: none of the {len(candidates)} feasible complete trials satisfies it"
                            + (f" ({'; '.join(hints)})" if hints else ""))
    key = (lambda r: float(r.metrics[p.metric])) if p.goal == "min" else (lambda r: -float(r.metrics[p.metric]))
    best = min(ok, key=lambda r: (key(r), r.trial))
    return best.trial, f"{p.text} ({len(ok)} of {len(candidates)} feasible trials qualify)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


# ----- the final fine-tune ----------------------------------------------------------------------


__all__ = ["PICK_HELP", "FinalizeError", "Pick", "choose_trial", "parse_pick"]
