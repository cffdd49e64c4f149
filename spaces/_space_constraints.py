"""Objective names and constraint expressions of a search space (``"accuracy_drop <= 1.0"``).

Metric names and directions come from :data:`autocompress.metrics.METRICS`, the contract shared
with reports. Constraint violations follow Optuna's convention: ``<= 0`` means satisfied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from autocompress.metrics import is_metric, metric_names

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
#: a metric name, ``latency@128`` included (a per-batch metric at another latency batch)
METRIC_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:@\d+)?"
_CONSTRAINT_RE = re.compile(rf"^\s*({METRIC_NAME})\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")

OPERATORS = ("<=", ">=", "<", ">")


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``; :meth:`violation` is <= 0 when satisfied (Optuna convention)."""

    text: str
    metric: str
    op: str
    bound: float

    def violation(self, metrics: Mapping[str, float]) -> float:
        """Amount by which the constraint is violated (<= 0 feasible; +inf if the metric is missing)."""
        value = metrics.get(self.metric)
        if value is None or not isinstance(value, (int, float)) or math.isnan(float(value)):
            return math.inf
        value = float(value)
        if self.op in ("<=", "<"):
            v = value - self.bound
            return v if self.op == "<=" or v != 0 else 1e-12
        v = self.bound - value
        return v if self.op == ">=" or v != 0 else 1e-12


def parse_constraint(text: str) -> Constraint:
    """Parse ``"metric <= number"``; raise ``ValueError`` naming the allowed metrics and operators."""
    m = _CONSTRAINT_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"cannot parse constraint {text!r}: expected 'METRIC OP NUMBER' with OP one of "
            f"{', '.join(OPERATORS)}, e.g. 'accuracy_drop <= 1.0'"
        )
    metric, op, bound = m.groups()
    if not is_metric(metric):
        raise ValueError(f"unknown metric {metric!r} in constraint {text!r}; allowed: {', '.join(metric_names())}")
    return Constraint(text=text.strip(), metric=metric, op=op, bound=float(bound))


__all__ = ["METRIC_NAME", "OPERATORS", "Constraint", "parse_constraint"]
