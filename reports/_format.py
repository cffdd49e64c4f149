"""Human formatting of metric values (display only; exact values travel alongside)."""

from __future__ import annotations

import math
from typing import Any

from autocompress.metrics import split_batch


def exact(value: Any) -> str:
    """Exact text of a value (``repr`` of floats round-trips), "" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return repr(value)
    return repr(value) if isinstance(value, float) else str(value)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.4g}"


def fmt(metric: str, value: Any) -> str:
    """Short display text of ``value`` for ``metric``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    metric = split_batch(metric)[0]  # latency@128 shows as latency
    if metric in ("accuracy", "top5", "test_accuracy", "top1"):
        return f"{value:.2f}%"
    if metric in ("accuracy_drop", "vs.accuracy_drop"):
        return f"{value:+.2f} pts"
    if metric.endswith("speedup"):
        return f"{value:.2f}x"
    if metric.endswith("_ratio") or metric in ("latency", "latency_ci_low", "latency_ci_high"):
        return f"{value:.3f}"
    if metric in ("flops", "bops", "params"):
        return _si(float(value))
    if metric == "size":
        return f"{value / 1024:.1f} KiB"
    if metric.startswith("time.") or metric.endswith("_s"):
        return f"{value:.1f} s"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def by_baseline(label: str, table: dict[str, Any], default: Any) -> Any:
    """Look up a baseline label by its family: ``uniform-prune-0.25`` matches key ``uniform-prune``."""
    for prefix, value in table.items():
        if label == prefix or label.startswith(prefix + "-"):
            return value
    return default


def truthy(v: Any) -> bool:
    """A trial table's boolean cell (``True`` or the text ``"true"`` read back from CSV)."""
    return v is True or str(v).lower() == "true"


def complete_rows(data: dict[str, Any], x: str, y: str) -> list[dict[str, Any]]:
    """The report's complete trials that have both plotted values ``x`` and ``y``."""
    return [r for r in data["trials"] if r.get("status") == "complete" and r.get(x) is not None
            and r.get(y) is not None]
