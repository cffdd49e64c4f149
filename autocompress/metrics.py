"""Metric names, directions and descriptions: the vocabulary of objectives, constraints,
trial records, measurements and reports.

A metric name is a key of :data:`METRICS`. A metric marked ``per_batch`` may also be named with
a batch size, ``NAME@BATCH``: :func:`lookup` resolves such a name to its base metric, so
directions and descriptions stay defined once. ``latency`` is per-batch: a space whose
``budget.latency.batch`` lists several batches (``[1, 128]``) measures ``latency`` at the first
(the primary batch, unchanged names) and ``latency@128`` at each other batch.

Besides the metrics, a trial's measured values carry the details in :data:`DETAILS` (the
latency ratio's confidence interval and the busy flag). The details of a per-batch metric are
named the same way: ``latency_ci_low@128``, ``latency_ci_high@128``, ``latency_busy@128``
(:data:`BATCH_KEYS`, :func:`at_batch`, :func:`batch_keys`).
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
    Metric("latency", "minimize", "latency ratio to the original model, measured interleaved (lower is faster)",
           per_batch=True),
    Metric("latency_ratio", "minimize", "same as latency"),
)}

#: values recorded beside the metrics (not objectives): name -> description
DETAILS: dict[str, str] = {
    "latency_ci_low": "lower end of the latency ratio's 95% bootstrap confidence interval",
    "latency_ci_high": "upper end of the latency ratio's 95% bootstrap confidence interval",
    "latency_busy": "the machine was busy while latency was measured (the ratio is suspect)",
}


#: the keys measured once per latency batch: ``latency@B`` and its details ``latency_ci_low@B`` ...
#: (the primary batch's carry no suffix, and ``latency_ratio`` repeats its ``latency``)
BATCH_KEYS = ("latency", "latency_ci_low", "latency_ci_high", "latency_busy")


def at_batch(name: str, batch: int | None) -> str:
    """``NAME@BATCH`` (``NAME`` itself when ``batch`` is None: the primary batch)."""
    return name if batch is None else f"{name}@{int(batch)}"


def split_batch(name: str) -> tuple[str, int | None]:
    """``("latency", 128)`` for ``latency@128``; ``(name, None)`` for a name without a batch
    (or with one that is not a positive integer)."""
    base, sep, batch = name.partition("@")
    if sep and batch.isdigit() and int(batch) > 0:
        return base, int(batch)
    return name, None


def batch_keys(batch: int | None) -> tuple[str, ...]:
    """The keys a latency measurement at ``batch`` fills (:data:`BATCH_KEYS` at that batch)."""
    return tuple(at_batch(k, batch) for k in BATCH_KEYS)


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


def metric_names(batches: tuple[int, ...] | list[int] = ()) -> list[str]:
    """Every metric an objective or constraint may name: the base names, plus ``NAME@B`` of each
    per-batch metric for each batch in ``batches`` (a space's other latency batches)."""
    return list(METRICS) + [at_batch(m.name, b) for b in batches for m in METRICS.values() if m.per_batch]


def direction(name: str) -> Direction:
    """``"maximize"`` or ``"minimize"``; a ``KeyError`` naming the known metrics otherwise."""
    metric = lookup(name)
    if metric is None:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return metric.direction


__all__ = ["BATCH_KEYS", "DETAILS", "DIRECTIONS", "METRICS", "Direction", "Metric", "at_batch", "batch_keys",
           "direction", "is_metric", "lookup", "metric_names", "split_batch"]
