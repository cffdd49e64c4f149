"""Metric names, directions and descriptions: the vocabulary of objectives, constraints,
trial records, measurements and reports.

A metric name is a key of :data:`METRICS`. A metric marked ``per_batch`` may also be named with
a batch size, ``NAME@BATCH`` (for example ``latency@128`` once per-batch latency is measured):
:func:`lookup` resolves such a name to its base metric, so directions and descriptions stay
defined once. No metric is per-batch yet.

Besides the metrics, a trial's measured values carry the details in :data:`DETAILS` (the
latency ratio's confidence interval and the busy flag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[Direction, ...] = ("maximize", "minimize")


@dataclass(frozen=True)
class Metric:
    """One metric: its name, whether larger or smaller is better, what it measures."""

    name: str
    direction: Direction
    description: str
    per_batch: bool = False  # also valid as NAME@BATCH


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "maximize", "top-1 accuracy on the val split, percent"),
    Metric("top5", "maximize", "top-5 accuracy on the val split, percent"),
    Metric("accuracy_drop", "minimize", "reference top-1 minus this top-1, percentage points"),
    Metric("flops", "minimize", "fvcore FLOPs (multiply-accumulates) at the policy's input size"),
    Metric("flops_ratio", "minimize", "flops / reference flops"),
    Metric("params", "minimize", "parameter count"),
    Metric("size", "minimize", "weight bytes at the policy's bit-widths"),
    Metric("bops", "minimize", "bit-operations: sum over layers of MACs x w_bits x a_bits"),
    Metric("latency", "minimize", "latency ratio to the original model, measured interleaved (lower is faster)"),
    Metric("latency_ratio", "minimize", "same as latency"),
)}

#: values recorded beside the metrics (not objectives): name -> description
DETAILS: dict[str, str] = {
    "latency_ci_low": "lower end of the latency ratio's 95% bootstrap confidence interval",
    "latency_ci_high": "upper end of the latency ratio's 95% bootstrap confidence interval",
    "latency_busy": "the machine was busy while latency was measured (the ratio is suspect)",
}


def lookup(name: str) -> Metric | None:
    """The metric ``name`` refers to (``NAME`` or, for per-batch metrics, ``NAME@BATCH``), or None."""
    base, sep, batch = name.partition("@")
    metric = METRICS.get(base)
    if metric is None or not sep:
        return metric
    return metric if metric.per_batch and batch.isdigit() and int(batch) > 0 else None


def is_metric(name: str) -> bool:
    """Whether objectives and constraints may name ``name``."""
    return lookup(name) is not None


def metric_names() -> list[str]:
    """Every metric an objective or constraint may name (per-batch variants not listed)."""
    return list(METRICS)


def direction(name: str) -> Direction:
    """``"maximize"`` or ``"minimize"``; a ``KeyError`` naming the known metrics otherwise."""
    metric = lookup(name)
    if metric is None:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return metric.direction


__all__ = ["DETAILS", "DIRECTIONS", "METRICS", "Direction", "Metric", "direction", "is_metric", "lookup",
           "metric_names"]
