"""Metric names and directions: one table, per-batch names resolve to their base metric."""

from __future__ import annotations

import pytest

from autocompress import metrics
from autocompress.metrics import METRICS, Metric, direction, is_metric, lookup, metric_names


def test_every_metric_has_a_direction_and_description():
    assert metric_names()[:3] == ["accuracy", "top5", "accuracy_drop"]
    for name, m in METRICS.items():
        assert m.name == name and m.direction in ("maximize", "minimize") and m.description
    assert direction("accuracy") == "maximize" and direction("latency_ratio") == "minimize"
    with pytest.raises(KeyError, match="unknown metric 'speed'.*accuracy"):
        direction("speed")


def test_per_batch_names_resolve_only_for_per_batch_metrics(monkeypatch):
    assert lookup("latency@128") is None  # no metric is per-batch yet
    per_batch = Metric("latency", "minimize", "latency ratio", per_batch=True)
    monkeypatch.setitem(metrics.METRICS, "latency", per_batch)
    assert lookup("latency@128") is per_batch and direction("latency@128") == "minimize"
    assert is_metric("latency@1") and not is_metric("latency@") and not is_metric("latency@0")
    assert not is_metric("accuracy@128") and not is_metric("latency@x")
