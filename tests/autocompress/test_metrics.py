"""Metric names and directions: one table, per-batch names resolve to their base metric."""

from __future__ import annotations

import pytest

from autocompress import metrics
from autocompress.metrics import (
    BATCH_KEYS,
    METRICS,
    at_batch,
    batch_keys,
    direction,
    is_metric,
    lookup,
    metric_names,
    split_batch,
)


def test_every_metric_has_a_direction_and_description():
    assert metric_names()[:3] == ["accuracy", "top5", "accuracy_drop"]
    for name, m in METRICS.items():
        assert m.name == name and m.direction in ("maximize", "minimize") and m.description
    assert direction("accuracy") == "maximize" and direction("latency_ratio") == "minimize"
    with pytest.raises(KeyError, match="unknown metric 'speed'.*accuracy"):
        direction("speed")


def test_per_batch_names_resolve_only_for_per_batch_metrics():
    latency = METRICS["latency"]
    assert latency.per_batch and not METRICS["latency_ratio"].per_batch and not METRICS["accuracy"].per_batch
    assert lookup("latency@128") is latency and direction("latency@128") == "minimize"
    assert is_metric("latency@1") and not is_metric("latency@") and not is_metric("latency@0")
    assert not is_metric("accuracy@128") and not is_metric("latency@x") and not is_metric("latency_ratio@128")


def test_batch_keys_and_names():
    assert at_batch("latency", None) == "latency" and at_batch("speedup", 128) == "speedup@128"
    assert split_batch("latency_ci_low@128") == ("latency_ci_low", 128)
    assert split_batch("latency") == ("latency", None) and split_batch("latency@x") == ("latency@x", None)
    assert batch_keys(None) == BATCH_KEYS == ("latency", "latency_ci_low", "latency_ci_high", "latency_busy")
    assert batch_keys(8) == ("latency@8", "latency_ci_low@8", "latency_ci_high@8", "latency_busy@8")
    assert set(BATCH_KEYS) <= set(METRICS) | set(metrics.DETAILS)
    assert metric_names() == list(METRICS)
    assert metric_names((8, 128)) == [*METRICS, "latency@8", "latency@128"]
